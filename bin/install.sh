#!/usr/bin/env bash
# Create ./.venv with everything charframe needs (idempotent: a second run only checks).
# TORCH_SPEC overrides the torch pin, e.g. TORCH_SPEC="torch torchvision" for your own CUDA build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
python -m pip install -q -e ".[test]"
echo "charframe installed in $root/.venv (activate: . .venv/bin/activate)"
