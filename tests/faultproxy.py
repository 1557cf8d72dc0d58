"""A fault-injecting HTTP/1.1 proxy on loopback, between an S3 client and an S3 server, for tests.

Pure standard library, one thread per client connection. The proxy parses each request head and
frames its body (``Content-Length`` or ``chunked``), so keep-alive connections carry many requests and
every request gets its own fault decision. The decision is one of:

- ``forward``: pass the request upstream and the response back (optionally throttled);
- ``503`` / ``500``: answer it itself with S3's ``SlowDown`` / ``InternalError`` XML error, without
  forwarding anything. With ``Expect: 100-continue`` (boto3 sends it for file-like bodies) the answer
  comes at once and the connection is closed, as S3 does; otherwise the body is read and discarded and
  the connection stays open;
- ``reset``: forward the head and the first ``reset_after`` body bytes (never the whole body), then
  close the upstream connection (the server sees a truncated request) and reset the client's (RST);
  a request without a body is reset before anything reaches the server;
- ``delay``: forward, then hold the response for ``delay`` seconds;
- ``hang``: read whatever the client sends and never answer (until the client gives up or the proxy stops).

Decisions, in order: ``hang`` setting; ``rule(request)`` when set and it returns a kind; then, for
requests of the ``operations`` selected (all by default), the ``script`` queue (consumed one kind per
request), then the seeded random draw (``error_rate``, ``reset_rate``, ``delay_rate``). Every request
draws the same number of random numbers, so a given seed and a given order of requests repeat the same
faults (with concurrent clients the order of arrival, and so the pattern, may vary between runs).

Usage::

    with FaultProxy("http://127.0.0.1:8333", seed=7) as proxy:
        proxy.configure(error_rate=0.25, reset_rate=0.1)
        client = boto3.client("s3", endpoint_url=proxy.endpoint, ...)
        ...
        assert proxy.stats().faults["503"] > 0

Everything binds to 127.0.0.1. Every socket has a timeout and every loop ends when the proxy stops.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

FORWARD = "forward"
SLOWDOWN = "503"
INTERNAL_ERROR = "500"
RESET = "reset"
DELAY = "delay"
HANG = "hang"
KINDS = frozenset({FORWARD, SLOWDOWN, INTERNAL_ERROR, RESET, DELAY, HANG})
#: Counted in ``faults`` when the upstream could not be reached or dropped a forwarded request.
UPSTREAM_DOWN = "upstream-down"

_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024
_HISTORY = 10_000
_ERRORS = {
    SLOWDOWN: (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    INTERNAL_ERROR: (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
}


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 as this proxy understands it."""


