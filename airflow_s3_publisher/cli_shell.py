"""The shell side of ``airflow-s3-publisher``: ``publish``, ``list DAG_ID RUN_ID`` and ``get DAG_ID RUN_ID``.

``publish`` is the operator's publish from a shell (a BashOperator, a container, a laptop): the same
spec forms, options, validation and placeholders, and the PublishedResult JSON as the last stdout line
(what a BashOperator pushes to XCom) or in ``--xcom-file`` (what a KubernetesPodOperator reads).

``list`` and ``get`` with a DAG id and a run id ask an Airflow api-server (its public REST API) which
results the run published, like ``bacalhau get JOB_ID``.

:func:`register` adds the subcommands to the parser that :func:`airflow_s3_publisher.cli.build_parser`
builds; the helpers (one-line errors, library output on stderr, the progress display) are
:mod:`airflow_s3_publisher.cli`'s. Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher import cli
from airflow_s3_publisher.exceptions import InvalidSpecError

if TYPE_CHECKING:
    from airflow_s3_publisher.filters import Rule
    from airflow_s3_publisher.result import PublishedResult
    from airflow_s3_publisher.runs import AirflowApi, AirflowApiError, RunResult
    from airflow_s3_publisher.s3 import TransferOptions

EXIT_API_UNREACHABLE = 5
EXIT_API_AUTH = 6
EXIT_RUN_NOT_FOUND = 7
EXIT_NO_RESULT = 8

API_URL_ENV = "AIRFLOW_API_URL"
API_TOKEN_ENV = "AIRFLOW_API_TOKEN"  # noqa: S105 - the name of a variable, not a secret
API_USERNAME_ENV = "AIRFLOW_API_USERNAME"
API_PASSWORD_ENV = "AIRFLOW_API_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_API_URL = "http://localhost:8080"

#: Run values a BashOperator exports (airflow.sdk.execution_time.context.context_to_airflow_vars).
CTX_ENV = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
}

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

_PUBLISH_DESCRIPTION = """\
Publish a file or directory to S3 as S3PublishOperator does: the same spec forms, options, validation
and placeholders. PUBLISHER is Bacalhau's imperative form (s3://bucket/key,opt=compress=true,...) or a
JSON or YAML file with the declarative one ('-' reads it from stdin); --bucket, --key and the other
options override it (or replace it).

Placeholders: {dagID}, {taskID}, {runID}, {tryNumber} and {jobID} take the options below, else the
AIRFLOW_CTX_DAG_ID, AIRFLOW_CTX_TASK_ID, AIRFLOW_CTX_DAG_RUN_ID and AIRFLOW_CTX_TRY_NUMBER variables a
BashOperator exports, so that a key renders there as the operator renders it; {mapIndex} and
{executionID} need --map-index '{{ ti.map_index }}' and --execution-id '{{ ti.id }}'.

Credentials: --aws-conn-id names an Airflow AWS connection. Without it, the aws_default connection is
used where Airflow is configured (AIRFLOW_HOME, AIRFLOW_CONFIG or AIRFLOW_CONN_AWS_DEFAULT set, or
~/airflow/airflow.cfg present), falling back to boto3's default chain when it has no credentials;
anywhere else, the default chain directly: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials,
instance roles. --aws-conn-id '' always uses the default chain.

The PublishedResult JSON is printed as the last line on stdout (a BashOperator pushes that line to
XCom; S3FetchOperator takes it as its source) and, with --xcom-file, written to that file
(/airflow/xcom/return.json for a KubernetesPodOperator with do_xcom_push=True). Progress goes to stderr.
"""

_PUBLISH_EXAMPLES = """\
examples:
  airflow-s3-publisher publish ./out 's3://my-bucket/results/{jobID}/,opt=compress=true'
  airflow-s3-publisher publish ./out --bucket my-bucket --key 'runs/{date}/{time}' \\
      --exclude '*' --include '*.csv' --manifest
  airflow-s3-publisher publish /data/out publisher.yaml --xcom-file /airflow/xcom/return.json
  # in a BashOperator (the JSON line becomes the task's XCom):
  bash_command="airflow-s3-publisher publish /tmp/out 's3://b/{jobID}/{taskID}' -q"

