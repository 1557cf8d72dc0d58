"""The example DAGs, run by Airflow itself (dag.test()) against SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.airflow_harness import EXAMPLES, install_examples, run_dag
from tests.support import objects_below, read_tree, sha256_b64, use_connection
from tools.seaweed import ADMIN, SeaweedServer

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
