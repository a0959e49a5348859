#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser tests, when it is missing.
#
# Run it (bash .ci/chromium.sh) or source it. The tests drive /usr/bin/chromium
# through Playwright (the test extra); Playwright downloads no browser of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "== chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
else
    echo "== installing chromium (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    echo "== chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
fi
