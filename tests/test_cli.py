"""The ``airflow-s3-publisher`` command against a real SeaweedFS server.

Most tests run it in this process (``main(args)``, stdout and stderr captured, as the console script
calls it). The installed console script runs in a fresh process where that is what is tested: that
Airflow and boto3, imported by the command itself, write nothing on stdout and, below warnings, nothing
on stderr (so an error is one line, and a success says nothing there; in this process Airflow's logging
was set up by the tests, at INFO), the progress bar on a real terminal, and the cost of an import.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from airflow_s3_publisher import publish
from airflow_s3_publisher.cli import exit_code_for
from airflow_s3_publisher.exceptions import (
    ChecksumMismatchError,
    FetchError,
    InvalidSpecError,
    PublishError,
    S3RequestError,
    UnsafeArchiveError,
)
from tests.support import (
    SAMPLE_FILES,
    CliRun,
    make_tree,
    read_tree,
    run_cli_in_process,
    sha256_b64,
    use_connection,
)
from tools.seaweed import ADMIN, READER, WRITE_ONLY_BUCKET, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CLI = Path(sys.executable).parent / "airflow-s3-publisher"
ESC = "\x1b"


class Cli(Protocol):
    """``cli("get", ...)``: run the command in this process (see :func:`tests.support.run_cli_in_process`)."""

    def __call__(self, *args: str, cwd: Path | None = None, stdin: str | None = None) -> CliRun: ...


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> CliRun:
        return run_cli_in_process(capsys, *args, cwd=cwd, stdin=stdin)

    return run


def run_console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in a fresh process, stdout and stderr captured (neither a terminal)."""
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        input="",
        timeout=180,
        check=False,
    )


