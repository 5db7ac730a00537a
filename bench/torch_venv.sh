# Sourced by the bench wrappers: sets $venv to a Python venv with PyTorch from PyPI,
# $TORCH_VENV if set, else .venv-bench (created on first use).
venv=${TORCH_VENV:-.venv-bench}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu \
        || "$venv/bin/pip" install --quiet torch
fi
