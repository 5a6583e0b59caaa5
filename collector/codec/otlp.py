"""The one OTLP decoder: ``otlp_proto`` and ``otlp_json`` bytes -> ``attribution.model.Span``.

Kafka, the file readers and the receivers hand raw bytes to :class:`OtlpDecoder`; nothing
else in prodloop parses OTLP into spans.  The protobuf fast path is here, over the lean messages
of :mod:`collector.codec.proto`; OTLP/JSON is decoded by :mod:`collector.codec.otlp_json`.

**The native twin.**  With ``native`` (the ``prodloop_native`` extension's ``ProtoDecoder``),
``decode_proto`` runs in Rust: it reads the wire format by upb's rules and builds the same
``Span`` tuples, and calls back into this module's functions for what is rare or worded here
(a resource, an attribute value, a status, a probability, a span's exceptions, a rejection),
each once per distinct bytes where it can be cached.  ``tests/support/twin.py`` runs both
decoders on every record of the decoder tests, and ``tests/support/decoder_fuzz.py`` on
fuzzed ones: the same spans and rejections, or both refuse the record.

**Errors.**  A record that cannot be parsed at all raises :class:`DecodeError` naming where
(also one nested deeper than :data:`~collector.codec.results.MAX_NESTING_DEPTH`).  A span that
parses but is invalid is a :class:`~collector.codec.results.Rejection` value in the result.

**Exceptions.**  ``exception`` span events and ``code.stacktrace`` become ``Span.exceptions``
(bounded; see :mod:`collector.codec.exceptions`).  A span without events costs one probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

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
    LeanEventsSpan,
    LeanSpan,
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


def status_of(raw: bytes, where: str) -> Any:
    """A serialized span ``Status``, parsed."""
    try:
        return LeanStatus.FromString(raw)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"a span status is not valid: {exc}", where=where) from exc


def status_code_of(raw: bytes, where: str) -> int:
    """A serialized span ``Status``'s code."""
    code: int = status_of(raw, where).code
    return code


def resource_of(raw: bytes, ri: int, where: str) -> Resource:
    """``resource_spans[ri].resource``'s bytes -> :class:`Resource`."""
    try:
        return resource_from_proto(raw)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            f"resource_spans[{ri}].resource is not valid (truncated, or nested deeper than "
            f"{MAX_NESTING_DEPTH} levels): {exc}",
            where=where,
        ) from exc


def exceptions_of(sp: Any, events: Any, where: str) -> tuple[ExceptionInfo, ...]:
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
    status = status_of(sp.status, where)
    code = status.code
    if found:
        if all(e.stacktrace for e in found):
            return tuple(found)
    elif code != STATUS_ERROR:
        return NO_EXCEPTIONS
    st = decode_any_value(sp.attributes.get(CODE_STACKTRACE), where)
    return span_exceptions(found, st if isinstance(st, str) else "", code, status.message)


def span_exceptions_of(raw: bytes, has_events: bool, where: str) -> tuple[ExceptionInfo, ...]:
    """:func:`exceptions_of` for one span's bytes (the native decoder's call, for a span with
    events or an error; the record's events were checked as the events-only view parses them)."""
    return exceptions_of(
        LeanSpan.FromString(raw), LeanEventsSpan.FromString(raw) if has_events else None, where
    )


def _corrupt(message: str, where: str, size: int) -> DecodeError:
    return DecodeError(
        f"not a valid OTLP protobuf TracesData/ExportTraceServiceRequest ({size} bytes): {message}",
        where=where,
    )


def _span_path(ri: int, si: int, pi: int) -> str:
    return f"resource_spans[{ri}].scope_spans[{si}].spans[{pi}]"


class NativeProtoDecoder(Protocol):
    """The native decoder (``prodloop_native.ProtoDecoder``): the twin of
    :meth:`OtlpDecoder.decode_proto`, held to it by ``tests/support/twin.py`` and the fuzz target."""

    panic: type[BaseException]

    def decode(
        self, data: bytes, lo: int, hi: int, where: str
    ) -> tuple[list[Span], list[tuple[int, int, int, bytes, bytes, bytes, int, int]]]: ...


class OtlpDecoder:
    """Decodes OTLP trace payloads into spans, projecting span attributes to ``wanted``.

    ``sample_rate_attribute``: a span attribute holding "1 in N" (e.g. ``SampleRate``);
    otherwise the probability comes from the ``ot=th:`` tracestate threshold.
    ``native``: the class of the native ``otlp_proto`` decoder
    (:func:`collector.processing.native.proto_decoder`), or None for the Python path.
    """

    def __init__(
        self,
        wanted_attributes: Iterable[str] = WANTED_ATTRIBUTES,
        sample_rate_attribute: str | None = None,
        time_bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
        native: Callable[..., NativeProtoDecoder] | None = None,
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
        self._native = (
            None
            if native is None
            else native(
                list(self._wanted_order),
                self.sample_rate_attribute,
                Span,
                NO_EXCEPTIONS,
                STATUS_ERROR,
                resource_of=resource_of,
                value_of=decode_any_value,
                status_of=status_code_of,
                tracestate_probability=probability_from_tracestate,
                rate_probability=probability_from_sample_rate,
                exceptions_of=span_exceptions_of,
                corrupt_error=_corrupt,
            )
        )

    def _decode_value(self, raw: bytes, where: str) -> AttrValue | None:
        val = decode_any_value(raw, where)
        self._value_cache[raw] = val
        return val

    def _status_code(self, raw: bytes, where: str) -> int:
        code = status_code_of(raw, where)
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

    # -- protobuf ----------------------------------------------------------------------

    def decode_proto(
        self, data: bytes, where: str = "<bytes>", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode ``TracesData`` / ``ExportTraceServiceRequest`` bytes.

        ``reference_unix_nano``: the record's timestamp or the request's arrival, for
        :class:`TimeBounds`."""
        lo, hi = self.time_bounds.window(reference_unix_nano)
        if self._native is not None:
            # hi >= -1 keeps it an int64 and refuses the same spans (every end is >= 0)
            try:
                found, bad = self._native.decode(bytes(data), lo, max(hi, -1), where)
            except self._native.panic as exc:  # a bug in the native decoder: this record is refused
                raise DecodeError(
                    f"the native otlp_proto decoder failed on this record ({len(data)} bytes): {exc} "
                    "(a bug: please report it; aggregation.hot_path: python avoids it)",
                    where=where,
                ) from exc
            rejects = [
                reject(
                    self.time_bounds,
                    where,
                    _span_path(ri, si, pi),
                    tid,
                    sid,
                    pid,
                    t0,
                    t1,
                    reference_unix_nano,
                )
                for ri, si, pi, tid, sid, pid, t0, t1 in bad
            ]
            return Decoded(found, rejects)
        try:
            msg = LeanTracesData.FromString(data)
        except ProtobufDecodeError as exc:
            raise _corrupt(str(exc), where, len(data)) from exc
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
                resource = resource_of(raw_resource, ri, where)
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
                                _span_path(ri, si, pi),
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
                        exceptions = exceptions_of(
                            sp, events_view.resource_spans[ri].scope_spans[si].spans[pi], where
                        )
                    elif status_code == error:
                        exceptions = exceptions_of(sp, None, where)
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
