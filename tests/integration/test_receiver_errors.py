"""Bad input, auth, overload, webhooks and TLS, against receivers in direct mode on chDB.

Every refusal gets the status the OTLP specification (or the endpoint's contract) asks
for, with a message saying what is wrong; none takes the server down or loses the data of
the requests around it: each test ends by checking that the good requests all got through.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.pipelines.direct import DirectPipeline
from collector.ports import ModulesQuery
from collector.receivers.grpc import TRACE_SERVICE
from tests.integration import receiver_app
from tests.support.certs import self_signed

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
SECRET = "webhook-secret"


def _start(store: ClickHouseStore, tmp: Path, **receiver: Any) -> Receivers:
    modules, codeowners = receiver_app.write_config(tmp)
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    cfg: dict[str, Any] = {
        "grpc_port": 0,
        "http_port": 0,
        "flush_interval_seconds": 3600,
        "max_request_bytes": 64 * 1024,
    }
    cfg.update(receiver)
    return start_receivers(Settings(receiver=cfg), store=store, repositories=loaded.repositories)


@pytest.fixture
def recv(store: ClickHouseStore, tmp_path: Path) -> Iterator[Receivers]:
    r = _start(store, tmp_path)
    try:
        yield r
    finally:
        r.stop(5)


def _request(n_spans: int, *, bad_ids: int = 0, seed: int = 0, service: str = "cart") -> bytes:
    """An ExportTraceServiceRequest with ``n_spans`` valid spans (and ``bad_ids`` invalid ones)."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", service), ("service.version", receiver_app.CART_COMMIT)):
        kv = rs.resource.attributes.add()
        kv.key = k
        kv.value.string_value = v
    ss = rs.scope_spans.add()
    t0 = receiver_app.START_UNIX_NANO
    for i in range(n_spans + bad_ids):
        sp = ss.spans.add()
        sp.trace_id = (seed * 1_000_003 + i // 3 + 1).to_bytes(16, "big")
        sp.span_id = (seed * 1_000_003 + i + 1).to_bytes(8, "big")
        if i >= n_spans:
            sp.span_id = b"\x01\x02"  # 2 bytes: invalid
        sp.name = "load_cart"
        sp.start_time_unix_nano = t0 + i * 1000
        sp.end_time_unix_nano = t0 + i * 1000 + 5_000_000
        kv = sp.attributes.add()
        kv.key = "code.file.path"
        kv.value.string_value = f"{receiver_app.ROOT}/services/cart/store/db.py"
    data: bytes = req.SerializeToString()
    return data


def _json_request(n_spans: int, seed: int = 7) -> bytes:
    spans = [
        {
            "traceId": (seed * 1000 + i + 1).to_bytes(16, "big").hex(),
            "spanId": (seed * 1000 + i + 1).to_bytes(8, "big").hex(),
            "name": "charge",
            "startTimeUnixNano": str(receiver_app.START_UNIX_NANO),
            "endTimeUnixNano": str(receiver_app.START_UNIX_NANO + 1_000_000),
            "attributes": [
                {
                    "key": "code.file.path",
                    "value": {"stringValue": f"{receiver_app.ROOT}/services/payments/gateway/stripe.py"},
                }
            ],
        }
        for i in range(n_spans)
    ]
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payments"}}]},
                "scopeSpans": [{"spans": spans}],
            }
        ]
    }
    return json.dumps(doc).encode()


