"""``list DAG_ID RUN_ID`` and ``get DAG_ID RUN_ID``: a run's published results, found through the Airflow api-server.

Like ``bacalhau get JOB_ID``: the api-server's public REST API says which tasks of the run returned a
PublishedResult; ``get`` then fetches each like ``get RESULT``, into a folder per task (and map index).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_OK,
    PROG,
    Formatter,
    InputError,
    library_output,
    one_line,
    print_error,
    stderr_is_terminal,
)
from airflow_s3_publisher.cli.get import FetchReporter
from airflow_s3_publisher.exceptions import InvalidSpecError

if TYPE_CHECKING:
    from airflow_s3_publisher.runs import AirflowApi, AirflowApiError, RunResult

EXIT_API_UNREACHABLE = 5
EXIT_API_AUTH = 6
EXIT_RUN_NOT_FOUND = 7
EXIT_NO_RESULT = 8

API_URL_ENV = "AIRFLOW_API_URL"
API_TOKEN_ENV = "AIRFLOW_API_TOKEN"  # noqa: S105 - the name of a variable, not a secret
API_USERNAME_ENV = "AIRFLOW_API_USERNAME"
API_PASSWORD_ENV = "AIRFLOW_API_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_API_URL = "http://localhost:8080"

_API_HELP = f"""\
api-server:
  The address and credentials come from the options below or from the environment:
  {API_URL_ENV} (default {DEFAULT_API_URL}), {API_TOKEN_ENV}, or {API_USERNAME_ENV} and
  {API_PASSWORD_ENV} (exchanged for a token at the api-server's POST /auth/token). Prefer the
  environment for secrets: options are visible to other users in the process list.
"""

_LIST_DESCRIPTION = """\
List the results a DAG run published: every task (and map index) whose return value is a
PublishedResult, as the Airflow api-server's REST API reports it. Sizes come from S3 (a HEAD of each
archive, the manifest of a plain publish; '-' when unknown) with the --aws-conn-id credentials.
"""

_LIST_EXAMPLES = """\
examples:
  export AIRFLOW_API_URL=http://localhost:8080 AIRFLOW_API_TOKEN=...
  airflow-s3-publisher list etl manual__2026-01-01T00:00:00+00:00
  airflow-s3-publisher list etl scheduled__2026-01-01T00:00:00+00:00 --task-id publish --json

"""

_GET_RUN_DESCRIPTION = """\

With DAG_ID and RUN_ID instead of RESULT, the run's published results are found through the Airflow
api-server (see 'list') and each is fetched into its own folder below DIR: DIR/TASK_ID, or
DIR/TASK_ID/MAP_INDEX for a mapped task (default DIR: ./DAG_ID__RUN_ID, the run id sanitised as in
{jobID}). Each folder's path is printed once it is complete.
"""

_GET_RUN_EXAMPLES = """\
  airflow-s3-publisher get etl manual__2026-01-01T00:00:00+00:00 -o ./results
  airflow-s3-publisher get etl manual__2026-01-01T00:00:00+00:00 --task-id part --map-index 3
