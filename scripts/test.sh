#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, lint, type-check, test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k gate`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# Real third-party servers the end-to-end tests start on 127.0.0.1, all Debian packages, installed
# after one apt-get update when missing (`playwright install` is never run: the browser is Debian's):
#   nginx      - a real proxy in front of the demo origin (and one side of the edge suite)
#   chromium   - HAR files recorded by a real headless browser; report.html opened in it
#   haproxy    - a second proxy of another make for the edge suite
#   prometheus - a real scraper of `flamingo serve`'s /metrics
with=() without=()  # installed with / without their recommended packages
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have nginx || with+=(nginx-light)
have chromium || with+=(chromium)
have haproxy || without+=(haproxy)
have prometheus || without+=(prometheus)
if [ "${#with[@]}" -gt 0 ] || [ "${#without[@]}" -gt 0 ]; then
    echo "test.sh: installing ${with[*]} ${without[*]} (Debian) for the end-to-end tests"
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    [ "${#with[@]}" -eq 0 ] || apt-get install -y -qq "${with[@]}"
    [ "${#without[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends "${without[@]}"
fi

python3 -m ruff check flamingo tests bench
python3 -m ruff format --check flamingo tests bench
python3 -m mypy flamingo
python3 -m pytest -n 2 -q -p no:cacheprovider "$@"