def assert_one_error_line(proc: CliRun | subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said so in one ``airflow-s3-publisher: error:`` line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("airflow-s3-publisher: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def conn_id(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    """Airflow connection ``cli_admin`` (ADMIN), defined in os.environ so subprocesses inherit it."""
    return use_connection(monkeypatch, "cli_admin", seaweed, ADMIN)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "out", SAMPLE_FILES)


# ------------------------------------------------------------------------------------------------ get


def test_get_compressed_result(source: Path, bucket: str, conn_id: str, tmp_path: Path) -> None:
    result = publish(source, bucket=bucket, key="runs/r1/report", compress=True, aws_conn_id=conn_id)
    path = write_json(tmp_path / "result.json", result.to_dict())
    dest = tmp_path / "fetched"

    proc = run_console_script("get", str(path), "-o", str(dest), "--aws-conn-id", conn_id)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{dest}\n"
    assert read_tree(dest) == SAMPLE_FILES
    # Neither stream is a terminal: no progress bar, no escape codes, nothing on stderr at all.
    assert ESC not in proc.stdout + proc.stderr
    assert proc.stderr == ""


def test_get_from_stdin_bare_params_into_default_directory(
    cli: Cli, source: Path, bucket: str, conn_id: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="runs/r2/daily", compress=True, aws_conn_id=conn_id)
    work = tmp_path / "cwd"
    work.mkdir()

    proc = cli("get", "-", "--aws-conn-id", conn_id, cwd=work, stdin=json.dumps(result.to_dict()["Params"]))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "daily\n"
    assert read_tree(work / "daily") == SAMPLE_FILES
    assert sorted(p.name for p in work.iterdir()) == ["daily"]


def test_get_no_extract_keeps_the_verified_archive(
    cli: Cli, source: Path, bucket: str, conn_id: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="raw", compress=True, aws_conn_id=conn_id)
    dest = tmp_path / "in"

    proc = cli("get", json.dumps(result.to_dict()), "-o", str(dest), "--no-extract", "--aws-conn-id", conn_id)

    assert proc.returncode == 0, proc.stderr
    (archive,) = dest.iterdir()
    assert archive.name == "raw.tar.gz"
    assert sha256_b64(archive.read_bytes()) == result.checksum_sha256


def test_get_plain_prefix(cli: Cli, source: Path, bucket: str, conn_id: str, tmp_path: Path) -> None:
    result = publish(source, bucket=bucket, key="plain/run-7", aws_conn_id=conn_id)
    path = write_json(tmp_path / "result.json", result.to_dict())
    work = tmp_path / "cwd"
    work.mkdir()

    proc = cli("get", str(path), "--aws-conn-id", conn_id, cwd=work)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "run-7\n"
    assert read_tree(work / "run-7") == SAMPLE_FILES


def test_get_tampered_checksum_exits_3_and_writes_nothing(
    source: Path, bucket: str, conn_id: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="tamper", compress=True, aws_conn_id=conn_id)
    wrong = {**result.to_dict()["Params"], "ChecksumSHA256": sha256_b64(b"something else")}
    path = write_json(tmp_path / "result.json", wrong)
    dest = tmp_path / "keep" / "dest"

    proc = run_console_script("get", str(path), "-o", str(dest), "--aws-conn-id", conn_id)

    assert_one_error_line(proc, 3, "SHA-256", "nothing was written")
    assert not dest.exists()
    assert list((tmp_path / "keep").iterdir()) == []  # no staging directory left behind either


def test_get_missing_object_exits_4(bucket: str, conn_id: str, tmp_path: Path) -> None:
    path = write_json(tmp_path / "result.json", {"Bucket": bucket, "Key": "never/published.tar.gz"})

    proc = run_console_script("get", str(path), "-o", str(tmp_path / "in"), "--aws-conn-id", conn_id)

    assert_one_error_line(proc, 4, "GetObject", "NoSuchKey", f"s3://{bucket}/never/published.tar.gz")
    assert not (tmp_path / "in").exists()


def test_get_access_denied_exits_4_without_credentials(
    source: Path, bucket: str, conn_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer
) -> None:
    result = publish(source, bucket=bucket, key="secret", compress=True, aws_conn_id=conn_id)
    reader = use_connection(monkeypatch, "cli_reader", seaweed, READER)  # may only read WRITE_ONLY_BUCKET

    proc = run_console_script("get", json.dumps(result.to_dict()), "-o", str(tmp_path / "in"), "--aws-conn-id", reader)

    line = assert_one_error_line(proc, 4, "AccessDenied")
    assert READER.secret_key not in line
    assert READER.access_key not in line


def test_get_invalid_result_exits_2(cli: Cli, tmp_path: Path) -> None:
    missing = cli("get", str(tmp_path / "nope.json"))
    assert_one_error_line(missing, 2, "does not exist")
    broken = cli("get", "-", stdin="{not json")
    assert_one_error_line(broken, 2, "not valid PublishedResult JSON")
    no_key = cli("get", '{"Bucket": "b"}')
    assert_one_error_line(no_key, 2, "needs both Bucket and Key")


def test_get_draws_a_byte_progress_bar_on_a_terminal(
    bucket: str, conn_id: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    # Incompressible, so the stored archive is about as large as the file: a few MB to count.
    files = {"model.bin": os.urandom(6 * 1024 * 1024), "notes.txt": b"trained\n"}
    result = publish(make_tree(tmp_path / "out", files), bucket=bucket, key="tty", compress=True, aws_conn_id=conn_id)
    path = write_json(tmp_path / "result.json", result.to_dict())
    dest = tmp_path / "in"
    master, slave = pty.openpty()
    captured = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the child has exited and the slave is closed
                return
            if not chunk:
                return
            captured.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [str(CLI), "get", str(path), "-o", str(dest), "--aws-conn-id", conn_id],
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"},
            timeout=180,
            check=False,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    terminal = captured.decode("utf-8", "replace")
    assert proc.returncode == 0, terminal
    assert proc.stdout == f"{dest}\n".encode()  # stdout stays clean for scripts
    assert ESC in terminal  # the bar was drawn (and hidden/removed with escape codes)
    # rich's DownloadColumn: "<done>/<total> MB" in decimal megabytes; the bar ends at the full size.
    size_mb = f"{s3_admin.head_object(Bucket=bucket, Key=result.key)['ContentLength'] / 1e6:.1f}"
    assert f"{size_mb}/{size_mb} MB" in terminal, terminal
    assert "Fetched s3://" in terminal  # the closing summary
    assert read_tree(dest) == files


# ------------------------------------------------------------------------------------------------ presign


def test_presign_serves_the_published_version_after_overwrite(
    source: Path, versioned_bucket: str, conn_id: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    result = publish(source, bucket=versioned_bucket, key="pinned", compress=True, aws_conn_id=conn_id)
    assert result.version_id
    published = s3_admin.get_object(Bucket=versioned_bucket, Key=result.key, VersionId=result.version_id)
    original = published["Body"].read()
    s3_admin.put_object(Bucket=versioned_bucket, Key=result.key, Body=b"overwritten later")
    path = write_json(tmp_path / "result.json", result.to_dict())

    proc = run_console_script("presign", str(path), "--expires", "300", "--aws-conn-id", conn_id)

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    url = proc.stdout.strip()
    assert proc.stdout == url + "\n"
    assert url.startswith(f"{result.endpoint}/{versioned_bucket}/pinned.tar.gz?")
    assert "versionId=" in url
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "X-Amz-Expires=300" in url
    assert ADMIN.secret_key not in url
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own loopback server
        body = response.read()
    assert body == original
    assert sha256_b64(body) == result.checksum_sha256
    assert hashlib.sha256(body).digest() != hashlib.sha256(b"overwritten later").digest()


def test_presign_without_version_warns(cli: Cli, source: Path, bucket: str, conn_id: str) -> None:
    result = publish(source, bucket=bucket, key="latest", compress=True, aws_conn_id=conn_id)
    proc = cli("presign", json.dumps(result.to_dict()), "--aws-conn-id", conn_id)
    assert proc.returncode == 0, proc.stderr
    assert "no VersionID" in proc.stderr
    with urllib.request.urlopen(proc.stdout.strip(), timeout=30) as response:  # noqa: S310 - loopback
        assert sha256_b64(response.read()) == result.checksum_sha256


def test_presign_of_a_prefix_exits_2(cli: Cli, tmp_path: Path) -> None:
    path = write_json(tmp_path / "result.json", {"Type": "s3", "Params": {"Bucket": "b-1", "Key": "plain/run/"}})
    proc = cli("presign", str(path))
    assert_one_error_line(proc, 2, "s3://b-1/plain/run/ is a prefix", "one object")


@pytest.mark.parametrize("expires", ["0", "604801", "soon"])
def test_presign_expiry_out_of_range_exits_2(cli: Cli, expires: str) -> None:
    proc = cli("presign", '{"Bucket": "b-1", "Key": "k.tar.gz"}', "--expires", expires)
    assert_one_error_line(proc, 2, "--expires")


def test_presign_needs_only_read_access(
    cli: Cli, source: Path, conn_id: str, monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer
) -> None:
    result = publish(source, bucket=WRITE_ONLY_BUCKET, key="for-reader", compress=True, aws_conn_id=conn_id)
    reader = use_connection(monkeypatch, "cli_reader", seaweed, READER)
    proc = cli("presign", json.dumps(result.to_dict()), "--aws-conn-id", reader)
    assert proc.returncode == 0, proc.stderr
    with urllib.request.urlopen(proc.stdout.strip(), timeout=30) as response:  # noqa: S310 - loopback
        assert sha256_b64(response.read()) == result.checksum_sha256


# ------------------------------------------------------------------------------------------------ render


def test_render_uri(cli: Cli) -> None:
    proc = cli(
        "render",
        "s3://my-bucket/results/{jobID}/{date}/{time},opt=compress=true",
        "--dag-id",
        "etl",
        "--run-id",
        "manual__2026-01-01T00:00:00+00:00",
        "--at",
        "2026-01-02T03:04:05Z",
    )
    assert proc.returncode == 0, proc.stderr
    key = "results/etl__manual__2026-01-01T00-00-00-00-00/20260102/030405.tar.gz"
    assert proc.stdout.splitlines() == [key, f"s3://my-bucket/{key}"]
    assert proc.stderr == ""


def test_render_yaml_file(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "publisher.yaml"
    spec.write_text(
        "Publisher:\n"
        "  Type: s3\n"
        "  Params:\n"
        "    Bucket: my-bucket\n"
        "    Key: runs/{dagID}/{taskID}/{mapIndex}-{tryNumber}-{nodeID}\n"
        "    Endpoint: http://127.0.0.1:8333\n"
        "    Encoding: plain\n"
    )
    run = ["--dag-id", "etl", "--task-id", "load", "--map-index", "3", "--try-number", "2", "--node-id", "worker-1"]
    proc = cli("render", str(spec), *run)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["runs/etl/load/3-2-worker-1/", "s3://my-bucket/runs/etl/load/3-2-worker-1/"]


def test_render_json_from_stdin_with_compress_override(cli: Cli) -> None:
    spec = {"Type": "s3", "Params": {"bucket": "my-bucket", "key": "daily/{date}", "compress": False}}
    proc = cli("render", "-", "--compress", "--at", "2026-03-04T23:59:59-02:00", stdin=json.dumps(spec))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "daily/20260305.tar.gz"  # {date} is the UTC date


def test_render_unknown_placeholder_exits_2(cli: Cli) -> None:
    proc = cli("render", "s3://my-bucket/results/{jobid}/")
    assert_one_error_line(proc, 2, "unknown placeholder {jobid}", "Did you mean {jobID}?")


def test_render_missing_run_value_names_the_flags(cli: Cli) -> None:
    proc = cli("render", "s3://my-bucket/results/{jobID}/", "--dag-id", "etl")
    line = assert_one_error_line(proc, 2, "uses {jobID}", "pass --run-id to render it")
    assert "context=" not in line  # Python advice means nothing on the command line


def test_render_invalid_spec_exits_2(cli: Cli, tmp_path: Path) -> None:
    assert_one_error_line(cli("render", "s3://Bad_Bucket/k"), 2, "invalid bucket name 'Bad_Bucket'")
    assert_one_error_line(cli("render", str(tmp_path / "missing.yaml")), 2, "does not exist")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("Params: [unclosed\n")
    assert_one_error_line(cli("render", str(bad_yaml)), 2, "not valid YAML")
    assert_one_error_line(cli("render", "s3://b-1/k", "--at", "yesterday"), 2, "ISO 8601")


# ------------------------------------------------------------------------------------------------ the command


@pytest.mark.parametrize("command", [[], ["get"], ["presign"], ["render"]])
def test_help(cli: Cli, command: list[str]) -> None:
    proc = cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: airflow-s3-publisher {' '.join(command)}".rstrip())
    assert "exit codes:" in proc.stdout
    if command:
        assert "examples:" in proc.stdout
        assert f"airflow-s3-publisher {command[0]} " in proc.stdout.split("examples:")[1]


def test_usage_errors_are_one_line_exit_2(cli: Cli) -> None:
    assert_one_error_line(cli(), 2, "required: COMMAND")
    assert_one_error_line(cli("get"), 2, "RESULT", "get --help")
    assert_one_error_line(cli("fetch", "x"), 2, "invalid choice")


def test_import_is_cheap() -> None:
    code = (
        "import sys, airflow_s3_publisher.cli as cli; cli.build_parser(); "
        "heavy = {'airflow', 'boto3', 'botocore', 'rich', 'yaml'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == "[]"


def test_exit_codes() -> None:
    s3_error = S3RequestError("GetObject failed", operation="GetObject", bucket="b")
    incomplete = FetchError("the prefix is incomplete")
    incomplete.__cause__ = s3_error
    assert exit_code_for(InvalidSpecError("bad")) == 2
    assert exit_code_for(ChecksumMismatchError("bad", expected="a", actual="b")) == 3
    assert exit_code_for(UnsafeArchiveError("bad")) == 3
    assert exit_code_for(s3_error) == 4
    assert exit_code_for(incomplete) == 4
    assert exit_code_for(FetchError("bad")) == 1
    assert exit_code_for(PublishError("bad")) == 1
    assert exit_code_for(OSError("disk full")) == 1
