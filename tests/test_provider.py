"""Airflow sees the package as a provider; OpenLineage facets and the extra link URL."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_s3_publisher import PublishedResult, S3FetchOperator, S3PublishOperator, operators
from airflow_s3_publisher.links import result_url
from airflow_s3_publisher.naming import RunInfo
from airflow_s3_publisher.plan import plan_publish, resolve_target
from tests.support import SAMPLE_FILES, make_tree, use_connection
from tools.seaweed import ADMIN, SeaweedServer

if TYPE_CHECKING:
    from airflow_s3_publisher.settings import PublishSettings


def airflow_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``airflow ARGS`` prints, run in this process (the same parser and command functions)."""
    from airflow.cli import cli_parser

    parsed = cli_parser.get_parser().parse_args(list(args))
    capsys.readouterr()
    parsed.func(parsed)  # a failing command raises (or exits non-zero), failing the test
    return capsys.readouterr().out


@pytest.mark.dag  # runs the airflow command
def test_airflow_lists_the_provider_its_decorator_and_link(capsys: pytest.CaptureFixture[str]) -> None:
    assert "airflow-s3-publisher" in airflow_cli(capsys, "providers", "list")
    details = airflow_cli(capsys, "providers", "get", "airflow-s3-publisher", "--full", "--output", "yaml")
    assert "s3_publish_task" in details
    assert "PublishedResultLink" in details
    assert "airflow_s3_publisher.links.PublishedResultLink" in airflow_cli(capsys, "providers", "links")


def planned_publish(
    source: str, *, settings: PublishSettings, context: Mapping[str, Any], logger: Any, cancellation: Any = None
) -> PublishedResult:
    """``publish()`` up to its plan (the rendered key for this source), without the upload."""
    target = resolve_target(settings, RunInfo.from_context(context), datetime.now(UTC))
    plan = plan_publish(source, settings, target)
    return PublishedResult(plan.target.spec.bucket, plan.target.key, plan.target.spec.region, "")


def no_download(spec: PublishedResult, destination: str, **options: Any) -> Path:
    """``fetch()`` without the download."""
    return Path(destination)


def test_openlineage_datasets_follow_the_amazon_naming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The datasets are named after what was published and fetched; moving the bytes adds nothing here.
    monkeypatch.setattr(operators, "publish", planned_publish)
    monkeypatch.setattr(operators, "fetch", no_download)
    bucket = "ol-bucket"
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    publish = S3PublishOperator(task_id="p", source=str(source), bucket=bucket, key="ol")
    assert publish.get_openlineage_facets_on_complete(None) is None  # nothing published yet
    result = publish.execute({"run_id": "r"})  # type: ignore[arg-type]
    lineage = publish.get_openlineage_facets_on_complete(None)
    assert lineage is not None
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(f"s3://{bucket}", "ol/")]
    assert [d.name for d in lineage.inputs] == [str(source)]

    fetch = S3FetchOperator(task_id="f", source=result, destination=str(tmp_path / "in"))
    assert fetch.get_openlineage_facets_on_complete(None) is None  # nothing fetched yet
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