def _http(
    r: Receivers, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    assert r.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _post_traces(
    r: Receivers, body: bytes, ctype: str = "application/x-protobuf", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    return _http(r, "POST", "/v1/traces", body, {"Content-Type": ctype, **headers})


def _stored_spans(r: Receivers) -> int:
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    assert sink.flush(60)
    return sum(int(row["spans"]) for row in sink.query_modules(ModulesQuery()))


def _status(body: bytes) -> Any:
    return status_pb2.Status.FromString(body)


# -- bad input -------------------------------------------------------------------------


def test_bad_requests_get_their_status_and_message_and_lose_nothing(recv: Receivers) -> None:
    good = 0
    assert _post_traces(recv, _request(10, seed=1))[0] == 200
    good += 10

    # corrupt protobuf: 400, google.rpc.Status in protobuf naming the problem
    status, _, body = _post_traces(recv, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert status == 400
    st = _status(body)
    assert st.code == 3 and "not a valid OTLP protobuf" in st.message

    # invalid JSON: 400, Status as JSON
    status, headers, body = _post_traces(recv, b'{"resourceSpans": [', "application/json")
    assert status == 400 and headers["content-type"] == "application/json"
    assert "not valid JSON" in json.loads(body)["message"]

    # JSON of the wrong shape: 400 naming where
    status, _, body = _post_traces(
        recv, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}', "application/json"
    )
    assert status == 400 and "resourceSpans[0].scopeSpans[0].spans[0]" in json.loads(body)["message"]

    # wrong content type: 415
    status, _, body = _post_traces(recv, _request(3), "text/plain")
    assert status == 415 and "application/x-protobuf or application/json" in json.loads(body)["message"]

    # unsupported content encoding: 415
    status, _, body = _post_traces(recv, _request(3), "application/x-protobuf", **{"Content-Encoding": "br"})
    assert status == 415 and "gzip" in _status(body).message

    # oversized body (limit 64 KiB): 413, before reading it
    big = _request(2000)
    assert len(big) > 64 * 1024
    status, _, body = _post_traces(recv, big)
    assert status == 413 and "max_request_bytes" in _status(body).message

    # a small gzip body that inflates past the limit: 413 too (no gzip bomb)
    status, _, body = _post_traces(recv, gzip.compress(b"\0" * (1 << 20)), **{"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in _status(body).message

    # bad gzip: 400
    status, _, body = _post_traces(recv, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in _status(body).message

    # wrong method, unknown path
    status, headers, body = _http(recv, "GET", "/v1/traces")
    assert status == 405 and headers["allow"] == "POST"
    status, _, body = _http(recv, "POST", "/v1/metrics", b"x", {"Content-Type": "application/x-protobuf"})
    assert status == 404 and "/v1/traces" in json.loads(body)["error"]

    # partial success: invalid spans counted, the valid ones kept (protobuf and JSON)
    status, _, body = _post_traces(recv, _request(5, bad_ids=2, seed=2))
    assert status == 200
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 2
    assert "span_id must be 8 bytes" in resp.partial_success.error_message
    good += 5
    status, _, body = _post_traces(recv, _json_request(4), "application/json")
    assert (status, json.loads(body)) == (200, {})
    good += 4

    # gRPC: corrupt -> INVALID_ARGUMENT; too large -> RESOURCE_EXHAUSTED without RetryInfo
    with grpc.insecure_channel(str(recv.grpc_endpoint)) as ch:
        export = ch.unary_unary(f"/{TRACE_SERVICE}/Export")
        with pytest.raises(grpc.RpcError) as err:
            export(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid OTLP protobuf" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            export(big, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "google.rpc.retryinfo-bin" not in dict(err.value.trailing_metadata() or ())
        resp = trace_service_pb2.ExportTraceServiceResponse.FromString(
            export(_request(3, bad_ids=1, seed=3), timeout=10)
        )
        assert resp.partial_success.rejected_spans == 1
        good += 3

    # a truncated body (the client hangs up mid-body) does not disturb the server
    assert recv.http_port is not None
    with socket.create_connection(("127.0.0.1", recv.http_port)) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 500\r\n\r\nabc"
        )
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1024).startswith(b"HTTP/1.1 400")

    assert _post_traces(recv, _request(6, seed=4))[0] == 200
    good += 6
    assert _stored_spans(recv) == good


def test_chunked_body_is_accepted(recv: Receivers) -> None:
    body = _request(7, seed=9)
    chunked = (
        b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[:100], body[100:])) + b"0\r\n\r\n"
    )
    assert recv.http_port is not None
    with socket.create_connection(("127.0.0.1", recv.http_port)) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked
        )
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert _stored_spans(recv) == 7


# -- events ----------------------------------------------------------------------------

DEPLOY = {
    "deploy_id": "d-1",
    "service": "cart",
    "environment": "prod",
    "commit_sha": receiver_app.CART_COMMIT,
    "deployed_at": "2026-03-01T00:00:00Z",
}


def test_deploy_and_incident_events(recv: Receivers, store: ClickHouseStore) -> None:
    bad = [DEPLOY, {**DEPLOY, "deploy_id": "d-2", "commit_sha": "not-a-sha"}]
    status, _, body = _http(
        recv, "POST", "/v1/deploys", json.dumps(bad).encode(), {"Content-Type": "application/json"}
    )
    assert status == 400
    msg = json.loads(body)["error"]
    assert "event 1" in msg and "commit_sha" in msg and "none stored" in msg
    status, _, body = _http(recv, "POST", "/v1/deploys", b"{nope", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    status, _, _ = _http(
        recv, "POST", "/v1/deploys", json.dumps(DEPLOY).encode(), {"Content-Type": "text/plain"}
    )
    assert status == 415
    status, _, body = _http(
        recv, "POST", "/v1/deploys", json.dumps(DEPLOY).encode(), {"Content-Type": "application/json"}
    )
    assert (status, json.loads(body)) == (200, {"accepted": 1})
    incident = {
        "incident_id": "i-1",
        "services": ["cart"],
        "started_at": "2026-03-01T00:05:00Z",
        "severity": "sev2",
    }
    status, _, body = _http(
        recv, "POST", "/v1/incidents", json.dumps([incident]).encode(), {"Content-Type": "application/json"}
    )
    assert (status, json.loads(body)) == (200, {"accepted": 1})
    sink = recv.sink
    assert isinstance(sink, DirectPipeline)
    assert [d.deploy_id for d in sink._locked(store.load_deploys)] == ["d-1"]
    assert sink._locked(lambda: store.query("SELECT incident_id FROM incidents")) == [("i-1",)]


# -- auth ------------------------------------------------------------------------------


def test_bearer_token_on_http_and_grpc(
    store: ClickHouseStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = _start(store, tmp_path, bearer_token=TOKEN)
    try:
        caplog.set_level(logging.WARNING, "prodloop.receiver")
        payload = _request(4, seed=5)
        status, headers, body = _post_traces(r, payload)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert "Authorization" in _status(body).message
        status, _, _ = _post_traces(r, payload, Authorization="Bearer wrong")
        assert status == 401
        status, _, _ = _http(r, "GET", "/api/v1/modules")
        assert status == 401
        status, _, _ = _http(
            r, "POST", "/v1/deploys", json.dumps(DEPLOY).encode(), {"Content-Type": "application/json"}
        )
        assert status == 401
        assert _post_traces(r, payload, Authorization=f"Bearer {TOKEN}")[0] == 200
        with grpc.insecure_channel(str(r.grpc_endpoint)) as ch:
            export = ch.unary_unary(f"/{TRACE_SERVICE}/Export")
            with pytest.raises(grpc.RpcError) as err:
                export(payload, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                export(payload, timeout=10, metadata=(("authorization", "Bearer nope"),))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            export(_request(3, seed=6), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
        status, _, body = _http(r, "GET", "/api/v1/modules", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and sum(x["spans"] for x in json.loads(body)) in (0, 4, 7)
        assert _stored_spans(r) == 7
        logged = "\n".join(rec.getMessage() for rec in caplog.records)
        assert "refused" in logged and TOKEN not in logged and "nope" not in logged
    finally:
        r.stop(5)


# -- GitHub webhook --------------------------------------------------------------------


def _github_payload(state: str, deployment_id: int = 42) -> dict[str, Any]:
    return {
        "action": "created",
        "deployment_status": {
            "state": state,
            "environment": "production",
            "created_at": "2026-03-01T10:00:00Z",
            "updated_at": "2026-03-01T10:00:05Z",
            "log_url": "https://github.com/acme/app/actions/runs/1",
        },
        "deployment": {
            "id": deployment_id,
            "sha": receiver_app.CART_COMMIT,
            "environment": "production",
            "payload": {"service": "cart", "environment": "prod"},
        },
        "repository": {"name": "app", "full_name": "acme/app", "html_url": "https://github.com/acme/app"},
    }


def _github(
    r: Receivers,
    payload: Any,
    event: str = "deployment_status",
    secret: str | None = SECRET,
    sig: str | None = None,
    delivery: str = "abc-123",
) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    if sig is not None:
        headers["X-Hub-Signature-256"] = sig
    elif secret is not None:
        headers["X-Hub-Signature-256"] = (
            "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        )
    status, _, resp = _http(r, "POST", "/v1/webhooks/github", body, headers)
    return status, json.loads(resp)


def test_github_webhook(store: ClickHouseStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = _start(store, tmp_path, github_webhook_secret=SECRET, bearer_token=TOKEN)
    try:
        caplog.set_level(logging.WARNING, "prodloop.receiver")
        # unsigned, badly signed, signed with another secret: 401, logged without the payload
        assert _github(r, _github_payload("success"), secret=None)[0] == 401
        assert _github(r, _github_payload("success"), sig="sha256=" + "0" * 64)[0] == 401
        status, body = _github(r, _github_payload("success"), secret="other")
        assert status == 401 and "X-Hub-Signature-256" in body["error"]
        logged = "\n".join(rec.getMessage() for rec in caplog.records)
        assert "refused GitHub webhook" in logged and "abc-123" in logged
        assert receiver_app.CART_COMMIT not in logged and "actions/runs" not in logged
        # signed: no bearer token needed
        assert _github(r, {"zen": "hi"}, event="ping") == (200, {"ok": True})
        assert _github(r, {"action": "opened"}, event="issues")[0] == 202
        assert _github(r, _github_payload("in_progress"))[0] == 202
        status, body = _github(r, _github_payload("success"))
        assert status == 200 and body["deploy_id"] == "github:acme/app:42"
        status, body = _github(r, _github_payload("failure", 43), delivery="abc-124")
        assert status == 200 and body["status"] == "failed"
        status, body = _github(
            r, {"deployment_status": {"state": "success"}, "deployment": {"id": 1}}, delivery="abc-125"
        )
        assert status == 400 and "service" in body["error"]
        sink = r.sink
        assert isinstance(sink, DirectPipeline)
        deploys = {d.deploy_id: d for d in sink._locked(store.load_deploys)}
        assert set(deploys) == {"github:acme/app:42", "github:acme/app:43"}
        d = deploys["github:acme/app:42"]
        assert (d.service, d.environment, d.commit_sha, d.status) == (
            "cart",
            "prod",
            receiver_app.CART_COMMIT,
            "succeeded",
        )
        assert d.url == "https://github.com/acme/app/actions/runs/1"
        assert deploys["github:acme/app:43"].status == "failed"
    finally:
        r.stop(5)


def test_github_webhook_is_off_without_a_secret(recv: Receivers) -> None:
    status, body = _github(recv, _github_payload("success"))
    assert status == 404 and "PRODLOOP_RECEIVER__GITHUB_WEBHOOK_SECRET" in body["error"]


# -- overload --------------------------------------------------------------------------


def test_overload_answers_429_and_retry_info_and_the_retry_gets_through(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    """The store is held, so the worker cannot flush; the queue (20 spans) fills."""
    r = _start(store, tmp_path, queue_max_spans=20, retry_after_seconds=1)
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    try:
        sink._store_lock.acquire()
        try:
            assert _post_traces(r, _request(15, seed=1))[0] == 200
            flusher = threading.Thread(target=sink.flush, args=(60,))
            flusher.start()  # the worker takes the 15 spans, then waits for the store
            deadline = time.monotonic() + 10
            # once the worker has taken the flush request it is bound for the store write, which
            # blocks: only then is what comes next sure to stay queued
            while (sink._queued_spans or sink._flush_requested) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not sink._queued_spans and not sink._flush_requested
            assert _post_traces(r, _request(15, seed=2))[0] == 200  # queued: 15 of 20
            status, headers, body = _post_traces(r, _request(10, seed=3))
            assert status == 429 and headers["retry-after"] == "1"
            assert "queue_max_spans" in _status(body).message
            with grpc.insecure_channel(str(r.grpc_endpoint)) as ch:
                export = ch.unary_unary(f"/{TRACE_SERVICE}/Export")
                with pytest.raises(grpc.RpcError) as err:
                    export(_request(10, seed=3), timeout=10)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                md = dict(err.value.trailing_metadata())
                info = error_details_pb2.RetryInfo.FromString(md["google.rpc.retryinfo-bin"])
                assert info.retry_delay.seconds == 1
                st = status_pb2.Status.FromString(md["grpc-status-details-bin"])
                assert st.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)

            # the real exporter honours RetryInfo: it waits, retries, and gets through once the store is back
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            truth_holder: list[Any] = []

            def export_app() -> None:
                truth_holder.append(
                    receiver_app.run_app(
                        lambda: OTLPSpanExporter(
                            endpoint=f"http://{r.grpc_endpoint}", insecure=True, timeout=30
                        ),
                        requests=10,
                    )
                )

            app = threading.Thread(target=export_app)
            app.start()
            time.sleep(1.5)
        finally:
            sink._store_lock.release()
        flusher.join(30)
        app.join(60)
        assert _post_traces(r, _request(10, seed=3))[0] == 200  # the refused request, retried
        app_spans = sum(t.spans for t in truth_holder[0].values())
        assert _stored_spans(r) == 15 + 15 + 10 + app_spans
    finally:
        r.stop(5)


def test_shutting_down_answers_503(store: ClickHouseStore, tmp_path: Path) -> None:
    r = _start(store, tmp_path)
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    assert _post_traces(r, _request(4, seed=1))[0] == 200
    sink._closing = True  # what close() sets first
    try:
        status, headers, body = _post_traces(r, _request(4, seed=2))
        assert status == 503 and headers["retry-after"] == "2" and "shutting down" in _status(body).message
        with grpc.insecure_channel(str(r.grpc_endpoint)) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(f"/{TRACE_SERVICE}/Export")(_request(4, seed=2), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "google.rpc.retryinfo-bin" in dict(err.value.trailing_metadata())
    finally:
        r.stop(5)
    assert sum(int(x["spans"]) for x in store.query_modules()) == 4


# -- TLS -------------------------------------------------------------------------------


def test_tls_on_http_and_grpc(store: ClickHouseStore, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    r = _start(store, tmp_path, tls_cert_file=str(cert), tls_key_file=str(key))
    try:
        assert r.http_url is not None and r.http_url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(
            f"{r.http_url}/v1/traces",
            data=_request(5, seed=1),
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            assert resp.status == 200
        # plain HTTP to the TLS port is refused, and does not take the server down
        assert r.http_port is not None
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            _http(r, "POST", "/v1/traces", _request(1), {"Content-Type": "application/x-protobuf"})
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(str(r.grpc_endpoint), creds) as ch:
            ch.unary_unary(f"/{TRACE_SERVICE}/Export")(_request(3, seed=2), timeout=10)
        with urllib.request.urlopen(f"{r.http_url}/api/v1/modules", context=ctx, timeout=10) as resp:
            assert resp.status == 200
        assert _stored_spans(r) == 8
    finally:
        r.stop(5)


def test_tls_needs_both_files(store: ClickHouseStore, tmp_path: Path) -> None:
    from collector.errors import ConfigError

    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigError, match=r"tls_cert_file and receiver\.tls_key_file"):
        _start(store, tmp_path, tls_cert_file=str(cert))


def test_json_and_trace_pb2_agree(recv: Receivers) -> None:
    """A sanity check of the fixtures: trace_pb2 is the real OTLP module."""
    assert trace_pb2.Span.DESCRIPTOR.full_name == "opentelemetry.proto.trace.v1.Span"
    status, _, _ = _post_traces(recv, _json_request(3, seed=1), "application/json; charset=utf-8")
    assert status == 200
    assert _stored_spans(recv) == 3
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{recv.http_url}/nope")
