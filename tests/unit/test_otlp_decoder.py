"""The OTLP decoder (collector/codec/otlp.py) against the real OpenTelemetry SDK and its OTLP encoders.

Every payload here is what the SDK's own encoders write (protobuf: ``opentelemetry-exporter-
otlp-proto-common``; JSON: ``opentelemetry-exporter-otlp-json-common``).  Variants (snake_case
keys, numbers for 64-bit integers, enum names, unknown fields) and malformed inputs are made
by transforming or corrupting that real output.  Expectations come from the SDK's
``ReadableSpan`` objects and the ``opentelemetry-proto`` enum descriptors.
"""

from __future__ import annotations

import copy
import json
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from attribution.model import WANTED_ATTRIBUTES, Span
from collector.codec.exceptions import MAX_EXCEPTIONS_PER_SPAN, MAX_STACKTRACE_CHARS
from collector.codec.framing import iter_json_lines, iter_length_prefixed, sniff_file_format
from collector.errors import DecodeError, PayloadError
from tests.support.twin import TwinDecoder

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000
MS = 1_000_000

RESOURCE_A = {
    "service.name": "checkout",
    "deployment.environment.name": "prod",
    "service.version": "2.4.1",
    "vcs.ref.head.revision": "0123456789abcdef0123456789abcdef01234567",
    "vcs.repository.url.full": "https://github.com/acme/shop",
    "host.name": "node-7",
}
RESOURCE_B = {
    "service.name": "payments",
    "deployment.environment": "staging",  # the deprecated attribute
    "service.version": "c0ffee1",
}


def rich_spans(otel: Otel) -> list[ReadableSpan]:
    """Two resources; every kind and status; parents, tracestate, events, links, many attribute types."""
    a = otel.batch(RESOURCE_A)
    root = a.add(
        "GET /api/cart/{id}",
        T0,
        T0 + 25 * MS,
        kind=SpanKind.SERVER,
        status=StatusCode.OK,
        attributes={
            "http.route": "/api/cart/{id}",
            "code.file.path": "/srv/shop/services/cart/api.py",
            "code.function.name": "shop.cart.api.get",
            "code.line.number": 2**40,  # a 64-bit integer
            "http.request.method": "GET",  # not projected
            "user.id": "u-1",
        },
        events=2,
        links=1,
    )
    a.add(
        "SELECT cart",
        T0 + MS,
        T0 + 3 * MS,
        kind=SpanKind.CLIENT,
        status=StatusCode.ERROR,
        parent=root,
        attributes={
            "code.filepath": "services/cart/db.py",
            "code.lineno": 12,
            "code.namespace": "shop.cart.db",
        },
    )
    a.add("enqueue", T0 + 4 * MS, T0 + 4 * MS, kind=SpanKind.PRODUCER, parent=root)  # zero-length
    a.add(
        "sampled", T0 + 5 * MS, T0 + 6 * MS, trace_state="ot=th:8", attributes={"code.function": "legacy.fn"}
    )
    b = otel.batch(RESOURCE_B)
    b.add(
        "shop.Payments/Charge",
        T0 + 7 * MS,
        T0 + 9 * MS,
        kind=SpanKind.SERVER,
        attributes={"rpc.service": "shop.Payments", "rpc.method": "Charge", "rpc.system": "grpc"},
    )
    b.add("consume", T0 + 10 * MS, T0 + 11 * MS, kind=SpanKind.CONSUMER, status=StatusCode.ERROR)
    b.add("internal", T0 + 12 * MS, T0 + 13 * MS)
    return a.spans + b.spans


def otlp_kind(kind: SpanKind) -> int:
    return int(trace_pb2.Span.SpanKind.Value("SPAN_KIND_" + kind.name))


def expect_span(sdk: ReadableSpan, wanted: frozenset[str] = frozenset(WANTED_ATTRIBUTES)) -> dict[str, Any]:
    ctx = sdk.context
    assert ctx is not None and sdk.resource is not None
    res = sdk.resource.attributes
    return {
        "service": res.get("service.name", "unknown_service"),
        "environment": res.get("deployment.environment.name", res.get("deployment.environment", "")),
        "service_version": res.get("service.version", ""),
        "vcs_revision": res.get("vcs.ref.head.revision", ""),
        "repository": res.get("vcs.repository.url.full", ""),
        "trace_id": ctx.trace_id.to_bytes(16, "big"),
        "span_id": ctx.span_id.to_bytes(8, "big"),
        "parent_span_id": sdk.parent.span_id.to_bytes(8, "big") if sdk.parent else b"",
        "name": sdk.name,
        "start": sdk.start_time,
        "end": sdk.end_time,
        "status": int(sdk.status.status_code.value),
        "kind": otlp_kind(sdk.kind),
        "attributes": {k: v for k, v in (sdk.attributes or {}).items() if k in wanted},
    }


