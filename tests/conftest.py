"""Shared pytest fixtures for the airflow-s3-publisher test suite."""

from __future__ import annotations

import sys
from pathlib import Path

# Make the repository's `tools/` helpers importable as `tools.*` (they are not part of the package).
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Airflow reads its configuration when first imported: point it at a throwaway home before anything does.
from tests.airflow_harness import configure_airflow_home, init_db  # noqa: E402

AIRFLOW_HOME = configure_airflow_home()

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from airflow_s3_publisher import compression  # noqa: E402
from tests.airflow_harness import install_examples  # noqa: E402
from tests.deployment_harness import AirflowDeployment  # noqa: E402
from tests.support import use_connection  # noqa: E402
from tools.seaweed import ADMIN, TEST_IDENTITIES, WRITE_ONLY_BUCKET, SeaweedServer  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


# ======================================================================================================
# Markers: every test is unit, s3, dag and/or deployment (registered in pyproject.toml)
# ======================================================================================================

KINDS = ("unit", "s3", "dag", "deployment")
#: A test that uses one of these fixtures, directly or through another fixture, gets the marker.
FIXTURE_KINDS = {
    "seaweed": "s3",
    "vhost_seaweed": "s3",
    "moto": "s3",
    "airflow_db": "dag",
    "airflow_deployment": "deployment",
}
#: Every test of a module whose name starts so gets the marker: they start servers of their own, or pick them
#: at run time (``test_deployment`` also covers e.g. a ``test_deployment_celery.py``).
MODULE_KINDS = {
    "test_deployment": "deployment",
    "test_faultproxy": "s3",
    "test_faults": "s3",
    "test_seaweed_server": "s3",
    "test_stores": "s3",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by what it needs; a test that needs none of it (and has no kind marker) is ``unit``."""
    for item in items:
        given = {mark.name for mark in item.iter_markers() if mark.name in KINDS}
        needed = {kind for name, kind in FIXTURE_KINDS.items() if name in getattr(item, "fixturenames", ())}
        needed.update(kind for prefix, kind in MODULE_KINDS.items() if item.path.name.startswith(prefix))
        for kind in sorted(needed - given):
            item.add_marker(kind)
        if not given and not needed:
            item.add_marker("unit")


# ======================================================================================================
# S3: one SeaweedFS server per test session (see tools/seaweed.py for ADMIN, WRITER and READER)
# ======================================================================================================


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A running SeaweedFS S3 server with the ADMIN, WRITER and READER identities (ADMIN is the default).

    The bucket WRITE_ONLY_BUCKET ("pub-writeonly") exists: WRITER may only write to it, READER may only
    read and list it.
    """
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), TEST_IDENTITIES)
    try:
        server.start()
        server.create_bucket(WRITE_ONLY_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_admin(seaweed: SeaweedServer) -> S3Client:
    """A boto3 S3 client for the ADMIN identity."""
    return seaweed.client()


def _new_bucket(seaweed: SeaweedServer, *, versioned: bool) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    seaweed.create_bucket(name, versioned=versioned)
    yield name
    # Each non-empty bucket holds a volume slot; SeaweedFS deletes non-empty buckets, so this frees it.
    with contextlib.suppress(BotoCoreError, ClientError):  # best effort: the server is thrown away anyway
        seaweed.client().delete_bucket(Bucket=name)


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> Iterator[str]:
    """The name of a fresh, empty, unversioned bucket (`t-<8 hex>`), deleted after the test."""
    yield from _new_bucket(seaweed, versioned=False)


@pytest.fixture
def versioned_bucket(seaweed: SeaweedServer) -> Iterator[str]:
    """The name of a fresh, empty bucket with versioning enabled, deleted after the test."""
    yield from _new_bucket(seaweed, versioned=True)


# ======================================================================================================
# Airflow: one metadata DB (SQLite in a temp AIRFLOW_HOME) per test session
# ======================================================================================================


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """AIRFLOW_HOME with its metadata DB created; its ``dags`` folder is the DAGs folder."""
    init_db()
    try:
        yield AIRFLOW_HOME
    finally:
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


# ======================================================================================================
# Airflow deployed: api-server, scheduler and dag-processor as processes, once per session
# ======================================================================================================

#: The DAGs the deployment parses before it is handed out: the examples (tests/test_deployment.py) and
#: tests/dags/shell_results.py (tests/test_runs_cli.py).
DEPLOYED_DAGS = [
    "s3_publish_fetch_roundtrip",
    "s3_publish_taskflow",
    "s3_asset_consumer",
    "shell_results",
    "shell_results_none",
]
DEPLOYMENT_STARTUP_TIMEOUT = 180.0


@pytest.fixture(scope="session")
def airflow_deployment(seaweed: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    """A running deployment (see tests/deployment_harness.py) shared by the modules that need one: starting
    it takes ~20 s. Its ``aws_default`` connection is SeaweedFS's ADMIN identity, exactly as the in-process
    tests define it; its DAGs folder holds ``dags_examples/`` and tests/dags/shell_results.py; the
    openlineage provider writes one JSON file per event under ``root / "openlineage"``. Tests tell their
    runs apart by run id."""
    root = tmp_path_factory.mktemp("deployment")
    dags_folder = root / "dags"
    dags_folder.mkdir()
    install_examples(dags_folder)
    shutil.copy(REPO_ROOT / "tests" / "dags" / "shell_results.py", dags_folder)
    with pytest.MonkeyPatch.context() as patch:
        use_connection(patch, "aws_default", seaweed, ADMIN)
        connection = os.environ["AIRFLOW_CONN_AWS_DEFAULT"]
    lineage = {"type": "file", "log_file_path": str(root / "openlineage" / "event"), "append": False}
    (root / "openlineage").mkdir()
    deployed = AirflowDeployment(
        root,
        dags_folder,
        {"AIRFLOW_CONN_AWS_DEFAULT": connection, "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(lineage)},
    )
    try:
        deployed.cli("db", "migrate")
        deployed.start()
        deployed.wait_ready(DEPLOYED_DAGS, DEPLOYMENT_STARTUP_TIMEOUT)
        yield deployed
    finally:
        deployed.stop()
        print("deployment timings (s):", {k: round(v, 1) for k, v in deployed.timings.items()})


# ======================================================================================================
# Archives: the gzip backend (tests/test_archive.py, tests/test_extract.py)
# ======================================================================================================


@pytest.fixture(params=["tarfile", "libarchive"])
def extractor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each extractor: what ``tests.archive_support.extract`` and the test module's own
    ``extract_tar_gz`` extract with."""
    from tests import archive_support
    from tests.support import extractor_function

    name: str = request.param
    function = extractor_function(name)
    for module in (archive_support, request.module):
        if hasattr(module, "extract_tar_gz"):
            monkeypatch.setattr(module, "extract_tar_gz", function)
    return name


@pytest.fixture(params=["isal", "zlib-ng", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force one gzip backend for the test (skipped when that one is not installed)."""
    name: str = request.param
    chosen = tuple(b for b in compression._BACKENDS if b.name == name)
    if not chosen:
        pytest.skip(f"{name} is not installed")
    monkeypatch.setattr(compression, "_BACKENDS", chosen)
    return name