class _Closed(Exception):
    """The peer closed its side, or the proxy is stopping."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a rule sees of one request."""

    number: int
    """1 for the first request the proxy saw, then 2, 3, ... (all connections)."""
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names."""
    body_length: int | None
    """``Content-Length``; ``None`` for a chunked body."""
    operation: str
    """The S3 operation guessed from method and path-style target, e.g. ``UploadPart``."""


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What the proxy does to requests; change it at any time with :meth:`FaultProxy.configure`."""

    error_rate: float = 0.0
    """Share of requests answered by the proxy with an error from ``error_kinds``."""
    error_kinds: tuple[str, ...] = (SLOWDOWN, INTERNAL_ERROR)
    reset_rate: float = 0.0
    """Share of requests reset after ``reset_after`` body bytes (or before the last byte of a shorter body)."""
    reset_after: int = 64 * 1024
    delay_rate: float = 0.0
    """Share of forwarded requests whose response is held for ``delay`` seconds."""
    delay: float = 0.0
    hang: bool = False
    """Never answer any request (the requests are read and dropped)."""
    operations: frozenset[str] | None = None
    """Random and scripted faults only for these operations (``None``: every request)."""
    script: tuple[str, ...] = ()
    """Fault kinds given, in order, to the next selected requests before any random draw."""
    rule: Callable[[Request], str | None] | None = None
    """Called for every request (under the proxy's lock; it may call :meth:`FaultProxy.stats`);
    a kind it returns wins over everything but ``hang``, ``None`` lets the other settings decide."""
    upload_bytes_per_second: float | None = None
    """Throttle request bodies forwarded upstream, per connection."""
    cut_response_after: int | None = None
    """Reset the client's connection after this many bytes of a response body (of the ``operations``
    selected), as a network failure mid-download does; ``None``: responses are relayed whole."""

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "delay_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        unknown = set(self.error_kinds) - {SLOWDOWN, INTERNAL_ERROR}
        if not self.error_kinds or unknown:
            raise ValueError(f"error_kinds must be a non-empty choice of '503' and '500', got {self.error_kinds!r}")
        if set(self.script) - KINDS:
            raise ValueError(f"script holds unknown fault kinds: {sorted(set(self.script) - KINDS)}")
        if self.reset_after < 0 or self.delay < 0:
            raise ValueError("reset_after and delay must not be negative")


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of what the proxy did."""

    connections: int
    requests: int
    forwarded: int
    """Requests forwarded upstream and answered by it (counted before the answer is relayed)."""
    bytes_up: int
    """Request body bytes sent upstream (counted while they flow)."""
    bytes_down: int
    """Response bytes (head and body) sent to clients, from upstream or made by the proxy."""
    faults: dict[str, int]
    """Faults injected by kind (``503``, ``500``, ``reset``, ``delay``, ``hang``, ``upstream-down``)."""
    operations: dict[str, int]
    """Requests seen by S3 operation."""

    @property
    def injected(self) -> int:
        """Faults injected of every kind except ``delay`` (which does not fail a request)."""
        return sum(count for kind, count in self.faults.items() if kind != DELAY)


@dataclass(slots=True)
class _Counters:
    connections: int = 0
    requests: int = 0
    forwarded: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    operations: collections.Counter[str] = field(default_factory=collections.Counter)


def s3_operation(method: str, target: str) -> str:
    """Name the S3 operation of a path-style request (``PUT /bucket/key?partNumber=1&uploadId=x`` -> UploadPart)."""
    path, _, query = target.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    bucket_and_key = path.lstrip("/").split("/", 1)
    has_key = len(bucket_and_key) == 2 and bucket_and_key[1] != ""
    if method == "PUT":
        if "partNumber" in params and "uploadId" in params:
            return "UploadPart"
        if has_key:
            return "PutObject"
        return "PutBucketVersioning" if "versioning" in params else "CreateBucket"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in params else "POST"
    if method == "DELETE":
        if "uploadId" in params:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "GET":
        if has_key:
            return "ListParts" if "uploadId" in params else "GetObject"
        if not path.strip("/"):
            return "ListBuckets"
        if "uploads" in params:
            return "ListMultipartUploads"
        return "ListObjectVersions" if "versions" in params else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    return method


class _Stream:
    """Buffered reading from a socket, with the proxy's stop flag checked between reads."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._stopping = stopping

    def _fill(self) -> bool:
        if self._stopping.is_set():
            raise _Closed("proxy stopping")
        try:
            data = self.sock.recv(_CHUNK)
        except (ConnectionError, OSError) as err:
            raise _Closed(str(err)) from err
        if not data:
            return False
        self._buf += data
        return True

    def has_buffered(self) -> bool:
        return bool(self._buf)

    def read_head(self) -> bytes | None:
        """The next message head (through the blank line); ``None`` on a clean close before one."""
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self._buf[: end + 4])
                del self._buf[: end + 4]
                return head
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError("message head too long")
            if not self._fill():
                if self._buf:
                    raise _Closed("connection closed in the middle of a message head")
                return None

    def read_line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[: end + 2])
                del self._buf[: end + 2]
                return line
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError("line too long")
            if not self._fill():
                raise _Closed("connection closed in the middle of a line")

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes (at least one); raises _Closed at the end of the stream."""
        if not self._buf and not self._fill():
            raise _Closed("connection closed in the middle of a body")
        data = bytes(self._buf[:limit])
        del self._buf[:limit]
        return data


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return first, headers


def _header_dict(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _wants_close(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)


def _reset(sock: socket.socket | None) -> None:
    """Close with RST (SO_LINGER 0), so the peer sees 'connection reset', not a clean end."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """The proxy. Start with :meth:`start` (or ``with``), point the client at :attr:`endpoint`."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        settings: FaultSettings | None = None,
        client_timeout: float = 60.0,
        upstream_timeout: float = 60.0,
    ) -> None:
        self._upstream = self._address(upstream)
        self.seed = seed
        self._random = random.Random(seed)
        self._settings = settings or FaultSettings()
        self._script: collections.deque[str] = collections.deque(self._settings.script)
        self._client_timeout = client_timeout
        self._upstream_timeout = upstream_timeout
        self._lock = threading.RLock()
        self._counters = _Counters()
        self._history: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=_HISTORY)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._next_connection = 0
        self._next_request = 0

    # ------------------------------------------------------------------ public API
    @staticmethod
    def _address(endpoint: str) -> tuple[str, int]:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://127.0.0.1:PORT, got {endpoint!r}")
        return parts.hostname, parts.port

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("FaultProxy is not started")
        return int(self._listener.getsockname()[1])

    @property
    def endpoint(self) -> str:
        """What the client should use as its endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstream(self) -> str:
        return f"http://{self._upstream[0]}:{self._upstream[1]}"

    def set_upstream(self, endpoint: str) -> None:
        """Send new connections to ``endpoint`` (for a server restarted on other ports)."""
        address = self._address(endpoint)
        with self._lock:
            self._upstream = address

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def configure(self, **changes: Any) -> FaultSettings:
        """Change some settings (the others are kept); ``script`` replaces the pending script."""
        known = {f.name for f in fields(FaultSettings)}
        if set(changes) - known:
            raise TypeError(f"unknown fault settings: {sorted(set(changes) - known)}")
        with self._lock:
            self._settings = replace(self._settings, **changes)
            if "script" in changes:
                self._script = collections.deque(self._settings.script)
            return self._settings

    def calm(self) -> None:
        """No faults any more (counters are kept)."""
        with self._lock:
            self._settings = FaultSettings()
            self._script.clear()

    def stats(self) -> ProxyStats:
        with self._lock:
            c = self._counters
            return ProxyStats(
                connections=c.connections,
                requests=c.requests,
                forwarded=c.forwarded,
                bytes_up=c.bytes_up,
                bytes_down=c.bytes_down,
                faults=dict(c.faults),
                operations=dict(c.operations),
            )

    def history(self) -> list[tuple[int, str, str]]:
        """(request number, operation, fault kind) of the last requests, oldest first."""
        with self._lock:
            return list(self._history)

    def wait_for(self, predicate: Callable[[ProxyStats], bool], timeout: float, interval: float = 0.01) -> bool:
        """Poll :meth:`stats` until ``predicate`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.stats()):
                return True
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            time.sleep(interval)

    def start(self) -> Self:
        if self._listener is not None:
            raise RuntimeError("FaultProxy already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(0.2)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._acceptor.start()
        log.debug("fault proxy on %s -> %s, seed %d", self.endpoint, self.upstream, self.seed)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and wait (bounded) for the proxy's threads. Safe to call twice."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            _close(sock)  # shutdown() wakes a thread blocked in recv() on it
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            _close(self._listener)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
        if self._stopping.is_set():
            _close(sock)

    def _untrack(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.discard(sock)

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self._counters, name, getattr(self._counters, name) + amount)

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._counters.faults[kind] += 1

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._next_connection += 1
                number = self._next_connection
                self._counters.connections += 1
                thread = threading.Thread(
                    target=self._serve, args=(client, number), name=f"faultproxy-conn-{number}", daemon=True
                )
                self._threads.add(thread)
            self._track(client)
            thread.start()

    def _decide(self, method: str, target: str, headers: dict[str, str], connection: int) -> tuple[Request, str]:
        with self._lock:
            self._next_request += 1
            length = headers.get("content-length")
            request = Request(
                number=self._next_request,
                connection=connection,
                method=method,
                target=target,
                headers=headers,
                body_length=None if "chunked" in headers.get("transfer-encoding", "").lower() else int(length or 0),
                operation=s3_operation(method, target),
            )
            draws = [self._random.random() for _ in range(4)]  # always 4, so the sequence repeats
            settings = self._settings
            kind = FORWARD
            chosen = HANG if settings.hang else (settings.rule(request) if settings.rule is not None else None)
            if chosen is not None:
                kind = chosen
            elif settings.operations is None or request.operation in settings.operations:
                if self._script:
                    kind = self._script.popleft()
                elif draws[0] < settings.error_rate:
                    kind = settings.error_kinds[int(draws[1] * len(settings.error_kinds))]
                elif draws[2] < settings.reset_rate:
                    kind = RESET
                elif draws[3] < settings.delay_rate:
                    kind = DELAY
            if kind not in KINDS:
                raise ValueError(f"rule returned unknown fault kind {kind!r}")
            self._counters.requests += 1
            self._counters.operations[request.operation] += 1
            if kind != FORWARD:
                self._counters.faults[kind] += 1
            self._history.append((request.number, request.operation, kind))
            return request, kind

    def _serve(self, client: socket.socket, number: int) -> None:
        reader = _Stream(client, self._stopping)
        upstream: list[tuple[socket.socket, _Stream] | None] = [None]
        try:
            client.settimeout(self._client_timeout)
            while not self._stopping.is_set():
                if not self._one_request(client, reader, upstream, number):
                    break
        except (_Closed, ProtocolError, OSError) as err:
            log.debug("fault proxy connection %d ends: %s", number, err)
        finally:
            if upstream[0] is not None:
                self._untrack(upstream[0][0])
                _close(upstream[0][0])
            self._untrack(client)
            _close(client)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError as err:
            raise _Closed(str(err)) from err

    def _one_request(
        self,
        client: socket.socket,
        reader: _Stream,
        upstream: list[tuple[socket.socket, _Stream] | None],
        connection: int,
    ) -> bool:
        """Handle one request; False when the client connection must end."""
        head = reader.read_head()
        if head is None:
            return False
        first, header_list = _parse_head(head)
        try:
            method, target, version = first.split(" ", 2)
        except ValueError:
            raise ProtocolError(f"bad request line {first!r}") from None
        headers = _header_dict(header_list)
        request, kind = self._decide(method, target, headers, connection)
        expect = headers.get("expect", "").lower() == "100-continue"
        close_after = _wants_close(version, headers)

        if kind in (SLOWDOWN, INTERNAL_ERROR):
            if expect:
                # As S3 does: answer before the body is sent, and close (the body will never come).
                self._answer(client, kind, request, close=True)
                return False
            for _ in self._body_pieces(reader, request):
                pass
            self._answer(client, kind, request, close=close_after)
            return not close_after
        if kind == HANG:
            self._swallow(reader)
            return False
        if kind == RESET and request.body_length == 0:
            _reset(client)  # nothing to cut short: the request never reaches the server
            return False
        if expect:
            self._send(client, b"HTTP/1.1 100 Continue\r\n\r\n")
            self._count(bytes_down=25)
        # Forward: the head without Expect (not signed by SigV4), then the body.
        forwarded_head = self._rebuild_head(first, [(n, v) for n, v in header_list if n.lower() != "expect"])
        up = self._upstream_connection(upstream)
        if up is None:
            self._fault(UPSTREAM_DOWN)
            _reset(client)
            return False
        up_sock, up_reader = up
        reset_at = None
        if kind == RESET:
            length, after = request.body_length, self.settings.reset_after
            reset_at = after if length is None else min(after, max(0, length - 1))
        if not self._forward_body(up_sock, head_bytes=forwarded_head, reader=reader, request=request, stop_at=reset_at):
            # The upstream dropped the request (server killed?): make the client see it.
            self._fault(UPSTREAM_DOWN)
            _reset(client)
            return False
        if kind == RESET:
            # The server gets the bytes sent so far, then the end of the stream; the client a reset.
            self._untrack(up_sock)
            _close(up_sock)
            upstream[0] = None
            _reset(client)
            return False
        try:
            response_head = self._read_response_head(up_reader)
        except (_Closed, ProtocolError, TimeoutError):
            self._fault(UPSTREAM_DOWN)
            _reset(client)
            return False
        self._count(forwarded=1)  # before the client can see the answer (and read the counters)
        if kind == DELAY:
            self._stopping.wait(self.settings.delay)
        cut_at = self.settings.cut_response_after
        if self.settings.operations is not None and request.operation not in self.settings.operations:
            cut_at = None
        keep = self._relay_response(client, up_reader, response_head, method, cut_at)
        if not keep:
            self._untrack(up_sock)
            _close(up_sock)
            upstream[0] = None
        return keep and not close_after

    @staticmethod
    def _rebuild_head(first: str, headers: list[tuple[str, str]]) -> bytes:
        lines = [first, *(f"{name}: {value}" for name, value in headers), "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _answer(self, client: socket.socket, kind: str, request: Request, *, close: bool) -> None:
        status, reason, code, message = _ERRORS[kind]
        resource = request.target.partition("?")[0]
        request_id = f"FAULTPROXY{request.number:08d}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode()
        self._send(client, head + body)
        self._count(bytes_down=len(head) + len(body))

    def _swallow(self, reader: _Stream) -> None:
        """Read and drop everything until the client goes away or the proxy stops; answer nothing."""
        with contextlib.suppress(_Closed, OSError, TimeoutError):
            while not self._stopping.is_set():
                reader.read_some(_CHUNK)

    def _body_pieces(self, reader: _Stream, request: Request, *, hold_last: bool = False) -> Iterator[bytes]:
        """The raw bytes of the request body as they arrive (chunked framing kept as is).

        ``hold_last``: stop before the last chunk of a chunked body, so the body is never complete.
        """
        if request.body_length is not None:
            remaining = request.body_length
            while remaining > 0:
                piece = reader.read_some(min(remaining, _CHUNK))
                remaining -= len(piece)
                yield piece
            return
        while True:
            size_line = reader.read_line()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {size_line!r}") from None
            if size == 0 and hold_last:
                return
            yield size_line
            if size == 0:
                while True:  # trailers, then the blank line
                    line = reader.read_line()
                    yield line
                    if line == b"\r\n":
                        return
            remaining = size + 2  # data and its CRLF
            while remaining > 0:
                piece = reader.read_some(min(remaining, _CHUNK))
                remaining -= len(piece)
                yield piece

    def _upstream_connection(
        self, upstream: list[tuple[socket.socket, _Stream] | None]
    ) -> tuple[socket.socket, _Stream] | None:
        current = upstream[0]
        if current is not None:
            sock, stream = current
            if not stream.has_buffered() and self._dropped(sock):
                self._untrack(sock)
                _close(sock)
                current = None
        if current is None:
            with self._lock:
                address = self._upstream
            try:
                sock = socket.create_connection(address, timeout=min(5.0, self._upstream_timeout))
            except OSError:
                upstream[0] = None
                return None
            sock.settimeout(self._upstream_timeout)
            self._track(sock)
            current = (sock, _Stream(sock, self._stopping))
        upstream[0] = current
        return current

    def _dropped(self, sock: socket.socket) -> bool:
        """An idle keep-alive connection the server closed (readable with nothing, or an error)."""
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return False
            return not data
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self._upstream_timeout)

    def _forward_body(
        self, up_sock: socket.socket, *, head_bytes: bytes, reader: _Stream, request: Request, stop_at: int | None
    ) -> bool:
        """Send head and body upstream (only ``stop_at`` body bytes when given); False if upstream failed."""
        try:
            up_sock.sendall(head_bytes)
        except OSError:
            return False
        sent = 0
        started = time.monotonic()
        for piece in self._body_pieces(reader, request, hold_last=stop_at is not None):
            if stop_at is not None and sent + len(piece) >= stop_at:
                piece = piece[: stop_at - sent]
            if piece:
                try:
                    up_sock.sendall(piece)
                except OSError:
                    return False
                sent += len(piece)
                self._count(bytes_up=len(piece))
            if stop_at is not None and sent >= stop_at:
                return True
            rate = self.settings.upload_bytes_per_second
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0 and self._stopping.wait(ahead):
                    raise _Closed("proxy stopping")
        return True

    @staticmethod
    def _read_response_head(up_reader: _Stream) -> bytes:
        while True:
            head = up_reader.read_head()
            if head is None:
                raise _Closed("upstream closed before answering")
            status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
            if status.startswith(b"1") and status != b"101":
                continue  # an interim response (100 Continue): the final one follows
            return head

    def _relay_response(
        self, client: socket.socket, up_reader: _Stream, head: bytes, method: str, cut_at: int | None = None
    ) -> bool:
        """Send the response to the client (its connection reset after ``cut_at`` body bytes, when given);
        False when the connection must close afterwards."""
        first, header_list = _parse_head(head)
        version, status_text = first.split(" ", 2)[:2]
        status = int(status_text)
        headers = _header_dict(header_list)
        self._send(client, head)
        self._count(bytes_down=len(head))
        keep = not _wants_close(version, headers)
        if method == "HEAD" or status in (204, 304):
            return keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            fake = Request(0, 0, method, "", headers, None, "")
            pieces: Iterator[bytes] = self._body_pieces(up_reader, fake)
        elif "content-length" in headers:
            fake = Request(0, 0, method, "", headers, int(headers["content-length"]), "")
            pieces = self._body_pieces(up_reader, fake)
        else:
            pieces = self._until_close(up_reader)
            keep = False
        sent = 0
        for piece in pieces:
            if cut_at is not None and sent + len(piece) > cut_at:
                self._send(client, piece[: cut_at - sent])
                self._fault(RESET)
                _reset(client)
                return False
            self._send(client, piece)
            self._count(bytes_down=len(piece))
            sent += len(piece)
        return keep

    @staticmethod
    def _until_close(reader: _Stream) -> Iterator[bytes]:
        while True:
            try:
                yield reader.read_some(_CHUNK)
            except _Closed:
                return


@contextlib.contextmanager
def running_proxy(upstream: str, *, seed: int = 0, **settings: Any) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` in front of ``upstream``, stopped on exit."""
    proxy = FaultProxy(upstream, seed=seed, settings=FaultSettings(**settings))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
