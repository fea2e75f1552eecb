#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, lint, type-check, test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k gate`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# The end-to-end tests put a real nginx (Debian package) in front of the demo origin.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "test.sh: installing nginx-light (Debian) for the end-to-end tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
fi

# Browser tests (HAR files recorded by a real headless Chromium, and report.html opened in it,
# through Playwright for Python) use Debian's chromium; `playwright install` is never run.
if ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: installing chromium (Debian) for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

# The edge-suite end-to-end tests need a second proxy of a different make: HAProxy (Debian).
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    echo "test.sh: installing haproxy (Debian) for the edge-suite tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy
fi

# The gate server's e2e test has a real Prometheus (Debian package) scrape `flamingo serve`.
if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then
    echo "test.sh: installing prometheus (Debian) for the gate server's metrics test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

python3 -m ruff check flamingo tests bench
python3 -m ruff format --check flamingo tests bench
python3 -m mypy flamingo
python3 -m pytest -n 2 -q -p no:cacheprovider "$@"