def actual_span(span: Span) -> dict[str, Any]:
    r = span.resource
    return {
        "service": r.service,
        "environment": r.environment,
        "service_version": r.service_version,
        "vcs_revision": r.vcs_revision,
        "repository": r.repository,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "start": span.start_unix_nano,
        "end": span.end_unix_nano,
        "status": span.status_code,
        "kind": span.kind,
        "attributes": dict(span.attributes),
    }


# -------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_round_trip_against_the_sdk(otel: Otel, encoding: str) -> None:
    sdk = rich_spans(otel)
    decoded = otel.decode(sdk, encoding)
    assert [actual_span(s) for s in decoded] == [expect_span(s) for s in sdk]


def test_proto_and_json_give_identical_spans(otel: Otel) -> None:
    sdk = rich_spans(otel)
    proto = otel.decode(sdk, "proto")
    js = otel.decode(sdk, "json")
    assert proto == js
    assert [s.sample_probability for s in proto] == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0]
    # the resource is shared by the spans of one ResourceSpans, equal across encodings
    assert proto[0].resource is proto[1].resource
    assert proto[0].resource == js[0].resource != proto[4].resource


def test_every_kind_and_status(otel: Otel) -> None:
    batch = otel.batch({"service.name": "s"})
    for kind in SpanKind:
        for status in StatusCode:
            batch.add(f"{kind.name}/{status.name}", T0, T0 + 1, kind=kind, status=status)
    for encoding in ("proto", "json"):
        got = {s.name: (s.kind, s.status_code) for s in otel.decode(batch.spans, encoding)}
        assert got == {
            f"{k.name}/{st.name}": (
                otlp_kind(k),
                int(trace_pb2.Status.StatusCode.Value("STATUS_CODE_" + st.name)),
            )
            for k in SpanKind
            for st in StatusCode
        }


def test_attribute_value_types_in_both_encodings(otel: Otel) -> None:
    values: dict[str, Any] = {
        "s": "text",
        "empty": "",
        "unicode": "caf\u00e9 \u2603",
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -(2**63),
        "big": 2**63 - 1,
        "pi": 3.25,
        "negzero": -0.0,
        "inf": float("inf"),
        "raw": b"\x00\x01\xfe",
        "list": ["a", "b"],  # arrays are not scalars: left out
    }
    batch = otel.batch({"service.name": "s"})
    batch.add("op", T0, T0 + 1, attributes=values)
    decoder = TwinDecoder(wanted_attributes=list(values))
    want = {k: v for k, v in values.items() if k not in ("raw", "list")}
    want["raw"] = b"\x00\x01\xfe".hex()
    for encoding in ("proto", "json"):
        (span,) = otel.decode(batch.spans, encoding, decoder)
        got = dict(span.attributes)
        assert got == want, encoding
        # type-strict: True is not 1, 0 is not False, 3.25 stays a float
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}, encoding


def test_only_wanted_attributes_are_projected(otel: Otel) -> None:
    sdk = rich_spans(otel)
    decoder = TwinDecoder(wanted_attributes=["http.route", "user.id"])
    for encoding in ("proto", "json"):
        got = [dict(s.attributes) for s in otel.decode(sdk, encoding, decoder)]
        assert got[0] == {"http.route": "/api/cart/{id}", "user.id": "u-1"}
        assert all(g == {} for g in got[1:])


def test_resource_without_service_name(otel: Otel) -> None:
    batch = otel.batch({"deployment.environment.name": "prod"})
    batch.add("op", T0, T0 + 1)
    for encoding in ("proto", "json"):
        (span,) = otel.decode(batch.spans, encoding)
        assert (span.resource.service, span.resource.environment) == ("unknown_service", "prod")


# ------------------------------------------------------------------- JSON mapping variants


def _walk(doc: Any, fn: Callable[[str, Any], tuple[str, Any]]) -> Any:
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            nk, nv = fn(k, _walk(v, fn))
            out[nk] = nv
        return out
    if isinstance(doc, list):
        return [_walk(x, fn) for x in doc]
    return doc


