"""Lean OTLP protobuf messages for the decoder's fast path, and ``AnyValue``/``Resource`` conversion.

Generated message classes materialise a Python object for every attribute of every span, which
costs more than everything else prodloop does per span.  So the decoder parses with *lean*
message classes built at import time from the real ``opentelemetry-proto`` descriptors, with the
same field numbers:

* ``Span.attributes`` (``repeated KeyValue``) is declared as ``map<string, bytes>``.
  A map entry is, on the wire, exactly a ``KeyValue`` (key = 1, value = 2), so upb parses
  the attribute list in C into a map; only the projected keys are looked up, and their
  serialized ``AnyValue`` is decoded once per distinct value (a bounded cache).
* Fields prodloop does not read (events, links, scope, dropped counts, array and kvlist
  values) are left out of the lean messages and skipped by the parser.

The resource is parsed with the real ``Resource`` class (once per ``ResourceSpans``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from attribution.model import AttrValue, Resource

AnyValue = common_pb2.AnyValue

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


LeanTracesData = _build_lean_classes()


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
