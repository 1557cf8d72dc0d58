#!/usr/bin/env bash
# Creates the virtualenvs with a pinned dependency set and the project installed editable.
#
#   ./scripts/setup.sh                 .venv         from requirements/lock.txt (the newest supported Airflow;
#                                      the one to develop in, and the one ruff and mypy run from)
#   ./scripts/setup.sh lowest          .venv-lowest  from requirements/lock-lowest.txt (the declared lower
#                                      bounds, pinned in requirements/lowest.in)
#   ./scripts/setup.sh highest lowest  both
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

[ "$#" -gt 0 ] || set -- highest
for env in "$@"; do
    case "$env" in
        highest) setup_venv .venv requirements/lock.txt ;;
        lowest) setup_venv .venv-lowest requirements/lock-lowest.txt ;;
        *)
            echo "unknown environment '$env' (expected: highest, lowest)" >&2
            exit 2
            ;;
    esac
done
