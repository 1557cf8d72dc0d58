"""``airflow-s3-publisher list/get DAG_ID RUN_ID`` as subprocesses against a real api-server.

One deployment (api-server, scheduler, dag-processor; see tests/deployment_harness.py) runs
tests/dags/shell_results.py once: a compressed, a plain (with manifest) and a mapped result, one from a
BashOperator running ``airflow-s3-publisher publish``, and a task whose return value is no result. The
CLI finds them through the REST API; what it prints and fetches is compared with what the API, S3 and
the run's input say.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.runs import api_base_url, as_published_result
from tests.support import SAMPLE_FILES, read_tree
from tools.seaweed import READER, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.deployment_harness import AirflowDeployment

CLI = Path(sys.executable).parent / "airflow-s3-publisher"
DAG_ID = "shell_results"
NOTHING = "shell_results_none"
RUN_TIMEOUT = 240.0
TREE = SAMPLE_FILES
PARTS = {n: {f"part-{n}.txt": f"part {n}\n".encode() * (n + 1)} for n in range(3)}
SHELL = {"shell.txt": b"from the shell\n"}


@dataclass
class Published:
    deployment: AirflowDeployment
    bucket: str
    run_id: str
    nothing_run_id: str
    connection: str  # AIRFLOW_CONN_AWS_DEFAULT for the CLI (the deployment's aws_default)


@pytest.fixture(scope="module")
def published(airflow_deployment: AirflowDeployment, seaweed: SeaweedServer) -> Published:
    """The session's deployment, in which one run of each test DAG has finished successfully."""
    deployed = airflow_deployment
    connection = deployed.env["AIRFLOW_CONN_AWS_DEFAULT"]
    bucket = f"t-{uuid.uuid4().hex[:8]}"
    seaweed.create_bucket(bucket, versioned=True)
    with deployed.diagnosed():
        for dag_id in (DAG_ID, NOTHING):
            deployed.unpause(dag_id)
        tree = {rel: base64.b64encode(data).decode() for rel, data in TREE.items()}
        run_id = deployed.trigger(DAG_ID, {"bucket": bucket, "tree": tree, "cli": str(CLI)})
        nothing_run_id = deployed.trigger(NOTHING, {})
        for dag_id, run in ((DAG_ID, run_id), (NOTHING, nothing_run_id)):
            state = deployed.wait_run_finished(dag_id, run, RUN_TIMEOUT)
            events = _task_events(deployed, "shell")
            assert state == "success", "\n".join([str(deployed.task_states(dag_id, run)), *events])
    return Published(deployed, bucket, run_id, nothing_run_id, connection)


