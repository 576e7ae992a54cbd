#!/bin/sh
# charframe tensorboard: drop the project folder here: TensorBoard on LoRALog (losses and preview grids)
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" tensorboard "$@"
fi
exec charframe tensorboard "$@"
