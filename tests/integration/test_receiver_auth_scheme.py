"""The bearer scheme is case-insensitive (RFC 7235), the token is not (issue 10).

Receivers in direct mode on chDB with ``bearer_token`` set.  The real OpenTelemetry SDK
exporters (OTLP/HTTP and OTLP/gRPC) send ``bearer``, ``BEARER`` and ``Bearer``; raw requests
check the status of what is refused.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.pipelines.direct import DirectPipeline
from collector.ports import ModulesQuery
from collector.receivers.grpc import TRACE_SERVICE
from tests.integration import receiver_app

pytestmark = pytest.mark.integration

TOKEN = "s3cret-Token"
SCHEMES = ("bearer", "BEARER", "Bearer")


@pytest.fixture
def recv(store: ClickHouseStore, tmp_path: Path) -> Iterator[Receivers]:
    modules, codeowners = receiver_app.write_config(tmp_path)
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    cfg = {"grpc_port": 0, "http_port": 0, "flush_interval_seconds": 3600, "bearer_token": TOKEN}
    r = start_receivers(Settings(receiver=cfg), store=store, repositories=loaded.repositories)
    try:
        yield r
    finally:
        r.stop(5)


def _spans(n: int, seed: int) -> Sequence[ReadableSpan]:
    """``n`` finished SDK spans of cart."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "cart"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    t = receiver_app.START_UNIX_NANO + seed * 1_000_000_000
    for i in range(n):
        tracer.start_span("load_cart", attributes=receiver_app.CART_STORE.attrs, start_time=t + i).end(
            end_time=t + i + 1_000_000
        )
    provider.shutdown()
    return memory.get_finished_spans()


def _stored_spans(r: Receivers) -> int:
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    assert sink.flush(60)
    return sum(int(row["spans"]) for row in sink.query_modules(ModulesQuery()))


def _http_status(r: Receivers, authorization: str) -> int:
    assert r.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=30)
    try:
        conn.request("GET", "/api/v1/modules", headers={"Authorization": authorization})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _grpc_code(r: Receivers, authorization: str) -> grpc.StatusCode:
    with grpc.insecure_channel(str(r.grpc_endpoint)) as ch:
        export = ch.unary_unary(f"/{TRACE_SERVICE}/Export")
        try:
            export(b"", timeout=10, metadata=(("authorization", authorization),))
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
        return grpc.StatusCode.OK


def test_any_case_of_the_scheme_is_accepted_over_http_and_grpc(recv: Receivers) -> None:
    sent = 0
    for i, scheme in enumerate(SCHEMES):
        http_exporter = HttpExporter(
            endpoint=f"{recv.http_url}/v1/traces", headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert http_exporter.export(_spans(3, 2 * i)) == SpanExportResult.SUCCESS, scheme
        http_exporter.shutdown()
        grpc_exporter = GrpcExporter(
            endpoint=f"http://{recv.grpc_endpoint}",
            insecure=True,
            headers={"authorization": f"{scheme} {TOKEN}"},
        )
        assert grpc_exporter.export(_spans(4, 2 * i + 1)) == SpanExportResult.SUCCESS, scheme
        grpc_exporter.shutdown()
        sent += 7
        assert _http_status(recv, f"{scheme}   {TOKEN}") == 200  # extra spaces are tolerated
        assert _grpc_code(recv, f"{scheme}  {TOKEN}") == grpc.StatusCode.OK
    assert _stored_spans(recv) == sent


@pytest.mark.parametrize(
    "authorization",
    [
        "bearer wrong",
        f"BEARER {TOKEN.lower()}",  # the token differs only in case
        f"Bearer {TOKEN.upper()}",
        f"Basic {TOKEN}",
        TOKEN,
        "bearer",
    ],
)
def test_a_wrong_token_or_scheme_is_refused(recv: Receivers, authorization: str) -> None:
    assert _http_status(recv, authorization) == 401
    assert _grpc_code(recv, authorization) == grpc.StatusCode.UNAUTHENTICATED
    exporter = HttpExporter(endpoint=f"{recv.http_url}/v1/traces", headers={"Authorization": authorization})
    assert exporter.export(_spans(2, 9)) == SpanExportResult.FAILURE
    exporter.shutdown()
    assert _stored_spans(recv) == 0
