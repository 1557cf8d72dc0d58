#!/usr/bin/env bash
# The whole test suite: lint, types (beside the first suite), and every test (unit, SeaweedFS, real Airflow
# DAG runs), once on each locked environment (see scripts/setup.sh):
#   highest  .venv         requirements/lock.txt         Python 3.13, the newest supported Airflow and amazon provider
#   lowest   .venv-lowest  requirements/lock-lowest.txt  Python 3.11, the declared lower bounds (requirements/lowest.in)
# ruff and mypy run once, from .venv. Both pytest runs always run; the script fails if either fails.
#
# Extra arguments go to pytest (to each run), e.g. ./scripts/test.sh -k fetch
# S3PUB_ENVS picks the runs, in order: "highest lowest" (the default), "highest" or "lowest", e.g.
#   S3PUB_ENVS=highest ./scripts/test.sh            the quick loop while developing
#   S3PUB_ENVS=lowest ./scripts/test.sh tests/test_cli.py
# The environments' suites run at the same time: the first one's output live, the others' once they have finished.
# S3PUB_CONCURRENT=0 runs them one after the other instead.
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

# Both environments' suites at once (the default): on two cores about a third faster than one after the other.
concurrent="${S3PUB_CONCURRENT:-1}"
case "$concurrent" in
    0 | 1) ;;
    *) echo "S3PUB_CONCURRENT: '$concurrent' (expected: 1, the default, or 0)" >&2; exit 2 ;;
esac

venv_of() { if [ "$1" = lowest ]; then echo .venv-lowest; else echo .venv; fi; }

# ruff and mypy always come from .venv (mypy checks against the newest Airflow), so it is set up too.
setup_envs=(highest)
for env in "${envs[@]}"; do [ "$env" = highest ] || setup_envs+=("$env"); done
# PostgreSQL: the CeleryExecutor test's metadata DB; libarchive: fetch's fast extractor (tested on both).
./scripts/setup.sh "${setup_envs[@]}" postgres libarchive

.venv/bin/ruff check airflow_s3_publisher tests tools dags_examples scripts benchmarks
# mypy (~15 s of one core without a cache) runs beside the first suite, which leaves the cores idle part of
# the time (servers starting, Airflow waiting); its output comes once that suite is done.
mypy_log="$(mktemp)"
.venv/bin/mypy >"$mypy_log" 2>&1 &
mypy_pid=$!

versions_of() {
    "$(venv_of "$1")/bin/python" -c 'import platform; from importlib.metadata import version as v
print("Python", platform.python_version(), "/ Airflow", v("apache-airflow"),
      "/ amazon", v("apache-airflow-providers-amazon"))'
}

results=()
status=0
report_mypy() {  # once, after the first suite: mypy's output, and its verdict among the results
    [ -n "$mypy_pid" ] || return 0
    local rc=0
    wait "$mypy_pid" || rc=$?
    mypy_pid=""
    echo
    echo "== mypy =="
    cat "$mypy_log"
    rm -f "$mypy_log"
    if [ "$rc" -ne 0 ]; then
        results+=("mypy: FAILED (exit $rc)")
        status=1
    fi
}
record() {  # record ENV VERSIONS EXIT_CODE
    if [ "$3" -eq 2 ]; then  # pytest was interrupted (Ctrl-C): stop here, and the other runs with it
        echo "== $1 ($2): interrupted ==" >&2
        exit 130
    fi
    if [ "$3" -eq 0 ]; then
        results+=("$1 ($2): passed")
    else
        results+=("$1 ($2): FAILED (pytest exit $3)")
        status=1
    fi
}

if [ "$concurrent" = 1 ] && [ "${#envs[@]}" -gt 1 ]; then
    # The first environment's pytest in the foreground (its output live), the others' at the same time in the
    # background, each into a log shown once it has finished: the last line is still a pytest summary.
    logs="$(mktemp -d)"
    pids=()
    # On an early exit (e.g. Ctrl-C, which background commands of a script ignore), stop the runs not yet
    # waited for (only those: a reaped pid may belong to another process by then).
    trap 'for pid in "${pids[@]}"; do [ "$pid" = done ] || kill "$pid" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
    for env in "${envs[@]:1}"; do
        "$(venv_of "$env")/bin/python" -m pytest "$@" >"$logs/$env.log" 2>&1 &
        pids+=("$!")
    done
    for i in "${!envs[@]}"; do
        env="${envs[$i]}"
        versions="$(versions_of "$env")"
        echo
        rc=0
        if [ "$i" -eq 0 ]; then
            echo "== suite on $versions ($env: $(venv_of "$env")); at the same time on: ${envs[*]:1} =="
            "$(venv_of "$env")/bin/python" -m pytest "$@" || rc=$?
            report_mypy
        else
            wait "${pids[$((i - 1))]}" || rc=$?
            pids[$((i - 1))]=done
            echo "== suite on $versions ($env: $(venv_of "$env")), run at the same time =="
            cat "$logs/$env.log"
        fi
        record "$env" "$versions" "$rc"
    done
else
    for env in "${envs[@]}"; do
        versions="$(versions_of "$env")"
        echo
        echo "== suite on $versions ($env: $(venv_of "$env")) =="
        rc=0
        "$(venv_of "$env")/bin/python" -m pytest "$@" || rc=$?
        report_mypy
        record "$env" "$versions" "$rc"
    done
fi

# On success pytest's own summary stays the last line; on a failure, say which run failed.
if [ "$status" -ne 0 ] && [ "${#envs[@]}" -gt 1 ]; then
    echo
    for line in "${results[@]}"; do echo "== $line =="; done
fi
exit "$status"
