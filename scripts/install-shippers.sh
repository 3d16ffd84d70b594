#!/usr/bin/env bash
# Install the real log shippers the receiver tests use as clients, from Debian packages:
# rsyslog (omfwd over TCP/UDP; tests/component/test_syslog_clients.py) and util-linux `logger`
# (bsdutils). Idempotent: when everything is installed it does nothing (no network at all);
# `apt-get update` runs only when a package is missing.
#
#   scripts/install-shippers.sh          # as root (or with sudo available)
#
# apt does not start daemons on these machines (policy-rc.d), and the tests never use the
# system rsyslog: each test runs a private `rsyslogd -n -f CONF -i PIDFILE` and stops it by pid.
set -euo pipefail

PACKAGES=(rsyslog bsdutils)

installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [[ "$status" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "install-shippers: rsyslog and logger already installed" \
       "($(rsyslogd -v 2>/dev/null | head -1 || echo '?'))"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "install-shippers: need root to apt-get install ${missing[*]}" >&2
    exit 1
  }
  SUDO=(sudo)
fi

apt() {
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get "$@"
}

echo "install-shippers: apt-get update (missing: ${missing[*]})"
apt update -qq
echo "install-shippers: apt-get install ${missing[*]}"
apt install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null

for bin in rsyslogd logger; do
  command -v "$bin" >/dev/null 2>&1 || { echo "install-shippers: $bin not found after install" >&2; exit 1; }
done
echo "install-shippers: $(rsyslogd -v 2>/dev/null | head -1), $(logger --version 2>/dev/null | head -1)"
