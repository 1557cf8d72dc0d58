"""``airflow-s3-publisher presign RESULT``: a pre-signed GET URL for a published object."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from airflow_s3_publisher.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    PROG,
    Formatter,
    add_conn_options,
    library_output,
)
from airflow_s3_publisher.cli.inputs import read_result
from airflow_s3_publisher.exceptions import InvalidSpecError

#: The longest validity S3 accepts for a SigV4 pre-signed URL (7 days).
MAX_EXPIRES = 604800
DEFAULT_EXPIRES = 900

_PRESIGN_DESCRIPTION = """\
Print a pre-signed GET URL for a published object, pinned to its VersionID when the result has
one (so the URL keeps serving exactly the published bytes even after the key is overwritten). The URL
is signed locally with the connection's credentials; whoever holds it can download the object until it
expires, and it only works if those credentials may s3:GetObject (s3:GetObjectVersion for a version).
A prefix result (key ending in '/', a plain publish) is refused: one URL names one object.
"""

_PRESIGN_EXAMPLES = """\
examples:
  airflow-s3-publisher presign result.json
  airflow-s3-publisher presign result.json --expires 3600 --aws-conn-id my_s3
  curl -fsSL "$(airflow-s3-publisher presign result.json)" | tar -xz

"""


def register(commands: Any) -> None:
    """Add ``presign`` to the subcommands."""
    presign = commands.add_parser(
        "presign",
        help="print a pre-signed GET URL for a published object",
        description=_PRESIGN_DESCRIPTION,
        epilog=_PRESIGN_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    presign.add_argument("result", metavar="RESULT", help="PublishedResult JSON file, '-' for stdin, or the JSON text")
    presign.add_argument(
        "--expires",
        metavar="SECONDS",
        type=_expires,
        default=DEFAULT_EXPIRES,
        help=f"validity of the URL in seconds, 1 to {MAX_EXPIRES} (7 days) (default: {DEFAULT_EXPIRES})",
    )
    add_conn_options(presign)
    presign.add_argument("-q", "--quiet", action="store_true", help="no warnings on stderr")
    presign.set_defaults(func=_cmd_presign)


def _expires(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, not {text!r}") from None
    if not 1 <= value <= MAX_EXPIRES:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: a pre-signed URL is valid for 1 to {MAX_EXPIRES} seconds (7 days)"
        )
    return value


def _cmd_presign(args: argparse.Namespace) -> int:
    result = read_result(args.result)
    if result.is_prefix:
        raise InvalidSpecError(
            f"{result.uri} is a prefix (a plain publish of one object per file); a pre-signed URL names one "
            f"object, so use 'airflow-s3-publisher get' for a prefix, or presign one object below it"
        )
    stdout = sys.stdout
    with library_output(verbose=args.verbose, quiet=args.quiet):
        from airflow_s3_publisher.s3 import connect

        client = connect(args.aws_conn_id, endpoint=result.endpoint, region=result.region)
        url = client.presign_get(result.bucket, result.key, version_id=result.version_id, expires=args.expires)
    if not result.version_id and not args.quiet:
        print(
            f"{PROG}: warning: the result has no VersionID, so the URL serves whatever is stored at "
            f"{result.uri} when it is used, not necessarily the published bytes",
            file=sys.stderr,
            flush=True,
        )
    print(url, file=stdout, flush=True)
    return EXIT_OK
