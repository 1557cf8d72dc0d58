"""Helpers shared by the tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import sys
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_s3_publisher import extract, extract_native
from tools.seaweed import REGION, Identity, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def use_connection(
    monkeypatch: pytest.MonkeyPatch, conn_id: str, server: SeaweedServer, identity: Identity, **extra: Any
) -> str:
    """Define Airflow AWS connection ``conn_id`` (as an environment variable) for ``identity``."""
    connection = {
        "conn_type": "aws",
        "login": identity.access_key,
        "password": identity.secret_key,
        "extra": {"endpoint_url": server.endpoint, "region_name": REGION, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative POSIX path -> content) below ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def archive_members(data: bytes) -> dict[str, bytes]:
    """The regular files of a tar.gz archive: member name -> content."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` as relative POSIX path -> content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sha256_b64(data: bytes) -> str:
    """Base64 SHA-256, as S3 and PublishedResult write it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def objects_below(s3: S3Client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object below ``prefix`` as key -> content."""
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


SAMPLE_FILES: dict[str, bytes] = {
    "stdout": b"hello from the task\n",
    "outputs/result.csv": b"id,value\n1,2\n",
    "outputs/nested/deep/file.bin": bytes(range(256)) * 40,
    "outputs/unicode-\u00e9t\u00e9.txt": "\u00e9t\u00e9\n".encode(),
}


def extractor_function(name: str) -> extract_native.Extractor:
    """The extractor called ``name``: "tarfile" (pure Python) or "libarchive".

    Where libarchive cannot be loaded, a test asking for it is skipped, except on CI (``CI`` set), where
    it fails: CI machines must have the system library, or its tests would silently stop running.
    """
    if name == "tarfile":
        return extract.extract_tar_gz
    problem = extract_native.libarchive_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"libarchive's extractor cannot be tested on CI: {problem}")
        pytest.skip(f"libarchive's extractor cannot be used here: {problem}")
    return extract_native.extract_tar_gz


@dataclass(frozen=True)
class CliRun:
    """One run of the ``airflow-s3-publisher`` command: its exit code and what it wrote on stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


#: What ``airflow_s3_publisher.cli.common.library_output`` changes for the rest of a process.
_CLI_LOGGERS = (
    "",
    "airflow",
    "airflow.models.crypto",
    "airflow_s3_publisher",
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
)
_CLI_ENV = "AIRFLOW__LOGGING__LOGGING_LEVEL"


def run_cli_in_process(
    capsys: pytest.CaptureFixture[str], *args: str, cwd: Path | None = None, stdin: str | None = None
) -> CliRun:
    """Run ``airflow-s3-publisher ARGS`` as the console script does (``sys.exit(main(ARGS))``), in this process.

    stdout and stderr are captured (so neither is a terminal), stdin reads ``stdin`` (empty by default) and
    the working directory is ``cwd`` for the run. What the command changes for the rest of a process (the
    logging level in the environment, logger levels, warning filters) is put back afterwards.
    """
    from airflow_s3_publisher.cli import main

    capsys.readouterr()  # only this run's output
    levels = {name: logging.getLogger(name).level for name in _CLI_LOGGERS}
    saved_env = os.environ.get(_CLI_ENV)
    try:
        with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
            patch.setattr(sys, "stdin", io.StringIO(stdin or ""))
            if cwd is not None:
                patch.chdir(cwd)
            try:
                code = main(list(args))
            except SystemExit as done:  # --help and --version exit from argparse, as in the console script
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if saved_env is None:
            os.environ.pop(_CLI_ENV, None)
        else:
            os.environ[_CLI_ENV] = saved_env
    out, err = capsys.readouterr()
    return CliRun(code, out, err)
