"""The HTTP server under the receiver: keep-alive, its limits and timeouts, content encodings,
and the drain on stop; against receivers in direct mode on chDB (a gated sink for the drain)."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import zstandard
from google.rpc import status_pb2

from attribution.model import DeployEvent, IncidentEvent
from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.pipelines.direct import DirectPipeline
from collector.ports import Accepted, JsonObject, ModulesQuery
from tests.integration import receiver_app
from tests.support.sdk_requests import Requests

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024
T0 = receiver_app.START_UNIX_NANO
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _start(store: ClickHouseStore, tmp: Path, **receiver: Any) -> Receivers:
    modules, codeowners = receiver_app.write_config(tmp)
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    cfg: dict[str, Any] = {
        "grpc_enabled": False,
        "http_port": 0,
        "flush_interval_seconds": 3600,
        "max_request_bytes": LIMIT,
        **receiver,
    }
    return start_receivers(Settings(receiver=cfg), store=store, repositories=loaded.repositories)


@pytest.fixture
def start(store: ClickHouseStore, tmp_path: Path) -> Iterator[Callable[..., Receivers]]:
    started: list[Receivers] = []

    def go(**receiver: Any) -> Receivers:
        started.append(_start(store, tmp_path, **receiver))
        return started[-1]

    yield go
    for r in started:
        r.stop(5)


def _spans(n: int, seed: int = 1) -> bytes:
    return Requests(seed=seed).proto([(T0 + i * 1000, T0 + i * 1000 + 5_000_000) for i in range(n)])


def _stored(r: Receivers) -> int:
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    assert sink.flush(60)
    return sum(int(row["spans"]) for row in sink.query_modules(ModulesQuery()))


def _conn(r: Receivers) -> http.client.HTTPConnection:
    assert r.http_port is not None
    return http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=10)


def _post(conn: http.client.HTTPConnection, body: bytes, **headers: str) -> tuple[int, bytes]:
    conn.request("POST", "/v1/traces", body=body, headers={**PROTOBUF, **headers})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _post_once(r: Receivers, body: bytes) -> tuple[int, bytes]:
    conn = _conn(r)
    try:
        return _post(conn, body)
    finally:
        conn.close()


def _raw(r: Receivers, data: bytes, *, wait_s: float = 5) -> bytes:
    """Send ``data`` on a new connection; what the server answers until it closes (or ``wait_s``)."""
    assert r.http_port is not None
    with socket.create_connection(("127.0.0.1", r.http_port)) as s:
        s.settimeout(wait_s)
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_keep_alive_serves_many_requests_on_one_connection(start: Callable[..., Receivers]) -> None:
    r = start()
    conn = _conn(r)
    try:
        for seed in range(1, 4):
            assert _post(conn, _spans(5, seed)) == (200, b"")
            if seed == 1:
                sock = conn.sock
            assert conn.sock is sock  # http.client reconnects only when the server closed
    finally:
        conn.close()
    assert _stored(r) == 15


def test_max_connections_answers_503_beyond_the_limit(start: Callable[..., Receivers]) -> None:
    r = start(http_max_connections=3)
    a, b, c = _conn(r), _conn(r), _conn(r)
    try:
        assert _post(a, _spans(2, 1))[0] == 200
        assert _post(b, _spans(2, 2))[0] == 200
        status, _ = _post(c, _spans(2, 3))  # the third open connection reaches the limit
        assert status == 503
        c.close()
        time.sleep(0.2)
        assert _post(a, _spans(2, 4))[0] == 200
    finally:
        for x in (a, b, c):
            x.close()
    assert _stored(r) == 6


def test_body_limit_is_applied_while_reading_a_chunked_body(start: Callable[..., Receivers]) -> None:
    r = start()
    chunk = b"\0" * 16384
    body = b"".join(b"4000\r\n" + chunk + b"\r\n" for _ in range(6)) + b"0\r\n\r\n"  # 96 KiB > 64 KiB
    out = _raw(
        r,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body,
    )
    assert out.startswith(b"HTTP/1.1 413")
    st = status_pb2.Status.FromString(out.split(b"\r\n\r\n", 1)[1])
    assert "max_request_bytes" in st.message
    # a huge declared body is refused before any of it is read, and the connection cut
    out = _raw(
        r,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 100000000\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 413") and b"connection: close" in out.lower()


def test_header_size_limit(start: Callable[..., Receivers]) -> None:
    r = start(http_max_header_bytes=2048)
    conn = _conn(r)
    try:
        assert _post(conn, _spans(1), **{"X-Small": "a" * 500})[0] == 200
    finally:
        conn.close()
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096
    out = _raw(r, head + b"\r\n\r\n")  # a whole head at once: the app counts it
    assert out.startswith(b"HTTP/1.1 431") and b"http_max_header_bytes" in out
    out = _raw(r, head)  # an unfinished one: the server stops buffering it
    assert out.startswith(b"HTTP/1.1 431") and b"http_max_header_bytes" in out
    # one that arrives in pieces, none of them over the limit
    assert r.http_port is not None
    with socket.create_connection(("127.0.0.1", r.http_port)) as s:
        s.settimeout(5)
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        for _ in range(11):  # 2,361 bytes in all, then nothing more (no reset of an answer unread)
            s.sendall(b"X-Piece: " + b"b" * 200 + b"\r\n")
            time.sleep(0.02)
        out = s.recv(65536)
    assert out.startswith(b"HTTP/1.1 431"), out


def test_head_body_and_idle_timeouts(start: Callable[..., Receivers]) -> None:
    r = start(http_header_timeout_seconds=0.5, http_body_timeout_seconds=0.5, http_idle_timeout_seconds=1)
    # a connection that sends nothing, or half a head, is closed after the head timeout
    for data in (b"", b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"):
        t = time.monotonic()
        assert _raw(r, data) == b""
        assert 0.4 < time.monotonic() - t < 3
    # a body that stops arriving: 408
    out = _raw(
        r,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 100\r\n\r\n0123456789",
    )
    assert out.startswith(b"HTTP/1.1 408") and b"http_body_timeout_seconds" in out
    # a keep-alive connection idle past the idle timeout is closed by the server
    assert r.http_port is not None
    with socket.create_connection(("127.0.0.1", r.http_port)) as s:
        s.settimeout(5)
        s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t = time.monotonic()
        while s.recv(65536):
            pass
        assert 0.8 < time.monotonic() - t < 3


_BIG = 64 * 1024 * 1024  # inflates 1000-fold past the limit


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
    ],
)
def test_content_encodings_and_their_decompressed_limit(
    start: Callable[..., Receivers], encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    r = start()
    conn = _conn(r)
    try:
        assert _post(conn, compress(_spans(20)), **{"Content-Encoding": encoding}) == (200, b"")
        # a bomb: a few KiB that would inflate to 64 MiB; refused after LIMIT + 1 bytes
        bomb = compress(b"\0" * _BIG)
        assert len(bomb) < LIMIT
        t = time.monotonic()
        status, body = _post(conn, bomb, **{"Content-Encoding": encoding})
        assert status == 413 and "decompressed" in status_pb2.Status.FromString(body).message
        assert time.monotonic() - t < 1
        status, body = _post(conn, b"\x01\x02 not compressed", **{"Content-Encoding": encoding})
        assert status == 400 and f"not valid {encoding}" in status_pb2.Status.FromString(body).message
    finally:
        conn.close()
    assert _stored(r) == 20


class _GatedSink:
    """A TraceSink whose exports wait for a gate (a slow WAL fsync, slow broker acks)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.exported = 0
        self.closed = False

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        self.entered.set()
        self.gate.wait(10)
        self.exported += 1
        return Accepted(1)

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int:
        return len(events)

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int:
        return len(events)

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]:
        return []

    def close(self, grace_s: float = 10.0) -> None:
        self.closed = True


