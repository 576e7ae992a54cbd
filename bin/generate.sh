#!/bin/sh
# charframe generate: drop character files or a project folder here: generates the face set candidates
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" generate "$@"
fi
exec charframe generate "$@"
