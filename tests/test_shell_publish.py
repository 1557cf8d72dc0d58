"""``airflow-s3-publisher publish``: in process for its options and errors, as a subprocess with nothing
but AWS_* credentials in its environment, and inside a BashOperator of a real DAG run (``dag.test()``)
whose S3FetchOperator fetches what the BashOperator's XCom says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_s3_publisher import cli
from airflow_s3_publisher.cli.common import disarm_task_db_guard
from airflow_s3_publisher.cli.publish import default_conn_id
from airflow_s3_publisher.manifest import MANIFEST_NAME
from airflow_s3_publisher.naming import sanitize_run_id
from airflow_s3_publisher.result import PublishedResult, as_source
from tests.airflow_harness import run_dag
from tests.support import (
    SAMPLE_FILES,
    archive_members,
    make_tree,
    objects_below,
    read_tree,
    sha256_b64,
    use_connection,
)
from tools.seaweed import ADMIN, REGION, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CLI = Path(sys.executable).parent / "airflow-s3-publisher"
RUN = {
    "AIRFLOW_CTX_DAG_ID": "etl",
    "AIRFLOW_CTX_TASK_ID": "export",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-01-02T03:04:05+00:00",
    "AIRFLOW_CTX_TRY_NUMBER": "2",
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "out", {**SAMPLE_FILES, "scratch.tmp": b"temporary\n"})


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    """aws_default is SeaweedFS's ADMIN (as an environment variable); no AIRFLOW_CTX_* leaks in."""
    for name in RUN:
        monkeypatch.delenv(name, raising=False)
    return use_connection(monkeypatch, "aws_default", seaweed, ADMIN)


