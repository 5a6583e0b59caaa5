"""OTLP requests kept as protobuf messages, for the Kafka gateway: parsing, JSON -> protobuf, split by trace
(trace requests, and logs requests).

The gateway forwards requests rather than spans, so it needs the whole
``ExportTraceServiceRequest`` (events, links, scopes and all), not the decoder's projection.
OTLP/JSON is read with the decoder's own field readers (:mod:`collector.codec.otlp_json`):
ids are turned from hex into the base64 the protobuf JSON mapping wants, then protobuf's
``json_format`` builds the message.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.codec.otlp_json import json_id, json_list, load_json
from collector.codec.results import MAX_NESTING_DEPTH, TOO_DEEP, ZERO_TRACE_ID
from collector.errors import DecodeError

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportLogsRequest = logs_service_pb2.ExportLogsServiceRequest
_ID_FIELDS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


def parse_export_request(payload: bytes) -> Any:
    """``otlp_proto`` bytes -> ``ExportTraceServiceRequest`` (raises DecodeError)."""
    try:
        return ExportRequest.FromString(payload)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            f"not a valid OTLP protobuf ExportTraceServiceRequest ({len(payload)} bytes; truncated, "
            f"or nested deeper than {MAX_NESTING_DEPTH} levels): {exc}"
        ) from exc


def _list(obj: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    try:
        return json_list(obj, camel, snake, f"{where}.{camel}")
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


def _hex_ids_to_base64(obj: dict[str, Any], where: str) -> None:
    """OTLP/JSON spells ids in hex; the protobuf JSON mapping wants base64."""
    for camel, snake in _ID_FIELDS:
        for key in (camel, snake):
            v = obj.get(key)
            if v is None or v == "":
                continue
            try:
                obj[key] = base64.b64encode(json_id(v, f"{where}.{camel}")).decode()
            except ValueError as exc:
                raise DecodeError(str(exc)) from None


def otlp_json_to_proto(data: bytes) -> Any:
    """An OTLP/JSON trace request -> ``ExportTraceServiceRequest`` (raises DecodeError)."""
    doc = load_json(data)
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}")
    for ri, rs in enumerate(_list(doc, "resourceSpans", "resource_spans", "")):
        if not isinstance(rs, dict):
            raise DecodeError(f"resourceSpans[{ri}] must be an object")
        for si, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", f"resourceSpans[{ri}]")):
            if not isinstance(ss, dict):
                raise DecodeError(f"resourceSpans[{ri}].scopeSpans[{si}] must be an object")
            for pi, sp in enumerate(_list(ss, "spans", "spans", f"resourceSpans[{ri}].scopeSpans[{si}]")):
                where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                if not isinstance(sp, dict):
                    raise DecodeError(f"{where} must be an object")
                _hex_ids_to_base64(sp, where)
                for li, link in enumerate(_list(sp, "links", "links", where)):
                    if isinstance(link, dict):
                        _hex_ids_to_base64(link, f"{where}.links[{li}]")
    return _parse_json(doc, ExportRequest())


def _parse_json(doc: dict[str, Any], msg: Any) -> Any:
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True, max_recursion_depth=MAX_NESTING_DEPTH)
    except json_format.ParseError as exc:
        if "recursion" in str(exc).lower():
            raise DecodeError(f"the request nests too deeply: {exc}", reason="too_deep") from exc
        raise DecodeError(f"not a valid OTLP/JSON {msg.DESCRIPTOR.name}: {exc}") from exc
    except RecursionError:
        raise DecodeError(TOO_DEEP, reason="too_deep") from None
    return msg


def _regroup(
    req: Any, new: Callable[[], Any], fields: tuple[str, str, str], key: Callable[[Any, str], bytes | None]
) -> dict[bytes, Any]:
    """One request per ``key(item, path)`` (None: the item is dropped), each item under a copy
    of its resource and scope, in order.  ``fields``: the resource, scope and item lists' names."""
    outer, inner, items = fields
    out: dict[bytes, Any] = {}
    outer_map: dict[tuple[bytes, int], Any] = {}
    inner_map: dict[tuple[bytes, int, int], Any] = {}
    for ri, ro in enumerate(getattr(req, outer)):
        for si, so in enumerate(getattr(ro, inner)):
            for ii, item in enumerate(getattr(so, items)):
                k = key(item, f"{outer}[{ri}].{inner}[{si}].{items}[{ii}]")
                if k is None:
                    continue
                nso = inner_map.get((k, ri, si))
                if nso is None:
                    nro = outer_map.get((k, ri))
                    if nro is None:
                        r = out.get(k)
                        if r is None:
                            r = out[k] = new()
                        nro = getattr(r, outer).add()
                        if ro.HasField("resource"):
                            nro.resource.CopyFrom(ro.resource)
                        nro.schema_url = ro.schema_url
                        outer_map[(k, ri)] = nro
                    nso = getattr(nro, inner).add()
                    if so.HasField("scope"):
                        nso.scope.CopyFrom(so.scope)
                    nso.schema_url = so.schema_url
                    inner_map[(k, ri, si)] = nso
                getattr(nso, items).append(item)
    return out


