"""A policy proxy on loopback that makes an S3 server behave like a stricter store, for tests.

Each request is shown to a *policy* before anything is forwarded. The policy returns ``None`` to let it
through unchanged (head, ``Host`` included, and body, so SigV4 signatures stay valid) or a
:class:`Refusal`, which the proxy answers itself with an S3 XML error: at once, before the body is sent,
when the client asked ``Expect: 100-continue`` (then the connection is closed, as S3 does), else after
reading and dropping the body (the connection is kept).

Two policies model the stores of the recipes table in docs/stores.md:

- :func:`refuse_checksum_headers`: a store that, like GCS's XML API (and Backblaze B2), refuses the
  flexible-checksum headers with ``400 InvalidArgument: Unsupported header '...' received for this API
  call``;
- :func:`virtual_host_only`: a store reachable only as ``<bucket>.<domain>`` that refuses path-style
  requests as Alibaba OSS does: ``403 SecondLevelDomainForbidden``.

With ``tamper``, a forwarded request's body goes through that function first (the head is kept, so
the signature still matches): a flipped byte shows what the server checks.

With ``tls`` (an :class:`ssl.SSLContext`, e.g. from :func:`self_signed_tls`) the proxy speaks HTTPS to
its clients, so it can stand where AWS's own ``https://<bucket>.s3.<region>.amazonaws.com`` would be.

Standard library only (``cryptography``, an Airflow dependency, for :func:`self_signed_tls`); every
socket has a timeout; binds 127.0.0.1 only. Bodies are buffered whole (the tests move a few MiB at most).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

# Not forwarded either way: they describe one hop, not the request (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)
#: What flexible checksums add to a request (botocore >= 1.36): ``x-amz-checksum-<algorithm>`` (and
#: ``x-amz-checksum-mode`` on GETs), ``x-amz-sdk-checksum-algorithm`` and, for a trailing checksum,
#: ``x-amz-trailer``.
CHECKSUM_HEADER_PREFIX = "x-amz-checksum-"
CHECKSUM_HEADERS = frozenset({"x-amz-sdk-checksum-algorithm", "x-amz-trailer"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """An S3 error the proxy answers instead of forwarding."""

    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the proxy saw it, and what it did with it."""

    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names."""
    refusal: Refusal | None

    @property
    def host(self) -> str:
        """The ``Host`` header without its port."""
        return self.headers.get("host", "").rsplit(":", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))


Policy = Callable[[Seen], Refusal | None]
#: Changes a forwarded request's body (e.g. flips a byte, to show the server checks a checksum).
Tamper = Callable[[Seen, bytes], bytes]


def refuse_checksum_headers(request: Seen) -> Refusal | None:
    """Refuse any request carrying a flexible-checksum header, naming it (400 InvalidArgument)."""
    for name in sorted(request.headers):
        if name.startswith(CHECKSUM_HEADER_PREFIX) or name in CHECKSUM_HEADERS:
            return Refusal(400, "InvalidArgument", f"Unsupported header '{name}' received for this API call.")
    return None


def virtual_host_only(domain: str) -> Policy:
    """Accept only requests whose Host is ``<bucket>.<domain>`` (any port); 403 for path-style ones."""

    def policy(request: Seen) -> Refusal | None:
        host = request.host.lower()
        if host.endswith("." + domain) and len(host) > len(domain) + 1:
            return None
        return Refusal(
            403,
            "SecondLevelDomainForbidden",
            f"Please use virtual hosted style to access: <bucket>.{domain}, not {host or 'no Host'}.",
        )

    return policy


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: StoreProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _decided: tuple[Refusal | None] | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.proxy.timeout)
        self.server.proxy._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        log.debug("store proxy: %s", format % args)

    def _decide(self) -> Refusal | None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        proxy = self.server.proxy
        seen = Seen(self.command, self.path, headers, None)
        refusal = proxy.policy(seen)
        proxy._record(Seen(self.command, self.path, headers, refusal))
        return refusal

    def handle_expect_100(self) -> bool:
        refusal = self._decide()
        self._decided = (refusal,)
        if refusal is not None:
            self._refuse(refusal, close=True)  # the body never comes
            return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _refuse(self, refusal: Refusal, *, close: bool) -> None:
        resource = urlsplit(self.path).path
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(refusal.code)}</Code><Message>{escape(refusal.message)}</Message>"
            f"<Resource>{escape(resource)}</Resource><RequestId>STOREPROXY</RequestId></Error>"
        ).encode()
        self.send_response_only(refusal.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "STOREPROXY")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self) -> None:
        decided, self._decided = self._decided, None
        refusal = decided[0] if decided is not None else self._decide()
        body = self._read_body()
        if refusal is not None:
            self._refuse(refusal, close=False)
            return
        proxy = self.server.proxy
        if proxy.tamper is not None and body:
            headers = {name.lower(): value for name, value in self.headers.items()}
            body = proxy.tamper(Seen(self.command, self.path, headers, None), body)
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.timeout)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and not (
                    name.lower() == "content-length" and self.command != "HEAD"
                ):
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any


class StoreProxy:
    """The proxy: ``with StoreProxy(upstream, policy) as proxy:``, then use :attr:`endpoint`."""

    def __init__(
        self,
        upstream: str,
        policy: Policy,
        *,
        timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
        tamper: Tamper | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://127.0.0.1:PORT, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.policy = policy
        self.tamper = tamper
        self.timeout = timeout
        self._tls = tls
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("StoreProxy is not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def requests(self) -> list[Seen]:
        """Every request seen so far, oldest first."""
        with self._lock:
            return list(self._seen)

    def refused(self) -> list[Seen]:
        return [seen for seen in self.requests() if seen.refusal is not None]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("StoreProxy already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"storeproxy-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listener and wait (bounded) for the serving thread. Safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # wakes handler threads waiting for a kept-alive client
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_tls(names: Sequence[str], directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for ``names`` (wildcards allowed), and the
    certificate's PEM file, for the client to trust (e.g. ``AWS_CA_BUNDLE``)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
