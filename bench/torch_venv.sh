# Sourced by the bench wrappers: sets $venv to a Python venv with PyTorch from PyPI,
# $TORCH_VENV if set, else .venv-bench (created on first use).
venv=${TORCH_VENV:-.venv-bench}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu \
        || "$venv/bin/pip" install --quiet torch
fi
# PyTorch runs with the glibc malloc settings `bnlab` sets for itself (src/alloc.rs): large
# blocks from the heap, never trimmed, grown 64 MiB past each request, one arena, so neither
# side pays page faults for fresh activations. (Until 2026-12-06 only the first two; PyTorch's
# steps measured the same with and without the other two.)
tuned=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:glibc.malloc.top_pad=67108864:glibc.malloc.arena_max=1