def _snake(key: str, value: Any) -> tuple[str, Any]:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(), value


_INT64_KEYS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue"}


def _int64_as_number(key: str, value: Any) -> tuple[str, Any]:
    return key, int(value) if key in _INT64_KEYS and isinstance(value, str) else value


def _enum_names(key: str, value: Any) -> tuple[str, Any]:
    if key == "kind" and isinstance(value, int):
        return key, trace_pb2.Span.SpanKind.Name(value)
    if key == "status" and isinstance(value, dict) and isinstance(value.get("code"), int):
        return key, dict(value, code=trace_pb2.Status.StatusCode.Name(value["code"]))
    return key, value


def _unknown_fields(key: str, value: Any) -> tuple[str, Any]:
    if isinstance(value, dict):
        return key, {**value, "futureField": {"nested": [1, "x"]}, "anotherOne": "2"}
    return key, value


def test_json_encoder_writes_strings_for_64_bit_integers(otel: Otel) -> None:
    # the premise of the next tests: the real encoder's choices
    doc = otel.json_doc(rich_spans(otel))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert isinstance(span["startTimeUnixNano"], str)
    assert isinstance(span["kind"], int)
    assert "resourceSpans" in doc and "traceId" in span


@pytest.mark.parametrize(
    "transform",
    [_snake, _int64_as_number, _enum_names, _unknown_fields],
    ids=["snake_case", "int64-as-number", "enum-names", "unknown-fields"],
)
def test_json_mapping_variants_decode_identically(
    otel: Otel, transform: Callable[[str, Any], tuple[str, Any]]
) -> None:
    sdk = rich_spans(otel)
    reference = otel.decode(sdk, "proto")
    doc = _walk(otel.json_doc(sdk), transform)
    assert doc != otel.json_doc(sdk)  # the transform changed something
    out = TwinDecoder().decode_json(json.dumps(doc).encode())
    assert out.rejected == []
    assert out.spans == reference


def test_json_all_variants_at_once(otel: Otel) -> None:
    sdk = rich_spans(otel)
    doc: Any = otel.json_doc(sdk)
    for t in (_unknown_fields, _enum_names, _int64_as_number, _snake):
        doc = _walk(doc, t)
    assert TwinDecoder().decode_json(json.dumps(doc)).spans == otel.decode(sdk, "proto")


def test_proto_ignores_unknown_fields(otel: Otel) -> None:
    sdk = rich_spans(otel)
    payload = otel.proto(sdk)
    # field 15 (varint 1) and field 14 (length-delimited "xyz") appended at the top level
    extended = payload + bytes([15 << 3 | 0, 1]) + bytes([14 << 3 | 2, 3]) + b"xyz"
    assert TwinDecoder().decode_proto(extended).spans == otel.decode(sdk, "proto")


def test_decode_dispatches_on_encoding(otel: Otel) -> None:
    sdk = rich_spans(otel)
    d = TwinDecoder()
    assert d.decode(otel.proto(sdk), "otlp_proto").spans == d.decode(otel.json(sdk), "otlp_json").spans
    with pytest.raises(ValueError, match="otlp_avro"):
        d.decode(b"", "otlp_avro")


def test_empty_payloads_decode_to_nothing(otel: Otel) -> None:
    d = TwinDecoder()
    assert d.decode_proto(b"") == ([], [])
    assert d.decode_json(b"{}") == ([], [])


# ------------------------------------------------------------------------------ malformed


def test_every_truncation_of_a_protobuf_record_raises_decode_error_naming_where(otel: Otel) -> None:
    batch = otel.batch(RESOURCE_A)
    batch.add("op", T0, T0 + MS, attributes={"code.file.path": "a/b.py", "http.route": "/x"}, events=1)
    payload = otel.proto(batch.spans)
    where = "otlp_spans/3@1234"
    for cut in range(1, len(payload)):
        with pytest.raises(DecodeError) as info:
            TwinDecoder().decode_proto(payload[:cut], where=where)
        err = info.value
        assert err.where == where
        assert str(err).startswith(where + ": ")
        assert err.reason == "decode_error"
        assert isinstance(err, PayloadError)


