"""``airflow-s3-publisher get RESULT``: download, verify and unpack a published result, with a progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    PROG,
    Formatter,
    add_conn_options,
    format_message,
    library_output,
    stderr_is_terminal,
)
from airflow_s3_publisher.cli.inputs import read_result

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from airflow_s3_publisher.progress import Snapshot
    from airflow_s3_publisher.result import PublishedResult

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


def register(commands: Any) -> None:
    """Add ``get`` to the subcommands."""
    get = commands.add_parser(
        "get",
        help="download, verify and unpack a published result",
        description=_GET_DESCRIPTION,
        epilog=_GET_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    get.add_argument("result", metavar="RESULT", help="PublishedResult JSON file, '-' for stdin, or the JSON text")
    get.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        type=Path,
        help="directory to put the files in (default: ./NAME, see above)",
    )
    add_conn_options(get)
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


def _cmd_get(args: argparse.Namespace) -> int:
    result = read_result(args.result)
    destination: Path = args.output_dir if args.output_dir is not None else Path(default_directory_name(result))
    show = not args.quiet and stderr_is_terminal()
    reporter = FetchReporter(result.uri, show_progress=show, show_warnings=not args.quiet)
    stdout = sys.stdout  # before the progress display redirects it
    # The bar starts first: importing Airflow takes seconds, which should not look like a hang.
    with reporter, library_output(verbose=args.verbose, quiet=args.quiet):
        from airflow_s3_publisher.fetching import fetch
        from airflow_s3_publisher.options import TransferOptions

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


class FetchReporter:
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

    def __enter__(self) -> FetchReporter:
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
        self._last_info = format_message(msg, args)

    def warning(self, msg: str, /, *args: Any) -> None:
        """A warning from ``fetch()``: printed on stderr (above the bar, if one is drawn)."""
        if not self._show_warnings:
            return
        line = f"{PROG}: warning: {format_message(msg, args)}"
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def summary(self) -> None:
        """Print ``fetch()``'s closing line ("Fetched ... in N s") on a terminal."""
        if self._show_progress and self._last_info:
            print(self._last_info, file=sys.stderr, flush=True)
