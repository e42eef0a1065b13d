#!/usr/bin/env bash
# The lab demo: builds a small internet in network namespaces, runs the engine in the router
# namespace and plays a scripted outage (blackhole, failback, carrier loss). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/linkwatch lab demo "$@"
