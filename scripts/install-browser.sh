#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian packages, for the console's browser
# test (tests/e2e/test_console_browser.py). Idempotent: when both are installed it does nothing
# (no network at all); `apt-get update` runs only when a package is missing.
#
#   scripts/install-browser.sh          # as root (or with sudo available)
#
# Tools that download a browser of their own (playwright install, selenium-manager) cannot work
# on machines without general internet access; Debian's `chromium` + `chromium-driver` can.
set -euo pipefail

PACKAGES=(chromium chromium-driver)

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
  echo "install-browser: chromium and chromium-driver already installed" \
       "($(chromium --version 2>/dev/null || echo '?'))"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "install-browser: need root to apt-get install ${missing[*]}" >&2
    exit 1
  }
  SUDO=(sudo)
fi

apt() {
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get "$@"
}

echo "install-browser: apt-get update (missing: ${missing[*]})"
apt update -qq
echo "install-browser: apt-get install ${missing[*]}"
apt install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null

for bin in chromium chromedriver; do
  command -v "$bin" >/dev/null 2>&1 || { echo "install-browser: $bin not found after install" >&2; exit 1; }
done
echo "install-browser: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | head -1)"
