#!/usr/bin/env bash
# Creates the virtualenvs with a pinned dependency set and the project installed editable.
#
#   ./scripts/setup.sh                 .venv         Python 3.13, requirements/lock.txt (the newest supported
#                                      Airflow; the one to develop in, and the one ruff and mypy run from)
#   ./scripts/setup.sh lowest          .venv-lowest  Python 3.11, requirements/lock-lowest.txt (the declared lower
#                                      bounds, pinned in requirements/lowest.in)
#   ./scripts/setup.sh highest lowest  both
#   ./scripts/setup.sh postgres        PostgreSQL from Debian's packages, unless the machine has it (the
#                                      metadata DB of tests/test_celery.py; needs root and apt-get)
#   ./scripts/setup.sh libarchive      libarchive.so.13 from Debian's packages, unless the machine has it
#                                      (fetch's fast extractor; without it fetch uses Python's tarfile)
#
# The interpreter of each environment is looked for on the PATH (python3.13, python3.11), then among pyenv's
# versions, then uv's; PYTHON_HIGHEST / PYTHON_LOWEST name one instead (PYTHON, as before, the 3.11 one).
# Where no Python 3.13 is found, .venv falls back to Python 3.11, saying so (requirements/lock.txt installs on
# either). A venv made with another Python version than the one chosen is made anew.
#
# Idempotent: a second run only checks that everything is in place (and puts back what differs from the lock).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"
HIGHEST_PYTHON_VERSION="3.13"
LOWEST_PYTHON_VERSION="3.11"

# is_python PATH X.Y: PATH runs and is Python X.Y (a pyenv shim of a version not selected does not run).
is_python() {
    [ -n "$1" ] && "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$2'.split('.'))))" \
        >/dev/null 2>&1
}

# find_python X.Y: print the path of a working Python X.Y, or fail.
find_python() {
    local want="$1" root candidate
    local candidates=("$(command -v "python$want" || true)")
    for root in "${PYENV_ROOT:-}" "$(pyenv root 2>/dev/null || true)" "$HOME/.pyenv"; do
        [ -n "$root" ] && [ -d "$root/versions" ] || continue
        # The newest patch release first.
        while IFS= read -r candidate; do candidates+=("$candidate"); done < <(
            ls -d "$root/versions/$want".*/bin/"python$want" 2>/dev/null | sort -rV
        )
    done
    if command -v uv >/dev/null 2>&1; then
        candidates+=("$(uv python find --no-python-downloads "$want" 2>/dev/null || true)")
    fi
    for candidate in "${candidates[@]}"; do
        if is_python "$candidate" "$want"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# python_for ENV: print the interpreter for the environment (highest: 3.13, else 3.11; lowest: 3.11), or exit.
python_for() {
    local env="$1" python
    if [ "$env" = highest ] && [ -n "${PYTHON_HIGHEST:-}" ]; then
        echo "$PYTHON_HIGHEST"
        return 0
    fi
    if [ "$env" = lowest ] && [ -n "${PYTHON_LOWEST:-}" ]; then
        echo "$PYTHON_LOWEST"
        return 0
    fi
    if [ "$env" = highest ]; then
        if python="$(find_python "$HIGHEST_PYTHON_VERSION")"; then
            echo "$python"
            return 0
        fi
        echo "setup.sh: no Python $HIGHEST_PYTHON_VERSION found (python$HIGHEST_PYTHON_VERSION on the PATH," \
            "pyenv, uv; or set PYTHON_HIGHEST=/path/to/python$HIGHEST_PYTHON_VERSION): .venv uses Python" \
            "$LOWEST_PYTHON_VERSION instead, so the newest Airflow is tested on Python $LOWEST_PYTHON_VERSION here," \
            "not on the $HIGHEST_PYTHON_VERSION that CI uses" >&2
    fi
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
        return 0
    fi
    if python="$(find_python "$LOWEST_PYTHON_VERSION")"; then
        echo "$python"
        return 0
    fi
    echo "setup.sh: Python $LOWEST_PYTHON_VERSION is required (for .venv-lowest, and for .venv where Python" \
        "$HIGHEST_PYTHON_VERSION is missing) and none was found (python$LOWEST_PYTHON_VERSION on the PATH," \
        "pyenv, uv); set PYTHON=/path/to/python$LOWEST_PYTHON_VERSION" >&2
    exit 1
}

# version_of PYTHON: "X.Y" (empty if it does not run).
version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

# setup_venv DIR LOCKFILE PYTHON
setup_venv() {
    local venv="$1" lock="$2" python="$3" wanted
    wanted="$(version_of "$python")"
    if [ -z "$wanted" ]; then
        echo "setup.sh: $python does not run" >&2
        exit 1
    fi
    if [ -e "$venv" ]; then
        local had
        had="$(version_of "$venv/bin/python")"
        if [ "$had" != "$wanted" ]; then
            echo "setup.sh: $venv has ${had:+Python }${had:-no working Python}, not Python $wanted: making it anew" >&2
            rm -rf "$venv"
        fi
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    # Keep git from seeing a venv that .gitignore does not name (what `uv venv` and Python 3.13's venv do).
    [ -f "$venv/.gitignore" ] || echo '*' >"$venv/.gitignore"
    if [ "$("$venv/bin/uv" --version 2>/dev/null | cut -d' ' -f1-2)" != "uv $UV_VERSION" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    fi
    # --compile-bytecode (~20 s a venv): with PYTHONDONTWRITEBYTECODE set (as on CI), every process would
    # otherwise compile each Airflow module it imports, again and again (+3 min of CPU over the suite).
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
        highest)
            python="$(python_for highest)"
            setup_venv .venv requirements/lock.txt "$python"
            ;;
        lowest)
            python="$(python_for lowest)"
            if [ "$(version_of "$python")" != "$LOWEST_PYTHON_VERSION" ]; then
                echo "setup.sh: $python is Python $(version_of "$python"); requirements/lock-lowest.txt is resolved" \
                    "for Python $LOWEST_PYTHON_VERSION" >&2
                exit 1
            fi
            setup_venv .venv-lowest requirements/lock-lowest.txt "$python"
            ;;
        postgres) ensure_postgres ;;
        libarchive) ensure_libarchive ;;
        *)
            echo "unknown environment '$env' (expected: highest, lowest, postgres, libarchive)" >&2
            exit 2
            ;;
    esac
done
