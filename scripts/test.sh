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
# S3PUB_CONCURRENT=1 runs the environments' suites at the same time (each output shown once all are done).
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

versions_of() {
    "$(venv_of "$1")/bin/python" -c 'import platform; from importlib.metadata import version as v
print("Python", platform.python_version(), "/ Airflow", v("apache-airflow"),
      "/ amazon", v("apache-airflow-providers-amazon"))'
}

results=()
status=0
record() {  # record ENV VERSIONS EXIT_CODE
    if [ "$3" -eq 0 ]; then
        results+=("$1 ($2): passed")
    else
        results+=("$1 ($2): FAILED (pytest exit $3)")
        status=1
    fi
}

if [ "${S3PUB_CONCURRENT:-0}" = 1 ] && [ "${#envs[@]}" -gt 1 ]; then
    # Each environment's pytest in the background, its output in a log; the logs are shown in order once
    # all have finished, so the last line is still a pytest summary.
    logs="$(mktemp -d)"
    trap 'rm -rf "$logs"' EXIT
    pids=()
    for env in "${envs[@]}"; do
        "$(venv_of "$env")/bin/python" -m pytest "$@" >"$logs/$env.log" 2>&1 &
        pids+=("$!")
    done
    echo
    echo "== running the suite on ${envs[*]} at once (outputs follow when all have finished) =="
    for i in "${!envs[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        env="${envs[$i]}"
        versions="$(versions_of "$env")"
        echo
        echo "== suite on $versions ($env: $(venv_of "$env")) =="
        cat "$logs/$env.log"
        record "$env" "$versions" "$rc"
    done
else
    for env in "${envs[@]}"; do
        versions="$(versions_of "$env")"
        echo
        echo "== suite on $versions ($env: $(venv_of "$env")) =="
        rc=0
        "$(venv_of "$env")/bin/python" -m pytest "$@" || rc=$?
        record "$env" "$versions" "$rc"
    done
fi

# On success pytest's own summary stays the last line; on a failure, say which run failed.
if [ "$status" -ne 0 ] && [ "${#envs[@]}" -gt 1 ]; then
    echo
    for line in "${results[@]}"; do echo "== $line =="; done
fi
exit "$status"
