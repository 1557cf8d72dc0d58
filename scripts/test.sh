#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (unit, SeaweedFS, real Airflow DAG runs), once on each
# locked environment (see scripts/setup.sh):
#   highest  .venv         requirements/lock.txt         Python 3.13, the newest supported Airflow and amazon provider
#   lowest   .venv-lowest  requirements/lock-lowest.txt  Python 3.11, the declared lower bounds (requirements/lowest.in)
# ruff and mypy run once, from .venv. Both pytest runs always run; the script fails if either fails.
#
# Extra arguments go to pytest (to each run), e.g. ./scripts/test.sh -k fetch
# S3PUB_ENVS picks the runs, in order: "highest lowest" (the default), "highest" or "lowest", e.g.
#   S3PUB_ENVS=highest ./scripts/test.sh            the quick loop while developing
#   S3PUB_ENVS=lowest ./scripts/test.sh tests/test_cli.py
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a envs <<<"${S3PUB_ENVS:-highest lowest}"
[ "${#envs[@]}" -gt 0 ] || { echo "S3PUB_ENVS is empty (expected: highest, lowest or both)" >&2; exit 2; }
for env in "${envs[@]}"; do
    case "$env" in
        highest | lowest) ;;
        *) echo "S3PUB_ENVS: unknown environment '$env' (expected: highest, lowest)" >&2; exit 2 ;;
    esac
done

venv_of() { if [ "$1" = lowest ]; then echo .venv-lowest; else echo .venv; fi; }

# ruff and mypy always come from .venv (mypy checks against the newest Airflow), so it is set up too.
setup_envs=(highest)
for env in "${envs[@]}"; do [ "$env" = highest ] || setup_envs+=("$env"); done
./scripts/setup.sh "${setup_envs[@]}"

.venv/bin/ruff check airflow_s3_publisher tests tools dags_examples scripts benchmarks
.venv/bin/mypy

results=()
status=0
for env in "${envs[@]}"; do
    venv="$(venv_of "$env")"
    versions="$("$venv/bin/python" -c 'import platform; from importlib.metadata import version as v
print("Python", platform.python_version(), "/ Airflow", v("apache-airflow"),
      "/ amazon", v("apache-airflow-providers-amazon"))')"
    echo
    echo "== suite on $versions ($env: $venv) =="
    if "$venv/bin/python" -m pytest "$@"; then
        results+=("$env ($versions): passed")
    else
        rc=$?
        results+=("$env ($versions): FAILED (pytest exit $rc)")
        status=1
    fi
done

# On success pytest's own summary stays the last line; on a failure, say which run failed.
if [ "$status" -ne 0 ] && [ "${#envs[@]}" -gt 1 ]; then
    echo
    for line in "${results[@]}"; do echo "== $line =="; done
fi
exit "$status"
