#!/usr/bin/env bash
# Recounts, in PyTorch, the test accuracies of seed 1 of each pool arm (see torch_forward.py),
# and of WJ Fig. 4's two arms when its sweep folder is given too.
# Installs torch, safetensors and cbor2 in .venv-bench (bench/torch_venv.sh) where missing.
#     repro/crosscheck/run.sh POOL_OUT [FIG4_OUT]    (from the repo root)
set -euo pipefail
out=$1
. bench/torch_venv.sh
"$venv/bin/python" -c "import safetensors, cbor2" 2>/dev/null \
    || "$venv/bin/pip" install --quiet safetensors cbor2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in nbs128-s1 nbs32-s1 nbs8-s1 nbs2-s1 nbs2-frozen-s1; do
    target/release/bnlab export "$out/runs/$run" --out "$tmp/$run.safetensors" >/dev/null
    schemes=(--scheme population)
    [ "$run" = nbs128-s1 ] && schemes+=(--scheme adapt-contrast-3-source)
    "$venv/bin/python" repro/crosscheck/torch_forward.py --root data/fmnist-10k \
        --result "$out/results/$run.json" --weights "$tmp/$run.safetensors" "${schemes[@]}"
done
# Davis & Frank's arms have BN input normalization, which has no PyTorch layout: read bnlab's
# own model file instead of an export
for run in df-base-lr0.1-s1 df-gamma-lr0.1-s1 df-base-lr0.01-s1 df-gamma-lr0.01-s1; do
    "$venv/bin/python" repro/crosscheck/torch_forward.py --root data/fmnist-10k \
        --result "$out/results/$run.json" --bpk "$out/runs/$run/model.bpk" --scheme population
done
# WJ Fig. 4 trains on the full Fashion-MNIST files (2,000 images per class), not the pool's subset
if [ -n "${2:-}" ]; then
    for run in bs128-s1 bs1024-s1; do
        target/release/bnlab export "$2/runs/$run" --out "$tmp/$run.safetensors" >/dev/null
        "$venv/bin/python" repro/crosscheck/torch_forward.py --root /usr/share/datasets/fashion-mnist \
            --result "$2/results/$run.json" --weights "$tmp/$run.safetensors" --scheme population
    done
fi
