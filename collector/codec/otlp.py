"""The one OTLP decoder: ``otlp_proto`` and ``otlp_json`` bytes -> ``attribution.model.Span``.

Kafka, the file readers and the receivers hand raw bytes to :class:`OtlpDecoder`; nothing
else in prodloop parses OTLP.

**Protobuf, fast path.**  Generated message classes materialise a Python object for every
attribute of every span, which costs more than everything else prodloop does per span.
So the decoder parses with *lean* message classes built at import time from the real
``opentelemetry-proto`` descriptors, with the same field numbers:

* ``Span.attributes`` (``repeated KeyValue``) is declared as ``map<string, bytes>``.
  A map entry is, on the wire, exactly a ``KeyValue`` (key = 1, value = 2), so upb parses
  the attribute list in C into a map; only the projected keys are looked up, and their
  serialized ``AnyValue`` is decoded once per distinct value (a bounded cache).
* Fields prodloop does not read (events, links, scope, dropped counts, array and kvlist
  values) are left out of the lean messages and skipped by the parser.

The resource is parsed with the real ``Resource`` class (once per ``ResourceSpans``).

**OTLP/JSON** follows the OTLP specification's JSON mapping as the Collector writes it:
lowerCamelCase keys (snake_case accepted), trace/span ids as hex strings, enums as integers,
64-bit integers as decimal strings or numbers, unknown fields ignored.

**Errors.**  A record that cannot be parsed at all raises :class:`DecodeError` naming where
(also one nested deeper than :data:`MAX_NESTING_DEPTH`).  A span that parses but is invalid
(bad id length, ``end < start``, a time the store cannot hold or outside the plausibility
window of :class:`TimeBounds`) is a :class:`Rejection` value in the result: the rest of the
record still gets through.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from attribution.model import (
    DEFAULT_TIME_BOUNDS,
    STORE_MAX_UNIX_NANO,
    WANTED_ATTRIBUTES,
    AttrValue,
    Resource,
    Span,
    TimeBounds,
)
from attribution.sampling import probability_from_sample_rate, probability_from_tracestate
from collector.errors import DecodeError

__all__ = [
    "MAX_NESTING_DEPTH",
    "STORE_MAX_UNIX_NANO",
    "Decoded",
    "OtlpDecoder",
    "Rejection",
    "TimeBounds",
    "iter_json_lines",
    "iter_length_prefixed",
    "load_json",
    "rejection_message",
]

_ZERO_TRACE_ID = bytes(16)
_MISS = object()
_AnyValue = common_pb2.AnyValue
_ZERO_SPAN_ID = bytes(8)

# How deeply a request may nest: protobuf's recursion limit, which upb enforces on the binary
# encoding; OTLP/JSON deeper than the JSON parser can take is refused with the same message.
MAX_NESTING_DEPTH = 100
_TOO_DEEP = f"the request nests too deeply: OTLP allows at most {MAX_NESTING_DEPTH} levels of nesting"


def _iso(unix_nano: int) -> str:
    try:
        return datetime.fromtimestamp(unix_nano // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return "out of the calendar's range"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A span or record that was not accepted.  ``reason`` is a stable metric label."""

    reason: str
    message: str


class Decoded(NamedTuple):
    spans: list[Span]
    rejected: list[Rejection]


def rejection_message(rejected: Sequence[Rejection]) -> str:
    """How many spans were rejected, and the first one in full (OTLP's partial-success
    ``error_message``; the dead-letter message of a record with some spans rejected)."""
    if not rejected:
        return ""
    first = rejected[0]
    more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
    return f"{len(rejected)} span(s) rejected; first: {first.reason}: {first.message}{more}"


# --------------------------------------------------------------------------------------
# Lean protobuf messages, derived from the real descriptors (same field numbers).
# --------------------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _num(message: Any, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)


