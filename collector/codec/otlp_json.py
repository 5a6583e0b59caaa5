"""OTLP/JSON: parsing the document, reading its fields, and decoding it into spans.

The OTLP specification's JSON mapping, as the Collector writes it: lowerCamelCase keys
(snake_case accepted), trace/span ids as hex strings, enums as integers (names accepted),
64-bit integers as decimal strings or numbers, unknown fields ignored.  The field readers here
(:func:`load_json`, :func:`json_list`, :func:`json_id`, :func:`json_int`,
:func:`json_attributes`) are shared with the transcoder to protobuf
(:mod:`collector.codec.transcode`) and the log decoder (:mod:`collector.codec.otlp_logs`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from attribution.model import (
    CODE_STACKTRACE,
    STATUS_ERROR,
    AttrValue,
    ExceptionInfo,
    Resource,
    Span,
    TimeBounds,
)
from attribution.sampling import probability_from_sample_rate, probability_from_tracestate
from collector.codec.exceptions import (
    EXCEPTION_EVENT,
    EXCEPTION_KEYS,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    MAX_EXCEPTIONS_PER_SPAN,
    NO_EXCEPTIONS,
    exception_info,
    span_exceptions,
)
from collector.codec.results import TOO_DEEP, ZERO_SPAN_ID, ZERO_TRACE_ID, Decoded, Rejection, reject
from collector.errors import DecodeError

_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}


def load_json(data: bytes | str, where: str = "") -> Any:
    """``json.loads``, with a :class:`DecodeError` for bad JSON and for nesting too deep to parse."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not valid JSON: {exc}", where=where) from exc
    except RecursionError:
        raise DecodeError(TOO_DEEP, reason="too_deep", where=where) from None


def _jget(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    v = obj.get(camel)
    if v is None:
        v = obj.get(snake)
    return v


def json_list(obj: Mapping[str, Any], camel: str, snake: str, what: str) -> list[Any]:
    """The list under ``camel`` (or ``snake``); ``[]`` when absent.  ValueError naming ``what``."""
    v = _jget(obj, camel, snake)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list")
    return v


def json_id(value: Any, what: str) -> bytes:
    """A trace or span id: a hex string (``b""`` when absent).  ValueError naming ``what``."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a hex string, got {type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what} is not hex: {value[:80]!r}") from None


def json_int(value: Any, what: str) -> int:
    """A 64-bit integer: a decimal string or a number (0 when absent).  ValueError naming ``what``."""
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


def _enum(value: Any, names: Mapping[str, int], what: str) -> int:
    """Enums are integers in OTLP/JSON; enum names are accepted too."""
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    return json_int(value, what)


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
            return json_int(x, "intValue")
        if camel == "doubleValue":
            return float(x)  # also "NaN", "Infinity", "-Infinity"
        try:
            return base64.b64decode(x, validate=True).hex()
        except (binascii.Error, TypeError):
            return None
    return None


def json_attributes(items: Any, wanted: frozenset[str] | None) -> dict[str, AttrValue]:
    """An OTLP/JSON ``KeyValue`` list -> scalars (only ``wanted`` keys unless None).  ValueError
    when malformed."""
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


_STACKTRACE_KEY = frozenset((CODE_STACKTRACE,))


def _span_exceptions(
    sp: Mapping[str, Any], status: Mapping[str, Any], code: int
) -> tuple[ExceptionInfo, ...]:
    """A span's ``exception`` events and ``code.stacktrace`` (see :mod:`collector.codec.exceptions`)."""
    found: list[ExceptionInfo] = []
    for ei, ev in enumerate(json_list(sp, "events", "events", "events")):
        if not isinstance(ev, dict):
            raise ValueError(f"events[{ei}] must be an object")
        if ev.get("name") != EXCEPTION_EVENT:
            continue
        a = json_attributes(ev.get("attributes"), EXCEPTION_KEYS)
        found.append(
            exception_info(a.get(EXCEPTION_TYPE), a.get(EXCEPTION_MESSAGE), a.get(EXCEPTION_STACKTRACE))
        )
        if len(found) == MAX_EXCEPTIONS_PER_SPAN:
            break
    if found:
        if all(e.stacktrace for e in found):
            return tuple(found)
    elif code != STATUS_ERROR:
        return NO_EXCEPTIONS
    st = json_attributes(sp.get("attributes"), _STACKTRACE_KEY).get(CODE_STACKTRACE)
    message = status.get("message")
    return span_exceptions(
        found, st if isinstance(st, str) else "", code, message if isinstance(message, str) else ""
    )


def decode_json(
    data: bytes | str,
    where: str,
    *,
    wanted: frozenset[str],
    sample_rate_attribute: str,
    time_bounds: TimeBounds,
    reference_unix_nano: int | None,
) -> Decoded:
    """One OTLP/JSON ``TracesData`` / ``ExportTraceServiceRequest`` object -> spans (see
    :meth:`collector.codec.otlp.OtlpDecoder.decode_json`)."""
    doc = load_json(data, where)
    lo, hi = time_bounds.window(reference_unix_nano)
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}", where=where)
    spans: list[Span] = []
    rejected: list[Rejection] = []
    rate_attr = sample_rate_attribute
    path = "resourceSpans"
    try:
        for ri, rs in enumerate(json_list(doc, "resourceSpans", "resource_spans", "resourceSpans")):
            path = f"resourceSpans[{ri}]"
            if not isinstance(rs, dict):
                raise ValueError("must be an object")
            res_obj = rs.get("resource") or {}
            if not isinstance(res_obj, dict):
                raise ValueError("resource must be an object")
            resource = Resource.from_attributes(json_attributes(res_obj.get("attributes"), None))
            for si, ss in enumerate(json_list(rs, "scopeSpans", "scope_spans", "scopeSpans")):
                path = f"resourceSpans[{ri}].scopeSpans[{si}]"
                if not isinstance(ss, dict):
                    raise ValueError("must be an object")
                for pi, sp in enumerate(json_list(ss, "spans", "spans", "spans")):
                    path = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                    if not isinstance(sp, dict):
                        raise ValueError("must be an object")
                    trace_id = json_id(_jget(sp, "traceId", "trace_id"), "traceId")
                    span_id = json_id(_jget(sp, "spanId", "span_id"), "spanId")
                    parent = json_id(_jget(sp, "parentSpanId", "parent_span_id"), "parentSpanId")
                    start = json_int(
                        _jget(sp, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"
                    )
                    end = json_int(_jget(sp, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano")
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
                                time_bounds,
                                where,
                                path,
                                trace_id,
                                span_id,
                                parent,
                                start,
                                end,
                                reference_unix_nano,
                            )
                        )
                        continue
                    attrs = json_attributes(sp.get("attributes"), wanted)
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
                    exceptions = NO_EXCEPTIONS
                    if sp.get("events") or code == STATUS_ERROR:
                        exceptions = _span_exceptions(sp, status, code)
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
                            exceptions,
                        )
                    )
    except ValueError as exc:
        raise DecodeError(f"{path}: {exc}", where=where) from exc
    return Decoded(spans, rejected)
