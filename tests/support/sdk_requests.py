"""OTLP trace requests made by the real OpenTelemetry SDK and its OTLP encoders.

``Requests`` makes spans with explicit times (any integer the SDK takes, so also times no
store can hold) and encodes them with ``opentelemetry-exporter-otlp-proto-common`` or the
OTLP/JSON encoder; the caller knows how many spans it made, which is the ground truth.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_spans_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_spans_proto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator


class SeededIds(IdGenerator):
    """Reproducible trace and span ids (never zero)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


class Requests:
    """Spans of one service, ``code.file.path`` set, with the times asked for."""

    def __init__(
        self, service: str = "cart", file_path: str = "services/cart/store/db.py", seed: int = 1
    ) -> None:
        self.file_path = file_path
        self._exporter = InMemorySpanExporter()
        self._provider = TracerProvider(
            resource=Resource({"service.name": service, "deployment.environment.name": "prod"}),
            sampler=sampling.ALWAYS_ON,
            id_generator=SeededIds(seed),
            shutdown_on_exit=False,
        )
        self._provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._tracer = self._provider.get_tracer("prodloop.tests")

    def spans(self, times: Sequence[tuple[int, int]]) -> list[ReadableSpan]:
        """One finished span per (start, end), in that order."""
        self._exporter.clear()
        for start, end in times:
            span = self._tracer.start_span(
                "load", attributes={"code.file.path": self.file_path}, start_time=start
            )
            span.end(end_time=end)
        return list(self._exporter.get_finished_spans())

    def proto(self, times: Sequence[tuple[int, int]]) -> bytes:
        return bytes(encode_spans_proto(self.spans(times)).SerializeToString())

    def json_doc(self, times: Sequence[tuple[int, int]]) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(encode_spans_json(self.spans(times)).to_json())
        return doc

    def json(self, times: Sequence[tuple[int, int]], start_override: dict[int, str] | None = None) -> bytes:
        """OTLP/JSON; ``start_override`` sets span i's ``startTimeUnixNano`` to a raw string (a
        hostile client can send what no SDK would, such as ``"-1000"``)."""
        doc = self.json_doc(times)
        spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        for i, value in (start_override or {}).items():
            spans[i]["startTimeUnixNano"] = value
        return json.dumps(doc).encode()
