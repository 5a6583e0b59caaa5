"""OTLP logs receivers (``POST /v1/logs``, ``LogsService/Export``) fed by the real exporters.

The receivers are started by ``start_receivers`` over a small fake sink that is a TraceSink and
a LogSink (the direct pipeline's ``accept_logs`` is the pipeline's own business).  Log records
come from the real SDK (a ``LoggingHandler`` logging ``logger.exception`` inside an active span)
and are sent by the real exporters: OTLP/gRPC and OTLP/HTTP protobuf (opentelemetry-exporter-
otlp) and OTLP/HTTP JSON (opentelemetry-exporter-otlp-json-http).  The sink must receive bytes
that carry exactly the exceptions the SDK recorded; failures get the same status map as traces.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider, sampling

from attribution.model import DeployEvent, IncidentEvent
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.codec.otlp_logs import decode_logs
from collector.errors import BusyError, DecodeError
from collector.ports import Accepted, JsonObject, LogSink, ModulesQuery
from collector.receivers.grpc import LOGS_SERVICE
from tests.support.sdk_requests import SeededIds

pytestmark = pytest.mark.integration

TOKEN = "logs-token"


class FakeSink:
    """A TraceSink that takes no traces, and a LogSink that keeps what it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, int]] = []
        self.fail: Exception | None = None
        self.answer: Accepted | None = None
        self._lock = threading.Lock()

    def accept_logs(self, body: bytes, encoding: str, *, received_unix_nano: int) -> Accepted:
        if self.fail is not None:
            raise self.fail
        found = decode_logs(body, encoding)  # raises DecodeError as a real sink would
        with self._lock:
            self.calls.append((body, encoding, received_unix_nano))
        return self.answer or Accepted(len(found))

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        return Accepted(0)

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int:
        return 0

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int:
        return 0

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]:
        return []

    def close(self, grace_s: float = 10.0) -> None:
        pass

    def exceptions(self) -> list[tuple[str, str, str, bytes, bytes]]:
        out = []
        for body, encoding, _ in self.calls:
            for x in decode_logs(body, encoding):
                out.append((*x.exception, x.trace_id, x.span_id))
        return out


class NoLogsSink(FakeSink):
    """A sink with no accept_logs: no logs endpoint is served."""

    accept_logs = None  # type: ignore[assignment]


def test_a_sink_without_accept_logs_is_no_log_sink() -> None:
    assert isinstance(FakeSink(), LogSink)
    assert not isinstance(NoLogsSink(), LogSink)


def _start(sink: FakeSink, **receiver: Any) -> Receivers:
    cfg: dict[str, Any] = {"grpc_port": 0, "http_port": 0, "flush_interval_seconds": 3600}
    cfg.update(receiver)
    return start_receivers(Settings(receiver=cfg), sink=sink)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def recv(sink: FakeSink) -> Iterator[Receivers]:
    r = _start(sink)
    try:
        yield r
    finally:
        r.stop(5)


def _raise_in(n: int, exc: BaseException) -> None:
    if n == 0:
        raise exc
    _raise_in(n - 1, exc)


