#!/usr/bin/env bash
# Set up with every extra and run the whole test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,tf,ray
# The HTML report test renders the page in Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the HTML render test will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
