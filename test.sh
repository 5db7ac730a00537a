#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
#
# Optional parts, each installed with apt-get where it is missing:
# - the real Fashion-MNIST (Debian's MIT-licensed `dataset-fashion-mnist`): the data tests read
#   all 70,000 images; without it they say why they skip;
# - the MPI transport: Open MPI (`mpicc`, `mpirun`) and a real libclang, which bindgen loads to
#   write the mpi crate's bindings. With both, the `mpi` feature is built and its tests run
#   under `mpirun -np 2`; without either, the feature is left out and this script says why.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

FMNIST=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

have_fmnist() { [ -f "$FMNIST" ]; }
have_openmpi() { command -v mpirun >/dev/null && command -v mpicc >/dev/null; }
# The library bindgen (clang-sys) loads: libclang.so, libclang.so.N or libclang-N.so(.M), where
# $LIBCLANG_PATH points or in LLVM's and the multiarch folders. libclang-cpp.so.N (the C++
# interface, shipped on fresh images for other reasons) is a different library and does not count.
have_libclang() {
    local dir lib
    for dir in ${LIBCLANG_PATH:-} /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib; do
        for lib in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-[0-9]*.so*; do
            [ -e "$lib" ] && return 0
        done
    done
    return 1
}

NEED=""
have_fmnist || NEED="$NEED dataset-fashion-mnist"
have_openmpi || NEED="$NEED libopenmpi-dev openmpi-bin"
have_libclang || NEED="$NEED libclang-dev"
if [ -n "$NEED" ]; then
    if command -v apt-get >/dev/null; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
        echo "installing:$NEED" >&2
        LOG=$(mktemp)
        if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $NEED; } >"$LOG" 2>&1; then
            echo "note: apt-get could not install$NEED:" >&2
            tail -n 5 "$LOG" | sed 's/^/  apt-get: /' >&2
        fi
        rm -f "$LOG"
    else
        echo "note: no apt-get to install$NEED" >&2
    fi
fi

FEATURES=()
PARTS=""
if have_fmnist; then PARTS="real Fashion-MNIST: on"; else PARTS="real Fashion-MNIST: off (its tests skip)"; fi
if have_openmpi && have_libclang; then
    FEATURES=(--features bnlab/mpi)
    PARTS="$PARTS; MPI: on (mpirun -np 2)"
elif have_openmpi; then
    PARTS="$PARTS; MPI: off (no libclang for bindgen; install libclang-dev)"
else
    PARTS="$PARTS; MPI: off (no mpicc/mpirun; install libopenmpi-dev openmpi-bin)"
fi
echo "optional parts: $PARTS"

# no incremental cache: a CI build is built once, and the cache costs gigabytes of disk
export CARGO_INCREMENTAL=0
cargo test --workspace --locked "${FEATURES[@]}"
