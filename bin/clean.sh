#!/bin/sh
# charframe clean: drop character files (Characters/krnk.toml) or a project folder here: removes the backgrounds of the generated face candidates
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" clean "$@"
fi
exec charframe clean "$@"
