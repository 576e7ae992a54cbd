#!/bin/sh
# charframe merge --preset FACE: drop LoRA files here: block-weight merge with the FACE preset
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" merge --preset FACE "$@"
fi
exec charframe merge --preset FACE "$@"
