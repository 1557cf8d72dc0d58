"""What every subcommand shares: exit codes, one-line errors, reading RESULT and SPEC, quiet library output."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager, redirect_stdout, suppress
from typing import Any, NoReturn

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_INTEGRITY",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_S3",
    "EXIT_USAGE",
    "PROG",
    "TRACEBACK_ENV",
    "Formatter",
    "InputError",
    "Parser",
    "UsageError",
    "add_conn_options",
    "disarm_task_db_guard",
    "format_message",
    "library_output",
    "one_line",
    "print_error",
    "redact",
    "silence_stdout",
    "stderr_is_terminal",
]

PROG = "airflow-s3-publisher"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_S3 = 4
EXIT_INTERRUPTED = 130

#: Set to 1 to get a Python traceback for unexpected errors (for bug reports).
TRACEBACK_ENV = "AIRFLOW_S3_PUBLISHER_TRACEBACK"

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    any other failure (e.g. the destination cannot be written)
  2    usage error or invalid input (bad arguments, unreadable RESULT/SPEC, invalid spec or key)
  3    integrity failure: checksum mismatch or unsafe archive (nothing was written)
  4    an S3 request failed (access denied, missing bucket, object or version, no credentials,
       endpoint unreachable)
  5    list/get DAG_ID RUN_ID: the Airflow api-server cannot be reached
  6    list/get DAG_ID RUN_ID: the api-server refused the credentials (or they may not read the run)
  7    list/get DAG_ID RUN_ID: no such DAG, or no such run of it
  8    list/get DAG_ID RUN_ID: the run (or its --task-id/--map-index) published no result
  130  interrupted (Ctrl-C)
"""


class UsageError(Exception):
    """A command-line usage error (argparse's ``error``), reported as one line with exit code 2."""


class InputError(Exception):
    """A RESULT or SPEC argument that cannot be read or parsed (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors become one line on stderr (pointing at --help) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(100, terminal_width()))


def terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns - 2
    except (OSError, ValueError, AttributeError):
        return 98


def add_conn_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aws-conn-id",
        metavar="ID",
        default="aws_default",
        help="Airflow AWS connection with the credentials (default: aws_default)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show Airflow's and botocore's log lines at Airflow's [logging] logging_level (on stderr)",
    )


def format_message(msg: str, args: tuple[Any, ...]) -> str:
    if not args:
        return str(msg)
    try:
        return str(msg) % args
    except (TypeError, ValueError):
        return " ".join([str(msg), *map(str, args)])


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


#: What Airflow 3's task supervisor puts in the environment of a task and of every process it starts.
_TASK_DB_GUARD = "airflow-db-not-allowed:///"
_DB_VARIABLES = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN")


def disarm_task_db_guard(environ: MutableMapping[str, str]) -> None:
    """Let Airflow be imported in a task's child process (a BashOperator's command), without any DB.

    Airflow 3's supervisor sets the metadata DB URL of task processes to a value that cannot be parsed,
    so that task code cannot reach the DB; importing Airflow then fails outright. This command never
    uses the metadata DB: an in-memory SQLite keeps the import working and still reaches no database.
    (Connections that exist only in the metadata DB are therefore not found from a BashOperator.)
    """
    for name in _DB_VARIABLES:
        if environ.get(name, "").startswith(_TASK_DB_GUARD.rstrip("/")):
            environ[name] = "sqlite://"


@contextmanager
def library_output(*, verbose: bool, quiet: bool) -> Iterator[None]:
    """Run Airflow and boto3 with their log output on stderr.

    Importing Airflow configures its logging (structlog and the stdlib root logger) to write to
    ``sys.stdout`` at ``[logging] logging_level``. This command's stdout carries its result (a path, a
    URL) for scripts, so library logs go to stderr: warnings and errors only (errors only when
    ``quiet``), or Airflow's configured level when ``verbose``. Logger levels and warning filters are
    put back afterwards, so ``main()`` called in a process (a test, a task) leaves its logging as it was.
    """
    import logging

    level = "ERROR" if quiet else "WARNING"
    names = (
        "",
        "airflow",
        "botocore",
        "boto3",
        "urllib3",
        "s3transfer",
        "airflow_s3_publisher",
        "airflow.models.crypto",
    )
    saved = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        if not verbose:
            os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = level
            # Warnings between Airflow and its providers (deprecated imports...) are not this command's
            # to report; -v shows them.
            warnings.simplefilter("ignore")
        disarm_task_db_guard(os.environ)
        try:
            with redirect_stdout(sys.stderr):
                import airflow  # noqa: F401 - configures logging on import, while stdout points at stderr

                if not verbose:
                    # Importing Airflow 3.1 puts its own filters first ("default" for its DeprecationWarnings,
                    # which SQLAlchemy's SADeprecationWarning from Airflow's models is): ignore them again.
                    warnings.simplefilter("ignore")
                    for name in names:
                        logging.getLogger(name).setLevel(level)
                    # Airflow 3.1 builds a Connection through its ORM model, whose password needs the Fernet
                    # key: "empty cryptography key - values will not be stored encrypted" is about the
                    # metadata DB, which this command never writes to.
                    logging.getLogger("airflow.models.crypto").setLevel("ERROR")
                yield
        finally:
            for name, saved_level in saved.items():
                logging.getLogger(name).setLevel(saved_level)


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_SECRET_FIELD = re.compile(
    r"(?i)((?:password|secret|token|aws_secret_access_key|aws_session_token)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}]+"
)


def redact(text: str) -> str:
    """``text`` with URL user:password parts and secret-looking fields replaced by ``***``."""
    return _SECRET_FIELD.sub(r"\1***", _USERINFO.sub(r"\1***@", one_line(text)))


def one_line(text: str) -> str:
    return " ".join(text.split())


def print_error(message: str) -> None:
    with suppress(OSError, ValueError):
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