"""


# ======================================================================================================
# Registration
# ======================================================================================================


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``publish`` and ``list``, and the DAG_ID RUN_ID form of ``get``, to ``commands``."""
    _extend_get(commands.choices["get"])

    listing = commands.add_parser(
        "list",
        help="list the results a DAG run published (via the Airflow api-server)",
        description=_LIST_DESCRIPTION + "\n" + _API_HELP,
        epilog=_LIST_EXAMPLES + cli.EXIT_CODES_HELP,
        formatter_class=cli._Formatter,
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

    publish = commands.add_parser(
        "publish",
        help="publish a file or directory to S3 (as S3PublishOperator does)",
        description=_PUBLISH_DESCRIPTION,
        epilog=_PUBLISH_EXAMPLES + cli.EXIT_CODES_HELP,
        formatter_class=cli._Formatter,
    )
    _add_publish_options(publish)
    publish.set_defaults(func=_cmd_publish)


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


# ======================================================================================================
# The api-server commands
# ======================================================================================================


def _api_command(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` with the api-server's errors reported as one line and their own exit code."""

    def run(args: argparse.Namespace) -> int:
        from airflow_s3_publisher.runs import AirflowApiError

        try:
            return command(args)
        except AirflowApiError as err:
            cli._print_error(cli._one_line(str(err)))
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
    return cli.EXIT_ERROR


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
        raise cli._InputError(f"{err} (options --token, --username, --password; or {API_TOKEN_ENV}, ...)") from None
    return AirflowApi(url, credentials)


def _results(args: argparse.Namespace) -> list[RunResult]:
    with _api(args) as api:
        return api.published_results(args.dag_id, args.run_id, task_id=args.task_id, map_index=args.map_index)


def _cmd_list(args: argparse.Namespace) -> int:
    found = _results(args)
    sizes: dict[int, int | None] = dict.fromkeys(range(len(found)))
    if args.size:
        with cli._library_output(verbose=args.verbose, quiet=False):
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
        return cli.EXIT_OK
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
    return cli.EXIT_OK


def _sizes(found: Sequence[RunResult], aws_conn_id: str | None) -> dict[int, int | None]:
    """Stored bytes of each result: the archive's size, or the manifest's total for a plain publish."""
    from airflow_s3_publisher.exceptions import S3PublisherError
    from airflow_s3_publisher.manifest import MANIFEST_NAME, parse_manifest
    from airflow_s3_publisher.s3 import connect, translate_errors

    sizes: dict[int, int | None] = {}
    failures: list[str] = []
    for index, item in enumerate(found):
        result = item.result
        sizes[index] = None
        if result.is_prefix and not result.checksum_sha256:
            continue  # a plain publish without manifest: what was published is not recorded anywhere
        version: dict[str, Any] = {"VersionId": result.version_id} if result.version_id else {}
        try:
            conn = connect(aws_conn_id, endpoint=result.endpoint, region=result.region)
            if result.is_prefix:
                key = result.key + MANIFEST_NAME
                with translate_errors("GetObject", result.bucket, key):
                    body = conn.client.get_object(Bucket=result.bucket, Key=key, **version)["Body"].read()
                sizes[index] = sum(entry.size for entry in parse_manifest(body, f"s3://{result.bucket}/{key}"))
            else:
                with translate_errors("HeadObject", result.bucket, result.key):
                    head = conn.client.head_object(Bucket=result.bucket, Key=result.key, **version)
                sizes[index] = int(head["ContentLength"])
        except S3PublisherError as err:
            failures.append(f"{item.label}: {cli._one_line(str(err))}")
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        print(f"{cli.PROG}: warning: size unknown for {failures[0]}{more}", file=sys.stderr, flush=True)
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
    show = not args.quiet and cli._stderr_is_terminal()
    for item in found:
        target = root / _folder_name(item.task_id)
        if item.task_id in mapped:
            target = target / str(item.map_index)
        reporter = cli._FetchReporter(
            f"{item.label} {item.result.uri}", show_progress=show, show_warnings=not args.quiet
        )
        with reporter, cli._library_output(verbose=args.verbose, quiet=args.quiet):
            from airflow_s3_publisher.fetching import fetch
            from airflow_s3_publisher.s3 import TransferOptions

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
            cli._print_error(f"{item.label}: {cli._one_line(str(failure)) or type(failure).__name__}")
            return cli.exit_code_for(failure)
        reporter.summary()
        print(target, file=stdout, flush=True)
    return cli.EXIT_OK


def _folder_name(task_id: str) -> str:
    # Airflow task ids are [A-Za-z0-9_.-]+ (a task group's are "group.task"); '.' and '..' alone are not folders.
    return task_id if task_id not in (".", "..") else task_id.replace(".", "_")


# ======================================================================================================
# publish
# ======================================================================================================


class _RuleAction(argparse.Action):
    """--include/--exclude: one ordered list of rules, in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        rules = list(getattr(namespace, self.dest, None) or [])
        rules.append((self.const, values))
        setattr(namespace, self.dest, rules)


def _add_publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="file or directory to publish")
    parser.add_argument(
        "publisher",
        metavar="PUBLISHER",
        nargs="?",
        help="s3://bucket/key[,opt=name=value...], a JSON or YAML file, or '-' (optional with --bucket and --key)",
    )
    spec = parser.add_argument_group("where (override PUBLISHER)")
    spec.add_argument("--bucket", metavar="NAME")
    spec.add_argument("--key", metavar="TEMPLATE", help="object key or prefix template, with placeholders")
    spec.add_argument("--endpoint", metavar="URL", help="S3 endpoint for S3-compatible stores")
    spec.add_argument("--region", metavar="NAME")
    spec.add_argument(
        "--compress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one tar.gz instead of one object per file",
    )

    what = parser.add_argument_group("what and how")
    what.add_argument(
        "--include",
        metavar="GLOB",
        dest="rules",
        action=_RuleAction,
        const="include",
        help="publish the files matching GLOB (repeatable; applied in order with --exclude, the last match wins; "
        "if the first rule is an --include, only included files are published)",
    )
    what.add_argument(
        "--exclude",
        metavar="GLOB",
        dest="rules",
        action=_RuleAction,
        const="exclude",
        help="leave out the files matching GLOB",
    )
    what.add_argument("--compression-level", metavar="N", type=int, help="gzip level 1-9 (default: the fast one)")
    what.add_argument("--manifest", action="store_true", help="plain publish: write a manifest last (verifiable fetch)")
    what.add_argument("--allow-empty", action="store_true", help="publish an empty source instead of failing")
    what.add_argument("--metadata", metavar="KEY=VALUE", action="append", default=[], help="user metadata (repeatable)")
    what.add_argument("--tag", metavar="KEY=VALUE", action="append", default=[], help="object tag (repeatable)")
    what.add_argument("--content-type", metavar="TYPE")
    what.add_argument("--storage-class", metavar="CLASS", help="e.g. STANDARD_IA")
    what.add_argument("--server-side-encryption", metavar="MODE", help="AES256, aws:kms or aws:kms:dsse")
    what.add_argument("--kms-key-id", metavar="ID")
    what.add_argument("--expected-bucket-owner", metavar="ACCOUNT", help="12-digit account id")

    transfer = parser.add_argument_group("transfer")
    transfer.add_argument(
        "--part-size", metavar="SIZE", type=_size, help="multipart part size, e.g. 16MiB (default 8MiB)"
    )
    transfer.add_argument("--multipart-threshold", metavar="SIZE", type=_size, help="default 16MiB")
    transfer.add_argument("--concurrency", metavar="N", type=int, help="requests in flight (default 8)")
    transfer.add_argument("--max-attempts", metavar="N", type=int, help="attempts per request (default 5)")
    transfer.add_argument(
        "--no-checksums", dest="checksums", action="store_false", help="send no x-amz-checksum-* headers (e.g. GCS)"
    )
    transfer.add_argument("--spool-archives", action="store_true", help="compress to a temp file first")

    run = parser.add_argument_group("run values for the placeholders (default: the AIRFLOW_CTX_* variables)")
    run.add_argument("--dag-id", metavar="ID", help="{dagID}, {jobID} (env AIRFLOW_CTX_DAG_ID)")
    run.add_argument("--task-id", metavar="ID", help="{taskID} (env AIRFLOW_CTX_TASK_ID)")
    run.add_argument("--run-id", metavar="ID", help="{runID}, {jobID} (env AIRFLOW_CTX_DAG_RUN_ID)")
    run.add_argument("--try-number", metavar="N", type=int, help="{tryNumber} (env AIRFLOW_CTX_TRY_NUMBER)")
    run.add_argument("--map-index", metavar="N", type=int, help="{mapIndex}: pass '{{ ti.map_index }}'")
    run.add_argument("--execution-id", metavar="ID", help="{executionID}: pass '{{ ti.id }}'")

    out = parser.add_argument_group("output")
    out.add_argument("--aws-conn-id", metavar="ID", help="Airflow AWS connection ('' for boto3's default chain)")
    out.add_argument("--xcom-file", metavar="PATH", type=Path, help="also write the PublishedResult JSON there")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress, summary or warnings on stderr")
    out.add_argument("-v", "--verbose", action="store_true", help="also show Airflow's and botocore's log lines")


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def _size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 8388608, 8MiB or 16M, not {text!r}")
    unit = (match.group(2) or "b").lower()[0]
    return int(match.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise cli._InputError(f"{flag} {value!r}: expected KEY=VALUE")
        pairs[name] = text
    return pairs


def run_values(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The run's values for the placeholders: options first, then the AIRFLOW_CTX_* variables."""
    values: dict[str, Any] = {}
    for name, variable in CTX_ENV.items():
        given = getattr(args, name)
        values[name] = given if given is not None else (environ.get(variable) or None)
    if values["try_number"] is not None:
        try:
            values["try_number"] = int(values["try_number"])
        except ValueError:
            raise cli._InputError(
                f"try number {values['try_number']!r} (from {CTX_ENV['try_number']}) is not a whole number"
            ) from None
    values["map_index"] = args.map_index
    values["execution_id"] = args.execution_id
    return values


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


def default_conn_id(given: str | None, environ: Mapping[str, str], home: Path) -> str | None:
    """The connection ``publish`` uses: the given one ('' for none), else ``aws_default`` where Airflow
    is configured, else none (boto3's default chain)."""
    if given is not None:
        return given or None
    configured = any(name in environ for name in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRFLOW_CONN_AWS_DEFAULT"))
    if configured or (home / "airflow" / "airflow.cfg").is_file():
        return "aws_default"
    return None


def _cmd_publish(args: argparse.Namespace) -> int:
    from airflow_s3_publisher.filters import FileFilter, Rule
    from airflow_s3_publisher.naming import RunInfo
    from airflow_s3_publisher.options import ObjectOptions
    from airflow_s3_publisher.spec import build_publisher_spec

    publisher = cli._read_publisher(args.publisher) if args.publisher is not None else None
    spec = build_publisher_spec(
        publisher, bucket=args.bucket, key=args.key, endpoint=args.endpoint, region=args.region, compress=args.compress
    )
    values = run_values(args, os.environ)
    run = RunInfo(**values)
    _check_placeholders(spec.key, spec.compress, run, args)
    rules: list[Rule] = [Rule(kind, pattern) for kind, pattern in (args.rules or [])]
    file_filter = FileFilter(rules)
    objects = ObjectOptions(
        metadata=_pairs(args.metadata, "--metadata"),
        tags=_pairs(args.tag, "--tag"),
        content_type=args.content_type,
        storage_class=args.storage_class,
        server_side_encryption=args.server_side_encryption,
        kms_key_id=args.kms_key_id,
        expected_bucket_owner=args.expected_bucket_owner,
    )
    transfer = _transfer(args)
    conn_id = default_conn_id(args.aws_conn_id, os.environ, Path.home())
    context = {
        "run_id": run.run_id,
        "ti": SimpleNamespace(
            dag_id=run.dag_id,
            task_id=run.task_id,
            id=run.execution_id,
            map_index=run.map_index,
            try_number=run.try_number,
        ),
    }
    show = not args.quiet and cli._stderr_is_terminal()
    reporter = _PublishReporter(spec.bucket, show_progress=show, quiet=args.quiet)
    stdout = sys.stdout
    with reporter, cli._library_output(verbose=args.verbose, quiet=args.quiet):
        from airflow_s3_publisher.publishing import publish

        result = publish(
            args.source,
            spec,
            context=context,
            aws_conn_id=conn_id,
            compression_level=args.compression_level,
            manifest=args.manifest,
            allow_empty=args.allow_empty,
            file_filter=file_filter,
            object_options=objects,
            transfer=transfer,
            logger=reporter,
            on_progress=reporter.update,
        )
    reporter.summary()
    line = result_json(result)
    if args.xcom_file is not None:
        _write_xcom_file(args.xcom_file, line)
    sys.stderr.flush()  # a BashOperator reads stderr and stdout as one stream: the JSON must come last
    print(line, file=stdout, flush=True)
    return cli.EXIT_OK


def _transfer(args: argparse.Namespace) -> TransferOptions:
    from airflow_s3_publisher.s3 import TransferOptions

    given = {
        "part_size": args.part_size,
        "multipart_threshold": args.multipart_threshold,
        "concurrency": args.concurrency,
        "max_attempts": args.max_attempts,
    }
    try:
        return TransferOptions(
            **{name: value for name, value in given.items() if value is not None},
            checksums=args.checksums,
            spool_archives=args.spool_archives,
        )
    except ValueError as err:
        raise cli._InputError(str(err)) from None


def _check_placeholders(template: str, compress: bool, run: Any, args: argparse.Namespace) -> None:
    """Refuse a key whose placeholders this run cannot fill, naming the option or variable that would."""
    from airflow_s3_publisher.naming import apply_suffix, placeholders_in

    known = run.values(datetime.now(UTC), "node")
    missing = [name for name in placeholders_in(apply_suffix(template, compress)) if known.get(name) is None]
    if not missing:
        return
    sources: dict[str, str] = {
        "dagID": f"--dag-id (or {CTX_ENV['dag_id']})",
        "taskID": f"--task-id (or {CTX_ENV['task_id']})",
        "runID": f"--run-id (or {CTX_ENV['run_id']})",
        "tryNumber": f"--try-number (or {CTX_ENV['try_number']})",
        "mapIndex": "--map-index (in a BashOperator: --map-index '{{ ti.map_index }}')",
        "executionID": "--execution-id (in a BashOperator: --execution-id '{{ ti.id }}')",
    }
    needs: list[str] = []
    for name in missing:
        if name == "jobID":
            needs += [sources[n] for n in ("dagID", "runID") if known.get(n) is None]
        else:
            needs.append(sources[name])
    needs = list(dict.fromkeys(needs))
    names = ", ".join("{" + name + "}" for name in missing)
    raise InvalidSpecError(f"key {template!r} uses {names}, which this run does not define: pass {'; '.join(needs)}")


def _write_xcom_file(path: Path, line: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n", encoding="utf-8")
    except OSError as err:
        raise OSError(f"published, but cannot write --xcom-file {str(path)!r}: {err.strerror or err}") from err


class _PublishReporter(cli._FetchReporter):
    """``publish()``'s logger: the bar on a terminal; elsewhere its progress and summary lines on stderr."""

    def __init__(self, bucket: str, *, show_progress: bool, quiet: bool) -> None:
        super().__init__(f"to s3://{bucket}", show_progress=show_progress, show_warnings=not quiet, verb="Publishing")
        self._lines = not show_progress and not quiet

    def info(self, msg: str, /, *args: Any) -> None:
        super().info(msg, *args)
        if self._lines:
            print(cli._format(msg, args), file=sys.stderr, flush=True)


def result_json(result: PublishedResult) -> str:
    """The one-line JSON that ``publish`` prints (and a BashOperator pushes to XCom)."""
    return json.dumps(result.to_dict(), separators=(",", ":"))
