"""OTLP requests kept as protobuf messages, for the Kafka gateway: parsing, JSON -> protobuf, split by trace.

The gateway forwards requests rather than spans, so it needs the whole
``ExportTraceServiceRequest`` (events, links, scopes and all), not the decoder's projection.
OTLP/JSON is read with the decoder's own field readers (:mod:`collector.codec.otlp_json`):
ids are turned from hex into the base64 the protobuf JSON mapping wants, then protobuf's
``json_format`` builds the message.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.codec.otlp_json import json_id, json_list, load_json
from collector.codec.results import MAX_NESTING_DEPTH, TOO_DEEP, ZERO_TRACE_ID
from collector.errors import DecodeError

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
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
    msg = ExportRequest()
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True, max_recursion_depth=MAX_NESTING_DEPTH)
    except json_format.ParseError as exc:
        if "recursion" in str(exc).lower():
            raise DecodeError(f"the request nests too deeply: {exc}", reason="too_deep") from exc
        raise DecodeError(f"not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from exc
    except RecursionError:
        raise DecodeError(TOO_DEEP, reason="too_deep") from None
    return msg


def split_by_trace(req: Any) -> tuple[dict[bytes, Any], int, str]:
    """Split a request into one request per trace id, keeping each span's resource and scope.

    Returns ``(trace_id -> request, rejected_spans, first rejection message)``.
    """
    out: dict[bytes, Any] = {}
    rs_map: dict[tuple[bytes, int], Any] = {}
    ss_map: dict[tuple[bytes, int, int], Any] = {}
    rejected = 0
    message = ""
    for ri, rs in enumerate(req.resource_spans):
        for si, ss in enumerate(rs.scope_spans):
            for pi, sp in enumerate(ss.spans):
                tid = sp.trace_id
                if len(tid) != 16 or tid == ZERO_TRACE_ID:
                    rejected += 1
                    if not message:
                        what = "all zeroes" if tid == ZERO_TRACE_ID else f"{len(tid)} bytes"
                        message = (
                            f"resource_spans[{ri}].scope_spans[{si}].spans[{pi}]: "
                            f"trace_id must be 16 bytes and not all zeroes, got {what}"
                        )
                    continue
                nss = ss_map.get((tid, ri, si))
                if nss is None:
                    nrs = rs_map.get((tid, ri))
                    if nrs is None:
                        r = out.get(tid)
                        if r is None:
                            r = out[tid] = ExportRequest()
                        nrs = r.resource_spans.add()
                        if rs.HasField("resource"):
                            nrs.resource.CopyFrom(rs.resource)
                        nrs.schema_url = rs.schema_url
                        rs_map[(tid, ri)] = nrs
                    nss = nrs.scope_spans.add()
                    if ss.HasField("scope"):
                        nss.scope.CopyFrom(ss.scope)
                    nss.schema_url = ss.schema_url
                    ss_map[(tid, ri, si)] = nss
                nss.spans.append(sp)
    return out, rejected, message


def count_spans(req: Any) -> int:
    """The spans in an ``ExportTraceServiceRequest``."""
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
