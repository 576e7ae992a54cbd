#!/bin/sh
# charframe rerun --all: drop the project folder here: reruns what changed for every character, then a summary table
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" rerun --all "$@"
fi
exec charframe rerun --all "$@"
