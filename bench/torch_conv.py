#!/usr/bin/env python3
"""PyTorch peer of `bnlab bench conv`: forward and backward (input and weight gradients)
milliseconds of every convolution shape of ResNet-20 and the CIFAR ResNet-18, on CPU.

    python bench/torch_conv.py --batch 128 --threads 2 [--only r20|r18]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# (network, C_in, H = W, C_out, kernel, stride), as in crates/bnlab/src/commands/bench/conv.rs
SHAPES = [
    ("r20", 3, 32, 16, 3, 1), ("r20", 16, 32, 16, 3, 1), ("r20", 16, 32, 32, 3, 2),
    ("r20", 32, 16, 32, 3, 1), ("r20", 32, 16, 64, 3, 2), ("r20", 64, 8, 64, 3, 1),
    ("r18", 3, 32, 64, 3, 1), ("r18", 64, 32, 64, 3, 1), ("r18", 64, 32, 128, 3, 2),
    ("r18", 64, 32, 128, 1, 2), ("r18", 128, 16, 128, 3, 1), ("r18", 128, 16, 256, 3, 2),
    ("r18", 128, 16, 256, 1, 2), ("r18", 256, 8, 256, 3, 1), ("r18", 256, 8, 512, 3, 2),
    ("r18", 256, 8, 512, 1, 2), ("r18", 512, 4, 512, 3, 1),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__} convolutions at batch {a.batch}, {a.threads} threads, medians of {a.reps} (ms):")
    print("net  shape                      torch fwd   bwd")
    for net, cin, hw, cout, k, s in SHAPES:
        if a.only and a.only != net:
            continue
        x = torch.randn(a.batch, cin, hw, hw)
        w = torch.randn(cout, cin, k, k, requires_grad=True)
        fwd, bwd = [], []
        for i in range(a.reps + 1):
            t0 = time.perf_counter()
            with torch.no_grad():
                F.conv2d(x, w, None, s, k // 2)
            t1 = time.perf_counter()
            xa = x.clone().requires_grad_()
            y = F.conv2d(xa, w, None, s, k // 2)
            dy = torch.randn_like(y)
            t2 = time.perf_counter()
            y.backward(dy)
            t3 = time.perf_counter()
            w.grad = None
            if i > 0:
                fwd.append(1e3 * (t1 - t0))
                bwd.append(1e3 * (t3 - t2))
        f, b = statistics.median(fwd), statistics.median(bwd)
        print(f"{net}  {cin:>3}→{cout:<3} {hw:>2}×{hw:<2} {k}×{k} s{s}     {f:8.2f} {b:7.2f}")


if __name__ == "__main__":
    main()
