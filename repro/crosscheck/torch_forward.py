"""Recounts test accuracies of the reproduction pool's models through a second path that
shares no code with bnlab: the model exported by `bnlab export` (safetensors, PyTorch names),
a ResNet-20 written here in PyTorch, the test images read here from the IDX files, and the
contrast corruption written here from Hendrycks & Dietterich's definition. Prints one JSON
line per model with both accuracies.

    bnlab export OUT/runs/nbs128-s1 --out /tmp/nbs128-s1.safetensors   (from the repo root)
    .venv-bench/bin/python repro/crosscheck/torch_forward.py --root data/fmnist-10k \
        --result OUT/results/nbs128-s1.json --weights /tmp/nbs128-s1.safetensors \
        --scheme population --scheme adapt-contrast-3-source

Models with input normalization (Davis & Frank's BN at the input) have no PyTorch layout, so
`bnlab export` refuses them; `--bpk OUT/runs/RUN/model.bpk` instead reads bnlab's own model
file here (burnpack: the magic `NRUB`, a u16 version, a u32 length, CBOR metadata naming each
tensor's dtype, shape and byte range, then the data at the next multiple of 256), maps the
names itself and puts a scale-only BatchNorm2d(1) in front (γ̂, β = 0, on raw pixels).

torch 2.15.0 from PyPI (and cbor2 for `--bpk`), CPU. Schemes: `population` (the clean test set, the stored running
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
    def __init__(self, in_channels=1, classes=10, n=3, input_norm=False):
        super().__init__()
        # Davis & Frank's BN input normalization: scale-only, no ReLU after it
        self.input_bn = nn.BatchNorm2d(in_channels) if input_norm else None
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
        if self.input_bn is not None:
            x = self.input_bn(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def burnpack(path):
    """bnlab's model file as {name: float32 array}."""
    import cbor2

    data = open(path, "rb").read()
    if data[:4] != b"NRUB":
        raise SystemExit(f"{path} is not a burnpack file")
    length, = struct.unpack("<I", data[6:10])
    meta = cbor2.loads(data[10 : 10 + length])
    start = (10 + length + 255) // 256 * 256
    out = {}
    for name, t in meta["tensors"].items():
        if t["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {t['dtype']}")
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[start + a : start + b], dtype="<f4").reshape(t["shape"]).copy()
    return out


def from_burnpack(tensors):
    """PyTorch state dict of ResNet20 (input_norm when the file has one) from bnlab's names."""
    state = {}

    def affine(src, name):
        # files written before the affine parameters moved under `affine.` name them directly
        return tensors.get(f"{src}.affine.{name}", tensors.get(f"{src}.{name}"))

    def norm(src, dst, gamma="gamma"):
        state[f"{dst}.weight"] = affine(src, gamma).reshape(-1)
        bias = affine(src, "beta")
        state[f"{dst}.bias"] = np.zeros_like(state[f"{dst}.weight"]) if bias is None else bias.reshape(-1)
        state[f"{dst}.running_mean"] = tensors[f"{src}.state.running_mean"].reshape(-1)
        state[f"{dst}.running_var"] = tensors[f"{src}.state.running_var"].reshape(-1)

    state["conv1.weight"] = tensors["ResNet.stem.conv.weight"]
    norm("ResNet.stem.norm", "bn1")
    for i in range(3):
        for j in range(3):
            for k in (1, 2):
                src = f"ResNet.stages.{i}.{j}.conv{k}"
                state[f"layer{i + 1}.{j}.conv{k}.weight"] = tensors[f"{src}.conv.weight"]
                norm(f"{src}.norm", f"layer{i + 1}.{j}.bn{k}")
    # Burn's Linear stores [in, out]
    state["fc.weight"] = tensors["ResNet.head.fc.weight"].T
    state["fc.bias"] = tensors["ResNet.head.fc.bias"]
    input_norm = "ResNet.input_norm.norm.affine.input_gamma" in tensors
    if input_norm:
        norm("ResNet.input_norm.norm", "input_bn", gamma="input_gamma")
    missing = {k for k in tensors if not k.endswith(".updates")} - used(tensors, state, input_norm)
    if missing:
        raise SystemExit(f"tensors not mapped: {sorted(missing)}")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, input_norm


def used(tensors, state, input_norm):
    """The bnlab names `from_burnpack` read (to refuse a file with more in it)."""
    names = {"ResNet.stem.conv.weight", "ResNet.head.fc.weight", "ResNet.head.fc.bias"}
    for k in tensors:
        if ".norm." in k and not k.endswith(".updates"):
            names.add(k)
        if k.startswith("ResNet.stages.") and k.endswith(".conv.weight"):
            names.add(k)
    return names


def accuracy(model, images, labels, scale):
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 500):
            # the run's scaling: unit (pixels / 255) or raw (under input normalization)
            x = torch.from_numpy(images[start : start + 500].astype(np.float32) / scale)
            logits = model(x[:, None])
            correct += int((logits.argmax(1).numpy() == labels[start : start + 500]).sum())
    return correct / len(images)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--weights", help="bnlab export's safetensors file")
    p.add_argument("--bpk", help="bnlab's own model file (runs/RUN/model.bpk)")
    p.add_argument("--scheme", action="append", required=True)
    a = p.parse_args()
    torch.set_num_threads(2)
    images = idx(f"{a.root}/t10k-images-idx3-ubyte.gz")
    labels = idx(f"{a.root}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if (a.weights is None) == (a.bpk is None):
        raise SystemExit("give one of --weights and --bpk")
    if a.bpk:
        state, input_norm = from_burnpack(burnpack(a.bpk))
    else:
        state, input_norm = load_file(a.weights), False
    model = ResNet20(input_norm=input_norm)
    model.load_state_dict(state, strict=False if input_norm else True)
    missing = [k for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise SystemExit(f"no weights for {missing}")
    model.eval()
    result = json.load(open(a.result))
    data = result["config"]["data"]
    # bnlab's rule: as set, else raw under input normalization, else unit
    scaling = data.get("scaling") or ("raw" if result["config"]["model"].get("input_norm") else "unit")
    scale = {"unit": 255.0, "raw": 1.0}[scaling]
    for scheme in a.scheme:
        if scheme == "population":
            x = images
        elif scheme.startswith("adapt-contrast-") and scheme.endswith("-source"):
            x = contrast(images, int(scheme.split("-")[2]))
        else:
            raise SystemExit(f"scheme {scheme} is not recounted here")
        ours = accuracy(model, x, labels, scale)
        bnlab = result["test"][scheme]["accuracy"]
        print(json.dumps({"run": f"{result['configuration']}-s{result['index']}", "scheme": scheme,
                          "bnlab": bnlab, "pytorch": ours, "difference": ours - bnlab}))


if __name__ == "__main__":
    main()
