#!/usr/bin/env bash
# Recounts, in PyTorch, the test accuracies of seed 1 of each pool arm (see torch_forward.py).
#     repro/crosscheck/run.sh POOL_OUT    (from the repo root, with .venv-bench holding torch)
set -euo pipefail
out=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in nbs128-s1 nbs32-s1 nbs8-s1 nbs2-s1 nbs2-frozen-s1; do
    target/release/bnlab export "$out/runs/$run" --out "$tmp/$run.safetensors" >/dev/null
    schemes=(--scheme population)
    [ "$run" = nbs128-s1 ] && schemes+=(--scheme adapt-contrast-3-source)
    .venv-bench/bin/python repro/crosscheck/torch_forward.py --root data/fmnist-10k \
        --result "$out/results/$run.json" --weights "$tmp/$run.safetensors" "${schemes[@]}"
done
