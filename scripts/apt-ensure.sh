#!/usr/bin/env bash
# Ensure Debian packages are installed, idempotently: when all are installed it does nothing (no
# network at all); `apt-get update` runs only when a package is missing. Used by the test-tool
# installers (install-browser.sh, install-shippers.sh).
#
#   scripts/apt-ensure.sh LABEL PKG... -- BIN...    # as root, or with sudo available
#
# After installing, every BIN must be on PATH (or in /usr/sbin), or it fails.
set -euo pipefail

label=$1; shift
packages=(); bins=()
while (($#)) && [[ $1 != -- ]]; do packages+=("$1"); shift; done
(($#)) && shift
bins=("$@")

installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [[ "$status" == "install ok installed" ]]
}

missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "$label: need root to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  apt() { DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get "$@"; }
  echo "$label: apt-get update (missing: ${missing[*]})"
  apt update -qq
  echo "$label: apt-get install ${missing[*]}"
  apt install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
fi

for bin in "${bins[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] \
    || { echo "$label: $bin not found after install" >&2; exit 1; }
done
echo "$label: ${packages[*]} installed"