def split_by_trace(req: Any) -> tuple[dict[bytes, Any], int, str]:
    """Split a request into one request per trace id, keeping each span's resource and scope.

    Returns ``(trace_id -> request, rejected_spans, first rejection message)``.
    """
    rejected: list[str] = []

    def key(sp: Any, path: str) -> bytes | None:
        tid: bytes = sp.trace_id
        if len(tid) == 16 and tid != ZERO_TRACE_ID:
            return tid
        what = "all zeroes" if tid == ZERO_TRACE_ID else f"{len(tid)} bytes"
        rejected.append(f"{path}: trace_id must be 16 bytes and not all zeroes, got {what}")
        return None

    out = _regroup(req, ExportRequest, ("resource_spans", "scope_spans", "spans"), key)
    return out, len(rejected), rejected[0] if rejected else ""


def count_spans(req: Any) -> int:
    """The spans in an ``ExportTraceServiceRequest``."""
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def parse_logs_request(payload: bytes) -> Any:
    """``otlp_proto`` bytes -> ``ExportLogsServiceRequest`` (raises DecodeError)."""
    try:
        return ExportLogsRequest.FromString(payload)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            f"not a valid OTLP protobuf ExportLogsServiceRequest ({len(payload)} bytes; truncated, "
            f"or nested deeper than {MAX_NESTING_DEPTH} levels): {exc}"
        ) from exc


def otlp_logs_json_to_proto(data: bytes) -> Any:
    """An OTLP/JSON logs request -> ``ExportLogsServiceRequest`` (raises DecodeError)."""
    doc = load_json(data)
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}")
    for ri, rl in enumerate(_list(doc, "resourceLogs", "resource_logs", "")):
        if not isinstance(rl, dict):
            raise DecodeError(f"resourceLogs[{ri}] must be an object")
        for si, sl in enumerate(_list(rl, "scopeLogs", "scope_logs", f"resourceLogs[{ri}]")):
            if not isinstance(sl, dict):
                raise DecodeError(f"resourceLogs[{ri}].scopeLogs[{si}] must be an object")
            for li, rec in enumerate(
                _list(sl, "logRecords", "log_records", f"resourceLogs[{ri}].scopeLogs[{si}]")
            ):
                where = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]"
                if not isinstance(rec, dict):
                    raise DecodeError(f"{where} must be an object")
                _hex_ids_to_base64(rec, where)
    return _parse_json(doc, ExportLogsRequest())


def split_logs_by_trace(req: Any) -> dict[bytes, Any]:
    """Split a logs request into one request per trace id (``b""``: the records without a
    well-formed one), keeping each record's resource and scope."""

    def key(rec: Any, _path: str) -> bytes:
        tid: bytes = rec.trace_id
        return tid if len(tid) == 16 and tid != ZERO_TRACE_ID else b""

    return _regroup(req, ExportLogsRequest, ("resource_logs", "scope_logs", "log_records"), key)


def count_log_records(req: Any) -> int:
    """The log records in an ``ExportLogsServiceRequest``."""
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