def test_garbage_protobuf_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="not a valid OTLP protobuf"):
        TwinDecoder().decode_proto(b"\xff\xff\xff\xff", where="x")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b[: len(b) // 2], "not valid JSON"),
        (lambda b: b"\xff" + b, "not valid JSON"),
        (lambda b: b"[" + b + b"]", "must be an object"),
        (lambda b: b'{"resourceSpans": ' + b + b"}", "resourceSpans must be a list"),
    ],
    ids=["truncated", "not-utf8", "array", "wrong-shape"],
)
def test_bad_json_raises_decode_error_naming_where(
    otel: Otel, corrupt: Callable[[bytes], bytes], message: str
) -> None:
    data = corrupt(otel.json(rich_spans(otel)))
    with pytest.raises(DecodeError, match=message) as info:
        TwinDecoder().decode_json(data, where="traces.jsonl:7")
    assert info.value.where == "traces.jsonl:7"


def test_json_wrong_shape_names_the_path(otel: Otel) -> None:
    doc = otel.json_doc(rich_spans(otel))
    doc["resourceSpans"][1]["scopeSpans"][0]["spans"][2]["status"] = "ERROR"
    with pytest.raises(DecodeError, match=r"resourceSpans\[1\]\.scopeSpans\[0\]\.spans\[2\]: status"):
        TwinDecoder().decode_json(json.dumps(doc))
    doc = otel.json_doc(rich_spans(otel))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["startTimeUnixNano"] = "yesterday"
    with pytest.raises(
        DecodeError, match=r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[1\]: startTimeUnixNano"
    ):
        TwinDecoder().decode_json(json.dumps(doc))


def _ids(spans: list[Span]) -> list[bytes]:
    return [s.span_id for s in spans]


def _proto_corrupt(otel: Otel, sdk: list[ReadableSpan], ri: int, pi: int, fn: Callable[[Any], None]) -> bytes:
    req = otel.proto_request(sdk)
    fn(req.resource_spans[ri].scope_spans[0].spans[pi])
    return bytes(req.SerializeToString())


def _json_corrupt(
    otel: Otel, sdk: list[ReadableSpan], ri: int, pi: int, fn: Callable[[dict[str, Any]], None]
) -> bytes:
    doc = otel.json_doc(sdk)
    fn(doc["resourceSpans"][ri]["scopeSpans"][0]["spans"][pi])
    return json.dumps(doc).encode()


def _swap_times_proto(sp: Any) -> None:
    sp.start_time_unix_nano, sp.end_time_unix_nano = sp.end_time_unix_nano, sp.start_time_unix_nano


def _swap_times_json(sp: dict[str, Any]) -> None:
    sp["startTimeUnixNano"], sp["endTimeUnixNano"] = sp["endTimeUnixNano"], sp["startTimeUnixNano"]


PROTO_CORRUPTIONS: dict[str, tuple[Callable[[Any], None], str]] = {
    "short-span-id": (lambda sp: setattr(sp, "span_id", sp.span_id[:4]), "bad_span_id"),
    "long-span-id": (lambda sp: setattr(sp, "span_id", sp.span_id + b"\x01"), "bad_span_id"),
    "zero-span-id": (lambda sp: setattr(sp, "span_id", bytes(8)), "bad_span_id"),
    "short-trace-id": (lambda sp: setattr(sp, "trace_id", sp.trace_id[:8]), "bad_trace_id"),
    "no-trace-id": (lambda sp: setattr(sp, "trace_id", b""), "bad_trace_id"),
    "zero-trace-id": (lambda sp: setattr(sp, "trace_id", bytes(16)), "bad_trace_id"),
    "short-parent": (lambda sp: setattr(sp, "parent_span_id", sp.span_id[:3]), "bad_parent_span_id"),
    "end-before-start": (_swap_times_proto, "end_before_start"),
}
JSON_CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "short-span-id": (lambda sp: sp.update(spanId=sp["spanId"][:6]), "bad_span_id"),
    "long-span-id": (lambda sp: sp.update(spanId=sp["spanId"] + "00"), "bad_span_id"),
    "zero-span-id": (lambda sp: sp.update(spanId="0" * 16), "bad_span_id"),
    "short-trace-id": (lambda sp: sp.update(traceId=sp["traceId"][:16]), "bad_trace_id"),
    "no-trace-id": (lambda sp: sp.pop("traceId"), "bad_trace_id"),
    "zero-trace-id": (lambda sp: sp.update(traceId="0" * 32), "bad_trace_id"),
    "short-parent": (lambda sp: sp.update(parentSpanId=sp["spanId"][:6]), "bad_parent_span_id"),
    "end-before-start": (_swap_times_json, "end_before_start"),
}


