#!/bin/sh
# charframe toml: drop dataset folders here: writes the sd-scripts dataset TOML of each
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" toml "$@"
fi
exec charframe toml "$@"
