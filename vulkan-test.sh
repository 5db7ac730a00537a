#!/usr/bin/env bash
# The GPU code path on a CPU: Mesa's lavapipe (a Vulkan driver that runs on the CPU) from
# Debian's bookworm-backports (Mesa 25; bookworm's own Mesa 22.3 crashes in
# vkCreateComputePipelines), a `--features vulkan` build, the layer's reference suite on
# the Vulkan device, and a two-epoch `bnlab run --device vulkan-cpu` against `--device flex`.
#
# Not part of ./test.sh: the Vulkan build alone takes about 20 minutes on 2 cores.
# Usage: ./vulkan-test.sh [vulkan-cpu|vulkan]   (vulkan: the first discrete GPU instead)
set -euo pipefail
cd "$(dirname "$0")"
DEVICE=${1:-vulkan-cpu}
TARGET=target/vulkan

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
mesa_version() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true; }
if [ "$DEVICE" = vulkan-cpu ] && ! mesa_version | grep -q '^25'; then
    if ! command -v apt-get >/dev/null; then
        echo "lavapipe from Mesa 25 is needed; without apt-get, install it by hand" >&2
        exit 1
    fi
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
    fi
    echo "installing Mesa 25's lavapipe from bookworm-backports" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports \
        mesa-vulkan-drivers libvulkan1 vulkan-tools >/dev/null
fi
if command -v vulkaninfo >/dev/null; then
    vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverInfo|apiVersion' | sed 's/^/vulkan: /' || true
fi

export BNLAB_TEST_DEVICE=$DEVICE
echo "== the layer's reference suite on $DEVICE" >&2
cargo test --release --target-dir "$TARGET" -p bnlab-norm --features vulkan
echo "== a two-epoch run on $DEVICE against flex" >&2
cargo test --release --target-dir "$TARGET" -p bnlab --features vulkan --test vulkan -- --nocapture
echo "vulkan-test: passed on $DEVICE"
