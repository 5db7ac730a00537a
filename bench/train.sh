#!/usr/bin/env bash
# Runs `bnlab bench train` and bench/torch_train.py on the same model and batch, one after the
# other, and prints both and the ratio of their whole-step images/s.
#   bench/train.sh [MODEL] [BATCH]          (MODEL: resnet20 | resnet18-cifar)
# PyTorch comes from a venv: $TORCH_VENV (default .venv-bench), created with `pip install torch`
# from PyPI when missing.
set -euo pipefail
model=${1:-resnet20}
batch=${2:-128}
cd "$(dirname "$0")/.."
. bench/torch_venv.sh
# BNLAB_BIN names another build to time (e.g. a copy of an older one); else this checkout's
bin=${BNLAB_BIN:-./target/release/bnlab}
[ -n "${BNLAB_BIN:-}" ] || cargo build --release --quiet -p bnlab
ours=$("$bin" bench train --model "$model" --batch "$batch")
theirs=$(GLIBC_TUNABLES=$tuned "$venv/bin/python" bench/torch_train.py --model "$model" --batch "$batch" --threads 2)
echo "$ours"
echo "$theirs"
a=$(echo "$ours" | awk '/^step/ {print $2}')
b=$(echo "$theirs" | awk '/^step/ {print $2}')
echo "bnlab/torch whole-step ratio: $(python3 -c "print(f'{$a / $b:.3f}')")"
