#!/bin/sh
# charframe run: drop character files (Characters/krnk.toml) or group files here: runs their stages, only what is stale
# Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
self=$0
while [ -L "$self" ]; do  # a link on the desktop: find the real bin/ folder
  link=$(readlink "$self")
  case $link in /*) self=$link ;; *) self=$(dirname -- "$self")/$link ;; esac
done
repo=$(CDPATH= cd -- "$(dirname -- "$self")/.." && pwd)
for exe in "$repo/.venv/bin/charframe" "$repo/venv/bin/charframe" \
    ${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/charframe"} ${CONDA_PREFIX:+"$CONDA_PREFIX/bin/charframe"}; do
  if [ -x "$exe" ]; then exec "$exe" run "$@"; fi
done
if command -v charframe >/dev/null 2>&1; then exec charframe run "$@"; fi
if [ -x "$HOME/.local/bin/charframe" ]; then exec "$HOME/.local/bin/charframe" run "$@"; fi
{
  echo "charframe run: charframe is not installed where this launcher looks. Tried:"
  echo "  $repo/.venv/bin/charframe"
  echo "  $repo/venv/bin/charframe"
  echo "  the active virtual environment (VIRTUAL_ENV=${VIRTUAL_ENV:-not set})"
  echo "  the active conda environment (CONDA_PREFIX=${CONDA_PREFIX:-not set})"
  echo "  charframe on PATH ($PATH)"
  echo "  $HOME/.local/bin/charframe"
  echo "Install it: bash \"$repo/bin/install.sh\" (makes $repo/.venv), or activate the environment that has it."
} >&2
exit 127
