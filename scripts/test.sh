#!/usr/bin/env bash
# Sets up (system packages, .venv from the lock) and runs the lint and type gates, then
# the whole test suite. Extra arguments go to pytest, e.g. one tier:
#   bash scripts/test.sh -m "not slow and not browser"
# --latest runs the same in .venv-latest, built from the newest versions the ranges allow.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
setup_args=(--test)
if [ "${1:-}" = "--latest" ]; then
  shift
  venv=.venv-latest
  setup_args+=(--latest)
fi
bash scripts/setup.sh "${setup_args[@]}"

echo "test: ruff"
"$venv/bin/ruff" check .
echo "test: mypy"
"$venv/bin/mypy"
exec "$venv/bin/python" -m pytest -q "$@"
