#!/bin/sh
# charframe run: drop character files (Characters/krnk.toml) or group files here: runs their stages, only what is stale
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
venv_charframe="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/charframe"
if [ -x "$venv_charframe" ]; then
  exec "$venv_charframe" run "$@"
fi
exec charframe run "$@"