@pytest.mark.parametrize("case", sorted(PROTO_CORRUPTIONS))
@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_invalid_span_is_rejected_and_the_rest_get_through(otel: Otel, encoding: str, case: str) -> None:
    sdk = rich_spans(otel)
    good = otel.decode(sdk, "proto")
    ri, pi = 0, 1  # resource 0, span 1 ("SELECT cart")
    victim = good[1]
    if encoding == "proto":
        fn_p, reason = PROTO_CORRUPTIONS[case]
        data = _proto_corrupt(otel, sdk, ri, pi, fn_p)
        out = TwinDecoder().decode_proto(data, where="topic/0@99")
        path = f"resource_spans[{ri}].scope_spans[0].spans[{pi}]"
    else:
        fn_j, reason = JSON_CORRUPTIONS[case]
        data = _json_corrupt(otel, sdk, ri, pi, fn_j)
        out = TwinDecoder().decode_json(data, where="topic/0@99")
        path = f"resourceSpans[{ri}].scopeSpans[0].spans[{pi}]"
    (rejection,) = out.rejected
    assert rejection.reason == reason
    assert rejection.message.startswith(f"topic/0@99: {path}")
    if reason in ("bad_span_id", "bad_parent_span_id", "end_before_start") and case != "zero-span-id":
        # names the span by an id that is still valid
        assert victim.trace_id.hex() in rejection.message or victim.span_id.hex() in rejection.message
    if reason == "end_before_start":
        assert (
            str(victim.start_unix_nano) in rejection.message
            and str(victim.end_unix_nano) in rejection.message
        )
    # every other span, of both resources, still gets through unchanged
    assert out.spans == [s for s in good if s is not victim]


def test_several_rejections_in_one_record(otel: Otel) -> None:
    sdk = rich_spans(otel)
    req = otel.proto_request(sdk)
    req.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"
    req.resource_spans[1].scope_spans[0].spans[2].trace_id = b"\x01" * 17
    _swap_times_proto(req.resource_spans[1].scope_spans[0].spans[0])
    out = TwinDecoder().decode_proto(req.SerializeToString())
    assert [r.reason for r in out.rejected] == ["bad_span_id", "end_before_start", "bad_trace_id"]
    assert [s.name for s in out.spans] == ["SELECT cart", "enqueue", "sampled", "consume"]


def test_json_non_hex_id_fails_the_record(otel: Otel) -> None:
    data = _json_corrupt(otel, rich_spans(otel), 0, 1, lambda sp: sp.update(spanId="zz" * 8))
    with pytest.raises(
        DecodeError, match=r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[1\]: spanId is not hex"
    ):
        TwinDecoder().decode_json(data)


# ---------------------------------------------------------------------------------- files


def test_iter_length_prefixed_yields_frames_with_offsets(otel: Otel, tmp_path: Path) -> None:
    sdk = rich_spans(otel)
    frames = [otel.proto(sdk[:2]), otel.proto(sdk[2:5]), otel.proto(sdk[5:])]
    path = tmp_path / "spans.lpb"
    path.write_bytes(b"".join(len(f).to_bytes(4, "big") + f for f in frames))
    got = list(iter_length_prefixed(path))
    offsets = [0, 4 + len(frames[0]), 8 + len(frames[0]) + len(frames[1])]
    assert [w for w, _ in got] == [f"{path}@offset {o}" for o in offsets]
    assert [data for _, data in got] == frames
    decoded = [s for w, data in got for s in TwinDecoder().decode_proto(data, w).spans]
    assert decoded == otel.decode(sdk, "proto")


@pytest.mark.parametrize("tail", [3, 2, 1, "prefix-only-2", "body-short"])
def test_iter_length_prefixed_truncated_frame_names_its_offset(
    otel: Otel, tmp_path: Path, tail: object
) -> None:
    sdk = rich_spans(otel)
    first, second = otel.proto(sdk[:3]), otel.proto(sdk[3:])
    framed_first = len(first).to_bytes(4, "big") + first
    framed_second = len(second).to_bytes(4, "big") + second
    if tail == "prefix-only-2":
        truncated = framed_second[:2]  # not even a whole length prefix
    elif tail == "body-short":
        truncated = framed_second[:-1]
    else:
        assert isinstance(tail, int)
        truncated = framed_second[: 4 + tail]
    path = tmp_path / "spans.lpb"
    path.write_bytes(framed_first + truncated)
    it = iter_length_prefixed(path)
    first_where, data = next(it)
    assert first_where == f"{path}@offset 0"
    assert data == first  # everything before the bad frame has been yielded
    with pytest.raises(DecodeError) as info:
        next(it)
    assert info.value.where == f"{path}@offset {len(framed_first)}"
    assert "truncated" in str(info.value)


