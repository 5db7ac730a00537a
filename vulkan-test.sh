#!/usr/bin/env bash
# The GPU code path on a CPU: Mesa's lavapipe (a Vulkan driver that runs on the CPU) from
# Debian's bookworm-backports (Mesa 25; bookworm's own Mesa 22.3 crashes in
# vkCreateComputePipelines), a `--features vulkan` build, then
#   1. a probe of single kernels (crates/bnlab-norm/examples/vulkan_probe.rs), each in its own
#      process: a driver crash names the first kernel it cannot take, and every kernel the
#      crashing one compiled is checked with spirv-val, which tells a fault in the SPIR-V that
#      CubeCL emits from one in the driver;
#   2. if every probe passes: the layer's reference suite on the Vulkan device, and a two-epoch
#      `bnlab run --device vulkan-cpu` against `--device flex` (crates/bnlab/tests/vulkan.rs).
#
# Not part of ./test.sh: the Vulkan build alone takes 20–40 minutes on 2 cores.
# Usage: ./vulkan-test.sh [vulkan-cpu|vulkan]   (vulkan: the first discrete GPU instead)
set -euo pipefail
cd "$(dirname "$0")"
DEVICE=${1:-vulkan-cpu}
TARGET=target/vulkan

case "$DEVICE" in
    vulkan-cpu | vulkan | vulkan:[0-9]*) ;;
    *) echo "usage: $0 [vulkan-cpu|vulkan[:N]]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
mesa_version() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true; }
PACKAGES=""
if [ "$DEVICE" = vulkan-cpu ] && ! mesa_version | grep -q '^2[5-9]'; then
    PACKAGES="mesa-vulkan-drivers libvulkan1 vulkan-tools"
fi
command -v spirv-val >/dev/null || PACKAGES="$PACKAGES spirv-tools"
if [ -n "$PACKAGES" ]; then
    if ! command -v apt-get >/dev/null; then
        echo "needs:$PACKAGES (Mesa 25 or later for lavapipe); without apt-get, install them by hand" >&2
        exit 1
    fi
    . /etc/os-release
    RELEASE=()
    # bookworm's own Mesa is 22.3: lavapipe comes from its backports
    if [ "${VERSION_CODENAME:-}" = bookworm ] && [ "$DEVICE" = vulkan-cpu ]; then
        if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d; then
            echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
        fi
        RELEASE=(-t bookworm-backports)
    fi
    echo "installing:$PACKAGES" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${RELEASE[@]}" $PACKAGES >/dev/null
fi
if command -v vulkaninfo >/dev/null; then
    vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverInfo|apiVersion' | sed 's/^/vulkan: /' || true
fi

# CubeCL 0.11.3 declares workgroup shared memory with its two types swapped (a variable
# holding a pointer to the array) on drivers without VK_KHR_workgroup_memory_explicit_layout,
# lavapipe among them: invalid SPIR-V that lavapipe crashes on (BENCHMARKS.md, "Vulkan on a
# CPU"). The build takes cubecl-spirv from the registry with
# bench/vulkan/cubecl-spirv-shared-memory.patch applied, through a [patch] given on the
# command line; Cargo.lock is restored afterwards.
WORK=$(mktemp -d)
cp Cargo.lock "$WORK/Cargo.lock"
trap 'cp "$WORK/Cargo.lock" Cargo.lock; rm -rf "$WORK"' EXIT
SPIRV_VERSION=$(awk '/^name = "cubecl-spirv"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
cargo fetch -q
SPIRV_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cubecl-spirv-"$SPIRV_VERSION" | head -1)
SPIRV_PATCHED=$TARGET/patched/cubecl-spirv
if ! cmp -s bench/vulkan/cubecl-spirv-shared-memory.patch "$SPIRV_PATCHED.patch"; then
    rm -rf "$SPIRV_PATCHED"
    mkdir -p "$(dirname "$SPIRV_PATCHED")"
    cp -r "$SPIRV_SRC" "$SPIRV_PATCHED"
    patch -s -d "$SPIRV_PATCHED" -p1 <bench/vulkan/cubecl-spirv-shared-memory.patch
    cp bench/vulkan/cubecl-spirv-shared-memory.patch "$SPIRV_PATCHED.patch"
fi
vcargo() {
    local command=$1
    shift
    cargo "$command" --release --target-dir "$TARGET" \
        --config "patch.crates-io.cubecl-spirv.path=\"$SPIRV_PATCHED\"" "$@"
}

echo "== probe: one kernel per process on $DEVICE" >&2
vcargo build -p bnlab-norm --features vulkan --example vulkan_probe
PROBE=$TARGET/release/examples/vulkan_probe
FAILED=""
OPS=$("$PROBE" list)
[ -n "$OPS" ] || { echo "the probe lists no operations" >&2; exit 1; }
for op in $OPS; do
    status=0
    CUBECL_DEBUG_LOG="$WORK/$op.log" "$PROBE" "$DEVICE" "$op" >"$WORK/$op.out" 2>&1 || status=$?
    if [ $status -eq 0 ]; then
        echo "  $op: ok"
        continue
    fi
    if [ $status -eq 3 ]; then
        echo "  $op: not on this device ($(tail -1 "$WORK/$op.out"))"
        continue
    fi
    FAILED="$FAILED $op"
    echo "  $op: FAILED (exit status $status$([ $status -eq 139 ] && echo ', segmentation fault'))"
    # every kernel it compiled, through spirv-val
    awk -v dir="$WORK" -v op="$op" '
        /^name: / { name = $2 }
        /^```spirv/ { n++; file = sprintf("%s/%s-%d.spvasm", dir, op, n); names[file] = name; next }
        /^```/ { file = ""; next }
        file != "" { print > file }
        END { for (f in names) print f, names[f] > (dir "/" op ".kernels") }
    ' "$WORK/$op.log" 2>/dev/null || true
    [ -f "$WORK/$op.kernels" ] || continue
    while read -r file name; do
        if ! spirv-as --target-env vulkan1.3 "$file" -o "$file.spv" 2>"$file.as"; then
            echo "    could not assemble the SPIR-V of $name to check it:"
            sed 's/^/      /' "$file.as" | head -3
        elif ! spirv-val --target-env vulkan1.3 "$file.spv" >"$file.val" 2>&1; then
            echo "    invalid SPIR-V from CubeCL in $name:"
            sed 's/^/      /' "$file.val" | head -3
        fi
    done <"$WORK/$op.kernels"
done
if [ -n "$FAILED" ]; then
    echo "vulkan-test: kernels failed on $DEVICE:$FAILED (see BENCHMARKS.md, \"Vulkan on a CPU\")" >&2
    exit 1
fi

export BNLAB_TEST_DEVICE=$DEVICE
echo "== the layer's reference suite on $DEVICE" >&2
vcargo test -p bnlab-norm --features vulkan
echo "== no reads back to the host on $DEVICE" >&2
vcargo test -p bnlab-norm --features vulkan --test host_reads -- --ignored
echo "== a two-epoch run on $DEVICE against flex" >&2
vcargo test -p bnlab --features vulkan --test vulkan -- --ignored --nocapture
echo "vulkan-test: passed on $DEVICE"
