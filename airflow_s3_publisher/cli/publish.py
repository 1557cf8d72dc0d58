"""``airflow-s3-publisher publish SOURCE PUBLISHER``: the operator's publish from a shell or a container.

The same spec forms, settings, validation and placeholders as ``S3PublishOperator``; the
PublishedResult JSON is the last stdout line (what a BashOperator pushes to XCom) or written to
``--xcom-file`` (what a KubernetesPodOperator reads).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Formatter,
    InputError,
    format_message,
    library_output,
    stderr_is_terminal,
)
from airflow_s3_publisher.cli.get import FetchReporter
from airflow_s3_publisher.cli.inputs import read_publisher
from airflow_s3_publisher.exceptions import InvalidSpecError

if TYPE_CHECKING:
    from airflow_s3_publisher.naming import RunInfo
    from airflow_s3_publisher.options import TransferOptions
    from airflow_s3_publisher.result import PublishedResult

#: Run values a BashOperator exports (airflow.sdk.execution_time.context.context_to_airflow_vars).
CTX_ENV = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
}

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


def register(commands: Any) -> None:
    """Add ``publish``."""
    publish = commands.add_parser(
        "publish",
        help="publish a file or directory to S3 (as S3PublishOperator does)",
        description=_PUBLISH_DESCRIPTION,
        epilog=_PUBLISH_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    _add_publish_options(publish)
    publish.set_defaults(func=_cmd_publish)


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
            raise InputError(f"{flag} {value!r}: expected KEY=VALUE")
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
            raise InputError(
                f"try number {values['try_number']!r} (from {CTX_ENV['try_number']}) is not a whole number"
            ) from None
    values["map_index"] = args.map_index
    values["execution_id"] = args.execution_id
    return values


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
    from airflow_s3_publisher.settings import PublishSettings

    settings = PublishSettings.build(
        publisher=read_publisher(args.publisher) if args.publisher is not None else None,
        bucket=args.bucket,
        key=args.key,
        endpoint=args.endpoint,
        region=args.region,
        compress=args.compress,
        aws_conn_id=default_conn_id(args.aws_conn_id, os.environ, Path.home()),
        compression_level=args.compression_level,
        manifest=args.manifest,
        allow_empty=args.allow_empty,
        file_filter=FileFilter([Rule(kind, pattern) for kind, pattern in (args.rules or [])]),
        metadata=_pairs(args.metadata, "--metadata"),
        tags=_pairs(args.tag, "--tag"),
        content_type=args.content_type,
        storage_class=args.storage_class,
        server_side_encryption=args.server_side_encryption,
        kms_key_id=args.kms_key_id,
        expected_bucket_owner=args.expected_bucket_owner,
        transfer=_transfer(args),
    )
    spec = settings.spec()
    run = RunInfo(**run_values(args, os.environ))
    _check_placeholders(spec.key, spec.compress, run)
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
    show = not args.quiet and stderr_is_terminal()
    reporter = _PublishReporter(spec.bucket, show_progress=show, quiet=args.quiet)
    stdout = sys.stdout
    with reporter, library_output(verbose=args.verbose, quiet=args.quiet):
        from airflow_s3_publisher.publishing import publish

        result = publish(args.source, settings=settings, context=context, logger=reporter, on_progress=reporter.update)
    reporter.summary()
    line = result_json(result)
    if args.xcom_file is not None:
        _write_xcom_file(args.xcom_file, line)
    sys.stderr.flush()  # a BashOperator reads stderr and stdout as one stream: the JSON must come last
    print(line, file=stdout, flush=True)
    return EXIT_OK


def _transfer(args: argparse.Namespace) -> TransferOptions:
    from airflow_s3_publisher.options import TransferOptions

    given = {
        "part_size": args.part_size,
        "multipart_threshold": args.multipart_threshold,
        "concurrency": args.concurrency,
        "max_attempts": args.max_attempts,
    }
    return TransferOptions(
        **{name: value for name, value in given.items() if value is not None},
        checksums=args.checksums,
        spool_archives=args.spool_archives,
    )


def _check_placeholders(template: str, compress: bool, run: RunInfo) -> None:
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


class _PublishReporter(FetchReporter):
    """``publish()``'s logger: the bar on a terminal; elsewhere its progress and summary lines on stderr."""

    def __init__(self, bucket: str, *, show_progress: bool, quiet: bool) -> None:
        super().__init__(f"to s3://{bucket}", show_progress=show_progress, show_warnings=not quiet, verb="Publishing")
        self._lines = not show_progress and not quiet

    def info(self, msg: str, /, *args: Any) -> None:
        super().info(msg, *args)
        if self._lines:
            print(format_message(msg, args), file=sys.stderr, flush=True)


def result_json(result: PublishedResult) -> str:
    """The one-line JSON that ``publish`` prints (and a BashOperator pushes to XCom)."""
    return json.dumps(result.to_dict(), separators=(",", ":"))
