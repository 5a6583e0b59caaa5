"""The OTLP logs decoder (collector/codec/otlp_logs.py) against the real OpenTelemetry SDK logs.

Log records are made by the SDK's logs API: a ``LoggingHandler`` on a ``LoggerProvider`` turns
``logger.exception(...)`` inside an active span into a record carrying ``exception.*`` and the
span's trace context.  They are encoded by the SDK's own OTLP encoders (protobuf:
``opentelemetry-exporter-otlp-proto-common``; JSON: ``opentelemetry-exporter-otlp-json-common``).
Expectations come from the SDK's ``ReadableLogRecord`` objects and the exceptions themselves.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs as encode_logs_json
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as encode_logs_proto
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider, sampling

from attribution.model import ExceptionInfo, LogException, Resource
from collector.codec.exceptions import MAX_STACKTRACE_CHARS
from collector.codec.otlp_logs import decode_logs, decode_logs_json, decode_logs_proto
from collector.errors import DecodeError, PayloadError
from tests.support.sdk_requests import SeededIds

RESOURCE = {
    "service.name": "cart",
    "deployment.environment.name": "prod",
    "service.version": "3.1.0",
    "telemetry.sdk.language": "python",
}
T0 = 1_700_000_040 * 1_000_000_000


class SdkLogs:
    """One ``LoggerProvider`` (so one OTLP resource) behind a stdlib logger, and a tracer for
    active spans; what was emitted is in ``records``."""

    def __init__(self, name: str, resource: dict[str, Any]) -> None:
        self.exporter = InMemoryLogRecordExporter()
        self.provider = LoggerProvider(resource=SdkResource(resource), shutdown_on_exit=False)
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(self.exporter))
        with pytest.warns(DeprecationWarning, match="LoggingHandler"):
            self.handler = LoggingHandler(logger_provider=self.provider)
        self.logger = logging.getLogger(f"prodloop.tests.logs.{name}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        self.tracer = TracerProvider(
            sampler=sampling.ALWAYS_ON, id_generator=SeededIds(7), shutdown_on_exit=False
        ).get_tracer("prodloop.tests")

    def close(self) -> None:
        self.logger.removeHandler(self.handler)

    @property
    def records(self) -> list[ReadableLogRecord]:
        return list(self.exporter.get_finished_logs())


@pytest.fixture
def sdk_logs(request: pytest.FixtureRequest) -> Iterator[SdkLogs]:
    logs = SdkLogs(request.node.name, RESOURCE)
    try:
        yield logs
    finally:
        logs.close()


def _raise_in(n: int, exc: BaseException) -> None:
    if n == 0:
        raise exc
    _raise_in(n - 1, exc)


def emit_mixed(logs: SdkLogs) -> tuple[list[BaseException], list[tuple[int, int]]]:
    """Plain records, and exceptions logged inside spans (and one outside any span).
    Returns the exceptions and the (trace id, span id) each was logged under (0, 0: none)."""
    raised: list[BaseException] = []
    contexts: list[tuple[int, int]] = []
    logs.logger.info("starting checkout")
    for i, exc in enumerate([ValueError("quantity must be positive"), KeyError("sku-9")]):
        with logs.tracer.start_as_current_span(f"checkout {i}") as span:
            try:
                _raise_in(3, exc)
            except Exception as caught:
                raised.append(caught)
                logs.logger.exception("checkout failed")
            ctx = span.get_span_context()
            contexts.append((ctx.trace_id, ctx.span_id))
        logs.logger.warning("retrying %d", i)
    try:
        _raise_in(1, ConnectionError("broker down"))
    except ConnectionError as caught:
        raised.append(caught)
        logs.logger.error("outside a span", exc_info=True)
    contexts.append((0, 0))
    return raised, contexts


def expected(record: ReadableLogRecord) -> LogException | None:
    """What the decoder must make of one SDK record (None: not an exception)."""
    lr = record.log_record
    a = dict(lr.attributes or {})
    keys = ("exception.type", "exception.message", "exception.stacktrace")
    if not any(k in a for k in keys) and lr.event_name != "exception":
        return None
    return LogException(
        Resource.from_attributes(dict(record.resource.attributes)),
        lr.timestamp or lr.observed_timestamp,
        ExceptionInfo(*(str(a.get(k, "")) for k in keys)),
        lr.trace_id.to_bytes(16, "big") if lr.trace_id else b"",
        lr.span_id.to_bytes(8, "big") if lr.span_id else b"",
    )


def proto(records: list[ReadableLogRecord]) -> bytes:
    return bytes(encode_logs_proto(records).SerializeToString())


def json_doc(records: list[ReadableLogRecord]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode_logs_json(records).to_json())
    return doc


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_logged_exceptions_decode_as_the_sdk_recorded_them(sdk_logs: SdkLogs, encoding: str) -> None:
    raised, contexts = emit_mixed(sdk_logs)
    records = sdk_logs.records
    assert len(records) == 6  # 1 info, 2 x (exception + warning), 1 error outside a span
    if encoding == "proto":
        out = decode_logs(proto(records), "otlp_proto")
    else:
        out = decode_logs(encode_logs_json(records).to_json().encode(), "otlp_json")
    assert out == [e for e in map(expected, records) if e is not None]
    # and the SDK recorded what the exceptions and spans themselves say
    assert [tuple(x.exception) for x in out] == [
        (type(exc).__name__, str(exc.args[0]), "".join(traceback.format_exception(exc))) for exc in raised
    ]
    assert [(x.trace_id, x.span_id) for x in out] == [
        (t.to_bytes(16, "big"), s.to_bytes(8, "big")) if t else (b"", b"") for t, s in contexts
    ]
    assert "in _raise_in" in out[0].exception.stacktrace
    r = out[0].resource
    assert (r.service, r.environment, r.service_version) == ("cart", "prod", "3.1.0")
    assert r.attributes["telemetry.sdk.language"] == "python"
    assert all(x.time_unix_nano > 0 for x in out)


def test_logs_data_and_export_request_decode_alike(sdk_logs: SdkLogs) -> None:
    emit_mixed(sdk_logs)
    request = encode_logs_proto(sdk_logs.records)
    data = logs_pb2.LogsData(resource_logs=request.resource_logs).SerializeToString()
    assert decode_logs_proto(data) == decode_logs_proto(request.SerializeToString())
    assert decode_logs_proto(data) == decode_logs_json(encode_logs_json(sdk_logs.records).to_json())


def test_an_exception_event_record_counts_without_exception_attributes(sdk_logs: SdkLogs) -> None:
    logger = sdk_logs.provider.get_logger("prodloop.tests.events")
    logger.emit(event_name="exception", observed_timestamp=T0 + 5, body="thrown", attributes={"k": 1})
    logger.emit(event_name="checkout.done", timestamp=T0 + 6, body="ok")
    records = sdk_logs.records
    assert records[0].log_record.timestamp is None  # so the observed time is the record's time
    for out in (decode_logs_proto(proto(records)), decode_logs_json(json.dumps(json_doc(records)))):
        assert out == [expected(records[0])]
        assert out[0].time_unix_nano == T0 + 5
        assert tuple(out[0].exception) == ("", "", "")


def test_a_long_stacktrace_is_bounded(sdk_logs: SdkLogs) -> None:
    try:
        _raise_in(2, RuntimeError("y" * (2 * MAX_STACKTRACE_CHARS)))
    except RuntimeError:
        sdk_logs.logger.exception("huge")
    records = sdk_logs.records
    full = str((records[0].log_record.attributes or {})["exception.stacktrace"])
    assert len(full) > MAX_STACKTRACE_CHARS
    (out,) = decode_logs_proto(proto(records))
    assert len(out.exception.stacktrace) <= MAX_STACKTRACE_CHARS
    assert out.exception.stacktrace.startswith(full[:2000])
    assert out.exception.stacktrace.endswith(full[-2000:])
    assert decode_logs_json(encode_logs_json(records).to_json()) == [out]


def test_no_exceptions_no_output(sdk_logs: SdkLogs) -> None:
    sdk_logs.logger.info("hello")
    sdk_logs.logger.warning("careful")
    assert decode_logs_proto(proto(sdk_logs.records)) == []
    assert decode_logs_json(encode_logs_json(sdk_logs.records).to_json()) == []
    assert decode_logs_proto(b"") == []
    assert decode_logs_json(b"{}") == []


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: int(v) if k in ("timeUnixNano", "observedTimeUnixNano", "intValue") else _numbers(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


@pytest.mark.parametrize("transform", [_snake, _numbers], ids=["snake_case", "int64-as-number"])
def test_json_mapping_variants_decode_identically(sdk_logs: SdkLogs, transform: Any) -> None:
    emit_mixed(sdk_logs)
    records = sdk_logs.records
    reference = decode_logs_proto(proto(records))
    doc = transform(json_doc(records))
    assert doc != json_doc(records)
    assert decode_logs_json(json.dumps(doc)) == reference


# ------------------------------------------------------------------------------ malformed


def test_every_truncation_raises_decode_error_naming_where(sdk_logs: SdkLogs) -> None:
    try:
        _raise_in(0, ValueError("v"))
    except ValueError:
        sdk_logs.logger.exception("x")
    payload = proto(sdk_logs.records)
    for cut in range(1, len(payload)):
        with pytest.raises(DecodeError) as info:
            decode_logs(payload[:cut], "otlp_proto", where="otlp_logs/0@5")
        err = info.value
        assert err.where == "otlp_logs/0@5"
        assert str(err).startswith("otlp_logs/0@5: ")
        assert isinstance(err, PayloadError)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["resourceLogs"][0].update(scopeLogs={"x": 1}),
            r"resourceLogs\[0\]: scopeLogs must be a list",
        ),
        (
            lambda d: d["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1].update(timeUnixNano="soon"),
            r"resourceLogs\[0\]\.scopeLogs\[0\]\.logRecords\[1\]: timeUnixNano",
        ),
        (
            lambda d: d["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1].update(traceId="not hex"),
            r"logRecords\[1\]: traceId is not hex",
        ),
        (lambda d: d["resourceLogs"].append(3), r"resourceLogs\[1\]: must be an object"),
    ],
    ids=["scope-logs", "time", "trace-id", "resource-logs"],
)
def test_json_wrong_shape_names_the_path(sdk_logs: SdkLogs, mutate: Any, message: str) -> None:
    emit_mixed(sdk_logs)
    doc = json_doc(sdk_logs.records)
    mutate(doc)
    with pytest.raises(DecodeError, match=message) as info:
        decode_logs_json(json.dumps(doc), where="logs.jsonl:2")
    assert info.value.where == "logs.jsonl:2"


def test_bad_input_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="not a valid OTLP protobuf LogsData"):
        decode_logs_proto(b"\xff\xff\xff\xff", where="x")
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_logs_json(b'{"resourceLogs": [', where="x")
    with pytest.raises(DecodeError, match="must be an object"):
        decode_logs_json(b"[]", where="x")
    with pytest.raises(ValueError, match="otlp_avro"):
        decode_logs(b"", "otlp_avro")