def test_iter_length_prefixed_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.lpb"
    path.write_bytes(b"")
    assert list(iter_length_prefixed(path)) == []


def test_iter_json_lines_names_file_and_line(otel: Otel, tmp_path: Path) -> None:
    sdk = rich_spans(otel)
    lines = [otel.json(sdk[:2]), otel.json(sdk[2:4]), otel.json(sdk[4:])]
    path = tmp_path / "traces.jsonl"
    # blank lines and CRLF line ends, as files written elsewhere have
    path.write_bytes(lines[0] + b"\n\n" + lines[1] + b"\r\n   \n" + lines[2] + b"\n")
    got = list(iter_json_lines(path))
    assert [w for w, _ in got] == [f"{path}:1", f"{path}:3", f"{path}:5"]
    assert [d for _, d in got] == lines
    decoded = [s for w, d in got for s in TwinDecoder().decode_json(d, w).spans]
    assert decoded == otel.decode(sdk, "proto")


def test_iter_json_lines_bad_line_is_named(otel: Otel, tmp_path: Path) -> None:
    sdk = rich_spans(otel)
    good = otel.json(sdk)
    path = tmp_path / "traces.jsonl"
    path.write_bytes(good + b"\n" + good[:-10] + b"\n" + good + b"\n")
    results: list[tuple[str, int | str]] = []
    for where, data in iter_json_lines(path):
        try:
            results.append((where, len(TwinDecoder().decode_json(data, where).spans)))
        except DecodeError as exc:
            results.append((where, str(exc)))
    assert results[0] == (f"{path}:1", len(sdk))
    assert results[2] == (f"{path}:3", len(sdk))
    assert results[1][0] == f"{path}:2"
    assert str(results[1][1]).startswith(f"{path}:2: not valid JSON")


def test_sniff_file_format(otel: Otel, tmp_path: Path) -> None:
    sdk = rich_spans(otel)
    j, p = tmp_path / "a.jsonl", tmp_path / "a.lpb"
    j.write_bytes(b"\n  " + otel.json(sdk) + b"\n")
    payload = otel.proto(sdk)
    p.write_bytes(len(payload).to_bytes(4, "big") + payload)
    assert (sniff_file_format(j), sniff_file_format(p)) == ("otlp_json", "otlp_proto")


def test_decoding_does_not_modify_the_input(otel: Otel) -> None:
    doc = otel.json_doc(rich_spans(otel))
    before = copy.deepcopy(doc)
    TwinDecoder().decode_json(json.dumps(doc))
    assert doc == before


# ---------------------------------------------------------------------- exceptions (span events)


class CartError(Exception):
    """A project exception: the SDK names it with its module (``tests...CartError``)."""


def _raised(exc: BaseException, depth: int = 3) -> BaseException:
    """``exc``, really raised through ``depth`` frames (so with a real traceback)."""

    def dive(n: int) -> None:
        if n == 0:
            raise exc
        dive(n - 1)

    try:
        dive(depth)
    except BaseException as caught:
        return caught
    raise AssertionError("not raised")


def _sdk_exceptions(sdk: ReadableSpan) -> list[tuple[str, str, str]]:
    """What the SDK recorded: the ``exception`` events' attributes."""
    out = []
    for ev in sdk.events:
        if ev.name == "exception":
            a = ev.attributes or {}
            out.append((a["exception.type"], a["exception.message"], a["exception.stacktrace"]))
    return out


def _tracer(batch: Any) -> Any:
    return batch.provider.get_tracer("prodloop.tests.exceptions")


