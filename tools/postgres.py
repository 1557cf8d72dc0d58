"""A throwaway PostgreSQL server on loopback for tests: ``initdb`` into a fresh directory, ``postgres`` in front.

PostgreSQL refuses to run as root. When this process is root, the data directory (made under the system
temp directory, whose parents every user can traverse) belongs to the ``postgres`` system user that
Debian's package creates, and ``initdb`` and the server run as that user. Authentication is ``trust`` on
127.0.0.1 only; durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the data
dies with the test anyway.

The binaries come from ``$S3PUB_POSTGRES_BIN`` (a directory), else the newest
``/usr/lib/postgresql/*/bin`` (Debian's layout), else ``PATH``. ``scripts/setup.sh`` installs Debian's
``postgresql`` package where none is found.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tools.serverprocess import START_ATTEMPTS, ServerProcess

__all__ = ["PostgresNotFoundError", "PostgresServer", "find_postgres_bin"]

_DEBIAN_LAYOUT = "/usr/lib/postgresql"
_SERVER_USER = "postgres"


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


class _NotReady(Exception):
    """The server does not accept connections yet."""


def find_postgres_bin() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_isready``."""
    configured = os.environ.get("S3PUB_POSTGRES_BIN")
    if configured:
        if not (Path(configured) / "initdb").is_file():
            raise PostgresNotFoundError(f"S3PUB_POSTGRES_BIN={configured!r} holds no initdb")
        return Path(configured)
    versions = sorted(
        (p for p in Path(_DEBIAN_LAYOUT).glob("*/bin") if (p / "initdb").is_file() and p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresNotFoundError(
        f"no PostgreSQL found (no {_DEBIAN_LAYOUT}/*/bin/initdb, no initdb on PATH): run ./scripts/setup.sh, "
        "which installs Debian's postgresql package, or set S3PUB_POSTGRES_BIN to a directory with initdb"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer(ServerProcess):
    """One PostgreSQL cluster with one database, on a free loopback port. ``url`` says how to reach it.

    :param user: the superuser ``initdb`` creates (no password: ``trust`` authentication).
    :param database: the database created once the server is up.
    """

    _server_name = "PostgreSQL"
    _ready_request = "pg_isready"
    _port_clash_markers = ("could not create any tcp/ip sockets", "address already in use")
    _stop_signal = signal.SIGINT  # "fast" shutdown: open sessions are ended (SIGTERM would wait for them)
    _probe_errors = (_NotReady,)

    def __init__(self, *, user: str = "airflow", database: str = "airflow", start_timeout: float = 60.0) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="s3pub-postgres-")), start_timeout=start_timeout)
        self.user = user
        self.database = database
        self._port = 0
        self._bin: Path | None = None
        self._run_as: str | None = None
        self.startup_seconds: float | None = None
        """Wall time of the last successful :meth:`start`: initdb, server start and database creation."""

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("PostgresServer is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, driver: str = "postgresql") -> str:
        """SQLAlchemy URL of the database, e.g. ``url("postgresql+psycopg2")``."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        return self._workdir / "postgres.log"

    @property
    def data_dir(self) -> Path:
        return self._workdir / "data"

    def start(self) -> None:
        """initdb, start the server, create the database. RuntimeError (with the log tail) on failure."""
        if self._process is not None:
            raise RuntimeError("PostgresServer already started")
        began = time.monotonic()
        self._bin = find_postgres_bin()
        self._run_as = _SERVER_USER if os.geteuid() == 0 else None
        if self._run_as is not None:
            shutil.chown(self._workdir, self._run_as, self._run_as)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        except BaseException:
            self._cleanup()
            raise
        self._start_process(
            self._launch, ports_failed=f"PostgreSQL failed to bind a port {START_ATTEMPTS} times; log tail:\n"
        )
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self._port), "-U", self.user, self.database)
        self.startup_seconds = time.monotonic() - began

    def _launch(self, attempt: int) -> None:
        assert self._bin is not None
        self._port = _free_port()
        self._open_log(f"--- postgres on 127.0.0.1:{self._port} (attempt {attempt})\n")
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self._workdir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        command = [str(self._bin / "postgres"), "-D", str(self.data_dir), "-p", str(self._port)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        self._spawn(command, self._environment(), user=self._run_as)

    def _run(self, program: str, *args: str) -> None:
        assert self._bin is not None
        done = subprocess.run(
            [str(self._bin / program), *args],
            cwd=self._workdir,
            env=self._environment(),
            user=self._run_as,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            raise RuntimeError(f"{program} {' '.join(args)} exited with {done.returncode}:\n{output}")

    def _environment(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}

    def _ready_probe(self) -> Callable[[], object]:
        assert self._bin is not None
        isready = str(self._bin / "pg_isready")
        port = str(self._port)

        def probe() -> None:
            done = subprocess.run(
                [isready, "-q", "-h", "127.0.0.1", "-p", port, "-U", self.user],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )
            if done.returncode != 0:
                raise _NotReady(f"pg_isready exited with {done.returncode}")

        return probe

    def _cleanup(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)
