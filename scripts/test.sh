#!/usr/bin/env bash
# The test command of the README and of CI: install everything the tests need, then run them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --references
# Headless Chromium for the search-page test (Debian packages; skipped with a reason without them).
if ! [ -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "chromium could not be installed: the search-page test will be skipped"
fi
exec .venv/bin/python -m pytest tests "$@"
