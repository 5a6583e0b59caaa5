"""The one OTLP decoder: ``otlp_proto`` and ``otlp_json`` bytes -> ``attribution.model.Span``.

Kafka, the file readers and the receivers hand raw bytes to :class:`OtlpDecoder`; nothing
else in prodloop parses OTLP into spans.  The protobuf fast path is here, over the lean messages
of :mod:`collector.codec.proto`; OTLP/JSON is decoded by :mod:`collector.codec.otlp_json`.

**Errors.**  A record that cannot be parsed at all raises :class:`DecodeError` naming where
(also one nested deeper than :data:`~collector.codec.results.MAX_NESTING_DEPTH`).  A span that
parses but is invalid is a :class:`~collector.codec.results.Rejection` value in the result.

**Exceptions.**  ``exception`` span events and ``code.stacktrace`` become ``Span.exceptions``
(bounded; see :mod:`collector.codec.exceptions`).  A span without events costs one probe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from attribution.model import (
    CODE_STACKTRACE,
    DEFAULT_TIME_BOUNDS,
    STATUS_ERROR,
    WANTED_ATTRIBUTES,
    AttrValue,
    ExceptionInfo,
    Resource,
    Span,
    TimeBounds,
)
from attribution.sampling import probability_from_sample_rate, probability_from_tracestate
from collector.codec.exceptions import (
    EXCEPTION_EVENT,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    MAX_EXCEPTIONS_PER_SPAN,
    NO_EXCEPTIONS,
    exception_info,
    span_exceptions,
)
from collector.codec.otlp_json import decode_json
from collector.codec.proto import (
    AnyValue,
    LeanStatus,
    LeanTraceEvents,
    LeanTracesData,
    any_value_proto,
    resource_from_proto,
)
from collector.codec.results import MAX_NESTING_DEPTH, ZERO_SPAN_ID, ZERO_TRACE_ID, Decoded, Rejection, reject
from collector.errors import DecodeError

_MISS = object()


def decode_any_value(raw: bytes | None, where: str, path: str = "") -> AttrValue | None:
    """A serialized ``AnyValue`` (``None`` when absent); ``path`` names it in the error."""
    if raw is None:
        return None
    try:
        return any_value_proto(AnyValue.FromString(raw))
    except ProtobufDecodeError as exc:
        raise DecodeError(
            f"{path + ': ' if path else ''}an attribute value is not a valid AnyValue (truncated, or nested "
            f"deeper than {MAX_NESTING_DEPTH} levels): {exc}",
            where=where,
        ) from exc


class OtlpDecoder:
    """Decodes OTLP trace payloads into spans, projecting span attributes to ``wanted``.

    ``sample_rate_attribute``: a span attribute holding "1 in N" (e.g. ``SampleRate``);
    otherwise the probability comes from the ``ot=th:`` tracestate threshold.
    """

    def __init__(
        self,
        wanted_attributes: Iterable[str] = WANTED_ATTRIBUTES,
        sample_rate_attribute: str | None = None,
        time_bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
    ) -> None:
        self.time_bounds = time_bounds
        wanted = set(wanted_attributes)
        if sample_rate_attribute:
            wanted.add(sample_rate_attribute)
        self.wanted: frozenset[str] = frozenset(wanted)
        self._wanted_order: tuple[str, ...] = tuple(sorted(wanted))
        self.sample_rate_attribute = sample_rate_attribute or ""
        self._resource_cache: dict[bytes, Resource] = {}
        self._value_cache: dict[bytes, object] = {}
        self._status_cache: dict[bytes, int] = {}

    def _decode_value(self, raw: bytes, where: str) -> AttrValue | None:
        val = decode_any_value(raw, where)
        self._value_cache[raw] = val
        return val

    @staticmethod
    def _status(raw: bytes, where: str) -> Any:
        try:
            return LeanStatus.FromString(raw)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"a span status is not valid: {exc}", where=where) from exc

    def _status_code(self, raw: bytes, where: str) -> int:
        code: int = self._status(raw, where).code
        if len(self._status_cache) > 10_000:
            self._status_cache.clear()
        self._status_cache[raw] = code
        return code

    @staticmethod
    def _events_view(data: bytes, where: str) -> Any:
        try:
            return LeanTraceEvents.FromString(data)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"a span event is not valid: {exc}", where=where) from exc

    def _exceptions(self, sp: Any, events: Any, where: str) -> tuple[ExceptionInfo, ...]:
        """A span's exceptions: its ``exception`` events (``events``: the events-only view's span,
        or None) and its ``code.stacktrace``."""
        found: list[ExceptionInfo] = []
        if events is not None:
            for ev in events.events:
                if ev.name != EXCEPTION_EVENT:
                    continue
                get = ev.attributes.get
                found.append(
                    exception_info(
                        decode_any_value(get(EXCEPTION_TYPE), where),
                        decode_any_value(get(EXCEPTION_MESSAGE), where),
                        decode_any_value(get(EXCEPTION_STACKTRACE), where),
                    )
                )
                if len(found) == MAX_EXCEPTIONS_PER_SPAN:
                    break
        status = self._status(sp.status, where)
        code = status.code
        if found:
            if all(e.stacktrace for e in found):
                return tuple(found)
        elif code != STATUS_ERROR:
            return NO_EXCEPTIONS
        st = decode_any_value(sp.attributes.get(CODE_STACKTRACE), where)
        return span_exceptions(found, st if isinstance(st, str) else "", code, status.message)

    # -- protobuf ----------------------------------------------------------------------

    def decode_proto(
        self, data: bytes, where: str = "<bytes>", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode ``TracesData`` / ``ExportTraceServiceRequest`` bytes.

        ``reference_unix_nano``: the record's timestamp or the request's arrival, for
        :class:`TimeBounds`."""
        try:
            msg = LeanTracesData.FromString(data)
        except ProtobufDecodeError as exc:
            raise DecodeError(
                f"not a valid OTLP protobuf TracesData/ExportTraceServiceRequest ({len(data)} bytes): {exc}",
                where=where,
            ) from exc
        lo, hi = self.time_bounds.window(reference_unix_nano)
        spans: list[Span] = []
        rejected: list[Rejection] = []
        append = spans.append
        wanted = self._wanted_order
        rate_attr = self.sample_rate_attribute
        resource_cache = self._resource_cache
        vcache = self._value_cache
        if len(vcache) > 100_000:
            vcache.clear()
        new_span = tuple.__new__
        events_view: Any = None  # parsed once, for the first span with events
        no_exceptions = NO_EXCEPTIONS
        status_cache = self._status_cache
        error = STATUS_ERROR
        for ri, rs in enumerate(msg.resource_spans):
            raw_resource = rs.resource
            resource = resource_cache.get(raw_resource)
            if resource is None:
                try:
                    resource = resource_from_proto(raw_resource)
                except ProtobufDecodeError as exc:
                    raise DecodeError(
                        f"resource_spans[{ri}].resource is not valid (truncated, or nested deeper than "
                        f"{MAX_NESTING_DEPTH} levels): {exc}",
                        where=where,
                    ) from exc
                if len(resource_cache) > 10_000:
                    resource_cache.clear()
                resource_cache[raw_resource] = resource
            for si, ss in enumerate(rs.scope_spans):
                for pi, sp in enumerate(ss.spans):
                    get = sp.attributes.get
                    attrs: dict[str, AttrValue] = {}
                    for key in wanted:
                        raw = get(key)
                        if raw is not None:
                            val = vcache.get(raw, _MISS)
                            if val is _MISS:
                                val = self._decode_value(raw, where)
                            if val is not None:
                                attrs[key] = val  # type: ignore[assignment]
                    trace_id = sp.trace_id
                    span_id = sp.span_id
                    start = sp.start_time_unix_nano
                    end = sp.end_time_unix_nano
                    parent = sp.parent_span_id
                    if (
                        len(trace_id) != 16
                        or len(span_id) != 8
                        or end < start
                        or start < lo
                        or end > hi
                        or (parent and len(parent) != 8)
                        or trace_id == ZERO_TRACE_ID
                        or span_id == ZERO_SPAN_ID
                    ):
                        rejected.append(
                            reject(
                                self.time_bounds,
                                where,
                                f"resource_spans[{ri}].scope_spans[{si}].spans[{pi}]",
                                trace_id,
                                span_id,
                                parent,
                                start,
                                end,
                                reference_unix_nano,
                            )
                        )
                        continue
                    p = 1.0
                    if rate_attr and rate_attr in attrs:
                        p = probability_from_sample_rate(attrs[rate_attr])
                    else:
                        trace_state = sp.trace_state
                        if trace_state:
                            p = probability_from_tracestate(trace_state)
                    raw_status = sp.status
                    status_code = 0
                    if raw_status:
                        cached = status_cache.get(raw_status)
                        status_code = self._status_code(raw_status, where) if cached is None else cached
                    exceptions = no_exceptions
                    if sp.last_event:
                        if events_view is None:
                            events_view = self._events_view(data, where)
                        exceptions = self._exceptions(
                            sp, events_view.resource_spans[ri].scope_spans[si].spans[pi], where
                        )
                    elif status_code == error:
                        exceptions = self._exceptions(sp, None, where)
                    append(
                        new_span(
                            Span,
                            (
                                resource,
                                trace_id,
                                span_id,
                                sp.name,
                                start,
                                end,
                                status_code,
                                attrs,
                                sp.kind,
                                parent,
                                p,
                                exceptions,
                            ),
                        )
                    )
        return Decoded(spans, rejected)

    # -- JSON --------------------------------------------------------------------------

    def decode_json(
        self, data: bytes | str, where: str = "<json>", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode one OTLP/JSON ``TracesData`` / ``ExportTraceServiceRequest`` object."""
        return decode_json(
            data,
            where,
            wanted=self.wanted,
            sample_rate_attribute=self.sample_rate_attribute,
            time_bounds=self.time_bounds,
            reference_unix_nano=reference_unix_nano,
        )

    def decode(
        self, data: bytes, encoding: str, where: str = "", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode by configured encoding name: ``otlp_proto`` or ``otlp_json``."""
        if encoding == "otlp_proto":
            return self.decode_proto(data, where or "<otlp_proto>", reference_unix_nano)
        if encoding == "otlp_json":
            return self.decode_json(data, where or "<otlp_json>", reference_unix_nano)
        raise ValueError(f"unknown OTLP encoding {encoding!r}: expected otlp_proto or otlp_json")