def _task_events(deployment: AirflowDeployment, task_id: str) -> list[str]:
    """The log events of a task's attempts (the BashOperator's output is among them)."""
    events = []
    for path in sorted((deployment.home / "logs").glob(f"dag_id=*/*/task_id={task_id}/*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(str(json.loads(line).get("event", "")))
            except ValueError:
                events.append(line)
    return events


def run_cli(
    published: Published, *args: str, auth: str = "token", cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The console script with the api-server's address and (by default) a token in its environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_API_")}
    environ["AIRFLOW_CONN_AWS_DEFAULT"] = published.connection
    environ["AIRFLOW_API_URL"] = published.deployment.base_url
    if auth == "token":
        environ["AIRFLOW_API_TOKEN"] = published.deployment.token()
    environ.update(env)
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def expected_results(published: Published) -> dict[tuple[str, int], dict[str, Any]]:
    """(task, map index) -> PublishedResult, read from the REST API by the harness (not by the CLI)."""
    deployment = published.deployment
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for task_id in ("archive", "plain", "shell"):
        value = deployment.xcom(DAG_ID, published.run_id, task_id)
        found[(task_id, -1)] = json.loads(value) if isinstance(value, str) else value
    for n in range(3):
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{_quote(published.run_id)}/taskInstances/part/xcomEntries/return_value"
        found[("part", n)] = deployment.api("GET", f"{path}?map_index={n}")["value"]
    return found


def _quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


def stored_size(s3: S3Client, result: dict[str, Any]) -> int:
    params = result["Params"]
    if params["Key"].endswith("/"):
        manifest = s3.get_object(Bucket=params["Bucket"], Key=params["Key"] + ".s3-publisher-manifest.json")
        return int(json.loads(manifest["Body"].read())["bytes"])
    return int(s3.head_object(Bucket=params["Bucket"], Key=params["Key"])["ContentLength"])


def assert_one_error_line(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("airflow-s3-publisher: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ======================================================================================================
# list
# ======================================================================================================


def test_list_json_names_every_published_result(published: Published, s3_admin: S3Client) -> None:
    user, password = published.deployment.api_user
    proc = run_cli(
        published,
        "list",
        DAG_ID,
        published.run_id,
        "--json",
        "--username",
        user,
        auth="none",
        AIRFLOW_API_PASSWORD=password,
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    expected = expected_results(published)
    assert {(item["task_id"], item["map_index"]): item["result"] for item in listed} == expected
    for item in listed:
        assert item["uri"] == f"s3://{published.bucket}/{item['result']['Params']['Key']}"
        assert item["size"] == stored_size(s3_admin, item["result"])
    # The string XCom of the BashOperator and the operators' dicts are the same kind of result.
    shell = expected[("shell", -1)]["Params"]
    assert shell["Key"] == f"runs/{DAG_ID}__{_sanitized(published.run_id)}/shell.tar.gz"
    assert shell["ChecksumSHA256"]
    assert shell["VersionID"]


def _sanitized(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in run_id)


def test_list_table(published: Published, s3_admin: S3Client) -> None:
    proc = run_cli(published, "list", DAG_ID, published.run_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["TASK", "MAP", "S3", "URI", "VERSION", "CHECKSUM", "(SHA-256)", "SIZE"]
    expected = expected_results(published)
    table = {}
    for row in rows:
        task, index, uri, version, checksum, size = row.split()
        table[(task, -1 if index == "-" else int(index))] = (uri, version, checksum, int(size))
    assert set(table) == set(expected)
    for where, result in expected.items():
        params = result["Params"]
        assert table[where] == (
            f"s3://{params['Bucket']}/{params['Key']}",
            params["VersionID"] or "-",
            params["ChecksumSHA256"] or "-",
            stored_size(s3_admin, result),
        )


def test_list_narrowed_to_a_map_index(published: Published) -> None:
    proc = run_cli(
        published, "list", DAG_ID, published.run_id, "--task-id", "part", "--map-index", "1", "--json", "--no-size"
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [(item["task_id"], item["map_index"], item["size"]) for item in listed] == [("part", 1, None)]
    assert listed[0]["result"] == expected_results(published)[("part", 1)]


# ======================================================================================================
# get DAG_ID RUN_ID
# ======================================================================================================


def test_get_run_fetches_every_result_into_its_own_folder(published: Published, tmp_path: Path) -> None:
    target = tmp_path / "results"
    proc = run_cli(published, "get", DAG_ID, published.run_id, "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    folders = {
        "archive": target / "archive",
        "plain": target / "plain",
        "shell": target / "shell",
        **{f"part[{n}]": target / "part" / str(n) for n in range(3)},
    }
    assert sorted(proc.stdout.splitlines()) == sorted(str(path) for path in folders.values())
    assert read_tree(folders["archive"]) == TREE
    assert read_tree(folders["plain"]) == TREE
    assert read_tree(folders["shell"]) == SHELL
    for n in range(3):
        assert read_tree(folders[f"part[{n}]"]) == PARTS[n]
    assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == {
        f"{folder.relative_to(target).as_posix()}/{rel}"
        for name, folder in folders.items()
        for rel in (TREE if name in ("archive", "plain") else SHELL if name == "shell" else PARTS[int(name[5])])
    }


def test_get_run_default_folder_and_task_filter(published: Published, tmp_path: Path) -> None:
    proc = run_cli(published, "get", DAG_ID, published.run_id, "--task-id", "archive", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = tmp_path / f"{DAG_ID}__{_sanitized(published.run_id)}" / "archive"
    assert proc.stdout.splitlines() == [os.path.relpath(expected, tmp_path)]
    assert read_tree(expected) == TREE
    assert [p.name for p in expected.parent.iterdir()] == ["archive"]


def test_get_result_still_takes_a_result(published: Published, tmp_path: Path) -> None:
    result = expected_results(published)[("archive", -1)]
    proc = run_cli(published, "get", json.dumps(result), "-o", str(tmp_path / "one"))
    assert proc.returncode == 0, proc.stderr
    assert read_tree(tmp_path / "one") == TREE


# ======================================================================================================
# Errors: one line each, their own exit code, no credential anywhere
# ======================================================================================================


def test_unknown_dag_and_unknown_run(published: Published) -> None:
    proc = run_cli(published, "list", "no_such_dag", published.run_id)
    assert_one_error_line(proc, 7, "knows no DAG 'no_such_dag'")
    proc = run_cli(published, "get", DAG_ID, "manual__1999-01-01T00:00:00+00:00")
    line = assert_one_error_line(proc, 7, f"DAG '{DAG_ID}' has no run 'manual__1999-01-01T00:00:00+00:00'")
    assert published.run_id in line  # its latest runs are named


def test_a_run_without_result(published: Published) -> None:
    proc = run_cli(published, "list", NOTHING, published.nothing_run_id)
    assert_one_error_line(proc, 8, "published no result", "1 return value, not a PublishedResult")
    proc = run_cli(published, "get", DAG_ID, published.run_id, "--task-id", "note")
    assert_one_error_line(proc, 8, "task 'note' of run", "published no result")
    proc = run_cli(published, "list", DAG_ID, published.run_id, "--task-id", "part", "--map-index", "7")
    assert_one_error_line(proc, 8, "task 'part' map index 7 of run")


def test_refused_credentials(published: Published) -> None:
    token = published.deployment.token()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    proc = run_cli(published, "list", DAG_ID, published.run_id, auth="none", AIRFLOW_API_TOKEN=forged)
    line = assert_one_error_line(proc, 6, "refused the token")
    assert forged not in line

    user, password = published.deployment.api_user
    wrong = password + "x"
    proc = run_cli(published, "get", DAG_ID, published.run_id, "--username", user, "--password", wrong, auth="none")
    line = assert_one_error_line(proc, 6, f"refused the user name and password of '{user}'")
    assert wrong not in line
    assert password not in line

    proc = run_cli(published, "list", DAG_ID, published.run_id, auth="none")
    assert_one_error_line(proc, 6, "requires credentials")


def test_unreachable_api_server(published: Published) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        proc = run_cli(published, "list", DAG_ID, published.run_id, AIRFLOW_API_URL=url)
        line = assert_one_error_line(proc, 5, f"cannot reach the Airflow api-server at {url}")
    assert published.deployment.token() not in line


def test_bad_api_options_are_usage_errors(published: Published) -> None:
    proc = run_cli(published, "list", DAG_ID, published.run_id, "--api-url", "ftp://x")
    assert_one_error_line(proc, 2, "invalid api-server URL 'ftp://x'")
    proc = run_cli(published, "list", DAG_ID, published.run_id, "--api-url", "http://admin:hunter2@127.0.0.1:1")
    line = assert_one_error_line(proc, 2, "carries credentials")
    assert "hunter2" not in line
    proc = run_cli(published, "list", DAG_ID, published.run_id, "--username", "admin", auth="none")
    assert_one_error_line(proc, 2, "the password is missing")


def test_no_credential_reaches_any_output_or_file(published: Published, tmp_path: Path) -> None:
    user, password = published.deployment.api_user
    token = published.deployment.token()
    outputs = [
        run_cli(published, "list", DAG_ID, published.run_id, "-v"),
        run_cli(
            published, "list", DAG_ID, published.run_id, "--username", user, "--password", password, "-v", auth="none"
        ),
        run_cli(published, "get", DAG_ID, published.run_id, "-v", "-o", str(tmp_path / "v")),
    ]
    for proc in outputs:
        assert proc.returncode == 0, proc.stderr
        assert token not in proc.stdout + proc.stderr
        assert password not in proc.stdout + proc.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file() and password.encode() in p.read_bytes()] == []


def test_a_failed_fetch_names_the_task_and_keeps_its_exit_code(published: Published, tmp_path: Path) -> None:
    reader = json.loads(published.connection)
    reader.update(login=READER.access_key, password=READER.secret_key)  # may not read this bucket
    proc = run_cli(
        published,
        "get",
        DAG_ID,
        published.run_id,
        "--aws-conn-id",
        "reader",
        "-o",
        str(tmp_path / "denied"),
        AIRFLOW_CONN_READER=json.dumps(reader),
    )
    line = assert_one_error_line(proc, 4, "airflow-s3-publisher: error: archive: ", "AccessDenied")
    assert READER.secret_key not in line
    assert not (tmp_path / "denied" / "archive").exists()


# ======================================================================================================
# Pure parts of the client
# ======================================================================================================


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("https://airflow.example.com/api/v2/", "https://airflow.example.com"),
        ("https://example.com/airflow/api/v2", "https://example.com/airflow"),
    ],
)
def test_api_base_url(given: str, base: str) -> None:
    assert api_base_url(given) == base


def test_only_full_published_results_count() -> None:
    result = {"Type": "s3", "Params": {"Bucket": "bkt", "Key": "k.tar.gz"}}
    assert as_published_result(result) == PublishedResult("bkt", "k.tar.gz")
    assert as_published_result(json.dumps(result)) == PublishedResult("bkt", "k.tar.gz")
    assert as_published_result(json.dumps(json.dumps(result))) == PublishedResult("bkt", "k.tar.gz")
    for other in (42, "a path", {"Bucket": "bkt", "Key": "k"}, {"Type": "s3", "Params": {"Bucket": "bkt"}}, None):
        assert as_published_result(other) is None