def exception_spans(otel: Otel) -> tuple[list[ReadableSpan], list[BaseException]]:
    """Spans that recorded real exceptions (with other events around them), and spans that did not."""
    batch = otel.batch(RESOURCE_A)
    tracer = _tracer(batch)
    errors = [_raised(ValueError("quantity must be positive")), _raised(CartError("cart 42 is locked"), 6)]
    s = tracer.start_span("checkout", start_time=T0, attributes={"code.file.path": "services/cart/api.py"})
    s.add_event("validated", {"items": 3}, timestamp=T0 + 1)
    s.record_exception(errors[0], timestamp=T0 + 2)
    s.add_event("retrying", timestamp=T0 + 3)
    s.record_exception(errors[1], timestamp=T0 + 4)
    s.set_status(StatusCode.ERROR, "cart 42 is locked")
    s.end(end_time=T0 + 5 * MS)
    plain = tracer.start_span("plain", start_time=T0 + MS)
    plain.add_event("cache miss", timestamp=T0 + MS + 1)
    plain.end(end_time=T0 + 2 * MS)
    batch.add("no events", T0 + 2 * MS, T0 + 3 * MS, status=StatusCode.ERROR)
    return batch.spans, errors


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_recorded_exceptions_decode_as_the_sdk_recorded_them(otel: Otel, encoding: str) -> None:
    sdk, errors = exception_spans(otel)
    decoded = otel.decode(sdk, encoding)
    assert [s.name for s in decoded] == ["checkout", "plain", "no events"]
    checkout = decoded[0]
    assert [tuple(e) for e in checkout.exceptions] == _sdk_exceptions(sdk[0])
    # and the SDK recorded what the exceptions themselves say
    expected = [
        ("ValueError", "quantity must be positive", "".join(traceback.format_exception(errors[0]))),
        (f"{__name__}.CartError", "cart 42 is locked", "".join(traceback.format_exception(errors[1]))),
    ]
    assert [tuple(e) for e in checkout.exceptions] == expected
    assert "in dive" in checkout.exceptions[1].stacktrace
    assert decoded[1].exceptions == ()  # other events are ignored
    assert decoded[2].exceptions == ()  # an ERROR span with no exception and no code.stacktrace


def test_spans_without_exceptions_decode_with_none(otel: Otel) -> None:
    for encoding in ("proto", "json"):
        assert all(s.exceptions == () for s in otel.decode(rich_spans(otel), encoding))


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_code_stacktrace_fills_in(otel: Otel, encoding: str) -> None:
    batch = otel.batch(RESOURCE_B)
    tracer = _tracer(batch)
    where_thrown = "".join(traceback.format_stack())
    # an exception event without a stacktrace takes the span's code.stacktrace
    a = tracer.start_span("a", start_time=T0, attributes={"code.stacktrace": where_thrown})
    a.add_event("exception", {"exception.type": "TimeoutError", "exception.message": "upstream"}, T0 + 1)
    a.end(end_time=T0 + MS)
    # an ERROR span with code.stacktrace and no exception event gets one, with the status message
    b = tracer.start_span("b", start_time=T0, attributes={"code.stacktrace": where_thrown})
    b.set_status(StatusCode.ERROR, "payment declined")
    b.end(end_time=T0 + MS)
    # not an error, no exception event: code.stacktrace alone says nothing was thrown
    c = tracer.start_span("c", start_time=T0, attributes={"code.stacktrace": where_thrown})
    c.end(end_time=T0 + MS)
    # an event's own stacktrace wins
    d = tracer.start_span("d", start_time=T0, attributes={"code.stacktrace": where_thrown})
    d.record_exception(_raised(KeyError("sku")), timestamp=T0 + 1)
    d.end(end_time=T0 + MS)
    sdk = batch.spans
    decoded = {s.name: s for s in otel.decode(sdk, encoding)}
    assert [tuple(e) for e in decoded["a"].exceptions] == [("TimeoutError", "upstream", where_thrown)]
    assert [tuple(e) for e in decoded["b"].exceptions] == [("", "payment declined", where_thrown)]
    assert decoded["c"].exceptions == ()
    assert [tuple(e) for e in decoded["d"].exceptions] == _sdk_exceptions(sdk[3])
    assert decoded["d"].exceptions[0].stacktrace != where_thrown


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_what_is_kept_is_bounded(otel: Otel, encoding: str) -> None:
    batch = otel.batch(RESOURCE_A)
    tracer = _tracer(batch)
    many = tracer.start_span("many", start_time=T0)
    raised = [_raised(RuntimeError(f"attempt {i}")) for i in range(MAX_EXCEPTIONS_PER_SPAN + 4)]
    for i, exc in enumerate(raised):
        many.record_exception(exc, timestamp=T0 + i)
    many.end(end_time=T0 + MS)
    huge = tracer.start_span("huge", start_time=T0)
    big = _raised(RuntimeError("x" * (3 * MAX_STACKTRACE_CHARS)))
    huge.record_exception(big, timestamp=T0 + 1)
    huge.end(end_time=T0 + MS)
    sdk = batch.spans
    many_out, huge_out = otel.decode(sdk, encoding)
    recorded = _sdk_exceptions(sdk[0])
    assert len(recorded) == MAX_EXCEPTIONS_PER_SPAN + 4  # the SDK kept them all
    assert [tuple(e) for e in many_out.exceptions] == recorded[:MAX_EXCEPTIONS_PER_SPAN]
    (exc,) = huge_out.exceptions
    full = "".join(traceback.format_exception(big))
    assert len(full) > MAX_STACKTRACE_CHARS
    assert len(exc.stacktrace) <= MAX_STACKTRACE_CHARS
    # the head (where it began) and the tail (the innermost frame, in Python) survive
    assert exc.stacktrace.startswith(full[:4000])
    assert exc.stacktrace.endswith(full[-4000:])
    assert "characters cut" in exc.stacktrace
    assert exc.message == str(big)[: len(exc.message)] and 0 < len(exc.message) < len(str(big))