def publish_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["publish", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(stdout: str) -> dict[str, Any]:
    line = stdout.rstrip("\n").splitlines()[-1]
    data: dict[str, Any] = json.loads(line)
    return data


# ======================================================================================================
# In process
# ======================================================================================================


def test_placeholders_come_from_the_airflow_ctx_variables(
    conn: str,
    source: Path,
    bucket: str,
    s3_admin: S3Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in RUN.items():
        monkeypatch.setenv(name, value)
    code, out, err = publish_cli(
        capsys, str(source), f"s3://{bucket}/r/{{jobID}}/{{taskID}}/{{tryNumber}},opt=compress=true", "-q"
    )
    assert code == 0, err
    result = last_json(out)
    run_id = sanitize_run_id(RUN["AIRFLOW_CTX_DAG_RUN_ID"])
    assert result["Params"]["Key"] == f"r/etl__{run_id}/export/2.tar.gz"
    stored = objects_below(s3_admin, bucket)
    assert result["Params"]["ChecksumSHA256"] == sha256_b64(stored[result["Params"]["Key"]])
    assert archive_members(stored[result["Params"]["Key"]]) == {**SAMPLE_FILES, "scratch.tmp": b"temporary\n"}
    head = s3_admin.head_object(Bucket=bucket, Key=result["Params"]["Key"])
    assert head["Metadata"] == {
        "airflow-dag-id": "etl",
        "airflow-run-id": RUN["AIRFLOW_CTX_DAG_RUN_ID"],
        "airflow-task-id": "export",
        "airflow-try-number": "2",
        "sha256": head["Metadata"]["sha256"],
    }


def test_options_override_the_environment_and_every_setting_applies(
    conn: str,
    source: Path,
    versioned_bucket: str,
    s3_admin: S3Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for name, value in RUN.items():
        monkeypatch.setenv(name, value)
    xcom = tmp_path / "airflow" / "xcom" / "return.json"
    code, out, err = publish_cli(
        capsys,
        str(source),
        "--bucket",
        versioned_bucket,
        "--key",
        "p/{dagID}/{taskID}/{mapIndex}",
        "--task-id",
        "other",
        "--map-index",
        "3",
        "--exclude",
        "*",
        "--include",
        "*.csv",
        "--include",
        "stdout",
        "--manifest",
        "--metadata",
        "team=data",
        "--tag",
        "kind=report",
        "--content-type",
        "text/plain",
        "--concurrency",
        "2",
        "--part-size",
        "5MiB",
        "--xcom-file",
        str(xcom),
    )
    assert code == 0, err
    result = last_json(out)
    assert json.loads(xcom.read_text()) == result
    params = result["Params"]
    assert params["Key"] == "p/etl/other/3/"
    stored = objects_below(s3_admin, versioned_bucket)
    assert set(stored) == {"p/etl/other/3/stdout", "p/etl/other/3/outputs/result.csv", "p/etl/other/3/" + MANIFEST_NAME}
    assert params["ChecksumSHA256"] == sha256_b64(stored["p/etl/other/3/" + MANIFEST_NAME])
    assert params["VersionID"]
    head = s3_admin.head_object(Bucket=versioned_bucket, Key="p/etl/other/3/stdout")
    assert head["ContentType"] == "text/plain"
    assert head["Metadata"]["team"] == "data"
    assert head["Metadata"]["airflow-task-id"] == "other"
    tags = s3_admin.get_object_tagging(Bucket=versioned_bucket, Key="p/etl/other/3/stdout")["TagSet"]
    assert tags == [{"Key": "kind", "Value": "report"}]
    assert "Published 3 objects" in err  # the summary goes to stderr; stdout ends with the JSON


def test_declarative_spec_file(
    conn: str, source: Path, bucket: str, s3_admin: S3Client, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "publisher.yaml"
    spec.write_text(
        f"Publisher:\n  Type: s3\n  Params:\n    Bucket: {bucket}\n    Key: 'y/{{date}}'\n    Compress: true\n"
    )
    before = datetime.now(UTC)
    code, out, err = publish_cli(capsys, str(source), str(spec), "-q")
    after = datetime.now(UTC)
    assert code == 0, err
    key = last_json(out)["Params"]["Key"]
    assert key in {f"y/{before:%Y%m%d}.tar.gz", f"y/{after:%Y%m%d}.tar.gz"}
    assert list(objects_below(s3_admin, bucket)) == [key]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["s3://bkt/{mapIndex}"], ["uses {mapIndex}", "--map-index '{{ ti.map_index }}'"]),
        (
            ["s3://bkt/{jobID}"],
            ["uses {jobID}", "--dag-id (or AIRFLOW_CTX_DAG_ID)", "--run-id (or AIRFLOW_CTX_DAG_RUN_ID)"],
        ),
        (["s3://bkt/k", "--exclude", "**.log"], ["'**' must be a whole path segment"]),
        (["s3://bkt/{jobid}"], ["unknown placeholder {jobid}", "Did you mean {jobID}?"]),
        (["--key", "k"], ["bucket"]),
        (["s3://bkt/k", "--part-size", "1MiB"], ["below S3's minimum of 5 MiB"]),
        (["s3://bkt/k", "--metadata", "novalue"], ["--metadata 'novalue': expected KEY=VALUE"]),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    conn: str, source: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    code, out, err = publish_cli(capsys, str(source), *args)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err


def test_a_filter_that_leaves_nothing(conn: str, source: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = publish_cli(capsys, str(source), f"s3://{bucket}/k", "--include", "*.parquet")
    assert (code, out) == (1, "")
    assert "no file to publish that passes the filters --include '*.parquet'" in err


def test_which_connection_without_aws_conn_id(tmp_path: Path) -> None:
    assert default_conn_id("mine", {}, tmp_path) == "mine"
    assert default_conn_id("", {"AIRFLOW_HOME": "/x"}, tmp_path) is None
    assert default_conn_id(None, {}, tmp_path) is None
    assert default_conn_id(None, {"AIRFLOW_HOME": "/opt/airflow"}, tmp_path) == "aws_default"
    assert default_conn_id(None, {"AIRFLOW_CONN_AWS_DEFAULT": "{}"}, tmp_path) == "aws_default"
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "airflow.cfg").write_text("")
    assert default_conn_id(None, {}, tmp_path) == "aws_default"


def test_the_task_db_guard_is_replaced_by_an_in_memory_db() -> None:
    environ = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///", "OTHER": "x"}
    disarm_task_db_guard(environ)
    assert environ == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite://", "OTHER": "x"}
    real = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/airflow"}
    disarm_task_db_guard(real)
    assert real == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/airflow"}


# ======================================================================================================
# Sources S3FetchOperator and fetch() accept
# ======================================================================================================


def test_sources_as_json_text_uri_and_object_storage_path() -> None:
    from airflow.sdk import ObjectStoragePath

    result = PublishedResult("bkt", "a/b.tar.gz", "us-east-1", "http://s3:9000", "v1", sha256_b64(b"x"))
    assert as_source(json.dumps(result.to_dict()) + "\n") == result
    assert as_source(result.to_dict()) == result
    assert as_source("s3://bkt/a/prefix/") == PublishedResult("bkt", "a/prefix/")
    assert as_source(ObjectStoragePath("s3://bkt/a/b.tar.gz", conn_id="x")) == PublishedResult("bkt", "a/b.tar.gz")
    for bad, fragment in (("s3://bkt", "expected s3://bucket/key"), ("{not json", "not valid"), ("b/k", "invalid")):
        with pytest.raises(ValueError, match=fragment):
            as_source(bad)
    with pytest.raises(ValueError, match="not on S3"):
        as_source(ObjectStoragePath("file:///tmp/x"))


def test_fetch_takes_a_uri_and_an_object_storage_path(
    conn: str, source: Path, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_s3_publisher import fetch

    code, out, err = publish_cli(capsys, str(source), f"s3://{bucket}/u/,opt=compress=true", "-q")
    assert code == 0, err
    key = last_json(out)["Params"]["Key"]
    fetched = fetch(f"s3://{bucket}/{key}", tmp_path / "by-uri")
    assert read_tree(fetched) == {**SAMPLE_FILES, "scratch.tmp": b"temporary\n"}
    fetched = fetch(ObjectStoragePath(f"s3://{bucket}/{key}", conn_id=conn), tmp_path / "by-path")
    assert read_tree(fetched) == {**SAMPLE_FILES, "scratch.tmp": b"temporary\n"}


# ======================================================================================================
# A subprocess with nothing but AWS_* credentials
# ======================================================================================================


def test_env_only_credentials_without_airflow(
    seaweed: SeaweedServer, source: Path, bucket: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    publisher = f"s3://{bucket}/env/{{date}},opt=compress=true,opt=endpoint={seaweed.endpoint},opt=region={REGION}"

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "publish", str(source), publisher, "--exclude", "*.tmp"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    keys = {"AWS_ACCESS_KEY_ID": ADMIN.access_key, "AWS_SECRET_ACCESS_KEY": ADMIN.secret_key}
    proc = run({**base, **keys})
    assert proc.returncode == 0, proc.stderr
    result = PublishedResult.from_dict(last_json(proc.stdout))
    assert "Unable to find AWS Connection ID" not in proc.stderr  # no Airflow connection was even looked up
    assert ADMIN.secret_key not in proc.stdout + proc.stderr
    stored = objects_below(s3_admin, bucket)
    assert list(stored) == [result.key]
    assert result.checksum_sha256 == sha256_b64(stored[result.key])
    assert archive_members(stored[result.key]) == SAMPLE_FILES
    assert (result.endpoint, result.region) == (seaweed.endpoint, REGION)

    # Without them there is nothing to sign with: an S3 error, exit code 4, one line.
    no_keys = {**base, "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path / "empty-home")}
    proc = run(no_keys)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith("airflow-s3-publisher: error: ")
    assert "credentials" in proc.stderr.splitlines()[-1].lower()


# ======================================================================================================
# Inside a BashOperator of a real DAG run
# ======================================================================================================


def test_bash_operator_publishes_and_s3fetchoperator_fetches_its_xcom(
    airflow_db: Path,
    seaweed: SeaweedServer,
    bucket: str,
    s3_admin: S3Client,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_connection(monkeypatch, "aws_default", seaweed, ADMIN)
    dags_folder = airflow_db / "dags"
    shutil.copy(Path(__file__).parent / "dags" / "shell_publish.py", dags_folder)
    conf = {"bucket": bucket, "cli": str(CLI), "source": str(source), "fetch_root": str(tmp_path / "fetched")}
    outcome = run_dag(dags_folder, "shell_publish.py", "shell_publish", conf, None)
    assert outcome.state == "success", outcome.task_states

    pushed = outcome.xcoms[("bash_publish", -1)]
    shell = as_source(pushed)  # the line the command printed last (this harness reads it back decoded)
    operator = PublishedResult.from_dict(outcome.xcoms[("op_publish", -1)])

    # Same template, same run: the keys differ only in {taskID}.
    job_id = f"shell_publish__{sanitize_run_id(outcome.run_id)}"
    rest = f"{job_id}/shell_publish/{sanitize_run_id(outcome.run_id)}/1/-1.tar.gz"  # ... {dagID}/{runID}/...
    assert shell.key == f"keys/bash_publish/{rest}"
    assert operator.key == f"keys/op_publish/{rest}"

    stored = objects_below(s3_admin, bucket)
    assert set(stored) == {shell.key, operator.key}
    assert archive_members(stored[shell.key]) == archive_members(stored[operator.key]) == SAMPLE_FILES
    assert shell.checksum_sha256 == sha256_b64(stored[shell.key])
    shell_meta = s3_admin.head_object(Bucket=bucket, Key=shell.key)["Metadata"]
    operator_meta = s3_admin.head_object(Bucket=bucket, Key=operator.key)["Metadata"]
    for name in ("airflow-dag-id", "airflow-run-id", "airflow-try-number"):
        assert shell_meta[name] == operator_meta[name]
    assert (shell_meta["airflow-task-id"], operator_meta["airflow-task-id"]) == ("bash_publish", "op_publish")

    fetched = Path(outcome.xcoms[("fetch", -1)])
    assert fetched == tmp_path / "fetched"
    assert read_tree(fetched) == SAMPLE_FILES