def sdk_records(name: str) -> tuple[list[ReadableLogRecord], list[tuple[str, str, str, bytes, bytes]]]:
    """Real SDK log records: exceptions logged inside spans, and plain records around them.
    Returns them and the exceptions they carry, as (type, message, stacktrace, trace id, span id)
    taken from the exceptions and spans themselves."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=SdkResource({"service.name": "cart"}), shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    with pytest.warns(DeprecationWarning, match="LoggingHandler"):
        handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger(f"prodloop.tests.receiver_logs.{name}")
    logger.propagate = False
    logger.addHandler(handler)
    tracer = TracerProvider(
        sampler=sampling.ALWAYS_ON, id_generator=SeededIds(3), shutdown_on_exit=False
    ).get_tracer("prodloop.tests")
    truth = []
    try:
        for i, exc in enumerate([ValueError("bad quantity"), LookupError("no sku 7")]):
            with tracer.start_as_current_span(f"op {i}") as span:
                try:
                    _raise_in(2, exc)
                except Exception as caught:
                    logger.exception("failed")
                    ctx = span.get_span_context()
                    truth.append(
                        (
                            type(caught).__name__,
                            str(caught.args[0]),
                            "".join(traceback.format_exception(caught)),
                            ctx.trace_id.to_bytes(16, "big"),
                            ctx.span_id.to_bytes(8, "big"),
                        )
                    )
            logger.warning("plain %d", i)
    finally:
        logger.removeHandler(handler)
    return list(exporter.get_finished_logs()), truth


def _grpc_exporter(r: Receivers) -> LogRecordExporter:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(
        endpoint=f"http://{r.grpc_endpoint}", insecure=True, compression=grpc.Compression.Gzip
    )


def _http_proto_exporter(r: Receivers) -> LogRecordExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=f"{r.http_url}/v1/logs", compression=Compression.Gzip)


def _http_json_exporter(r: Receivers) -> LogRecordExporter:
    from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=f"{r.http_url}/v1/logs")


EXPORTERS: dict[str, tuple[Callable[[Receivers], LogRecordExporter], str]] = {
    "grpc": (_grpc_exporter, "otlp_proto"),
    "http_protobuf": (_http_proto_exporter, "otlp_proto"),
    "http_json": (_http_json_exporter, "otlp_json"),
}


@pytest.mark.parametrize("protocol", list(EXPORTERS))
def test_real_exporters_deliver_the_exceptions_the_sdk_recorded(
    recv: Receivers, sink: FakeSink, protocol: str
) -> None:
    records, truth = sdk_records(protocol)
    assert len(records) == 4 and len(truth) == 2
    make, encoding = EXPORTERS[protocol]
    exporter = make(recv)
    before = time.time_ns()
    try:
        assert exporter.export(records) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    after = time.time_ns()
    assert [(enc, before <= t <= after) for _, enc, t in sink.calls] == [(encoding, True)]
    assert sink.exceptions() == truth


def _post(
    url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers


def _request(name: str) -> bytes:
    records, _ = sdk_records(name)
    return bytes(encode_logs(records).SerializeToString())


def test_http_answers_and_refusals(recv: Receivers, sink: FakeSink) -> None:
    url = f"{recv.http_url}/v1/logs"
    body = _request("http")
    # gzip protobuf: an empty ExportLogsServiceResponse
    status, answer, _ = _post(
        url, gzip.compress(body), "application/x-protobuf", {"Content-Encoding": "gzip"}
    )
    assert (status, answer) == (200, b"")
    # partial success is counted in log records, in the request's encoding
    sink.answer = Accepted(1, rejected=2, message="2 log record(s) rejected")
    status, answer, _ = _post(url, body, "application/x-protobuf")
    resp = logs_service_pb2.ExportLogsServiceResponse.FromString(answer)
    assert (status, resp.partial_success.rejected_log_records) == (200, 2)
    assert resp.partial_success.error_message == "2 log record(s) rejected"
    js = json.dumps({"resourceLogs": []}).encode()
    status, answer, _ = _post(url, js, "application/json")
    assert (status, json.loads(answer)["partialSuccess"]["rejectedLogRecords"]) == (200, "2")
    sink.answer = None
    # undecodable: 400 with a google.rpc.Status
    status, answer, _ = _post(url, body[: len(body) // 2], "application/x-protobuf")
    assert status == 400
    assert "LogsData" in status_pb2.Status.FromString(answer).message
    # busy: 429 with Retry-After
    sink.fail = BusyError("queue full", retry_after_s=3)
    status, answer, headers = _post(url, body, "application/json")
    assert (status, headers["Retry-After"]) == (429, "3")
    assert json.loads(answer)["message"] == "queue full"
    sink.fail = None
    # an unsupported media type
    status, _, _ = _post(url, body, "text/plain")
    assert status == 415
    # GET is not served
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=30)
    with info.value as refused:
        assert (refused.code, refused.headers["Allow"]) == (405, "POST")
    # the good requests all got through, and nothing else
    assert [enc for _, enc, _ in sink.calls] == ["otlp_proto", "otlp_proto", "otlp_json"]


def test_grpc_answers_and_refusals(recv: Receivers, sink: FakeSink) -> None:
    body = _request("grpc")
    with grpc.insecure_channel(str(recv.grpc_endpoint)) as ch:
        export = ch.unary_unary(f"/{LOGS_SERVICE}/Export")
        assert export(body, timeout=30) == b""
        with pytest.raises(grpc.RpcError) as err:
            export(body[:-3], timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        sink.fail = DecodeError("odd", where="x")
        with pytest.raises(grpc.RpcError) as err:
            export(body, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        sink.fail = BusyError("queue full", retry_after_s=2)
        with pytest.raises(grpc.RpcError) as err:
            export(body, timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(sink.calls) == 1


def test_limits_and_bearer_token_apply_to_logs(sink: FakeSink) -> None:
    r = _start(sink, bearer_token=TOKEN, max_request_bytes=4096)
    try:
        url = f"{r.http_url}/v1/logs"
        body = _request("auth")
        status, _, headers = _post(url, body, "application/x-protobuf")
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert _post(url, body, "application/x-protobuf", auth)[0] == 200
        big = body + b"\n" * 5000  # over max_request_bytes
        assert _post(url, big, "application/x-protobuf", auth)[0] == 413
        with grpc.insecure_channel(str(r.grpc_endpoint)) as ch:
            export = ch.unary_unary(f"/{LOGS_SERVICE}/Export")
            with pytest.raises(grpc.RpcError) as err:
                export(body, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert export(body, timeout=30, metadata=(("authorization", f"Bearer {TOKEN}"),)) == b""
        assert len(sink.calls) == 2
    finally:
        r.stop(5)


def test_no_logs_endpoint_without_a_log_sink() -> None:
    r = _start(NoLogsSink())
    try:
        status, answer, _ = _post(f"{r.http_url}/v1/logs", _request("none"), "application/x-protobuf")
        assert status == 404
        assert "takes no logs" in status_pb2.Status.FromString(answer).message
        with grpc.insecure_channel(str(r.grpc_endpoint)) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(f"/{LOGS_SERVICE}/Export")(b"", timeout=30)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        r.stop(5)
