#!/usr/bin/env bash
# Runs `bnlab bench norm` and bench/torch_norm.py one after the other (same shapes, 2 threads)
# and prints both, then the forward+backward time ratios at (128, 64, 32, 32).
#   bench/norm.sh [--quick]
# PyTorch comes from $TORCH_VENV (default .venv-bench), created from PyPI when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/torch_venv.sh
# BNLAB_BIN names another build to time (e.g. a copy of an older one); else this checkout's
bin=${BNLAB_BIN:-./target/release/bnlab}
[ -n "${BNLAB_BIN:-}" ] || cargo build --release --quiet -p bnlab
ours=$("$bin" bench norm "$@")
theirs=$(GLIBC_TUNABLES=$tuned "$venv/bin/python" bench/torch_norm.py --threads 2 "$@")
echo "$ours"
echo "$theirs"
# bnlab's rows end "fwd+bwd-ms GB/s share % reads", so its fwd+bwd time is the 5th field from the end
pick() { echo "$1" | awk -v name="$2" 'index($0, name) == 1 && /128.*64.*32.*32/ && !/backward at/ {print $(NF-'"$3"')}'; }
bn=$(pick "$ours" "plain BN" 4)
gn=$(pick "$ours" "GroupNorm 32" 4)
ghost=$(pick "$ours" "Ghost 32 contiguous" 4)
t_bn=$(pick "$theirs" "BatchNorm2d" 0)
t_gn=$(pick "$theirs" "GroupNorm 32" 0)
t_ghost=$(pick "$theirs" "Ghost 32 chunk-and-cat" 0)
python3 - "$bn" "$t_bn" "$gn" "$t_gn" "$ghost" "$t_ghost" <<'PY'
import sys
v = [float(x) for x in sys.argv[1:]]
for name, ours, theirs in [("BN", v[0], v[1]), ("GroupNorm 32", v[2], v[3]), ("Ghost 32", v[4], v[5])]:
    print(f"{name} fwd+bwd at (128, 64, 32, 32): PyTorch time / bnlab time = {theirs / ours:.3f}")
PY
