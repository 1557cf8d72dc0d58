"""The ``airflow-s3-publisher`` command: fetch, pre-sign and preview published results from a shell.

Only the standard library is imported at module level, so ``--help`` stays fast; Airflow, boto3 and
rich are imported inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

from airflow_s3_publisher.exceptions import (
    ChecksumMismatchError,
    InvalidSpecError,
    S3PublisherError,
    S3RequestError,
    UnsafeArchiveError,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from airflow_s3_publisher.progress import Snapshot
    from airflow_s3_publisher.result import PublishedResult

PROG = "airflow-s3-publisher"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_S3 = 4
EXIT_INTERRUPTED = 130

#: The longest validity S3 accepts for a SigV4 pre-signed URL (7 days).
MAX_EXPIRES = 604800
DEFAULT_EXPIRES = 900
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

_MAIN_DESCRIPTION = """\
Fetch, pre-sign and preview results published by airflow-s3-publisher (Bacalhau's S3 publisher
format). Credentials come from the Airflow AWS connection --aws-conn-id (default aws_default, e.g.
from an AIRFLOW_CONN_AWS_DEFAULT environment variable), else from boto3's default chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, instance roles).
"""

_GET_DESCRIPTION = """\
Download a published result, verify its SHA-256 and unpack it (like `bacalhau get`).

RESULT is a file holding the PublishedResult JSON ({"Type": "s3", "Params": {...}} or just the params
dict, i.e. an S3 input source spec), '-' to read it from stdin, or the JSON text itself.

Without -o, files land in ./NAME, where NAME is the last segment of the key without '.tar.gz' or the
trailing '/' (results/run-1/20260101.tar.gz -> ./20260101, results/run-1/ -> ./run-1). With -o DIR
they land directly in DIR; an existing DIR is merged into (same-named files are replaced). Everything
is staged beside DIR and moved into place only once verified: on any failure DIR is left as it was.
The destination path is printed on stdout. A progress bar is drawn on stderr when it is a terminal.
"""

_GET_EXAMPLES = """\
examples:
  airflow-s3-publisher get result.json
  airflow-s3-publisher get result.json -o ./inputs --aws-conn-id my_s3
  cat result.json | airflow-s3-publisher get - -o ./inputs
  airflow-s3-publisher get '{"Bucket": "b", "Key": "results/run-1.tar.gz"}' --no-extract

