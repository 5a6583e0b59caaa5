"""OTLP logs -> the exceptions they carry: ``LogsData`` / ``ExportLogsServiceRequest`` bytes
(protobuf or OTLP/JSON) -> ``list[attribution.model.LogException]``.

OTEP 4430 moves exception span events to log records.  A record counts when it has any of
``exception.type`` / ``exception.message`` / ``exception.stacktrace`` or the event name
``exception``; every other record is skipped (its body is never read).  Its time is
``time_unix_nano``, else ``observed_time_unix_nano``; its trace and span ids are kept when
they are well-formed (16 and 8 bytes, not zero), else left empty.  Texts are bounded as for
spans (:mod:`collector.codec.exceptions`).

A request that cannot be parsed raises :class:`DecodeError` naming where, as
:mod:`collector.codec.otlp` does for traces.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from attribution.model import LogException, Resource
from collector.codec.exceptions import (
    EXCEPTION_EVENT,
    EXCEPTION_KEYS,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    exception_info,
)
from collector.codec.otlp import decode_any_value
from collector.codec.otlp_json import json_attributes, json_id, json_int, json_list, load_json
from collector.codec.proto import LeanLogsData, resource_from_proto
from collector.codec.results import MAX_NESTING_DEPTH, ZERO_SPAN_ID, ZERO_TRACE_ID
from collector.errors import DecodeError


def _ids(trace_id: bytes, span_id: bytes) -> tuple[bytes, bytes]:
    if len(trace_id) != 16 or trace_id == ZERO_TRACE_ID:
        return b"", b""
    return trace_id, (span_id if len(span_id) == 8 and span_id != ZERO_SPAN_ID else b"")


def decode_logs_proto(data: bytes, where: str = "<otlp_proto>") -> list[LogException]:
    """Protobuf ``LogsData`` / ``ExportLogsServiceRequest`` -> the exceptions its records carry."""
    try:
        msg: Any = LeanLogsData.FromString(data)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            f"not a valid OTLP protobuf LogsData/ExportLogsServiceRequest ({len(data)} bytes): {exc}",
            where=where,
        ) from exc
    out: list[LogException] = []
    for ri, rl in enumerate(msg.resource_logs):
        resource: Resource | None = None
        for si, sl in enumerate(rl.scope_logs):
            for li, rec in enumerate(sl.log_records):
                get = rec.attributes.get
                raw_type = get(EXCEPTION_TYPE)
                raw_message = get(EXCEPTION_MESSAGE)
                raw_stack = get(EXCEPTION_STACKTRACE)
                if (
                    raw_type is None
                    and raw_message is None
                    and raw_stack is None
                    and rec.event_name != EXCEPTION_EVENT
                ):
                    continue
                path = f"resource_logs[{ri}].scope_logs[{si}].log_records[{li}]"
                if resource is None:
                    try:
                        resource = resource_from_proto(rl.resource)
                    except ProtobufDecodeError as exc:
                        raise DecodeError(
                            f"resource_logs[{ri}].resource is not valid (truncated, or nested deeper "
                            f"than {MAX_NESTING_DEPTH} levels): {exc}",
                            where=where,
                        ) from exc
                trace_id, span_id = _ids(rec.trace_id, rec.span_id)
                out.append(
                    LogException(
                        resource,
                        rec.time_unix_nano or rec.observed_time_unix_nano,
                        exception_info(
                            decode_any_value(raw_type, where, path),
                            decode_any_value(raw_message, where, path),
                            decode_any_value(raw_stack, where, path),
                        ),
                        trace_id,
                        span_id,
                    )
                )
    return out


def decode_logs_json(data: bytes | str, where: str = "<otlp_json>") -> list[LogException]:
    """One OTLP/JSON ``LogsData`` / ``ExportLogsServiceRequest`` object -> the exceptions its
    records carry (lowerCamelCase keys, snake_case accepted; hex ids; string or number int64s)."""
    doc = load_json(data, where)
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}", where=where)
    out: list[LogException] = []
    path = "resourceLogs"
    try:
        for ri, rl in enumerate(json_list(doc, "resourceLogs", "resource_logs", "resourceLogs")):
            path = f"resourceLogs[{ri}]"
            if not isinstance(rl, dict):
                raise ValueError("must be an object")
            resource: Resource | None = None
            for si, sl in enumerate(json_list(rl, "scopeLogs", "scope_logs", "scopeLogs")):
                path = f"resourceLogs[{ri}].scopeLogs[{si}]"
                if not isinstance(sl, dict):
                    raise ValueError("must be an object")
                for li, rec in enumerate(json_list(sl, "logRecords", "log_records", "logRecords")):
                    path = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]"
                    if not isinstance(rec, dict):
                        raise ValueError("must be an object")
                    attrs = json_attributes(rec.get("attributes"), EXCEPTION_KEYS)
                    event_name = rec.get("eventName", rec.get("event_name"))
                    if not attrs and event_name != EXCEPTION_EVENT:
                        continue
                    if resource is None:
                        res_obj = rl.get("resource") or {}
                        if not isinstance(res_obj, dict):
                            raise ValueError("resource must be an object")
                        resource = Resource.from_attributes(json_attributes(res_obj.get("attributes"), None))
                    time = json_int(rec.get("timeUnixNano", rec.get("time_unix_nano")), "timeUnixNano")
                    if not time:
                        time = json_int(
                            rec.get("observedTimeUnixNano", rec.get("observed_time_unix_nano")),
                            "observedTimeUnixNano",
                        )
                    trace_id, span_id = _ids(
                        json_id(rec.get("traceId", rec.get("trace_id")), "traceId"),
                        json_id(rec.get("spanId", rec.get("span_id")), "spanId"),
                    )
                    out.append(
                        LogException(
                            resource,
                            time,
                            exception_info(
                                attrs.get(EXCEPTION_TYPE),
                                attrs.get(EXCEPTION_MESSAGE),
                                attrs.get(EXCEPTION_STACKTRACE),
                            ),
                            trace_id,
                            span_id,
                        )
                    )
    except ValueError as exc:
        raise DecodeError(f"{path}: {exc}", where=where) from exc
    return out


def decode_logs(data: bytes, encoding: str, where: str = "") -> list[LogException]:
    """Decode by encoding name: ``otlp_proto`` or ``otlp_json``."""
    if encoding == "otlp_proto":
        return decode_logs_proto(data, where or "<otlp_proto>")
    if encoding == "otlp_json":
        return decode_logs_json(data, where or "<otlp_json>")
    raise ValueError(f"unknown OTLP encoding {encoding!r}: expected otlp_proto or otlp_json")