def _stop_in_background(r: Receivers, grace: float) -> threading.Thread:
    t = threading.Thread(target=r.stop, args=(grace,))
    t.start()
    return t


def test_stop_drains_in_flight_requests_and_refuses_new_connections() -> None:
    sink = _GatedSink()
    r = start_receivers(Settings(receiver={"grpc_enabled": False, "http_port": 0}), sink=sink)
    assert r.http_port is not None
    idle = _conn(r)
    idle.request("GET", "/openapi.json")
    assert idle.getresponse().read()
    answers: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: answers.append(_post_once(r, _spans(3))))
    client.start()
    assert sink.entered.wait(5)
    stopper = _stop_in_background(r, 10)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):  # no new connections while draining
        socket.create_connection(("127.0.0.1", r.http_port), timeout=2)
    assert stopper.is_alive() and not answers and not sink.closed
    sink.gate.set()
    client.join(5)
    stopper.join(10)
    assert answers == [(200, b"")] and sink.exported == 1 and sink.closed
    with pytest.raises((ConnectionError, http.client.HTTPException)):  # the idle one was closed
        idle.request("GET", "/openapi.json")
        idle.getresponse()
    idle.close()


def test_stop_cuts_requests_still_running_after_the_grace() -> None:
    sink = _GatedSink()
    r = start_receivers(Settings(receiver={"grpc_enabled": False, "http_port": 0}), sink=sink)
    errors: list[BaseException] = []

    def post() -> None:
        try:
            _post_once(r, _spans(3))
        except (ConnectionError, http.client.HTTPException) as exc:
            errors.append(exc)

    client = threading.Thread(target=post)
    client.start()
    assert sink.entered.wait(5)
    t = time.monotonic()
    r.stop(1.0)
    took = time.monotonic() - t
    sink.gate.set()
    client.join(5)
    assert took < 4 and len(errors) == 1 and sink.closed
