#!/usr/bin/env bash
# Refresh constraints.txt on purpose: re-resolve every dependency to the newest release pyproject.toml's ranges
# allow (plus the caps in bin/lock-holds.txt), install that into a throw-away venv, run the whole test suite
# there, and rewrite constraints.txt only if every test passes. Review the diff, then commit it.
#   bash bin/lock.sh                  # torch stays at TORCH_SPEC (default: the locally cached 2.14.1)
#   TORCH_SPEC="torch torchvision" bash bin/lock.sh   # also move torch to the newest release
#   KEEP_PINS=1 bash bin/lock.sh      # add a new dependency only: every package already in constraints.txt keeps its
#                                     # version, the new ones (and what they need) resolve to their newest release
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/charframe-lock.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
holds=(-c bin/lock-holds.txt)
if [ -n "${KEEP_PINS:-}" ] && [ -f constraints.txt ]; then holds+=(-c constraints.txt); fi
"$py" -m venv "$tmp/venv"
pyv="$tmp/venv/bin/python"
echo "resolving in $tmp/venv ..."
"$pyv" -m pip install -q --upgrade "${holds[@]}" pip setuptools wheel
# shellcheck disable=SC2086
"$pyv" -m pip install -q "${holds[@]}" ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
"$pyv" -m pip install -q "${holds[@]}" -e ".[test]"
"$pyv" -m pip install -q "${holds[@]}" --no-deps -r bin/nodeps.txt   # the reasons: bin/nodeps.txt
echo "running the tests against the new set ..."
"$pyv" -m pytest -q -p no:cacheprovider
{
  echo "# Exact versions CI last passed with; bin/install.sh and .ci/run install only these."
  echo "# Regenerate on purpose with: bash bin/lock.sh   (re-resolves, runs the tests, rewrites this file)"
  echo "# Python $("$pyv" -c 'import platform; print(platform.python_version(), platform.machine(), platform.system())')"
  "$pyv" -m pip freeze --all --exclude-editable | grep -v -i -E '^(charframe)([=@ ]|$)' | LC_ALL=C sort -f
} > "$tmp/constraints.txt"
if [ -f constraints.txt ]; then diff -u constraints.txt "$tmp/constraints.txt" || true; fi
cp "$tmp/constraints.txt" constraints.txt.new && mv constraints.txt.new constraints.txt
echo "constraints.txt rewritten ($(grep -c '==' constraints.txt) pins); tests passed with exactly these versions"