"""


def register(commands: Any) -> None:
    """Add ``list``, and the DAG_ID RUN_ID form of ``get`` (which must be registered first)."""
    _extend_get(commands.choices["get"])

    listing = commands.add_parser(
        "list",
        help="list the results a DAG run published (via the Airflow api-server)",
        description=_LIST_DESCRIPTION + "\n" + _API_HELP,
        epilog=_LIST_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    listing.add_argument("dag_id", metavar="DAG_ID")
    listing.add_argument("run_id", metavar="RUN_ID")
    _add_run_options(listing)
    listing.add_argument("--json", action="store_true", help="print the results as a JSON list")
    listing.add_argument("--no-size", dest="size", action="store_false", help="do not ask S3 for sizes")
    listing.add_argument(
        "--aws-conn-id",
        metavar="ID",
        default="aws_default",
        help="Airflow AWS connection for the size lookups (default: aws_default)",
    )
    listing.add_argument("-v", "--verbose", action="store_true", help="also show Airflow's and botocore's log lines")
    listing.set_defaults(func=_api_command(_cmd_list))


def _extend_get(get: argparse.ArgumentParser) -> None:
    for action in get._actions:
        if action.dest == "result":
            action.metavar = "RESULT|DAG_ID"
            action.help = "PublishedResult JSON file, '-' for stdin, or the JSON text; or a DAG id (with RUN_ID)"
    get.add_argument("run_id", metavar="RUN_ID", nargs="?", help="a run of DAG_ID: fetch every result it published")
    get.description = (get.description or "") + _GET_RUN_DESCRIPTION + "\n" + _API_HELP
    get.epilog = (get.epilog or "").replace("\n\n", "\n" + _GET_RUN_EXAMPLES + "\n", 1)
    _add_run_options(get)
    single = get.get_default("func")
    get.set_defaults(func=lambda args: _api_command(_cmd_get_run)(args) if args.run_id is not None else single(args))


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("api-server (with DAG_ID RUN_ID)")
    group.add_argument("--api-url", metavar="URL", help=f"the api-server's address (env {API_URL_ENV})")
    group.add_argument("--token", metavar="TOKEN", help=f"a bearer token (env {API_TOKEN_ENV})")
    group.add_argument("--username", metavar="USER", help=f"user name for POST /auth/token (env {API_USERNAME_ENV})")
    group.add_argument("--password", metavar="PASSWORD", help=f"its password (env {API_PASSWORD_ENV})")
    group.add_argument("--task-id", metavar="ID", help="only this task's results")
    group.add_argument("--map-index", metavar="N", type=_map_index, help="only this map index (-1: not mapped)")


def _map_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number (-1 for a task that is not mapped), not {text!r}"
        ) from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"{value} is not a map index: expected -1 or more")
    return value


def _api_command(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` with the api-server's errors reported as one line and their own exit code."""

    def run(args: argparse.Namespace) -> int:
        from airflow_s3_publisher.runs import AirflowApiError

        try:
            return command(args)
        except AirflowApiError as err:
            print_error(one_line(str(err)))
            return api_exit_code(err)

    return run


def api_exit_code(err: AirflowApiError) -> int:
    """The documented exit code for an error from the api-server."""
    from airflow_s3_publisher.runs import ApiAuthError, ApiUnreachableError, NoPublishedResultError, RunNotFoundError

    codes: list[tuple[type[Exception], int]] = [
        (ApiUnreachableError, EXIT_API_UNREACHABLE),
        (ApiAuthError, EXIT_API_AUTH),
        (RunNotFoundError, EXIT_RUN_NOT_FOUND),
        (NoPublishedResultError, EXIT_NO_RESULT),
    ]
    for kind, code in codes:
        if isinstance(err, kind):
            return code
    return EXIT_ERROR


def _api(args: argparse.Namespace) -> AirflowApi:
    from airflow_s3_publisher.runs import AirflowApi, ApiCredentials

    url = args.api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    token = args.token or os.environ.get(API_TOKEN_ENV) or None
    username = args.username or os.environ.get(API_USERNAME_ENV) or None
    password = args.password or os.environ.get(API_PASSWORD_ENV) or None
    if token and username:  # a token and a user: the one given as an option wins over the environment
        by_option = bool(args.username or args.password)
        if args.token and not by_option:
            username = password = None
        elif by_option and not args.token:
            token = None
    try:
        credentials = ApiCredentials(token=token, username=username, password=password)
    except InvalidSpecError as err:
        raise InputError(f"{err} (options --token, --username, --password; or {API_TOKEN_ENV}, ...)") from None
    return AirflowApi(url, credentials)


def _results(args: argparse.Namespace) -> list[RunResult]:
    with _api(args) as api:
        return api.published_results(args.dag_id, args.run_id, task_id=args.task_id, map_index=args.map_index)


