#!/bin/sh
# charframe merge --preset BODY: drop LoRA files here: block-weight merge with the BODY preset
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" merge --preset BODY "$@"
fi
exec charframe merge --preset BODY "$@"