def _build_lean_classes() -> type[Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="prodloop/lean_otlp_trace.proto", package="prodloop.lean", syntax="proto3"
    )

    def add(parent: Any, name: str) -> Any:
        return parent.add(name=name)

    def field(msg: Any, name: str, number: int, typ: int, repeated: bool = False, type_name: str = "") -> Any:
        f = msg.field.add(
            name=name,
            number=number,
            type=typ,
            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        )
        if type_name:
            f.type_name = type_name
        return f

    status = add(fdp.message_type, "Status")
    field(status, "code", _num(trace_pb2.Status, "code"), _F.TYPE_INT32)

    sp = trace_pb2.Span
    span = add(fdp.message_type, "Span")
    entry = add(span.nested_type, "AttributesEntry")
    entry.options.map_entry = True
    field(entry, "key", _num(common_pb2.KeyValue, "key"), _F.TYPE_STRING)
    # the value stays serialized: decoded (and cached) only for projected keys
    field(entry, "value", _num(common_pb2.KeyValue, "value"), _F.TYPE_BYTES)
    field(span, "trace_id", _num(sp, "trace_id"), _F.TYPE_BYTES)
    field(span, "span_id", _num(sp, "span_id"), _F.TYPE_BYTES)
    field(span, "trace_state", _num(sp, "trace_state"), _F.TYPE_STRING)
    field(span, "parent_span_id", _num(sp, "parent_span_id"), _F.TYPE_BYTES)
    field(span, "name", _num(sp, "name"), _F.TYPE_STRING)
    field(span, "kind", _num(sp, "kind"), _F.TYPE_INT32)
    field(span, "start_time_unix_nano", _num(sp, "start_time_unix_nano"), _F.TYPE_FIXED64)
    field(span, "end_time_unix_nano", _num(sp, "end_time_unix_nano"), _F.TYPE_FIXED64)
    field(
        span,
        "attributes",
        _num(sp, "attributes"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.Span.AttributesEntry",
    )
    field(span, "status", _num(sp, "status"), _F.TYPE_MESSAGE, type_name=".prodloop.lean.Status")

    scope_spans = add(fdp.message_type, "ScopeSpans")
    field(
        scope_spans,
        "spans",
        _num(trace_pb2.ScopeSpans, "spans"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.Span",
    )

    resource_spans = add(fdp.message_type, "ResourceSpans")
    rs = trace_pb2.ResourceSpans
    field(resource_spans, "resource", _num(rs, "resource"), _F.TYPE_BYTES)
    field(
        resource_spans,
        "scope_spans",
        _num(rs, "scope_spans"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.ScopeSpans",
    )

    # TracesData and ExportTraceServiceRequest share this shape: resource_spans = 1.
    traces = add(fdp.message_type, "TracesData")
    field(
        traces,
        "resource_spans",
        _num(trace_pb2.TracesData, "resource_spans"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.ResourceSpans",
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls: type[Any] = message_factory.GetMessageClass(pool.FindMessageTypeByName("prodloop.lean.TracesData"))
    return cls


_LeanTracesData = _build_lean_classes()


def _any_value_proto(v: Any) -> AttrValue | None:
    """A lean or real ``AnyValue`` -> Python scalar (None for arrays, kvlists, unset)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "bytes_value":
        return bytes(v.bytes_value).hex()
    if which in ("array_value", "kvlist_value"):
        return None
    value: AttrValue = getattr(v, which)
    return value


def _resource_from_proto(raw: bytes) -> Resource:
    res = resource_pb2.Resource.FromString(raw)
    attrs: dict[str, AttrValue] = {}
    for kv in res.attributes:
        val = _any_value_proto(kv.value)
        if val is not None:
            attrs[kv.key] = val
    return Resource.from_attributes(attrs)


# --------------------------------------------------------------------------------------
# OTLP/JSON helpers
# --------------------------------------------------------------------------------------


def _jget(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    v = obj.get(camel)
    if v is None:
        v = obj.get(snake)
    return v


def _json_int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{what} must be an integer, got {value!r}")


def _json_id(value: Any, what: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a hex string, got {type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what} is not hex: {value!r}") from None


def _json_any_value(v: Any) -> AttrValue | None:
    if not isinstance(v, dict):
        return None
    for camel, snake in (
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("intValue", "int_value"),
        ("doubleValue", "double_value"),
        ("bytesValue", "bytes_value"),
    ):
        x = v.get(camel, v.get(snake))
        if x is None:
            continue
        if camel == "stringValue":
            return str(x)
        if camel == "boolValue":
            return bool(x)
        if camel == "intValue":
            return _json_int(x, "intValue")
        if camel == "doubleValue":
            return float(x)  # also "NaN", "Infinity", "-Infinity"
        try:
            return base64.b64decode(x, validate=True).hex()
        except (binascii.Error, TypeError):
            return None
    return None


def _json_attributes(items: Any, wanted: frozenset[str] | None) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    if not items:
        return out
    if not isinstance(items, list):
        raise ValueError("attributes must be a list")
    for kv in items:
        if not isinstance(kv, dict):
            raise ValueError("attribute must be an object with key and value")
        key = kv.get("key")
        if not isinstance(key, str):
            raise ValueError("attribute key must be a string")
        if wanted is not None and key not in wanted:
            continue
        val = _json_any_value(kv.get("value"))
        if val is not None:
            out[key] = val
    return out


def _json_list(obj: Mapping[str, Any], camel: str, snake: str, what: str) -> list[Any]:
    v = _jget(obj, camel, snake)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list")
    return v


# --------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------


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

    def _decode_value(self, raw: bytes, where: str) -> AttrValue | None:
        try:
            val = _any_value_proto(_AnyValue.FromString(raw))
        except ProtobufDecodeError as exc:
            raise DecodeError(
                f"an attribute value is not a valid AnyValue (truncated, or nested deeper than "
                f"{MAX_NESTING_DEPTH} levels): {exc}",
                where=where,
            ) from exc
        self._value_cache[raw] = val
        return val

    # -- protobuf ----------------------------------------------------------------------

    def decode_proto(
        self, data: bytes, where: str = "<bytes>", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode ``TracesData`` / ``ExportTraceServiceRequest`` bytes.

        ``reference_unix_nano``: the record's timestamp or the request's arrival, for
        :class:`TimeBounds`."""
        try:
            msg = _LeanTracesData.FromString(data)
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
        for ri, rs in enumerate(msg.resource_spans):
            raw_resource = rs.resource
            resource = resource_cache.get(raw_resource)
            if resource is None:
                try:
                    resource = _resource_from_proto(raw_resource)
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
                        or trace_id == _ZERO_TRACE_ID
                        or span_id == _ZERO_SPAN_ID
                    ):
                        rejected.append(
                            self._reject(
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
                                sp.status.code,
                                attrs,
                                sp.kind,
                                parent,
                                p,
                            ),
                        )
                    )
        return Decoded(spans, rejected)

    def _reject(
        self,
        where: str,
        path: str,
        trace_id: bytes,
        span_id: bytes,
        parent: bytes,
        start: int,
        end: int,
        reference_unix_nano: int | None,
    ) -> Rejection:
        prefix = f"{where}: {path}" if where else path
        if len(trace_id) != 16:
            return Rejection("bad_trace_id", f"{prefix}: trace_id must be 16 bytes, got {len(trace_id)}")
        if trace_id == _ZERO_TRACE_ID:
            return Rejection("bad_trace_id", f"{prefix}: trace_id is all zeroes")
        if len(span_id) != 8:
            return Rejection(
                "bad_span_id",
                f"{prefix} (trace_id={trace_id.hex()}): span_id must be 8 bytes, got {len(span_id)}",
            )
        if span_id == _ZERO_SPAN_ID:
            return Rejection("bad_span_id", f"{prefix} (trace_id={trace_id.hex()}): span_id is all zeroes")
        if parent and len(parent) != 8:
            return Rejection(
                "bad_parent_span_id",
                f"{prefix} (span_id={span_id.hex()}): parent_span_id must be 8 bytes or empty, got {len(parent)}",
            )
        if end < start:
            return Rejection(
                "end_before_start",
                f"{prefix} (span_id={span_id.hex()}): end_time_unix_nano {end} is before "
                f"start_time_unix_nano {start}",
            )
        return self._time_rejection(f"{prefix} (span_id={span_id.hex()})", start, end, reference_unix_nano)

    def _time_rejection(self, prefix: str, start: int, end: int, reference: int | None) -> Rejection:
        b = self.time_bounds
        lo, hi = b.window(reference)
        ref = f"the reference time {_iso(reference or 0)} (the record's timestamp or the request's arrival)"
        if start < 0:
            why = f"start_time_unix_nano {start} is negative"
        elif start < lo:
            why = (
                f"start_time_unix_nano {start} ({_iso(start)}) is more than {b.max_age_ns // 1_000_000_000} s "
                f"before {ref} (aggregation.max_age_seconds)"
                if reference is not None and b.max_age_ns is not None and lo > 0
                else f"start_time_unix_nano {start} is before 1970"
            )
        elif end > STORE_MAX_UNIX_NANO:
            what = "start_time_unix_nano" if start > STORE_MAX_UNIX_NANO else "end_time_unix_nano"
            value = start if start > STORE_MAX_UNIX_NANO else end
            why = f"{what} {value} ({_iso(value)}) is after {_iso(STORE_MAX_UNIX_NANO)}, the last time the store holds"
        else:
            assert reference is not None and b.max_future_ns is not None and end > hi
            what = "start_time_unix_nano" if start > hi else "end_time_unix_nano"
            value = start if start > hi else end
            why = (
                f"{what} {value} ({_iso(value)}) is more than {b.max_future_ns // 1_000_000_000} s "
                f"after {ref} (aggregation.max_future_seconds)"
            )
        return Rejection("time_out_of_range", f"{prefix}: {why}")

    # -- JSON --------------------------------------------------------------------------

    def decode_json(
        self, data: bytes | str, where: str = "<json>", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode one OTLP/JSON ``TracesData`` / ``ExportTraceServiceRequest`` object."""
        doc = load_json(data, where)
        lo, hi = self.time_bounds.window(reference_unix_nano)
        if not isinstance(doc, dict):
            raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}", where=where)
        spans: list[Span] = []
        rejected: list[Rejection] = []
        wanted = self.wanted
        rate_attr = self.sample_rate_attribute
        path = "resourceSpans"
        try:
            for ri, rs in enumerate(_json_list(doc, "resourceSpans", "resource_spans", "resourceSpans")):
                path = f"resourceSpans[{ri}]"
                if not isinstance(rs, dict):
                    raise ValueError("must be an object")
                res_obj = rs.get("resource") or {}
                if not isinstance(res_obj, dict):
                    raise ValueError("resource must be an object")
                resource = Resource.from_attributes(_json_attributes(res_obj.get("attributes"), None))
                for si, ss in enumerate(_json_list(rs, "scopeSpans", "scope_spans", "scopeSpans")):
                    path = f"resourceSpans[{ri}].scopeSpans[{si}]"
                    if not isinstance(ss, dict):
                        raise ValueError("must be an object")
                    for pi, sp in enumerate(_json_list(ss, "spans", "spans", "spans")):
                        path = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                        if not isinstance(sp, dict):
                            raise ValueError("must be an object")
                        trace_id = _json_id(_jget(sp, "traceId", "trace_id"), "traceId")
                        span_id = _json_id(_jget(sp, "spanId", "span_id"), "spanId")
                        parent = _json_id(_jget(sp, "parentSpanId", "parent_span_id"), "parentSpanId")
                        start = _json_int(
                            _jget(sp, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"
                        )
                        end = _json_int(_jget(sp, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano")
                        if (
                            len(trace_id) != 16
                            or len(span_id) != 8
                            or end < start
                            or start < lo
                            or end > hi
                            or (parent and len(parent) != 8)
                            or trace_id == _ZERO_TRACE_ID
                            or span_id == _ZERO_SPAN_ID
                        ):
                            rejected.append(
                                self._reject(
                                    where, path, trace_id, span_id, parent, start, end, reference_unix_nano
                                )
                            )
                            continue
                        attrs = _json_attributes(sp.get("attributes"), wanted)
                        status = sp.get("status") or {}
                        if not isinstance(status, dict):
                            raise ValueError("status must be an object")
                        code = _enum(status.get("code"), _STATUS_NAMES, "status.code")
                        kind = _enum(sp.get("kind"), _KIND_NAMES, "kind")
                        trace_state = _jget(sp, "traceState", "trace_state") or ""
                        p = 1.0
                        if rate_attr and rate_attr in attrs:
                            p = probability_from_sample_rate(attrs[rate_attr])
                        elif trace_state:
                            p = probability_from_tracestate(str(trace_state))
                        name = sp.get("name", "")
                        spans.append(
                            Span(
                                resource,
                                trace_id,
                                span_id,
                                name if isinstance(name, str) else str(name),
                                start,
                                end,
                                code,
                                attrs,
                                kind,
                                parent,
                                p,
                            )
                        )
        except ValueError as exc:
            raise DecodeError(f"{path}: {exc}", where=where) from exc
        return Decoded(spans, rejected)

    def decode(
        self, data: bytes, encoding: str, where: str = "", reference_unix_nano: int | None = None
    ) -> Decoded:
        """Decode by configured encoding name: ``otlp_proto`` or ``otlp_json``."""
        if encoding == "otlp_proto":
            return self.decode_proto(data, where or "<otlp_proto>", reference_unix_nano)
        if encoding == "otlp_json":
            return self.decode_json(data, where or "<otlp_json>", reference_unix_nano)
        raise ValueError(f"unknown OTLP encoding {encoding!r}: expected otlp_proto or otlp_json")


def load_json(data: bytes | str, where: str = "") -> Any:
    """``json.loads``, with a :class:`DecodeError` for bad JSON and for nesting too deep to parse."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not valid JSON: {exc}", where=where) from exc
    except RecursionError:
        raise DecodeError(_TOO_DEEP, reason="too_deep", where=where) from None


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}


def _enum(value: Any, names: Mapping[str, int], what: str) -> int:
    """Enums are integers in OTLP/JSON; enum names are accepted too."""
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    return _json_int(value, what)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def iter_json_lines(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """OTLP/JSON lines: one request per line.  Yields ``("file:LINE", line_bytes)``."""
    p = Path(path)
    with p.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            stripped = line.strip()
            if stripped:
                yield f"{p}:{lineno}", stripped


def iter_length_prefixed(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Length-prefixed protobuf: 4-byte big-endian length, then the message.

    Yields ``("file@offset N", message_bytes)``.  A truncated frame raises ``DecodeError``
    naming its offset (everything before it has been yielded).
    """
    p = Path(path)
    data = p.read_bytes()
    offset = 0
    n = len(data)
    while offset < n:
        if offset + 4 > n:
            raise DecodeError(
                f"truncated length prefix: {n - offset} bytes left, need 4", where=f"{p}@offset {offset}"
            )
        size = int.from_bytes(data[offset : offset + 4], "big")
        start = offset + 4
        if start + size > n:
            raise DecodeError(
                f"truncated message: length prefix says {size} bytes, only {n - start} left",
                where=f"{p}@offset {offset}",
            )
        yield f"{p}@offset {offset}", data[start : start + size]
        offset = start + size


def sniff_file_format(path: str | Path) -> str:
    """``"otlp_json"`` for JSON lines, ``"otlp_proto"`` for length-prefixed protobuf."""
    p = Path(path)
    with p.open("rb") as fh:
        head = fh.read(64).lstrip()
    if head[:1] in (b"{", b"["):
        return "otlp_json"
    return "otlp_proto"
