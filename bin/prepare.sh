#!/bin/sh
# charframe prepare: drop dataset folders here: captions, then the dataset TOML of each
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" prepare "$@"
fi
exec charframe prepare "$@"
