#!/bin/sh
# charframe prepare: drop dataset folders here: captions, then the dataset TOML of each
# Generated from charframe/data/launchers.toml by `python -m charframe.launchers`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" prepare "$@"
fi
exec charframe prepare "$@"
