"""Airflow sees the package as a provider; OpenLineage facets and the extra link URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_s3_publisher import PublishedResult, S3FetchOperator, S3PublishOperator
from airflow_s3_publisher.links import result_url
from tests.support import SAMPLE_FILES, make_tree, use_connection
from tools.seaweed import ADMIN, SeaweedServer

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_cli(*args: str) -> str:
    proc = subprocess.run(
        [AIRFLOW, *args], env=dict(os.environ), capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.dag  # runs the airflow command
def test_airflow_lists_the_provider_its_decorator_and_link() -> None:
    assert "airflow-s3-publisher" in airflow_cli("providers", "list")
    details = airflow_cli("providers", "get", "airflow-s3-publisher", "--full", "--output", "yaml")
    assert "s3_publish_task" in details
    assert "PublishedResultLink" in details
    assert "airflow_s3_publisher.links.PublishedResultLink" in airflow_cli("providers", "links")


def test_openlineage_datasets_follow_the_amazon_naming(
    tmp_path: Path, bucket: str, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = use_connection(monkeypatch, "s3_ol", seaweed, ADMIN)
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    publish = S3PublishOperator(task_id="p", source=str(source), bucket=bucket, key="ol", aws_conn_id=conn)
    assert publish.get_openlineage_facets_on_complete(None) is None  # nothing published yet
    result = publish.execute({"run_id": "r"})  # type: ignore[arg-type]
    lineage = publish.get_openlineage_facets_on_complete(None)
    assert lineage is not None
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(f"s3://{bucket}", "ol/")]
    assert [d.name for d in lineage.inputs] == [str(source)]

    fetch = S3FetchOperator(task_id="f", source=result, destination=str(tmp_path / "in"), aws_conn_id=conn)
    fetch.execute({})  # type: ignore[arg-type]
    fetched = fetch.get_openlineage_facets_on_complete(None)
    assert fetched is not None
    assert [(d.namespace, d.name) for d in fetched.inputs] == [(f"s3://{bucket}", "ol/")]


@pytest.mark.parametrize(
    ("result", "url"),
    [
        (
            PublishedResult("b", "r/x.tar.gz", "eu-west-1", "https://s3.eu-west-1.amazonaws.com"),
            "https://s3.console.aws.amazon.com/s3/object/b?region=eu-west-1&prefix=r%2Fx.tar.gz",
        ),
        (
            PublishedResult("b", "r/", "us-east-1", ""),
            "https://s3.console.aws.amazon.com/s3/buckets/b?region=us-east-1&prefix=r%2F",
        ),
        (
            PublishedResult("b", "r/a b.tar.gz", "", "http://127.0.0.1:8333", "v1"),
            "http://127.0.0.1:8333/b/r/a%20b.tar.gz?versionId=v1",
        ),
        (PublishedResult("b", "k", "", "https://user:secret@minio.local:9000"), "https://minio.local:9000/b/k"),
    ],
)
def test_link_urls(result: PublishedResult, url: str) -> None:
    assert result_url(result) == url


def test_without_the_openlineage_provider_lineage_is_none_and_publishing_works(
    tmp_path: Path, bucket: str, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if apache-airflow-providers-openlineage were not installed: its modules cannot be imported.
    for name in ("airflow.providers.openlineage", "airflow.providers.openlineage.extractors"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError):
        import airflow.providers.openlineage.extractors  # noqa: F401
    conn = use_connection(monkeypatch, "s3_no_ol", seaweed, ADMIN)
    publish = S3PublishOperator(
        task_id="p", source=str(make_tree(tmp_path / "out", SAMPLE_FILES)), bucket=bucket, key="k", aws_conn_id=conn
    )
    result = publish.execute({"run_id": "r"})  # type: ignore[arg-type]
    assert result["Params"]["Bucket"] == bucket
    assert publish.get_openlineage_facets_on_complete(None) is None
    fetch = S3FetchOperator(task_id="f", source=result, destination=str(tmp_path / "in"), aws_conn_id=conn)
    fetch.execute({})  # type: ignore[arg-type]
    assert fetch.get_openlineage_facets_on_complete(None) is None
