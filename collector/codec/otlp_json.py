"""OTLP/JSON: parsing the document, reading its fields, and decoding it into spans.

The OTLP specification's JSON mapping, as the Collector writes it: lowerCamelCase keys
(snake_case accepted), trace/span ids as hex strings, enums as integers (names accepted),
64-bit integers as decimal strings or numbers, unknown fields ignored.  The field readers here
(:func:`load_json`, :func:`json_list`, :func:`json_id`) are shared with the transcoder to
protobuf (:mod:`collector.codec.transcode`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from attribution.model import AttrValue, Resource, Span, TimeBounds
from attribution.sampling import probability_from_sample_rate, probability_from_tracestate
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


def _enum(value: Any, names: Mapping[str, int], what: str) -> int:
    """Enums are integers in OTLP/JSON; enum names are accepted too."""
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    return _json_int(value, what)


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
            resource = Resource.from_attributes(_json_attributes(res_obj.get("attributes"), None))
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
