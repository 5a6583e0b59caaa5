"""The OTLP decoder against golden files written by the OpenTelemetry Collector's own marshalers.

``tests/data/golden/`` is produced by ``tests/data/golden/gen`` (Go, collector pdata
``ptrace.JSONMarshaler`` / ``ptrace.ProtoMarshaler``; ``make golden`` regenerates it).
``expected.json`` describes every span as the Go program built it, walked from the pdata
structure, so these tests compare prodloop's decoder with the real producer, not with itself.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from attribution.model import WANTED_ATTRIBUTES, AttrValue, Span
from collector.codec.framing import iter_json_lines, iter_length_prefixed
from collector.codec.otlp import OtlpDecoder
from collector.codec.results import Decoded
from tests.support.twin import TwinDecoder

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
EXPECTED: dict[str, Any] = json.loads((GOLDEN / "expected.json").read_text(encoding="utf-8"))
REQUESTS: dict[str, dict[str, Any]] = {r["id"]: r for r in EXPECTED["requests"]}
FILES: dict[str, list[str]] = EXPECTED["files"]

# Every span attribute key in the golden data, so that values of every type reach the decoder.
ALL_SPAN_KEYS: tuple[str, ...] = tuple(
    sorted({k for r in EXPECTED["requests"] for s in r["spans"] for k in s["attributes"]})
)
SCALAR_TYPES = ("string", "bool", "int", "double")

Typed = Mapping[str, Any]  # {"type": ..., "value": ...} as written by the generator


# ------------------------------------------------------------------------------- expectations


def scalar(tv: Typed) -> AttrValue:
    t = tv["type"]
    if t == "string":
        return str(tv["value"])
    if t == "bool":
        return bool(tv["value"])
    if t == "int":
        return int(tv["value"])  # decimal string: int64-safe
    if t == "double":
        return float(tv["value"])  # a number, or "NaN" / "Infinity" / "-Infinity"
    raise AssertionError(f"not a scalar: {tv}")


def norm(value: object) -> tuple[str, str]:
    """Exact, type-strict, NaN-safe comparison key: True != 1, 2.0 != 2, nan == nan."""
    return type(value).__name__, repr(value)


def check_non_scalar(
    tv: Typed, got: Mapping[str, AttrValue], key: str, problems: list[str], ctx: str
) -> None:
    """bytes/array/kvlist/empty: AttrValue cannot hold them; the decoder may drop or stringify them."""
    if key not in got:
        return
    value = got[key]
    if tv["type"] == "bytes":
        raw = base64.b64decode(tv["value"])
        if value not in (raw.hex(), tv["value"]):
            problems.append(f"{ctx}: {key} (bytes {raw!r}): got {value!r}, expected absent, hex or base64")
    elif not isinstance(value, str):
        problems.append(f"{ctx}: {key} ({tv['type']}): got {value!r}, expected absent or a str")


def check_attributes(
    expected: Mapping[str, Typed],
    got: Mapping[str, AttrValue],
    wanted: frozenset[str],
    problems: list[str],
    ctx: str,
) -> None:
    extra = sorted(set(got) - set(expected))
    if extra:
        problems.append(f"{ctx}: keys not in the data: {extra}")
    unwanted = sorted(set(got) - wanted)
    if unwanted:
        problems.append(f"{ctx}: keys outside the projection: {unwanted}")
    for key, tv in expected.items():
        if key not in wanted:
            continue
        if tv["type"] not in SCALAR_TYPES:
            check_non_scalar(tv, got, key, problems, ctx)
            continue
        want = scalar(tv)
        if key not in got:
            problems.append(f"{ctx}: {key}: missing, expected {want!r}")
        elif norm(got[key]) != norm(want):
            problems.append(f"{ctx}: {key}: got {norm(got[key])}, expected {norm(want)}")


def expected_resource(attrs: Mapping[str, Typed]) -> dict[str, str]:
    def s(key: str) -> str:
        tv = attrs.get(key)
        return str(tv["value"]) if tv is not None and tv["type"] == "string" else ""

    return {
        "service": s("service.name") or "unknown_service",
        "environment": s("deployment.environment.name") or s("deployment.environment"),
        "service_version": s("service.version"),
        "vcs_revision": s("vcs.ref.head.revision"),
        "repository": s("vcs.repository.url.full"),
    }


def compare_span(
    span: Span, exp: Mapping[str, Any], wanted: frozenset[str], problems: list[str], ctx: str
) -> None:
    ctx = f"{ctx} span {exp['span_id']} ({exp['name']!r})"
    fields: list[tuple[str, object, object]] = [
        ("trace_id", span.trace_id.hex(), exp["trace_id"]),
        ("span_id", span.span_id.hex(), exp["span_id"]),
        ("parent_span_id", span.parent_span_id.hex(), exp["parent_span_id"]),
        ("name", span.name, exp["name"]),
        ("kind", span.kind, exp["kind"]),
        ("start_unix_nano", span.start_unix_nano, int(exp["start_unix_nano"])),
        ("end_unix_nano", span.end_unix_nano, int(exp["end_unix_nano"])),
        ("status_code", span.status_code, exp["status_code"]),
    ]
    if not isinstance(span.parent_span_id, bytes):
        problems.append(f"{ctx}: parent_span_id is {type(span.parent_span_id).__name__}, expected bytes")
    for field, got, want in fields:
        if norm(got) != norm(want):
            problems.append(f"{ctx}: {field}: got {got!r}, expected {want!r}")
    p_want = float(exp["sample_probability"])
    if not (
        isinstance(span.sample_probability, float)
        and math.isclose(span.sample_probability, p_want, rel_tol=1e-12)
    ):
        problems.append(
            f"{ctx}: sample_probability: got {span.sample_probability!r}, expected {p_want!r} "
            f"(trace_state {exp['trace_state']!r}, valid={exp['trace_state_valid']})"
        )
    res_attrs: Mapping[str, Typed] = exp["resource"]["attributes"]
    for field, want in expected_resource(res_attrs).items():
        got = getattr(span.resource, field)
        if got != want:
            problems.append(f"{ctx}: resource.{field}: got {got!r}, expected {want!r}")
    check_attributes(res_attrs, span.resource.attributes, frozenset(res_attrs), problems, f"{ctx} resource")
    check_attributes(exp["attributes"], span.attributes, wanted, problems, ctx)


def compare(res: Decoded, request_id: str, wanted: frozenset[str], where: str) -> list[str]:
    exp_spans: list[dict[str, Any]] = REQUESTS[request_id]["spans"]
    problems = [f"{where}: rejected: {r}" for r in res.rejected]
    got_ids = [s.span_id.hex() for s in res.spans]
    want_ids = [s["span_id"] for s in exp_spans]
    if got_ids != want_ids:
        problems.append(f"{where}: spans (in order): got {got_ids}, expected {want_ids}")
    by_id = {s.span_id.hex(): s for s in res.spans}
    for exp in exp_spans:
        span = by_id.get(exp["span_id"])
        if span is not None:
            compare_span(span, exp, wanted, problems, where)
    return problems


# ------------------------------------------------------------------------------- payloads


def payloads(name: str) -> Iterator[tuple[str, bytes]]:
    path = GOLDEN / name
    if name.endswith(".jsonl"):
        yield from iter_json_lines(path)
    elif name.endswith(".lpb"):
        yield from iter_length_prefixed(path)
    else:
        yield name, path.read_bytes()


def decode(dec: OtlpDecoder, name: str, data: bytes, where: str) -> Decoded:
    if name.endswith((".json", ".jsonl")):
        return dec.decode_json(data, where=where)
    return dec.decode_proto(data, where=where)


def snapshot(span: Span) -> tuple[object, ...]:
    """Everything a Span carries, comparable exactly (NaN-safe, type-strict)."""
    r = span.resource
    return (
        r.service,
        r.environment,
        r.service_version,
        r.vcs_revision,
        r.repository,
        sorted((k, norm(v)) for k, v in r.attributes.items()),
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        norm(span.kind),
        norm(span.start_unix_nano),
        norm(span.end_unix_nano),
        norm(span.status_code),
        sorted((k, norm(v)) for k, v in span.attributes.items()),
        norm(span.sample_probability),
    )


# ------------------------------------------------------------------------------- tests


def test_golden_files_are_consistent() -> None:
    lines = [p for _, p in iter_json_lines(GOLDEN / "golden.jsonl")]
    records = [p for _, p in iter_length_prefixed(GOLDEN / "golden.lpb")]
    assert lines[0] == (GOLDEN / "golden.json").read_bytes()
    assert records[0] == (GOLDEN / "golden.pb").read_bytes()
    assert [len(x) for x in lines] == [REQUESTS[i]["json_length"] for i in FILES["golden.jsonl"]]
    assert [len(x) for x in records] == [REQUESTS[i]["pb_length"] for i in FILES["golden.lpb"]]


def test_file_readers_name_where() -> None:
    wheres = [w for w, _ in iter_json_lines(GOLDEN / "golden.jsonl")]
    assert [w.rsplit("/", 1)[-1] for w in wheres] == ["golden.jsonl:1", "golden.jsonl:2", "golden.jsonl:3"]
    offsets, offset = [], 0
    for rid in FILES["golden.lpb"]:
        offsets.append(f"golden.lpb@offset {offset}")
        offset += 4 + REQUESTS[rid]["pb_length"]
    wheres = [w for w, _ in iter_length_prefixed(GOLDEN / "golden.lpb")]
    assert [w.rsplit("/", 1)[-1] for w in wheres] == offsets


@pytest.mark.parametrize("name", sorted(FILES))
def test_decodes_golden_file_as_built(name: str) -> None:
    wanted = frozenset(ALL_SPAN_KEYS)
    dec = TwinDecoder(wanted_attributes=ALL_SPAN_KEYS)
    found = list(payloads(name))
    assert len(found) == len(FILES[name])
    problems: list[str] = []
    for (where, data), request_id in zip(found, FILES[name], strict=True):
        problems += compare(decode(dec, name, data, where), request_id, wanted, where)
    assert problems == []


@pytest.mark.parametrize("name", sorted(FILES))
def test_default_projection(name: str) -> None:
    wanted = frozenset(WANTED_ATTRIBUTES)
    dec = TwinDecoder()
    problems: list[str] = []
    for (where, data), request_id in zip(payloads(name), FILES[name], strict=True):
        problems += compare(decode(dec, name, data, where), request_id, wanted, where)
    assert problems == []


@pytest.mark.parametrize(
    ("json_name", "proto_name"), [("golden.json", "golden.pb"), ("golden.jsonl", "golden.lpb")]
)
def test_json_and_proto_give_identical_spans(json_name: str, proto_name: str) -> None:
    dec = TwinDecoder(wanted_attributes=ALL_SPAN_KEYS)
    for (jw, js), (pw, pb) in zip(payloads(json_name), payloads(proto_name), strict=True):
        from_json = dec.decode_json(js, where=jw)
        from_proto = dec.decode_proto(pb, where=pw)
        assert [snapshot(s) for s in from_json.spans] == [snapshot(s) for s in from_proto.spans], (jw, pw)
        assert from_json.rejected == from_proto.rejected == []
