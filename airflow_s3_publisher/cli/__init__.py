"""The ``airflow-s3-publisher`` command: fetch, pre-sign and preview published results from a shell.

Only the standard library is imported at module level, so ``--help`` stays fast; Airflow, boto3 and
rich are imported inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from airflow_s3_publisher.cli import get, presign, publish, render, runs
from airflow_s3_publisher.cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    EXIT_S3,
    EXIT_USAGE,
    PROG,
    TRACEBACK_ENV,
    Formatter,
    InputError,
    Parser,
    UsageError,
    one_line,
    print_error,
    redact,
    silence_stdout,
)
from airflow_s3_publisher.exceptions import (
    ChecksumMismatchError,
    InvalidSpecError,
    S3PublisherError,
    S3RequestError,
    UnsafeArchiveError,
)

__all__ = ["build_parser", "exit_code_for", "main"]

_MAIN_DESCRIPTION = """\
Fetch, pre-sign and preview results published by airflow-s3-publisher (Bacalhau's S3 publisher
format). Credentials come from the Airflow AWS connection --aws-conn-id (default aws_default, e.g.
from an AIRFLOW_CONN_AWS_DEFAULT environment variable), else from boto3's default chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, instance roles).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``airflow-s3-publisher`` command line and return its exit code.

    Subcommands: ``get`` (download, verify and unpack a PublishedResult), ``presign`` (print a
    pre-signed GET URL for it) and ``render`` (validate a publisher spec and print its rendered key).

    Exit codes, which scripts can rely on:

    - 0: success.
    - 1: any other failure from the package (:class:`S3PublisherError`), or the destination cannot be
      written.
    - 2: usage error or invalid input: bad arguments, an unreadable or malformed RESULT or SPEC, an
      :class:`InvalidSpecError` (bad spec, key or placeholder).
    - 3: integrity failure: :class:`ChecksumMismatchError` or :class:`UnsafeArchiveError`; nothing
      was written.
    - 4: an S3 request failed (:class:`S3RequestError`, also when it is the cause of another package
      error, such as a manifest or listed file that cannot be read): access denied, no such bucket,
      key or version, no credentials, endpoint unreachable.
    - 130: interrupted (Ctrl-C).

    Errors are printed as one line on stderr (``airflow-s3-publisher: error: ...``), never as a
    traceback (set ``AIRFLOW_S3_PUBLISHER_TRACEBACK=1`` to get one for unexpected errors).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print_error(str(err))
        return EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (e.g. `| head`): nothing more can be said there.
        silence_stdout()
        return EXIT_ERROR
    except Exception as err:  # every failure becomes one line and an exit code
        code = exit_code_for(err)
        if isinstance(err, (S3PublisherError, OSError, InputError)):
            # The package's messages never hold credentials; they name the value, key or file at fault.
            print_error(one_line(str(err)) or type(err).__name__)
            return code
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print_error(f"unexpected {type(err).__name__}: {redact(str(err))}")
        return code


def exit_code_for(err: BaseException) -> int:
    """The documented exit code for an error raised by a subcommand."""
    if isinstance(err, (InvalidSpecError, InputError)):
        return EXIT_USAGE
    if isinstance(err, (ChecksumMismatchError, UnsafeArchiveError)):
        return EXIT_INTEGRITY
    if isinstance(err, S3RequestError):
        return EXIT_S3
    if isinstance(err, S3PublisherError) and _caused_by_s3(err):
        # e.g. a manifest or a listed file that cannot be read: the cause is the failed request.
        return EXIT_S3
    return EXIT_ERROR


def _caused_by_s3(err: BaseException) -> bool:
    seen: set[int] = set()
    cause = err.__cause__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (ChecksumMismatchError, UnsafeArchiveError)):
            return False
        if isinstance(cause, S3RequestError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__
    return False


# ======================================================================================================
# Parser
# ======================================================================================================


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``airflow-s3-publisher`` (each subcommand has ``--help`` with examples)."""
    from airflow_s3_publisher import __version__

    parser = Parser(
        prog=PROG,
        description=_MAIN_DESCRIPTION,
        epilog=EXIT_CODES_HELP + "\nRun 'airflow-s3-publisher COMMAND --help' for a command's options and examples.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for module in (get, presign, render, publish, runs):  # runs extends get
        module.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
