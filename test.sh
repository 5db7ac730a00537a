#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi
# The real Fashion-MNIST (Debian's MIT-licensed package) lets the data tests read all 70,000
# images; without it those tests say why they skipped. Open MPI (and libclang, for the mpi
# crate's bindings) builds the MPI transport, whose tests run `mpirun -np 2`.
FMNIST=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
NEED=""
[ -f "$FMNIST" ] || NEED="$NEED dataset-fashion-mnist"
command -v mpirun >/dev/null && command -v mpicc >/dev/null || NEED="$NEED libopenmpi-dev openmpi-bin"
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || NEED="$NEED libclang-dev"
if [ -n "$NEED" ] && command -v apt-get >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $NEED; } ||
        echo "note: could not install$NEED; the tests that need them skip" >&2
fi
FEATURES=""
if command -v mpirun >/dev/null && command -v mpicc >/dev/null; then
    FEATURES="--features bnlab/mpi"
else
    echo "note: no Open MPI; the MPI transport's tests are not built" >&2
fi
# no incremental cache: a CI build is built once, and the cache costs gigabytes of disk
export CARGO_INCREMENTAL=0
cargo test --workspace --locked $FEATURES
