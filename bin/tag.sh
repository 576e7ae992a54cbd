#!/bin/sh
# charframe tag: drop dataset folders here: writes a caption .txt beside every coded image
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" tag "$@"
fi
exec charframe tag "$@"
