#!/usr/bin/env bash
# Create ./.venv with exactly the versions in constraints.txt (the set CI last passed with), idempotent: a second
# run only checks. TORCH_SPEC installs another torch build (e.g. TORCH_SPEC="torch torchvision" for the one
# matching your CUDA); the torch family is then left out of the lock, everything else stays pinned.
# Refresh the pins on purpose with bin/lock.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
lock="$root/constraints.txt"
[ -f "$lock" ] || { echo "error: $lock is missing (restore it with git, or create it with bash bin/lock.sh)" >&2; exit 2; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
. .venv/bin/activate
if [ -n "${TORCH_SPEC:-}" ]; then
  grep -v -i -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==' "$lock" > .venv/constraints-used.txt
  lock="$root/.venv/constraints-used.txt"
fi
python -m pip install -q -c "$lock" pip setuptools wheel
# shellcheck disable=SC2086
python -m pip install -q -c "$lock" ${TORCH_SPEC:-torch torchvision}
# No build isolation: the build backend is the pinned setuptools above, not whatever is newest today.
PYTHONWARNINGS="ignore:Editable installation" python -m pip install -q -c "$lock" --no-build-isolation -e ".[test]"
# Packages whose declared pins conflict with the lock, without those pins (the reasons: bin/nodeps.txt)
python -m pip install -q -c "$lock" --no-deps -r bin/nodeps.txt
echo "charframe installed in $root/.venv with the versions of constraints.txt (activate: . .venv/bin/activate)"
