#!/usr/bin/env bash
# Keeps one core busy (a spinning process at normal priority) for the given seconds,
# default 3600, or until interrupted: run the suite beside it to see that it holds on a
# busy machine, e.g.  bash scripts/busy-core.sh 1800 & bash scripts/test.sh; kill %1
set -euo pipefail
seconds="${1:-3600}"
case "$seconds" in ''|*[!0-9]*) echo "busy-core: seconds must be a whole number" >&2; exit 2 ;; esac
echo "busy-core: spinning one core for ${seconds} s (pid $$)"
exec timeout "$seconds" python3 -c 'while True: pass'
