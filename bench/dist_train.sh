#!/usr/bin/env bash
# Step time of a CIFAR ResNet-20 at batch 128 with K = 2 MPI processes (one core each):
# per-worker BN, SyncBN and Shuffle BN, then one process on both cores for reference.
# Needs `cargo build --release -p bnlab --features mpi` and Open MPI.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/bnlab
STEPS=${STEPS:-10}
for sync in worker all shuffle; do
    RAYON_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe -np 2 -x RAYON_NUM_THREADS \
        "$BIN" bench train --model resnet20 --batch 128 --steps "$STEPS" --distributed mpi --sync "$sync"
done
"$BIN" bench train --model resnet20 --batch 128 --steps "$STEPS"
