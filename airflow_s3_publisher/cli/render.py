"""``airflow-s3-publisher render SPEC``: validate a publisher spec and print the key it renders to."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from airflow_s3_publisher.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Formatter,
)
from airflow_s3_publisher.cli.inputs import read_publisher
from airflow_s3_publisher.exceptions import InvalidSpecError

_RENDER_DESCRIPTION = """\
Validate a publisher spec and print the object key it renders to (first line) and its s3:// URI
(second line), without touching S3.

SPEC is Bacalhau's imperative form (s3://bucket/key,opt=compress=true,...), or a JSON or YAML file
holding the declarative form ({"Type": "s3", "Params": {...}}, optionally under a 'Publisher' key),
or '-' to read that file from stdin. The run placeholders ({jobID}, {dagID}, {runID}, ...) take their
values from the options below; {date} and {time} from --at (default now, UTC); {nodeID} from
--node-id (default this host's name).
"""

_RENDER_EXAMPLES = """\
examples:
  airflow-s3-publisher render 's3://my-bucket/results/{jobID}/{date},opt=compress=true' \\
      --dag-id etl --run-id manual__2026-01-01T00:00:00+00:00 --at 2026-01-01T12:00:00Z
  airflow-s3-publisher render publisher.yaml --dag-id etl --run-id scheduled__2026-01-01
  airflow-s3-publisher render publisher.json --no-compress

"""


def register(commands: Any) -> None:
    """Add ``render`` to the subcommands."""
    render = commands.add_parser(
        "render",
        help="validate a publisher spec and print the key it renders to",
        description=_RENDER_DESCRIPTION,
        epilog=_RENDER_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    render.add_argument("spec", metavar="SPEC", help="s3:// publisher URI, JSON or YAML file, or '-' for stdin")
    render.add_argument("--dag-id", metavar="ID", help="for {dagID} and {jobID}")
    render.add_argument("--task-id", metavar="ID", help="for {taskID}")
    render.add_argument("--run-id", metavar="ID", help="for {runID} and {jobID} (sanitised as at publish time)")
    render.add_argument("--execution-id", metavar="ID", help="for {executionID} (the task try's ti.id)")
    render.add_argument("--map-index", metavar="N", type=int, help="for {mapIndex} (-1 when not mapped)")
    render.add_argument("--try-number", metavar="N", type=int, help="for {tryNumber} (1 for the first try)")
    render.add_argument("--node-id", metavar="NAME", help="for {nodeID} (default: this host's name)")
    render.add_argument(
        "--compress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override the spec's Compress setting (it decides the .tar.gz or '/' suffix)",
    )
    render.add_argument(
        "--at",
        metavar="ISO-DATETIME",
        type=_datetime,
        help="publish time for {date} and {time}, e.g. 2026-01-01T12:00:00Z; without a zone it is UTC (default: now)",
    )
    render.set_defaults(func=_cmd_render)


def _datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date-time such as 2026-01-01T12:00:00Z, not {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _cmd_render(args: argparse.Namespace) -> int:
    from airflow_s3_publisher.naming import RunInfo, apply_suffix, placeholders_in
    from airflow_s3_publisher.plan import resolve_target
    from airflow_s3_publisher.settings import PublishSettings

    settings = PublishSettings.build(publisher=read_publisher(args.spec), compress=args.compress)
    spec = settings.spec()
    run = RunInfo(
        dag_id=args.dag_id,
        task_id=args.task_id,
        run_id=args.run_id,
        execution_id=args.execution_id,
        map_index=args.map_index,
        try_number=args.try_number,
    )
    now: datetime = args.at or datetime.now(UTC)
    node_id: str | None = args.node_id
    try:
        key = resolve_target(settings, run, now, node_id).key
    except InvalidSpecError as err:
        values = run.values(now, node_id or "node")
        missing = [name for name in placeholders_in(apply_suffix(spec.key, spec.compress)) if values.get(name) is None]
        flags = [
            flag
            for flag in dict.fromkeys(flag for name in missing for flag in _PLACEHOLDER_FLAGS.get(name, ()))
            if getattr(args, flag[2:].replace("-", "_")) is None
        ]
        if not flags:
            raise
        wanted = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
        names = ", ".join("{" + name + "}" for name in missing)
        raise InvalidSpecError(
            f"key {spec.key!r} uses {names}, which a run fills in: pass {wanted} to render it"
        ) from err
    print(key)
    print(f"s3://{spec.bucket}/{key}")
    return EXIT_OK


_PLACEHOLDER_FLAGS: dict[str, tuple[str, ...]] = {
    "jobID": ("--dag-id", "--run-id"),
    "executionID": ("--execution-id",),
    "dagID": ("--dag-id",),
    "taskID": ("--task-id",),
    "runID": ("--run-id",),
    "mapIndex": ("--map-index",),
    "tryNumber": ("--try-number",),
}
