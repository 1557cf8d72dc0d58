"""The fault-injecting proxy itself, against a tiny recording HTTP/1.1 server (no S3 needed)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.faultproxy import (
    DELAY,
    FORWARD,
    HANG,
    INTERNAL_ERROR,
    RESET,
    SLOWDOWN,
    UPSTREAM_DOWN,
    FaultProxy,
    FaultSettings,
    running_proxy,
    s3_operation,
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class Seen:
    method: str
    path: str
    body: bytes
    complete: bool


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[Seen]
    lock: threading.Lock

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass

    def _read_body(self) -> tuple[bytes, bool]:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return body, True
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        body = b""
        while len(body) < length:
            piece = self.rfile.read1(length - len(body))
            if not piece:
                break
            body += piece
        return body, len(body) == length

    def _handle(self) -> None:
        try:
            body, complete = self._read_body()
        except (OSError, ValueError):
            body, complete = b"", False
        with self.lock:
            self.seen.append(Seen(self.command, self.path, body, complete))
        if not complete:
            self.close_connection = True
            return
        answer = f"{self.command} {self.path} {len(body)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[Seen]]]:
    seen: list[Seen] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy(upstream: tuple[str, list[Seen]]) -> Iterator[FaultProxy]:
    with running_proxy(upstream[0], seed=1) as running:
        yield running


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the proxy closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                return received + b"<RST>"
            if not piece:
                return received
            received += piece


def test_keep_alive_carries_many_requests_with_both_body_framings(
    proxy: FaultProxy, upstream: tuple[str, list[Seen]]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    bodies = [b"", b"x" * 10, b"y" * 300_000]
    for number, body in enumerate(bodies):
        conn.request("PUT", f"/bucket/key{number}", body=body)
        assert conn.getresponse().read() == f"PUT /bucket/key{number} {len(body)}".encode()
    conn.request("POST", "/bucket/key?uploads", body=iter([b"abc", b"defg"]), encode_chunked=True)
    assert conn.getresponse().read() == b"POST /bucket/key?uploads 7"
    conn.request("HEAD", "/bucket/key0")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    conn.request("GET", "/bucket/key0")
    assert conn.getresponse().read() == b"GET /bucket/key0 0"
    conn.close()
    stats = proxy.stats()
    assert stats.connections == 1
    assert stats.requests == stats.forwarded == 6
    assert stats.bytes_up == 300_010 + len(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert stats.operations == {"PutObject": 3, "CreateMultipartUpload": 1, "HeadObject": 1, "GetObject": 1}
    assert [s.body for s in upstream[1]] == [*bodies, b"abcdefg", b"", b""]


@pytest.mark.parametrize(
    ("kind", "status", "code"), [(SLOWDOWN, 503, "SlowDown"), (INTERNAL_ERROR, 500, "InternalError")]
)
def test_errors_are_answered_by_the_proxy_and_keep_the_connection(
    kind: str, status: int, code: str, proxy: FaultProxy, upstream: tuple[str, list[Seen]]
) -> None:
    proxy.configure(script=(kind,))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("PUT", "/bucket/a", body=b"first")
    response = conn.getresponse()
    body = response.read()
    assert response.status == status
    assert response.getheader("Content-Type") == "application/xml"
    assert f"<Code>{code}</Code>".encode() in body
    assert b"<Resource>/bucket/a</Resource>" in body
    conn.request("PUT", "/bucket/b", body=b"second")  # same connection
    assert conn.getresponse().read() == b"PUT /bucket/b 6"
    conn.close()
    assert [s.path for s in upstream[1]] == ["/bucket/b"]  # the failed request never reached it
    stats = proxy.stats()
    assert (stats.connections, stats.faults, stats.forwarded) == (1, {kind: 1}, 1)


def test_error_on_expect_100_continue_is_answered_before_the_body(
    proxy: FaultProxy, upstream: tuple[str, list[Seen]]
) -> None:
    proxy.configure(script=(SLOWDOWN,))
    head = b"PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    answer = raw_exchange(proxy.port, head)  # the body is never sent: the proxy must answer anyway
    assert answer.startswith(b"HTTP/1.1 503 Slow Down\r\n")
    assert b"Connection: close" in answer
    assert upstream[1] == []


def test_expect_100_continue_is_honoured_when_forwarding(proxy: FaultProxy, upstream: tuple[str, list[Seen]]) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        final = b""
        while not final.endswith(b"PUT /bucket/k 5"):
            piece = sock.recv(1000)
            assert piece
            final += piece
    assert final.startswith(b"HTTP/1.1 200")
    assert [(s.body, s.complete) for s in upstream[1]] == [(b"hello", True)]


def test_reset_cuts_the_body_after_n_bytes_on_both_sides(proxy: FaultProxy, upstream: tuple[str, list[Seen]]) -> None:
    proxy.configure(script=(RESET,), reset_after=1000)
    body = b"z" * 200_000
    head = f"PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        try:
            sock.sendall(head + body)
            answer = sock.recv(1000)
        except (ConnectionResetError, BrokenPipeError):
            answer = b"<RST>"
    assert answer in (b"<RST>", b"")  # never an HTTP answer
    deadline = time.monotonic() + 5
    while not upstream[1] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(len(s.body), s.complete) for s in upstream[1]] == [(1000, False)]
    stats = proxy.stats()
    assert (stats.faults, stats.bytes_up, stats.forwarded) == ({RESET: 1}, 1000, 0)


def test_reset_of_a_short_body_never_delivers_the_whole_request(
    proxy: FaultProxy, upstream: tuple[str, list[Seen]]
) -> None:
    proxy.configure(script=(RESET, RESET, RESET), reset_after=1000)
    short = raw_exchange(proxy.port, b"PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    empty = raw_exchange(proxy.port, b"POST /bucket/k?uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    chunked = raw_exchange(
        proxy.port, b"PUT /bucket/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert not short.startswith(b"HTTP")
    assert not empty.startswith(b"HTTP")
    assert not chunked.startswith(b"HTTP")
    time.sleep(0.3)
    # 9 of 10 bytes; the chunked body without its last chunk; the empty request not at all. The upstream
    # records each when its connection ends, which need not be the order they were sent in.
    assert sorted((s.path, s.complete) for s in upstream[1]) == [("/bucket/c", False), ("/bucket/k", False)]
    assert proxy.stats().forwarded == 0


def test_delay_holds_the_response(proxy: FaultProxy) -> None:
    proxy.configure(delay_rate=1.0, delay=0.5)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    began = time.monotonic()
    conn.request("GET", "/bucket/k")
    assert conn.getresponse().read() == b"GET /bucket/k 0"
    assert time.monotonic() - began >= 0.5
    conn.close()
    assert proxy.stats().faults == {DELAY: 1}
    assert proxy.stats().injected == 0  # a delay fails nothing


def test_hang_never_answers_and_stop_still_returns_quickly(upstream: tuple[str, list[Seen]]) -> None:
    proxy = FaultProxy(upstream[0], settings=FaultSettings(hang=True)).start()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=0.5)
    conn.request("PUT", "/bucket/k", body=b"data")
    with pytest.raises(TimeoutError):
        conn.getresponse()
    waiting = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)  # another one, idle
    began = time.monotonic()
    proxy.stop(timeout=5)
    assert time.monotonic() - began < 3
    waiting.close()
    conn.close()
    assert proxy.stats().faults == {HANG: 1}
    assert upstream[1] == []


def test_upstream_down_resets_the_client(upstream: tuple[str, list[Seen]]) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with running_proxy(f"http://127.0.0.1:{closed_port}") as proxy:
        answer = raw_exchange(proxy.port, b"GET /bucket/k HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer in (b"<RST>", b"")
        assert proxy.stats().faults == {UPSTREAM_DOWN: 1}
        proxy.set_upstream(upstream[0])  # the server is back (elsewhere): new connections get through
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.request("GET", "/bucket/k")
        assert conn.getresponse().read() == b"GET /bucket/k 0"
        conn.close()


def test_rule_and_operations_filter(proxy: FaultProxy, upstream: tuple[str, list[Seen]]) -> None:
    proxy.configure(
        error_rate=1.0,
        operations=frozenset({"UploadPart"}),
        rule=lambda request: SLOWDOWN if request.method == "DELETE" else None,
    )
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    statuses = []
    for method, target in [
        ("PUT", "/b/k?partNumber=1&uploadId=u"),
        ("PUT", "/b/k"),
        ("DELETE", "/b/k?uploadId=u"),
        ("GET", "/b/k"),
    ]:
        conn.request(method, target, body=b"1" if method == "PUT" else None)
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    assert statuses[1] == statuses[3] == 200
    assert statuses[0] in (500, 503)
    assert statuses[2] == 503
    assert [s.path for s in upstream[1]] == ["/b/k", "/b/k"]


def test_the_same_seed_repeats_the_same_faults(upstream: tuple[str, list[Seen]]) -> None:
    def kinds(seed: int) -> list[str]:
        with running_proxy(upstream[0], seed=seed, error_rate=0.3, reset_rate=0.2, delay_rate=0.2) as proxy:
            for number in range(40):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
                try:
                    conn.request("GET", f"/b/k{number}")
                    conn.getresponse().read()
                except (ConnectionError, http.client.HTTPException):
                    pass  # the resets
                finally:
                    conn.close()
            return [kind for _, _, kind in proxy.history()]

    first = kinds(7)
    assert first == kinds(7)
    assert first != kinds(8)
    assert set(first) == {FORWARD, SLOWDOWN, INTERNAL_ERROR, RESET, DELAY}


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultSettings(error_rate=1.5)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultSettings(script=("teapot",))
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy("127.0.0.1:80")


@pytest.mark.parametrize(
    ("method", "target", "operation"),
    [
        ("PUT", "/b/k?partNumber=3&uploadId=abc", "UploadPart"),
        ("PUT", "/b/dir/k.tar.gz", "PutObject"),
        ("PUT", "/b", "CreateBucket"),
        ("PUT", "/b?versioning", "PutBucketVersioning"),
        ("POST", "/b/k?uploads", "CreateMultipartUpload"),
        ("POST", "/b/k?uploadId=abc", "CompleteMultipartUpload"),
        ("POST", "/b?delete", "DeleteObjects"),
        ("DELETE", "/b/k?uploadId=abc", "AbortMultipartUpload"),
        ("DELETE", "/b/k", "DeleteObject"),
        ("GET", "/b/k?versionId=v", "GetObject"),
        ("GET", "/b?list-type=2&prefix=x", "ListObjects"),
        ("GET", "/b?uploads", "ListMultipartUploads"),
        ("GET", "/b/k?uploadId=abc", "ListParts"),
        ("GET", "/", "ListBuckets"),
        ("HEAD", "/b/k", "HeadObject"),
        ("HEAD", "/b", "HeadBucket"),
    ],
)
def test_s3_operation_names(method: str, target: str, operation: str) -> None:
    assert s3_operation(method, target) == operation
