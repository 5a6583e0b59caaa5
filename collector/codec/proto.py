"""Lean OTLP protobuf messages for the decoder's fast path, and ``AnyValue``/``Resource`` conversion.

Generated message classes materialise a Python object for every attribute of every span, which
costs more than everything else prodloop does per span.  So the decoder parses with *lean*
message classes built at import time from the real ``opentelemetry-proto`` descriptors, with the
same field numbers:

* ``Span.attributes`` (``repeated KeyValue``) is declared as ``map<string, bytes>``.
  A map entry is, on the wire, exactly a ``KeyValue`` (key = 1, value = 2), so upb parses
  the attribute list in C into a map; only the projected keys are looked up, and their
  serialized ``AnyValue`` is decoded once per distinct value (a bounded cache).
* ``Span.status`` is declared as ``bytes`` (empty for most spans): parsed with
  :data:`LeanStatus` only when set, once per distinct value.
* ``Span.events`` is declared as one ``bytes`` field (the last event's bytes): a cheap
  "has events" probe.  Only a record with events is parsed again, with
  :data:`LeanTraceEvents` (events only: their name and attributes, the same map).  (A last
  event with no time, name or attributes serializes to nothing and hides the probe.)
* Fields prodloop does not read (event times, links, scope, dropped counts, array and kvlist
  values) are left out of the lean messages and skipped by the parser.

Log records (:data:`LeanLogsData`, for :mod:`collector.codec.otlp_logs`) have the same
attribute map and no body.  The resource is parsed with the real ``Resource`` class (once per
``ResourceSpans`` / ``ResourceLogs``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from attribution.model import AttrValue, Resource

AnyValue = common_pb2.AnyValue

_F = descriptor_pb2.FieldDescriptorProto


def _num(message: Any, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)


def _build_lean_classes() -> tuple[type[Any], ...]:
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

    def attributes(msg: Any, number: int, type_name: str) -> None:
        entry = add(msg.nested_type, "AttributesEntry")
        entry.options.map_entry = True
        field(entry, "key", _num(common_pb2.KeyValue, "key"), _F.TYPE_STRING)
        # the value stays serialized: decoded (and cached) only for projected keys
        field(entry, "value", _num(common_pb2.KeyValue, "value"), _F.TYPE_BYTES)
        field(
            msg,
            "attributes",
            number,
            _F.TYPE_MESSAGE,
            repeated=True,
            type_name=f"{type_name}.AttributesEntry",
        )

    def containers(prefix: str, span_type: str) -> None:
        """``{prefix}TracesData`` -> ResourceSpans -> ScopeSpans -> ``span_type``.  TracesData and
        ExportTraceServiceRequest share this shape: resource_spans = 1."""
        scope_spans = add(fdp.message_type, f"{prefix}ScopeSpans")
        field(
            scope_spans,
            "spans",
            _num(trace_pb2.ScopeSpans, "spans"),
            _F.TYPE_MESSAGE,
            repeated=True,
            type_name=span_type,
        )
        resource_spans = add(fdp.message_type, f"{prefix}ResourceSpans")
        rs = trace_pb2.ResourceSpans
        if not prefix:
            field(resource_spans, "resource", _num(rs, "resource"), _F.TYPE_BYTES)
        field(
            resource_spans,
            "scope_spans",
            _num(rs, "scope_spans"),
            _F.TYPE_MESSAGE,
            repeated=True,
            type_name=f".prodloop.lean.{prefix}ScopeSpans",
        )
        traces = add(fdp.message_type, f"{prefix}TracesData")
        field(
            traces,
            "resource_spans",
            _num(trace_pb2.TracesData, "resource_spans"),
            _F.TYPE_MESSAGE,
            repeated=True,
            type_name=f".prodloop.lean.{prefix}ResourceSpans",
        )

    status = add(fdp.message_type, "Status")
    field(status, "code", _num(trace_pb2.Status, "code"), _F.TYPE_INT32)
    field(status, "message", _num(trace_pb2.Status, "message"), _F.TYPE_STRING)

    sp = trace_pb2.Span
    span = add(fdp.message_type, "Span")
    attributes(span, _num(sp, "attributes"), ".prodloop.lean.Span")
    field(span, "trace_id", _num(sp, "trace_id"), _F.TYPE_BYTES)
    field(span, "span_id", _num(sp, "span_id"), _F.TYPE_BYTES)
    field(span, "trace_state", _num(sp, "trace_state"), _F.TYPE_STRING)
    field(span, "parent_span_id", _num(sp, "parent_span_id"), _F.TYPE_BYTES)
    field(span, "name", _num(sp, "name"), _F.TYPE_STRING)
    field(span, "kind", _num(sp, "kind"), _F.TYPE_INT32)
    field(span, "start_time_unix_nano", _num(sp, "start_time_unix_nano"), _F.TYPE_FIXED64)
    field(span, "end_time_unix_nano", _num(sp, "end_time_unix_nano"), _F.TYPE_FIXED64)
    # the status stays serialized: b"" for most spans, parsed (and cached) when set
    field(span, "status", _num(sp, "status"), _F.TYPE_BYTES)
    # the events, declared singular: the last one's bytes, a cheap "has events" probe
    field(span, "last_event", _num(sp, "events"), _F.TYPE_BYTES)
    containers("", ".prodloop.lean.Span")

    # the events-only view, parsed for a record when one of its spans has events
    ev = trace_pb2.Span.Event
    event = add(fdp.message_type, "Event")
    field(event, "name", _num(ev, "name"), _F.TYPE_STRING)
    attributes(event, _num(ev, "attributes"), ".prodloop.lean.Event")
    events_span = add(fdp.message_type, "EventsSpan")
    field(
        events_span,
        "events",
        _num(sp, "events"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.Event",
    )
    containers("Events", ".prodloop.lean.EventsSpan")

    # LogsData and ExportLogsServiceRequest share this shape: resource_logs = 1.  The body is
    # left out: only a record's exception.* attributes are read.
    lr = logs_pb2.LogRecord
    record = add(fdp.message_type, "LogRecord")
    field(record, "time_unix_nano", _num(lr, "time_unix_nano"), _F.TYPE_FIXED64)
    field(record, "observed_time_unix_nano", _num(lr, "observed_time_unix_nano"), _F.TYPE_FIXED64)
    attributes(record, _num(lr, "attributes"), ".prodloop.lean.LogRecord")
    field(record, "trace_id", _num(lr, "trace_id"), _F.TYPE_BYTES)
    field(record, "span_id", _num(lr, "span_id"), _F.TYPE_BYTES)
    field(record, "event_name", _num(lr, "event_name"), _F.TYPE_STRING)
    scope_logs = add(fdp.message_type, "ScopeLogs")
    field(
        scope_logs,
        "log_records",
        _num(logs_pb2.ScopeLogs, "log_records"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.LogRecord",
    )
    resource_logs = add(fdp.message_type, "ResourceLogs")
    field(resource_logs, "resource", _num(logs_pb2.ResourceLogs, "resource"), _F.TYPE_BYTES)
    field(
        resource_logs,
        "scope_logs",
        _num(logs_pb2.ResourceLogs, "scope_logs"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.ScopeLogs",
    )
    logs = add(fdp.message_type, "LogsData")
    field(
        logs,
        "resource_logs",
        _num(logs_pb2.LogsData, "resource_logs"),
        _F.TYPE_MESSAGE,
        repeated=True,
        type_name=".prodloop.lean.ResourceLogs",
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)

    def cls(name: str) -> type[Any]:
        c: type[Any] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prodloop.lean.{name}"))
        return c

    return (
        cls("TracesData"),
        cls("EventsTracesData"),
        cls("LogsData"),
        cls("Status"),
        cls("Span"),
        cls("EventsSpan"),
    )


# LeanSpan and LeanEventsSpan parse one span's bytes: the native decoder hands a span with
# events or an error to the Python path's exception logic (collector.codec.otlp.span_exceptions_of)
LeanTracesData, LeanTraceEvents, LeanLogsData, LeanStatus, LeanSpan, LeanEventsSpan = _build_lean_classes()


def any_value_proto(v: Any) -> AttrValue | None:
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


def resource_from_proto(raw: bytes) -> Resource:
    res = resource_pb2.Resource.FromString(raw)
    attrs: dict[str, AttrValue] = {}
    for kv in res.attributes:
        val = any_value_proto(kv.value)
        if val is not None:
            attrs[kv.key] = val
    return Resource.from_attributes(attrs)
