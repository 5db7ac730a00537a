#!/usr/bin/env bash
# Recounts, in PyTorch, the test accuracies of seed 1 of each pool arm (see torch_forward.py),
# and of WJ Fig. 4's and Fig. 8's arms when their sweep folders are given too; '-' skips a
# folder.
# Installs torch, numpy, safetensors and cbor2 in .venv-bench (bench/torch_venv.sh) where missing.
#     repro/crosscheck/run.sh POOL_OUT|- [FIG4_OUT|- [FIG8_OUT]]    (from the repo root)
set -euo pipefail
pool=${1:--} fig4=${2:--} fig8=${3:--}
. bench/torch_venv.sh
"$venv/bin/python" -c "import numpy, safetensors, cbor2" 2>/dev/null \
    || "$venv/bin/pip" install --quiet numpy safetensors cbor2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# recount SWEEP RUN ROOT SCHEME...: run RUN of SWEEP exported and recounted on ROOT's test set
recount() {
    local sweep=$1 run=$2 root=$3
    shift 3
    target/release/bnlab export "$sweep/runs/$run" --out "$tmp/$run.safetensors" >/dev/null
    "$venv/bin/python" repro/crosscheck/torch_forward.py --root "$root" \
        --result "$sweep/results/$run.json" --weights "$tmp/$run.safetensors" \
        $(printf -- '--scheme %s ' "$@")
}
if [ "$pool" != - ]; then
    recount "$pool" nbs128-s1 data/fmnist-10k population adapt-contrast-3-source
    for run in nbs32-s1 nbs8-s1 nbs2-s1 nbs2-frozen-s1; do
        recount "$pool" $run data/fmnist-10k population
    done
    # Davis & Frank's arms have BN input normalization, which has no PyTorch layout: read
    # bnlab's own model file instead of an export
    for run in df-base-lr0.1-s1 df-gamma-lr0.1-s1 df-base-lr0.01-s1 df-gamma-lr0.01-s1; do
        "$venv/bin/python" repro/crosscheck/torch_forward.py --root data/fmnist-10k \
            --result "$pool/results/$run.json" --bpk "$pool/runs/$run/model.bpk" --scheme population
    done
fi
# WJ Fig. 4 and Fig. 8 train on the full Fashion-MNIST files (a subset of them for Fig. 8), not
# the pool's subset; their test set is the full 10,000 images
full=/usr/share/datasets/fashion-mnist
if [ "$fig4" != - ]; then
    for run in bs128-s1 bs1024-s1; do recount "$fig4" $run $full population; done
fi
if [ "$fig8" != - ]; then
    for run in per-worker-s1 syncbn-s1 shuffle-s1 ghost-pattern-s1 class-distinct-ghosts-s1; do
        recount "$fig8" $run $full population
    done
fi
