#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (unit, SeaweedFS, real Airflow DAG runs).
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k fetch
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check airflow_s3_publisher tests tools dags_examples scripts benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
