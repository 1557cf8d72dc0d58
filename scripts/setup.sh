#!/usr/bin/env bash
# Creates the virtualenvs with a pinned dependency set and the project installed editable.
#
#   ./scripts/setup.sh                 .venv         from requirements/lock.txt (the newest supported Airflow;
#                                      the one to develop in, and the one ruff and mypy run from)
#   ./scripts/setup.sh lowest          .venv-lowest  from requirements/lock-lowest.txt (the declared lower
#                                      bounds, pinned in requirements/lowest.in)
#   ./scripts/setup.sh highest lowest  both
#   ./scripts/setup.sh postgres        PostgreSQL from Debian's packages, unless the machine has it (the
#                                      metadata DB of tests/test_celery.py; needs root and apt-get)
#   ./scripts/setup.sh libarchive      libarchive.so.13 from Debian's packages, unless the machine has it
#                                      (fetch's fast extractor; without it fetch uses Python's tarfile)
#
# Idempotent: a second run only checks that everything is in place (and puts back what differs from the lock).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "Python 3.11 is required (found $("$PYTHON" --version 2>&1) at $PYTHON); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

# setup_venv DIR LOCKFILE
setup_venv() {
    local venv="$1" lock="$2"
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
    fi
    # Keep git from seeing a venv that .gitignore does not name (what `uv venv` and Python 3.13's venv do).
    [ -f "$venv/.gitignore" ] || echo '*' >"$venv/.gitignore"
    if [ "$("$venv/bin/uv" --version 2>/dev/null | cut -d' ' -f1-2)" != "uv $UV_VERSION" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    fi
    "$venv/bin/uv" pip sync --quiet --compile-bytecode --python "$venv/bin/python" "$lock"
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps -e .
}

# PostgreSQL server binaries where tools/postgres.py looks for them (Debian's layout, or initdb on PATH).
ensure_postgres() {
    if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
        return
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "PostgreSQL is not installed and cannot be installed here (needs root and apt-get);" \
            "tests/test_celery.py will fail: install Debian's postgresql package" >&2
        return
    fi
    echo "Installing PostgreSQL from Debian's packages (for tests/test_celery.py)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# libarchive (the system's libarchive.so.13): the fast extractor of fetch() loads it with ctypes; without it
# fetch falls back to Python's tarfile. Debian 12 names the package libarchive13, Debian 13 libarchive13t64.
ensure_libarchive() {
    if ldconfig -p 2>/dev/null | grep -q 'libarchive\.so\.13 '; then
        return
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "libarchive.so.13 is not installed and cannot be installed here (needs root and apt-get);" \
            "fetch() extracts with Python's tarfile instead (slower): install Debian's libarchive13" >&2
        return
    fi
    echo "Installing libarchive from Debian's packages (fetch's fast extractor)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libarchive13 >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libarchive13t64 >/dev/null
}

[ "$#" -gt 0 ] || set -- highest
for env in "$@"; do
    case "$env" in
        highest) setup_venv .venv requirements/lock.txt ;;
        lowest) setup_venv .venv-lowest requirements/lock-lowest.txt ;;
        postgres) ensure_postgres ;;
        libarchive) ensure_libarchive ;;
        *)
            echo "unknown environment '$env' (expected: highest, lowest, postgres, libarchive)" >&2
            exit 2
            ;;
    esac
done
