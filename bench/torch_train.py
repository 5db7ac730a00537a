#!/usr/bin/env python3
"""PyTorch peer of `bnlab bench train`: images/s of a training step (forward, backward,
SGD momentum 0.9 with weight decay 1e-4) on random CIFAR-shaped batches, on CPU.

    python bench/torch_train.py --model resnet20 --batch 128 --threads 2

Models match bnlab's registry: resnet20 (He et al.'s CIFAR ResNet-20, option-A shortcuts)
and resnet18-cifar (ResNet-18 with a 3x3 stride-1 stem and no max-pool).
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, option_a):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.option_a = option_a
        self.pad = cout - cin
        self.stride = stride
        self.proj = None
        if (stride != 1 or cin != cout) and not option_a:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.proj is not None:
            short = self.proj(x)
        elif self.stride != 1 or self.pad:
            short = x[:, :, :: self.stride, :: self.stride]
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        else:
            short = x
        return F.relu(out + short)


class ResNet(nn.Module):
    def __init__(self, widths, blocks, option_a, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(cin, w, stride, option_a))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def model(name):
    if name == "resnet20":
        return ResNet([16, 32, 64], [3, 3, 3], option_a=True)
    if name == "resnet18-cifar":
        return ResNet([64, 128, 256, 512], [2, 2, 2, 2], option_a=False)
    raise SystemExit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    net = model(a.model).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.arange(a.batch) % 10
    fwd, bwd, step, total = [], [], [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= a.warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            step.append(t3 - t2)
            total.append(t3 - t0)
    med = statistics.median
    print(f"torch {torch.__version__} {a.model} batch {a.batch}, {a.threads} threads, "
          f"{a.steps} timed steps after {a.warmup} (medians):")
    print(f"  forward    {1e3 * med(fwd):8.1f} ms  {a.batch / med(fwd):8.1f} img/s")
    print(f"  backward   {1e3 * med(bwd):8.1f} ms  {a.batch / med(bwd):8.1f} img/s")
    print(f"  optimizer  {1e3 * med(step):8.1f} ms")
    print(f"  whole step {1e3 * med(total):8.1f} ms")
    print(f"step {a.batch / med(total):.1f} img/s")


if __name__ == "__main__":
    main()
