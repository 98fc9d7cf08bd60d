#!/usr/bin/env bash
# Install a headless browser for the web player's test: Debian's own `chromium` and
# `chromium-driver` packages (browser downloads from anywhere else are not reachable
# here). Idempotent: does nothing when both are already installed. Run as root.
# Selenium itself comes from the project venv (requirements-dev.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$here/lib.sh"

have() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null
}

if have; then
  log "browser: chromium and chromedriver already installed"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "browser: installing chromium needs root (apt-get)"
log "browser: installing chromium chromium-driver"
apt-get update -q >/dev/null || log "browser: apt-get update reported errors; trying the install anyway"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  chromium chromium-driver >/dev/null
have || die "browser: chromium or chromedriver still missing after the install"
log "browser: $(chromium --version 2>/dev/null || echo chromium) / $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
