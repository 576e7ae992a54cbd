#!/bin/sh
# charframe watch --train: drop the project folder here: prepares changed datasets and runs changed characters until closed
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" watch --train "$@"
fi
exec charframe watch --train "$@"
