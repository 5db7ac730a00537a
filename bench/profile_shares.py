#!/usr/bin/env python3
"""Shares of a `bnlab bench train` profile by operation, from `perf script -F ip,sym`.

    perf record -F 499 --call-graph dwarf,16384 -o perf.data \
        target/release/bnlab bench train --model resnet20 --steps 3 --warmup 1
    perf script -i perf.data -F ip,sym | python3 bench/profile_shares.py

The leaf frame decides first (allocation, the fused normalization kernels, gemm, convolution
loops): with rayon these run on worker threads whose stacks do not show the calling layer.
Other samples go to the first category (in the order below) whose pattern one of their frames
matches.
"""
import re
import sys
from collections import Counter

LEAF = [
    ("allocation, page faults, zero-fill",
     r"clear_page|page_fault|do_anonymous_page|__handle_mm_fault|_int_malloc|_int_free|malloc|"
     r"free|memset|filled_typed|mmap|munmap|alloc_pages|memcg"),
    ("normalization kernels (bnlab fused, forward and backward)", r"bnlab_norm::fused::kernels"),
    ("matrix multiply (gemm microkernels: convolutions, linear)", r"gemm_"),
    ("convolution data movement (bnlab im2col/col2im, burn_flex conv loops, copy_2d_tiled)",
     r"bnlab_models::conv::kernels|burn_flex::ops::conv|copy_2d_tiled"),
]
STACK = [
    ("optimizer step", r"burn_optim|GroupedOptimizer|bnlab_train::optim"),
    ("conv2d weight gradient", r"conv2d_weight_backward"),
    ("conv2d input gradient", r"conv2d_x_backward"),
    ("conv2d forward", r"burn_flex::ops::conv::conv2d_f32"),
    ("normalization backward (fused kernel)", r"FusedBackward"),
    ("normalization forward (bnlab Norm)", r"bnlab_norm::"),
    ("other forward (ReLU, residual add, pooling, loss, linear)", r"bnlab_models::|cross_entropy|Network>::forward"),
    ("backward of elementwise ops and reductions (the composed normalization's, ReLU, add)",
     r"burn_autodiff"),
]


def main():
    counts, total, stack = Counter(), 0, []

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        leaf = stack[0]
        for name, pat in LEAF:
            if re.search(pat, leaf):
                counts[name] += 1
                return
        for name, pat in STACK:
            if any(re.search(pat, f) for f in stack):
                counts[name] += 1
                return
        counts["other"] += 1

    for line in sys.stdin:
        line = line.strip()
        if not line:
            flush()
            stack = []
            continue
        parts = line.split(None, 1)
        stack.append(parts[1] if len(parts) > 1 else parts[0])
    flush()
    print("| operation | share of samples |")
    print("|---|---|")
    for name, _ in LEAF + STACK + [("other", "")]:
        if counts[name]:
            print(f"| {name} | {100.0 * counts[name] / total:.1f} % |")
    print(f"\n{total} samples")


if __name__ == "__main__":
    main()
