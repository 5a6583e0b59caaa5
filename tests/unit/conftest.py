"""Shared helpers for the unit tests of the core and the OTLP decoder.

Test spans come from the REAL OpenTelemetry SDK (``TracerProvider`` + ``InMemorySpanExporter``,
explicit start and end times, seeded ids) and are encoded with the SDK's own OTLP encoders
(``opentelemetry.exporter.otlp.proto.common`` and ``opentelemetry.exporter.otlp.json.common``).
Nothing here builds OTLP by hand; malformed-input tests start from this real output and
corrupt it.

Use the ``otel`` fixture::

    batch = otel.batch({"service.name": "checkout", "deployment.environment.name": "prod"})
    batch.add("GET /cart", start_ns, end_ns, attributes={"code.file.path": "services/cart/api.py"})
    spans = otel.decode(batch.spans)            # -> list[attribution.model.Span], via protobuf
    spans = otel.decode(batch.spans, "json")    # the same, via OTLP/JSON
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_spans_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_spans_proto
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from attribution.model import Span
from collector.codec.otlp import OtlpDecoder
from tests.support.sdk_requests import SeededIds
from tests.support.twin import TwinDecoder


class SdkBatch:
    """Finished spans of one ``TracerProvider`` (so of one OTLP resource), made by the real SDK."""

    def __init__(self, resource: Mapping[str, Any], ids: SeededIds) -> None:
        self._ids = ids
        self._exporter = InMemorySpanExporter()
        # explicit sampler and resource: nothing is read from OTEL_* environment variables
        self.provider = TracerProvider(
            resource=SdkResource(dict(resource)),
            sampler=sampling.ParentBased(sampling.ALWAYS_ON),
            id_generator=ids,
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._tracer = self.provider.get_tracer("prodloop.tests", "0.1.0")

    def add(
        self,
        name: str,
        start: int,
        end: int,
        *,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        status: StatusCode = StatusCode.UNSET,
        trace_state: str = "",
        parent: trace_api.Span | None = None,
        events: int = 0,
        links: int = 0,
    ) -> trace_api.Span:
        """Start and end one span.  ``trace_state`` (e.g. ``"ot=th:8"``) is carried in from a
        remote parent, as a sampler upstream would have set it; ``parent`` makes a child span."""
        context = None
        if parent is not None:
            context = trace_api.set_span_in_context(parent)
        elif trace_state:
            remote = SpanContext(
                trace_id=self._ids.generate_trace_id(),
                span_id=self._ids.generate_span_id(),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=TraceState.from_header([trace_state]),
            )
            context = trace_api.set_span_in_context(NonRecordingSpan(remote))
        span_links = [
            Link(
                SpanContext(self._ids.generate_trace_id(), self._ids.generate_span_id(), is_remote=True),
                {"link.index": i},
            )
            for i in range(links)
        ]
        span = self._tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=dict(attributes or {}),
            links=span_links,
            start_time=start,
        )
        for i in range(events):
            span.add_event(f"event {i}", {"event.index": i}, timestamp=start + i)
        if status is StatusCode.ERROR:
            span.set_status(Status(StatusCode.ERROR, "failed"))
        elif status is StatusCode.OK:
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=end)
        return span

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())


class Otel:
    """Makes spans with the real SDK and encodes them with its real OTLP encoders."""

    def __init__(self, seed: int = 0) -> None:
        self.ids = SeededIds(seed)

    def batch(self, resource: Mapping[str, Any]) -> SdkBatch:
        return SdkBatch(resource, self.ids)

    # -- encoders --------------------------------------------------------------------------

    @staticmethod
    def proto_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        """The real encoder's message (a fresh one: safe to corrupt)."""
        return encode_spans_proto(spans)

    def proto(self, spans: Sequence[ReadableSpan]) -> bytes:
        return bytes(self.proto_request(spans).SerializeToString())

    @staticmethod
    def json(spans: Sequence[ReadableSpan]) -> bytes:
        return encode_spans_json(spans).to_json().encode()

    def json_doc(self, spans: Sequence[ReadableSpan]) -> dict[str, Any]:
        """The real JSON encoder's output, parsed (a fresh object: safe to corrupt)."""
        doc: dict[str, Any] = json.loads(self.json(spans))
        return doc

    # -- decoding into the core's Span ---------------------------------------------------------

    def decode(
        self,
        spans: Sequence[ReadableSpan],
        encoding: str = "proto",
        decoder: OtlpDecoder | None = None,
    ) -> list[Span]:
        """SDK spans -> OTLP bytes -> ``attribution.model.Span`` (asserting nothing is rejected)."""
        dec = decoder or TwinDecoder()
        if encoding == "proto":
            out = dec.decode_proto(self.proto(spans))
        elif encoding == "json":
            out = dec.decode_json(self.json(spans))
        else:
            raise ValueError(encoding)
        assert not out.rejected, out.rejected
        assert len(out.spans) == len(spans)
        return out.spans

    def core_spans(
        self,
        resource: Mapping[str, Any],
        specs: Iterable[tuple[str, int, int, Mapping[str, Any]]],
        *,
        status: StatusCode = StatusCode.UNSET,
    ) -> list[Span]:
        """Shorthand: one resource, spans given as (name, start, end, attributes)."""
        batch = self.batch(resource)
        for name, start, end, attributes in specs:
            batch.add(name, start, end, attributes=attributes, status=status)
        return self.decode(batch.spans)


@pytest.fixture
def otel() -> Otel:
    return Otel(seed=20240607)
