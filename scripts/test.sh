#!/usr/bin/env bash
# The whole test suite: pure units, scenarios and (as root) namespace tests against the real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test-tools
bash scripts/fetch-ietf-mibs.sh >/dev/null
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
