#!/usr/bin/env bash
# Alternated rounds of whole training steps, the figures of issue 26: per round and per
# (model, batch), each bnlab build then PyTorch, one after the other; prints img/s per build
# and PyTorch's, and their ratios.
#   bench/rounds.sh [ROUNDS] [BUILD...]     (BUILD: a path to a bnlab binary, e.g. a copy of an
#                                             older build; default this checkout's release build)
# PyTorch comes from $TORCH_VENV (default .venv-bench), created from PyPI when missing.
set -euo pipefail
rounds=${1:-3}
shift || true
cd "$(dirname "$0")/.."
. bench/torch_venv.sh
builds=("$@")
if [ ${#builds[@]} -eq 0 ]; then
    cargo build --release --quiet -p bnlab
    builds=(./target/release/bnlab)
fi
step() { awk '/^step/ {print $2}'; }
for r in $(seq "$rounds"); do
    # (model, batch, timed steps): about the same time per figure
    for mbs in "resnet20 128 10" "resnet20 8 60" "resnet20 2 100" "resnet18-cifar 128 4"; do
        read -r model batch steps <<<"$mbs"
        line="$model b$batch r$r:"
        ours=()
        for bin in "${builds[@]}"; do
            v=$("$bin" bench train --model "$model" --batch "$batch" --steps "$steps" --warmup 2 | step)
            ours+=("$v")
            line="$line $(basename "$bin")=$v"
        done
        t=$(GLIBC_TUNABLES=$tuned "$venv/bin/python" bench/torch_train.py --model "$model" \
            --batch "$batch" --threads 2 --steps "$steps" | step)
        line="$line torch=$t"
        for v in "${ours[@]}"; do
            line="$line $(python3 -c "print(f'{$v / $t:.3f}')")"
        done
        echo "$line"
    done
done
