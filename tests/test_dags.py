"""The example DAGs, run by Airflow itself (dag.test()) against SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.airflow_harness import EXAMPLES, install_examples, load_dag, run_dag
from tests.support import archive_members, objects_below, read_tree, sha256_b64, use_connection
from tools.seaweed import ADMIN, Identity, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SAMPLE = read_tree(EXAMPLES / "sample_output")


@pytest.fixture
def dags_folder(airflow_db: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = airflow_db / "dags"
    install_examples(folder)
    use_connection(monkeypatch, "aws_default", seaweed, ADMIN)
    return folder


@pytest.mark.parametrize("logical_date", [datetime(2024, 3, 1, 12, 30, tzinfo=UTC), None], ids=["dated", "no-date"])
def test_directory_publish_dag(
    dags_folder: Path, bucket: str, s3_admin: S3Client, logical_date: datetime | None
) -> None:
    outcome = run_dag(dags_folder, "example_s3_publish.py", "s3_publish_directory", {"bucket": bucket}, logical_date)
    assert outcome.state == "success", outcome.task_states
    job_id = "s3_publish_directory__" + "".join(c if c.isalnum() or c in "._-" else "-" for c in outcome.run_id)

    uri = outcome.xcoms[("publish_uri", -1)]["Params"]
    assert uri["Key"].startswith(f"plain/{job_id}/")
    assert uri["Key"].endswith("/")
    assert (uri["Bucket"], uri["VersionID"], uri["ChecksumSHA256"]) == (bucket, "", "")
    stored = objects_below(s3_admin, bucket, uri["Key"])
    assert stored == {uri["Key"] + rel: data for rel, data in SAMPLE.items()}

    single = outcome.xcoms[("publish_dict", -1)]["Params"]
    assert objects_below(s3_admin, bucket, single["Key"]) == {
        single["Key"] + "weather.csv": SAMPLE["tables/weather.csv"]
    }

    report = outcome.xcoms[("produce_and_publish", -1)]["Params"]
    assert report["Key"].startswith(f"reports/{job_id}/")
    assert list(objects_below(s3_admin, bucket, report["Key"]).values()) == [f"run {outcome.run_id}\n".encode()]


@pytest.mark.parametrize("logical_date", [datetime(2024, 3, 1, tzinfo=UTC), None], ids=["dated", "no-date"])
def test_compressed_publish_fetch_check_dag(
    dags_folder: Path, bucket: str, s3_admin: S3Client, tmp_path: Path, logical_date: datetime | None
) -> None:
    conf = {"bucket": bucket, "fetch_root": str(tmp_path / "fetched")}
    outcome = run_dag(dags_folder, "example_s3_roundtrip.py", "s3_publish_fetch_roundtrip", conf, logical_date)
    assert outcome.state == "success", outcome.task_states

    result = outcome.xcoms[("publish", -1)]
    assert set(result["Params"]) == {"Bucket", "Key", "Region", "Endpoint", "VersionID", "ChecksumSHA256"}
    key = result["Params"]["Key"]
    assert key.startswith("archives/s3_publish_fetch_roundtrip__")
    assert key.endswith(".tar.gz")
    stored = s3_admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert result["Params"]["ChecksumSHA256"] == sha256_b64(stored)
    with tarfile.open(fileobj=io.BytesIO(stored), mode="r:gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(SAMPLE)

    fetched = Path(outcome.xcoms[("fetch", -1)])
    assert fetched.parent == tmp_path / "fetched"
    assert read_tree(fetched) == SAMPLE
    assert outcome.xcoms[("check", -1)] == {rel: hashlib.sha256(data).hexdigest() for rel, data in SAMPLE.items()}


def test_taskflow_decorator_publishes_output_dir_and_emits_an_asset_event(
    dags_folder: Path, bucket: str, s3_admin: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    # This test's own temporary folder: another suite running at the same time makes its own in /tmp.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    outcome = run_dag(dags_folder, "example_s3_taskflow.py", "s3_publish_taskflow", {"bucket": bucket}, None)
    assert outcome.state == "success", outcome.task_states
    result = outcome.xcoms[("build_report", -1)]
    params = result["Params"]
    stored = s3_admin.get_object(Bucket=bucket, Key=params["Key"])["Body"].read()
    assert params["ChecksumSHA256"] == sha256_b64(stored)
    members = archive_members(stored)
    assert members["logs/build.log"] == b"built\n"
    assert outcome.run_id in members["report.csv"].decode()
    # The output directory was the task's own temporary one, and it is gone.
    output_dirs = [path for path in made if Path(path).name.startswith("s3publish-build_report-")]
    assert len(output_dirs) == 1
    assert Path(output_dirs[0]).parent == scratch
    assert not Path(output_dirs[0]).exists()

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == outcome.run_id)).all()
        assert [e.asset.uri for e in events] == [f"s3://{bucket}/{params['Key']}"]
        assert events[0].extra == result
        event = events[0]
        session.expunge_all()

    # The consumer DAG, scheduled on the alias, fetches what the event describes.
    consumer = load_dag(dags_folder, "example_s3_asset_consumer.py")
    fetch = consumer.get_task("fetch")
    fetch.destination = str(tmp_path / "consumed")
    fetched = fetch.execute({"triggering_asset_events": {"s3-publisher-reports": [event]}})
    assert Path(fetched, "logs", "build.log").read_bytes() == b"built\n"


def test_extra_link_points_at_the_published_object(dags_folder: Path, versioned_bucket: str, tmp_path: Path) -> None:
    bucket = versioned_bucket  # so that the result has a VersionID for the link to pin
    conf = {"bucket": bucket, "fetch_root": str(tmp_path / "fetched")}
    outcome = run_dag(dags_folder, "example_s3_roundtrip.py", "s3_publish_fetch_roundtrip", conf, None)
    params = outcome.xcoms[("publish", -1)]["Params"]
    link = outcome.links[("publish", "_link_PublishedResultLink")]
    assert link.startswith(f"{params['Endpoint']}/{bucket}/")
    assert params["VersionID"]
    assert f"versionId={params['VersionID']}" in link


def test_credentials_never_reach_logs_xcom_or_errors(
    airflow_db: Path,
    seaweed: SeaweedServer,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    folder = airflow_db / "dags"
    install_examples(folder)
    conf = {"bucket": bucket, "fetch_root": str(tmp_path / "fetched")}
    # A good run with the real secret, then a failing run with a wrong, recognisable one.
    use_connection(monkeypatch, "aws_default", seaweed, ADMIN)
    good = run_dag(folder, "example_s3_roundtrip.py", "s3_publish_fetch_roundtrip", conf, None)
    wrong = Identity("leak-check", ADMIN.access_key, "Wr0ng-S3cret-Must-Not-Leak-4242", ())
    use_connection(monkeypatch, "aws_default", seaweed, wrong)
    bad = run_dag(folder, "example_s3_roundtrip.py", "s3_publish_fetch_roundtrip", conf, None)
    assert good.state == "success"
    assert bad.state == "failed"
    assert bad.task_states["publish"] == "failed"

    output = capfd.readouterr()
    logged = output.out + output.err
    assert "SignatureDoesNotMatch" in logged  # the failure itself is reported...
    secrets = (ADMIN.secret_key, wrong.secret_key)
    for secret in secrets:  # ...and no secret anywhere: logs, XComs, links, the metadata DB, log files
        assert secret not in logged
        assert secret not in repr(good.xcoms) + repr(good.links) + repr(bad.xcoms) + repr(bad.links)
        for path in airflow_db.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_sixteen_map_indexes_each_publish_their_own_exact_archive(
    dags_folder: Path, bucket: str, s3_admin: S3Client
) -> None:
    shutil.copy(Path(__file__).parent / "dags" / "mapped_publish.py", dags_folder)
    outcome = run_dag(dags_folder, "mapped_publish.py", "s3_publish_mapped", {"bucket": bucket}, None)
    assert outcome.state == "success", outcome.task_states
    results = {index: value["Params"] for (task_id, index), value in outcome.xcoms.items() if task_id == "part"}
    assert sorted(results) == list(range(16))
    for index, params in results.items():
        assert params["Key"].endswith(f"/{index}.tar.gz")
        stored = s3_admin.get_object(Bucket=bucket, Key=params["Key"])["Body"].read()
        assert params["ChecksumSHA256"] == sha256_b64(stored)
        with tarfile.open(fileobj=io.BytesIO(stored), mode="r:gz") as tar:
            member = tar.extractfile(f"part-{index}.txt")
            assert member is not None
            assert member.read() == f"part {index}\n".encode() * (index + 1)