@pytest.mark.parametrize(
    "transform",
    [_snake, _int64_as_number, _enum_names, _unknown_fields],
    ids=["snake_case", "int64-as-number", "enum-names", "unknown-fields"],
)
def test_json_mapping_variants_keep_the_exceptions(
    otel: Otel, transform: Callable[[str, Any], tuple[str, Any]]
) -> None:
    sdk, _ = exception_spans(otel)
    reference = otel.decode(sdk, "proto")
    assert reference[0].exceptions
    doc = _walk(otel.json_doc(sdk), transform)
    out = TwinDecoder().decode_json(json.dumps(doc).encode())
    assert out.spans == reference
    assert [s.exceptions for s in out.spans] == [s.exceptions for s in reference]


def test_exceptions_survive_records_of_many_resources(otel: Otel) -> None:
    # the events view is indexed like the record: resource, scope, span
    extra, _ = exception_spans(otel)
    both = rich_spans(otel) + extra
    expected = {s.context.span_id.to_bytes(8, "big"): _sdk_exceptions(s) for s in both if s.context}
    assert sum(1 for v in expected.values() if v) == 1
    for encoding in ("proto", "json"):
        decoded = otel.decode(both, encoding)
        assert {s.span_id: [tuple(e) for e in s.exceptions] for s in decoded} == expected


def test_every_truncation_of_a_record_with_exceptions_raises_decode_error(otel: Otel) -> None:
    batch = otel.batch(RESOURCE_A)
    s = _tracer(batch).start_span("op", start_time=T0)
    s.record_exception(_raised(ValueError("v"), 1), timestamp=T0 + 1)
    s.end(end_time=T0 + MS)
    payload = otel.proto(batch.spans)
    for cut in range(1, len(payload)):
        with pytest.raises(DecodeError) as info:
            TwinDecoder().decode_proto(payload[:cut], where="w")
        assert info.value.where == "w"


def test_a_corrupt_exception_value_raises_decode_error(otel: Otel) -> None:
    batch = otel.batch(RESOURCE_A)
    s = _tracer(batch).start_span("op", start_time=T0)
    s.record_exception(_raised(ValueError("v"), 1), timestamp=T0 + 1)
    s.end(end_time=T0 + MS)
    sdk = batch.spans
    payload = otel.proto(sdk)
    value = AnyValue(string_value=_sdk_exceptions(sdk[0])[0][2]).SerializeToString()
    assert payload.count(value) == 1
    # same length, but the value's first tag has wire type 7, which does not exist
    corrupt = payload.replace(value, bytes([value[0] | 7]) + value[1:])
    with pytest.raises(DecodeError, match="not a valid AnyValue") as info:
        TwinDecoder().decode_proto(corrupt, where="kafka/0@9")
    assert info.value.where == "kafka/0@9"


def test_json_bad_events_name_the_path(otel: Otel) -> None:
    sdk, _ = exception_spans(otel)
    doc = otel.json_doc(sdk)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["events"] = {"name": "exception"}
    with pytest.raises(DecodeError, match=r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]: events"):
        TwinDecoder().decode_json(json.dumps(doc))
    doc = otel.json_doc(sdk)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["events"][1]["attributes"] = "boom"
    with pytest.raises(DecodeError, match=r"spans\[0\]: attributes must be a list"):
        TwinDecoder().decode_json(json.dumps(doc))