"""

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


# ======================================================================================================
# Entry point
# ======================================================================================================


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
    except _UsageError as err:
        _print_error(str(err))
        return EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (e.g. `| head`): nothing more can be said there.
        _silence_stdout()
        return EXIT_ERROR
    except Exception as err:  # every failure becomes one line and an exit code
        code = exit_code_for(err)
        if isinstance(err, (S3PublisherError, OSError, _InputError)):
            # The package's messages never hold credentials; they name the value, key or file at fault.
            _print_error(_one_line(str(err)) or type(err).__name__)
            return code
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        _print_error(f"unexpected {type(err).__name__}: {_redact(str(err))}")
        return code


def exit_code_for(err: BaseException) -> int:
    """The documented exit code for an error raised by a subcommand."""
    if isinstance(err, (InvalidSpecError, _InputError)):
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


class _UsageError(Exception):
    """A command-line usage error (argparse's ``error``), reported as one line with exit code 2."""


class _InputError(Exception):
    """A RESULT or SPEC argument that cannot be read or parsed (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors become one line on stderr (pointing at --help) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns - 2
    except (OSError, ValueError, AttributeError):
        return 98


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``airflow-s3-publisher`` (each subcommand has ``--help`` with examples)."""
    from airflow_s3_publisher import __version__

    parser = _Parser(
        prog=PROG,
        description=_MAIN_DESCRIPTION,
        epilog=EXIT_CODES_HELP + "\nRun 'airflow-s3-publisher COMMAND --help' for a command's options and examples.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)

    get = commands.add_parser(
        "get",
        help="download, verify and unpack a published result",
        description=_GET_DESCRIPTION,
        epilog=_GET_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=_Formatter,
    )
    get.add_argument("result", metavar="RESULT", help="PublishedResult JSON file, '-' for stdin, or the JSON text")
    get.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        type=Path,
        help="directory to put the files in (default: ./NAME, see above)",
    )
    _add_conn_options(get)
    get.add_argument(
        "--no-extract",
        dest="extract",
        action="store_false",
        help="store a .tar.gz result as the archive file itself (still verified) instead of unpacking it",
    )
    get.add_argument(
        "--no-checksums",
        dest="checksums",
        action="store_false",
        help="send no x-amz-checksum-* header, for stores that refuse them (e.g. GCS); the SHA-256 is still "
        "checked locally",
    )
    get.add_argument("-q", "--quiet", action="store_true", help="no progress bar, summary or warnings on stderr")
    get.set_defaults(func=_cmd_get)

    presign = commands.add_parser(
        "presign",
        help="print a pre-signed GET URL for a published object",
        description=_PRESIGN_DESCRIPTION,
        epilog=_PRESIGN_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=_Formatter,
    )
    presign.add_argument("result", metavar="RESULT", help="PublishedResult JSON file, '-' for stdin, or the JSON text")
    presign.add_argument(
        "--expires",
        metavar="SECONDS",
        type=_expires,
        default=DEFAULT_EXPIRES,
        help=f"validity of the URL in seconds, 1 to {MAX_EXPIRES} (7 days) (default: {DEFAULT_EXPIRES})",
    )
    _add_conn_options(presign)
    presign.add_argument("-q", "--quiet", action="store_true", help="no warnings on stderr")
    presign.set_defaults(func=_cmd_presign)

    render = commands.add_parser(
        "render",
        help="validate a publisher spec and print the key it renders to",
        description=_RENDER_DESCRIPTION,
        epilog=_RENDER_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=_Formatter,
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
    from airflow_s3_publisher.cli_shell import register  # publish, list, and get DAG_ID RUN_ID

    register(commands)
    return parser


def _add_conn_options(parser: argparse.ArgumentParser) -> None:
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


def _datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date-time such as 2026-01-01T12:00:00Z, not {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ======================================================================================================
# get
# ======================================================================================================


def _cmd_get(args: argparse.Namespace) -> int:
    result = _read_result(args.result)
    destination: Path = args.output_dir if args.output_dir is not None else Path(default_directory_name(result))
    show = not args.quiet and _stderr_is_terminal()
    reporter = _FetchReporter(result.uri, show_progress=show, show_warnings=not args.quiet)
    stdout = sys.stdout  # before the progress display redirects it
    # The bar starts first: importing Airflow takes seconds, which should not look like a hang.
    with reporter, _library_output(verbose=args.verbose, quiet=args.quiet):
        from airflow_s3_publisher.fetching import fetch
        from airflow_s3_publisher.s3 import TransferOptions

        target = fetch(
            result,
            destination,
            aws_conn_id=args.aws_conn_id,
            extract=args.extract,
            transfer=TransferOptions(checksums=args.checksums),
            logger=reporter,
            on_progress=reporter.update,
        )
    reporter.summary()
    print(target, file=stdout, flush=True)
    return EXIT_OK


def default_directory_name(result: PublishedResult) -> str:
    """``get``'s default destination: the key's last segment without ``.tar.gz`` or the trailing ``/``."""
    from airflow_s3_publisher.naming import ARCHIVE_SUFFIX

    name = result.key.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(ARCHIVE_SUFFIX):
        name = name[: -len(ARCHIVE_SUFFIX)]
    if name in ("", ".", "..") or "\x00" in name:
        return "s3-result"
    return name


class _FetchReporter:
    """The logger ``fetch()`` is given: drives a progress bar on a terminal, keeps stderr clean elsewhere.

    On a terminal, ``fetch()``'s byte counts drive a bar (bytes done of the total, rate, time left; and
    files for a prefix); its closing summary line is printed once the bar is gone. Warnings (e.g. a
    result without a checksum) always reach stderr unless ``--quiet``.
    """

    def __init__(self, what: str, *, show_progress: bool, show_warnings: bool, verb: str = "Fetching") -> None:
        self._what = what
        self._verb = verb
        self._show_progress = show_progress
        self._show_warnings = show_warnings
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_info = ""

    def __enter__(self) -> _FetchReporter:
        if not self._show_progress:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"{self._verb} {self._what}", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self, done: Snapshot) -> None:
        """Move the bar to ``done`` (called from ``fetch()``'s download threads; rich locks)."""
        if self._progress is None or self._task is None:
            return
        description = f"{self._verb} {self._what}"
        if done.total_files and done.total_files > 1:
            description += f" ({done.files}/{done.total_files} files)"
        self._progress.update(self._task, description=description, completed=done.bytes, total=done.total_bytes)

    def info(self, msg: str, /, *args: Any) -> None:
        """A progress or summary line from ``fetch()``: the last one is the summary."""
        self._last_info = _format(msg, args)

    def warning(self, msg: str, /, *args: Any) -> None:
        """A warning from ``fetch()``: printed on stderr (above the bar, if one is drawn)."""
        if not self._show_warnings:
            return
        line = f"{PROG}: warning: {_format(msg, args)}"
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def summary(self) -> None:
        """Print ``fetch()``'s closing line ("Fetched ... in N s") on a terminal."""
        if self._show_progress and self._last_info:
            print(self._last_info, file=sys.stderr, flush=True)


def _format(msg: str, args: tuple[Any, ...]) -> str:
    if not args:
        return str(msg)
    try:
        return str(msg) % args
    except (TypeError, ValueError):
        return " ".join([str(msg), *map(str, args)])


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


# ======================================================================================================
# presign
# ======================================================================================================


def _cmd_presign(args: argparse.Namespace) -> int:
    result = _read_result(args.result)
    if result.is_prefix:
        raise InvalidSpecError(
            f"{result.uri} is a prefix (a plain publish of one object per file); a pre-signed URL names one "
            f"object, so use 'airflow-s3-publisher get' for a prefix, or presign one object below it"
        )
    stdout = sys.stdout
    with _library_output(verbose=args.verbose, quiet=args.quiet):
        from airflow_s3_publisher.s3 import connect, translate_errors

        conn = connect(args.aws_conn_id, endpoint=result.endpoint, region=result.region)
        # botocore presigns with SigV2 in older AWS regions unless a signature version is configured;
        # keep the client's own (SigV4): it is what every region, R2 and MinIO accept.
        # (botocore-stubs type handlers as returning None; choose-signer handlers return the version.)
        choose_signer = cast("Callable[..., None]", _presign_with_sigv4)
        conn.client.meta.events.register_first("choose-signer.s3.GetObject", choose_signer)
        params: dict[str, str] = {"Bucket": result.bucket, "Key": result.key}
        if result.version_id:
            params["VersionId"] = result.version_id
        with translate_errors("GetObject", result.bucket, result.key):
            url = conn.client.generate_presigned_url("get_object", Params=params, ExpiresIn=args.expires)
    if not result.version_id and not args.quiet:
        print(
            f"{PROG}: warning: the result has no VersionID, so the URL serves whatever is stored at "
            f"{result.uri} when it is used, not necessarily the published bytes",
            file=sys.stderr,
            flush=True,
        )
    print(url, file=stdout, flush=True)
    return EXIT_OK


def _presign_with_sigv4(signature_version: str, **_kwargs: Any) -> str | None:
    """botocore's choose-signer hook: sign the URL with S3's SigV4 where botocore would pick SigV2."""
    if signature_version in ("v4-query", "s3v4-query"):
        return "s3v4-query"
    return None  # v4a, S3 Express or a version configured on the connection: botocore decides


# ======================================================================================================
# render
# ======================================================================================================


def _cmd_render(args: argparse.Namespace) -> int:
    from airflow_s3_publisher.naming import RunInfo, apply_suffix, placeholders_in, render_key
    from airflow_s3_publisher.spec import build_publisher_spec

    publisher = _read_publisher(args.spec)
    spec = build_publisher_spec(publisher, compress=args.compress)
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
        key = render_key(spec.key, compress=spec.compress, run=run, now=now, node_id=node_id)
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


def _read_publisher(argument: str) -> str | Mapping[str, Any]:
    """SPEC as ``build_publisher_spec`` takes it: the URI text, or the dict a JSON/YAML document holds."""
    text = argument.strip()
    if argument == "-":
        document = _load_document(_read_stream(sys.stdin, "stdin"), "stdin", suffix="")
    elif "://" in text or re.match(r"(?i)s3\s*(,|$)", text) or re.match(r"(?i)(target|dst|destination)=", text):
        return argument
    else:
        path = Path(argument)
        document = _load_document(_read_file(path, "SPEC"), str(path), suffix=path.suffix.lower())
    if isinstance(document, str):
        return document
    if isinstance(document, Mapping):
        # A Bacalhau job fragment such as {"Publisher": {"Type": "s3", "Params": {...}}} is unwrapped.
        if len(document) == 1:
            (name, inner), *_ = document.items()
            if str(name).strip().lower() == "publisher" and isinstance(inner, (Mapping, str)):
                return inner
        return document
    where = "stdin" if argument == "-" else repr(argument)
    raise _InputError(
        f"SPEC {where} holds a {type(document).__name__}; expected a publisher dict such as "
        "{'Type': 's3', 'Params': {'Bucket': ..., 'Key': ...}} or an s3:// URI"
    )


def _load_document(text: str, where: str, *, suffix: str) -> object:
    """Parse JSON (``.json``) or YAML (anything else; JSON is YAML too, and used if PyYAML is missing)."""
    if suffix != ".json":
        try:
            import importlib

            yaml: Any = importlib.import_module("yaml")
        except ImportError:
            yaml = None
        if yaml is not None:
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise _InputError(f"{where} is not valid YAML: {_one_line(str(err))}") from None
    try:
        loaded: object = json.loads(text)
    except json.JSONDecodeError as err:
        raise _InputError(f"{where} is not valid JSON: {err}") from None
    return loaded


# ======================================================================================================
# Shared helpers
# ======================================================================================================


def _read_result(argument: str) -> PublishedResult:
    """RESULT as a PublishedResult: a JSON file, ``-`` for stdin, or the JSON text itself."""
    from airflow_s3_publisher.result import PublishedResult

    if argument == "-":
        text, where = _read_stream(sys.stdin, "stdin"), "stdin"
    elif argument.lstrip().startswith("{"):
        text, where = argument, "RESULT"
    else:
        text, where = _read_file(Path(argument), "RESULT"), argument
    try:
        data: object = json.loads(text)
    except json.JSONDecodeError as err:
        raise _InputError(f"{where} is not valid PublishedResult JSON: {err}") from None
    if not isinstance(data, Mapping):
        raise _InputError(
            f"{where} holds a JSON {type(data).__name__}; expected a PublishedResult object such as "
            '{"Type": "s3", "Params": {"Bucket": ..., "Key": ...}}'
        )
    return PublishedResult.from_dict(data)


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _InputError(f"{what} file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise _InputError(f"{what} {str(path)!r} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise _InputError(f"{what} file {str(path)!r} is not UTF-8 text") from None
    except OSError as err:
        raise _InputError(f"cannot read {what} file {str(path)!r}: {err.strerror or err}") from None


def _read_stream(stream: IO[str], where: str) -> str:
    try:
        return stream.read()
    except (OSError, UnicodeDecodeError) as err:
        raise _InputError(f"cannot read {where}: {err}") from None


@contextmanager
def _library_output(*, verbose: bool, quiet: bool) -> Iterator[None]:
    """Run Airflow and boto3 with their log output on stderr.

    Importing Airflow configures its logging (structlog and the stdlib root logger) to write to
    ``sys.stdout`` at ``[logging] logging_level``. This command's stdout carries its result (a path, a
    URL) for scripts, so library logs go to stderr: warnings and errors only (errors only when
    ``quiet``), or Airflow's configured level when ``verbose``.
    """
    level = "ERROR" if quiet else "WARNING"
    if not verbose:
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = level
        # Warnings between Airflow and its providers (deprecated imports...) are not this command's
        # to report; -v shows them.
        warnings.simplefilter("ignore")
    from airflow_s3_publisher.cli_shell import disarm_task_db_guard

    disarm_task_db_guard(os.environ)
    with redirect_stdout(sys.stderr):
        import logging

        import airflow  # noqa: F401 - configures logging on import, while stdout points at stderr

        if not verbose:
            # Importing Airflow 3.1 puts its own filters first ("default" for its DeprecationWarnings,
            # which SQLAlchemy's SADeprecationWarning from Airflow's models is): ignore them again.
            warnings.simplefilter("ignore")
            for name in ("", "airflow", "botocore", "boto3", "urllib3", "s3transfer", "airflow_s3_publisher"):
                logging.getLogger(name).setLevel(level)
            # Airflow 3.1 builds a Connection through its ORM model, whose password needs the Fernet key:
            # "empty cryptography key - values will not be stored encrypted" is about the metadata DB,
            # which this command never writes to.
            logging.getLogger("airflow.models.crypto").setLevel("ERROR")
        yield


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_SECRET_FIELD = re.compile(
    r"(?i)((?:password|secret|token|aws_secret_access_key|aws_session_token)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}]+"
)


def _redact(text: str) -> str:
    """``text`` with URL user:password parts and secret-looking fields replaced by ``***``."""
    return _SECRET_FIELD.sub(r"\1***", _USERINFO.sub(r"\1***@", _one_line(text)))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_error(message: str) -> None:
    with suppress(OSError, ValueError):
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
