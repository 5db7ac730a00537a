#!/usr/bin/env python3
"""PyTorch peer of `bnlab bench norm`: BatchNorm2d, GroupNorm(32) and the usual
chunk-and-cat Ghost BN (ghost 32), per training forward and forward + backward, on CPU (or a
CUDA GPU with --device cuda).

    python bench/torch_norm.py [--quick] [--reps 5] [--threads 2] [--device cpu|cuda]

The backward is seeded with a dy made before the clock starts, y.backward(dy), as in
`bnlab bench norm`; x's gradient is cleared before each call, so no call adds to the last.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

SHAPES = [(128, 64, 32, 32), (128, 256, 8, 8), (32, 512, 4, 4), (8, 256, 56, 56)]


class GhostBN(nn.Module):
    def __init__(self, c, ghost):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.ghost = ghost

    def forward(self, x):
        return torch.cat([self.bn(chunk) for chunk in x.split(self.ghost, 0)], 0)


def timed(reps, f, device):
    def call():
        f()
        if device == "cuda":
            torch.cuda.synchronize()

    call()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        call()
        t.append(time.perf_counter() - s)
    return statistics.median(t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--shape", help="one shape N,C,H,W instead of the four (as bnlab bench norm --shape)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    where = torch.cuda.get_device_name() if a.device == "cuda" else f"{a.threads} threads"
    print(f"torch {torch.__version__}, {where}")
    print(f"{'variant':<28} {'shape':>18} {'fwd ms':>10} {'fwd+bwd ms':>12}")
    shapes = [tuple(int(v) for v in a.shape.split(","))] if a.shape else SHAPES[:1] if a.quick else SHAPES
    for shape in shapes:
        n, c, h, w = shape
        x = torch.randn(*shape, device=a.device)
        xg = x.clone().requires_grad_(True)
        dy = torch.randn(*shape, device=a.device)
        layers = [("BatchNorm2d", nn.BatchNorm2d(c))]
        if c % 32 == 0:
            layers.append(("GroupNorm 32", nn.GroupNorm(32, c)))
        if n % 32 == 0:
            layers.append(("Ghost 32 chunk-and-cat", GhostBN(c, 32)))
        for name, layer in layers:
            layer.to(a.device).train()
            fwd = timed(a.reps, lambda: layer(x), a.device)

            def both():
                xg.grad = None
                layer(xg).backward(dy)

            bwd = timed(a.reps, both, a.device)
            print(f"{name:<28} {f'{n}x{c}x{h}x{w}':>18} {1e3 * fwd:>10.2f} {1e3 * bwd:>12.2f}")


if __name__ == "__main__":
    main()
