#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian packages, for the console's browser
# test (tests/e2e/test_console_browser.py). Idempotent (see apt-ensure.sh).
#
# Tools that download a browser of their own (playwright install, selenium-manager) cannot work
# on machines without general internet access; Debian's `chromium` + `chromium-driver` can.
set -euo pipefail
exec "$(dirname "$0")/apt-ensure.sh" install-browser chromium chromium-driver -- chromium chromedriver
