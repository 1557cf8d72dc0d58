"""More throwaway S3 stores on loopback for tests: moto's server (AWS semantics) and a virtual-host SeaweedFS.

- :class:`MotoServer` runs ``python -m moto.server`` (from ``moto[server]``, a dev dependency) on a free
  127.0.0.1 port in a subprocess. It stands in for AWS S3: buckets live in a region, requests addressed as
  ``<bucket>.s3.<region>.amazonaws.com`` are routed virtual-host style, versioning works. It does not
  check signatures, and it neither verifies nor stores ``x-amz-checksum-sha256`` (moto 5.2.5).
- :func:`virtual_host_seaweed` is a :class:`~tools.seaweed.SeaweedServer` that also routes
  ``<bucket>.<domain>`` hosts (``weed mini -s3.domainName=<domain>``), so virtual-host requests are
  signed and verified for real.

Usage::

    with MotoServer(tmp_dir) as moto:
        s3 = moto.client("eu-west-1")
        moto.create_bucket("my-bucket", region="eu-west-1", versioned=True)

    with virtual_host_seaweed(tmp_dir, [ADMIN], "vhost.localhost") as seaweed:
        ...  # http://<bucket>.vhost.localhost:<seaweed.s3_port>/<key> is a bucket's object
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from tools.seaweed import Identity, SeaweedServer, find_weed_binary
from tools.serverprocess import START_ATTEMPTS, ServerProcess

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MOTO_ACCESS_KEY", "MOTO_SECRET_KEY", "MOTO_SPEC", "MotoServer", "moto_available", "virtual_host_seaweed"]

#: The pin in pyproject.toml's dev extra; what :class:`MotoServer` needs importable.
MOTO_SPEC = "moto[server]==5.2.5"
# moto accepts any key pair; these are fixed, test-only and never leave loopback.
MOTO_ACCESS_KEY = "MOTOACCESSKEY0000001"
MOTO_SECRET_KEY = "moto-secret-key-00000000000000000000001"  # noqa: S105 - fixed test-only key


def moto_available() -> str | None:
    """None when ``moto.server`` (with flask and werkzeug) can run here; otherwise why not."""
    missing = [name for name in ("moto", "flask", "flask_cors", "werkzeug") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed: install the dev extra ({MOTO_SPEC})"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer(ServerProcess):
    """``python -m moto.server`` on a free loopback port, in a subprocess with a clean environment.

    All state is in the server's memory: stopping it forgets every bucket.
    """

    _server_name = "moto"
    _stop_grace_seconds = 10.0

    def __init__(self, workdir: Path, *, python: str | None = None, start_timeout: float = 60.0) -> None:
        super().__init__(workdir, start_timeout=start_timeout)
        self._python = python or sys.executable
        self._port = 0
        self._session = boto3.session.Session()
        self._session_lock = threading.Lock()
        self.startup_seconds: float | None = None
        """Wall time of the last successful :meth:`start`, launch to first S3 answer."""

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("MotoServer is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._workdir / "moto.out.log"

    def start(self) -> None:
        """Start the server and wait until it lists buckets; RuntimeError (with its log tail) if it does not."""
        if self._process is not None:
            raise RuntimeError("MotoServer already started")
        unavailable = moto_available() if self._python == sys.executable else None
        if unavailable:
            raise FileNotFoundError(unavailable)
        self._workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self._start_process(self._launch, ports_failed=f"moto could not bind a port {START_ATTEMPTS} times:\n")
        self.startup_seconds = time.monotonic() - began

    def client(self, region: str = "us-east-1", *, endpoint: str | None = None, **config_kwargs: Any) -> S3Client:
        """A path-style boto3 client for the server (or ``endpoint``), signing for ``region``."""
        s3_options: dict[str, Any] = {"addressing_style": "path", **(config_kwargs.pop("s3", None) or {})}
        options: dict[str, Any] = {"region_name": region, **config_kwargs, "s3": s3_options}
        config = Config(**options)
        with self._session_lock:  # boto3 sessions are not thread-safe
            return self._session.client(
                "s3",
                endpoint_url=endpoint or self.endpoint,
                region_name=region,
                aws_access_key_id=MOTO_ACCESS_KEY,
                aws_secret_access_key=MOTO_SECRET_KEY,
                config=config,
            )

    def create_bucket(self, name: str, *, region: str = "us-east-1", versioned: bool = False) -> None:
        """Create bucket ``name`` in ``region`` (as AWS does: a LocationConstraint outside us-east-1)."""
        s3 = self.client(region)
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    # ------------------------------------------------------------------ internals
    def _environment(self) -> dict[str, str]:
        # From scratch: no AWS_* (moto would read credentials or an endpoint), HOME inside workdir.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._workdir),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _launch(self, attempt: int) -> None:
        self._port = _free_port()
        command = [self._python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self._port)]
        self._open_log(f"\n=== attempt {attempt}: {shlex.join(command)}\n")
        self._spawn(command, self._environment())

    def _ready_probe(self) -> Callable[[], object]:
        probe = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"})
        return probe.list_buckets


def virtual_host_seaweed(workdir: Path, identities: Sequence[Identity], domain: str, **kwargs: Any) -> SeaweedServer:
    """A (not yet started) SeaweedServer that also serves ``<bucket>.<domain>`` hosts, on any port.

    ``weed mini`` gets ``-s3.domainName=<domain>`` through a two-line wrapper script in ``workdir``
    (SeaweedServer builds the command line itself). Path-style requests keep working.
    """
    if not domain or any(c.isspace() or c in "'\"\\$`" for c in domain):
        raise ValueError(f"invalid domain {domain!r}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    wrapper = workdir / "weed-with-domain"
    weed = kwargs.pop("weed_binary", None) or find_weed_binary()
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(weed)} "$@" -s3.domainName={shlex.quote(domain)}\n')
    wrapper.chmod(0o755)
    return SeaweedServer(workdir, identities, weed_binary=str(wrapper), **kwargs)
