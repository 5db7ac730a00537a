"""Recounts test accuracies of the reproduction pool's models through a second path that
shares no code with bnlab: the model exported by `bnlab export` (safetensors, PyTorch names),
a ResNet-20 written here in PyTorch, the test images read here from the IDX files, and the
contrast corruption written here from Hendrycks & Dietterich's definition. Prints one JSON
line per model with both accuracies.

    bnlab export OUT/runs/nbs128-s1 --out /tmp/nbs128-s1.safetensors   (from the repo root)
    .venv-bench/bin/python repro/crosscheck/torch_forward.py --root data/fmnist-10k \
        --result OUT/results/nbs128-s1.json --weights /tmp/nbs128-s1.safetensors \
        --scheme population --scheme adapt-contrast-3-source

torch 2.15.0 from PyPI, CPU. Schemes: `population` (the clean test set, the stored running
statistics) and `adapt-contrast-S-source` (the test set at contrast severity S, the same
statistics); the schemes that re-estimate statistics draw training images with bnlab's seeded
sampler and are not recounted here.
"""
import argparse
import gzip
import json
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def contrast(images, severity):
    """ImageNet-C contrast: each image's pixels scaled by c around its own mean, rounded half
    up (the values are non-negative) and clipped to 0..255."""
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    x = images.astype(np.float64)
    mean = x.reshape(len(x), -1).mean(axis=1)[:, None, None]
    return np.clip(np.floor((x - mean) * c + mean + 0.5), 0, 255).astype(np.uint8)


class Block(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.pad = stride, planes - inplanes

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        # option A (He et al. §4.2): subsample, then zero channels split around x
        short = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            before = self.pad // 2
            short = F.pad(short, (0, 0, 0, 0, before, self.pad - before))
        return F.relu(out + short)


class ResNet20(nn.Module):
    def __init__(self, in_channels=1, classes=10, n=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inplanes = [], 16
        for i, planes in enumerate([16, 32, 64]):
            blocks = []
            for j in range(n):
                blocks.append(Block(inplanes, planes, 2 if i > 0 and j == 0 else 1))
                inplanes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def accuracy(model, images, labels):
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 500):
            # the pool's scaling: unit (pixels / 255), one channel
            x = torch.from_numpy(images[start : start + 500].astype(np.float32) / 255.0)
            logits = model(x[:, None])
            correct += int((logits.argmax(1).numpy() == labels[start : start + 500]).sum())
    return correct / len(images)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--scheme", action="append", required=True)
    a = p.parse_args()
    torch.set_num_threads(2)
    images = idx(f"{a.root}/t10k-images-idx3-ubyte.gz")
    labels = idx(f"{a.root}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    model = ResNet20()
    model.load_state_dict(load_file(a.weights), strict=True)
    model.eval()
    result = json.load(open(a.result))
    for scheme in a.scheme:
        if scheme == "population":
            x = images
        elif scheme.startswith("adapt-contrast-") and scheme.endswith("-source"):
            x = contrast(images, int(scheme.split("-")[2]))
        else:
            raise SystemExit(f"scheme {scheme} is not recounted here")
        ours = accuracy(model, x, labels)
        bnlab = result["test"][scheme]["accuracy"]
        print(json.dumps({"run": f"{result['configuration']}-s{result['index']}", "scheme": scheme,
                          "bnlab": bnlab, "pytorch": ours, "difference": ours - bnlab}))


if __name__ == "__main__":
    main()
