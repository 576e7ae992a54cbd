#!/bin/sh
# charframe compress: drop LoRA files here: SVD-compresses each (suffix -SvR16)
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" compress "$@"
fi
exec charframe compress "$@"
