#!/usr/bin/env bash
# The demo: installs everything, starts SeaweedFS on loopback, runs the example DAG
# s3_publish_fetch_roundtrip through Airflow, prints the PublishedResult and proves the round trip.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh highest libarchive
exec .venv/bin/python scripts/demo.py "$@"