def _cmd_list(args: argparse.Namespace) -> int:
    found = _results(args)
    sizes: dict[int, int | None] = dict.fromkeys(range(len(found)))
    if args.size:
        with library_output(verbose=args.verbose, quiet=False):
            sizes = _sizes(found, args.aws_conn_id)
    if args.json:
        document = [
            {
                "task_id": item.task_id,
                "map_index": item.map_index,
                "uri": item.result.uri,
                "size": sizes[index],
                "result": item.result.to_dict(),
            }
            for index, item in enumerate(found)
        ]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    rows = [("TASK", "MAP", "S3 URI", "VERSION", "CHECKSUM (SHA-256)", "SIZE")]
    for index, item in enumerate(found):
        size = sizes[index]
        rows.append(
            (
                item.task_id,
                "-" if item.map_index < 0 else str(item.map_index),
                item.result.uri,
                item.result.version_id or "-",
                item.result.checksum_sha256 or "-",
                "-" if size is None else str(size),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _sizes(found: Sequence[RunResult], aws_conn_id: str | None) -> dict[int, int | None]:
    """Stored bytes of each result: the archive's size, or the manifest's total for a plain publish."""
    from airflow_s3_publisher.exceptions import S3PublisherError
    from airflow_s3_publisher.manifest import MANIFEST_NAME, parse_manifest
    from airflow_s3_publisher.s3 import connect

    sizes: dict[int, int | None] = {}
    failures: list[str] = []
    for index, item in enumerate(found):
        result = item.result
        sizes[index] = None
        if result.is_prefix and not result.checksum_sha256:
            continue  # a plain publish without manifest: what was published is not recorded anywhere
        try:
            client = connect(aws_conn_id, endpoint=result.endpoint, region=result.region)
            if result.is_prefix:
                key = result.key + MANIFEST_NAME
                stream = client.get_object(result.bucket, key, result.version_id).stream
                try:
                    body = stream.read()
                finally:
                    stream.close()
                sizes[index] = sum(entry.size for entry in parse_manifest(body, f"s3://{result.bucket}/{key}"))
            else:
                sizes[index] = client.object_size(result.bucket, result.key, result.version_id)
        except S3PublisherError as err:
            failures.append(f"{item.label}: {one_line(str(err))}")
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        print(f"{PROG}: warning: size unknown for {failures[0]}{more}", file=sys.stderr, flush=True)
    return sizes


def _cmd_get_run(args: argparse.Namespace) -> int:
    from airflow_s3_publisher.exceptions import S3PublisherError
    from airflow_s3_publisher.naming import sanitize_run_id

    args.dag_id = args.result
    found = _results(args)
    root: Path = (
        args.output_dir if args.output_dir is not None else Path(f"{args.dag_id}__{sanitize_run_id(args.run_id)}")
    )
    mapped = {item.task_id for item in found if item.map_index >= 0}
    stdout = sys.stdout
    show = not args.quiet and stderr_is_terminal()
    for item in found:
        target = root / _folder_name(item.task_id)
        if item.task_id in mapped:
            target = target / str(item.map_index)
        reporter = FetchReporter(f"{item.label} {item.result.uri}", show_progress=show, show_warnings=not args.quiet)
        with reporter, library_output(verbose=args.verbose, quiet=args.quiet):
            from airflow_s3_publisher.fetching import fetch
            from airflow_s3_publisher.options import TransferOptions

            try:
                fetch(
                    item.result,
                    target,
                    aws_conn_id=args.aws_conn_id,
                    extract=args.extract,
                    transfer=TransferOptions(checksums=args.checksums),
                    logger=reporter,
                    on_progress=reporter.update,
                )
            except (S3PublisherError, OSError) as err:
                # Say which task's result failed; the folders already printed are complete.
                failure: BaseException | None = err
            else:
                failure = None
        if failure is not None:
            print_error(f"{item.label}: {one_line(str(failure)) or type(failure).__name__}")
            from airflow_s3_publisher.cli import exit_code_for

            return exit_code_for(failure)
        reporter.summary()
        print(target, file=stdout, flush=True)
    return EXIT_OK


def _folder_name(task_id: str) -> str:
    # Airflow task ids are [A-Za-z0-9_.-]+ (a task group's are "group.task"); '.' and '..' alone are not folders.
    return task_id if task_id not in (".", "..") else task_id.replace(".", "_")
