"""A differential fuzz target for the native ``otlp_proto`` decoder, over its Python binding.

Each input goes to both decoders (:mod:`tests.support.twin`): they must agree on it: both
refuse the record, or both give identical spans and rejections.  Inputs are real records, made
by the OpenTelemetry SDK and its OTLP encoder from random span specs (attributes of every
type, events, exception events, statuses, kinds, links, tracestates, several resources, times
at the edges), some with their ids or times then corrupted through the real message classes,
and then mutated at the byte level (bit flips, byte and varint edits, cuts, splices, repeats,
inserted fields, deep groups).  A panic of the native decoder is counted, and is a difference.

``scripts/fuzz_decoder.py --seconds N`` runs it by hand; ``tests/unit/test_native_fuzz.py``
runs a bounded number of inputs in ``make test``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from attribution.model import WANTED_ATTRIBUTES, TimeBounds
from collector.codec.otlp import OtlpDecoder
from collector.codec.results import Decoded
from collector.errors import DecodeError
from collector.processing import native
from tests.support.sdk_requests import SeededIds
from tests.support.twin import compare, outcome

T0 = 1_700_000_000 * 10**9
EXTRA_KEYS = ("SampleRate", "cpu.time", "http.request.method", "user.id", "code.stacktrace")
KEYS = (*WANTED_ATTRIBUTES, *EXTRA_KEYS)
PANIC = "the native otlp_proto decoder failed"


def _value(rng: random.Random) -> Any:
    return rng.choice(
        [
            lambda: rng.choice(["", "a", "services/cart/api.py", "é ☃ 𝄞", "x" * rng.randint(1, 300)]),
            lambda: rng.choice([True, False]),
            lambda: rng.choice([0, 1, -1, 2**31, 2**63 - 1, -(2**63), rng.randint(-(10**6), 10**6)]),
            lambda: rng.choice([0.0, -0.0, 1.5, 1e30, float("inf"), float("nan"), 0.25]),
            lambda: [rng.randint(0, 9) for _ in range(rng.randint(0, 3))],
            lambda: [rng.choice(["a", "b"]) for _ in range(rng.randint(1, 3))],
        ]
    )()


def _time(rng: random.Random) -> tuple[int, int]:
    if rng.random() < 0.7:
        start = T0 + rng.randint(0, 10**12)
        return start, start + rng.randint(0, 10**9)
    start = rng.choice([T0, T0 + rng.randint(0, 10**12), 0, 1, 2**63 - 1, rng.randint(0, 2**64 - 1)])
    end = rng.choice([start, start + rng.randint(0, 10**9), start - 1, 2**64 - 1, 0])
    return start, max(0, min(end, 2**64 - 1))


def sdk_record(rng: random.Random) -> bytes:
    """One ``ExportTraceServiceRequest`` made by the SDK's encoder from a random spec."""
    exporter = InMemorySpanExporter()
    spans: list[ReadableSpan] = []
    ids = SeededIds(rng.getrandbits(32))
    for _ in range(rng.choice([1, 1, 2, 3])):
        res: dict[str, Any] = {"service.name": rng.choice(["cart", "pay", ""])}
        if rng.random() < 0.5:
            res["deployment.environment.name"] = rng.choice(["prod", "staging"])
        if rng.random() < 0.3:
            res["service.version"] = _value(rng)
        provider = TracerProvider(
            resource=Resource(res), sampler=sampling.ALWAYS_ON, id_generator=ids, shutdown_on_exit=False
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("fuzz")
        parents: list[Any] = []
        for _ in range(rng.randint(0, 8)):
            attrs = {rng.choice(KEYS): _value(rng) for _ in range(rng.randint(0, 8))}
            if rng.random() < 0.1:
                attrs["SampleRate"] = rng.choice([1, 4, 1e30, 0, -3, "8", "x"])
            ctx = None
            if parents and rng.random() < 0.6:
                ctx = trace_api.set_span_in_context(rng.choice(parents))
            elif rng.random() < 0.2:
                state = TraceState(
                    [("ot", rng.choice(["th:8", "th:0", "th:ffffffffffffff", "th:zz", "rv:1"]))]
                )
                parent_ctx = SpanContext(
                    ids.generate_trace_id(), ids.generate_span_id(), True, TraceFlags(1), state
                )
                ctx = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent_ctx))
            start, end = _time(rng)
            links = []
            if rng.random() < 0.1:
                links = [Link(SpanContext(ids.generate_trace_id(), ids.generate_span_id(), True), {"k": 1})]
            span = tracer.start_span(
                rng.choice(["GET /cart", "", "é", "load"]),
                context=ctx,
                kind=rng.choice(list(SpanKind)),
                attributes=attrs,
                start_time=start,
                links=links,
            )
            for _ in range(rng.choice([0, 0, 0, 1, 2])):
                if rng.random() < 0.6:
                    ev = {
                        k: _value(rng)
                        for k in rng.sample(
                            ["exception.type", "exception.message", "exception.stacktrace"], 2
                        )
                    }
                    span.add_event("exception", ev, timestamp=start)
                else:
                    span.add_event(rng.choice(["retry", ""]), {"n": _value(rng)}, timestamp=start)
            if rng.random() < 0.3:
                code = rng.choice([StatusCode.ERROR, StatusCode.OK, StatusCode.UNSET])
                span.set_status(Status(code, rng.choice(["boom", ""]) if code == StatusCode.ERROR else None))
            span.end(end_time=end)
            parents.append(span)
        spans.extend(exporter.get_finished_spans())
        exporter.clear()
    msg = encode_spans(spans)
    if rng.random() < 0.3:
        _corrupt_fields(rng, msg)
    return bytes(msg.SerializeToString())


def _corrupt_fields(rng: random.Random, msg: Any) -> None:
    """Ids, times and statuses no SDK writes, and duplicate spans, through the real message classes."""
    for rs in msg.resource_spans:
        for ss in rs.scope_spans:
            for sp in list(ss.spans):
                if rng.random() < 0.5:
                    continue
                how = rng.randrange(10)
                if how == 0:
                    sp.trace_id = bytes(16)
                elif how == 1:
                    sp.trace_id = sp.trace_id[: rng.randint(0, 17)]
                elif how == 2:
                    sp.span_id = rng.choice([bytes(8), b"", b"\x01" * 9])
                elif how == 3:
                    sp.parent_span_id = b"\x01" * rng.choice([1, 7, 9, 16])
                elif how == 4:
                    sp.start_time_unix_nano, sp.end_time_unix_nano = (
                        sp.end_time_unix_nano,
                        sp.start_time_unix_nano,
                    )
                elif how == 5:
                    sp.status.code = rng.choice([2, 7, -1])
                    sp.status.message = rng.choice(["", "bad"])
                elif how == 6:
                    sp.kind = rng.choice([-5, 99, 2**31 - 1])
                elif how == 7:
                    sp.trace_state = rng.choice(["ot=th:c", "ot=th:", "garbage", "ot=th:1;rv:2"])
                elif how == 8:
                    sp.flags = rng.getrandbits(32)
                else:
                    ss.spans.add().CopyFrom(sp)  # a duplicate span, as a retried export sends


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """``data`` with one to four byte-level edits."""
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        how = rng.randrange(11)
        i = rng.randrange(len(b) + 1)
        if how == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif how == 1 and b:
            b[min(i, len(b) - 1)] = rng.choice([0, 0x80, 0xFF, 0x7F, 0x0A, 0x12, 0x08, 0x01])
        elif how == 2:
            del b[i : i + rng.choice([1, 2, 8, 40])]
        elif how == 3:
            b[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 5])))
        elif how == 4:
            del b[i:]
        elif how == 5 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 64)]  # repeat a piece (a repeated field, a longer length)
        elif how == 6:
            other = rng.choice(corpus)
            k = rng.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[k:])  # splice
        elif how == 7:
            # a field of any number and wire type, well formed or not
            field_no, wt = (
                rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 15, 16, rng.randint(1, 2**29 - 1)]),
                rng.randrange(8),
            )
            body = {0: _varint(rng.getrandbits(70)), 1: bytes(8), 2: _varint(3) + b"abc", 5: bytes(4)}.get(
                wt, b""
            )
            b[i:i] = _varint(field_no << 3 | wt) + body
        elif how == 8:
            n = rng.choice([1, 50, 96, 97, 98, 99, 100, 101])
            g = rng.randint(1, 20)
            b[i:i] = _varint(g << 3 | 3) * n + _varint(g << 3 | 4) * n
        elif how == 9:
            b[i:i] = rng.choice([b"\x80" * rng.randint(1, 11) + b"\x00", b"\xff" * 10 + b"\x01", b"\x00"])
        elif b:
            # a string's bytes made invalid UTF-8
            j = min(i, len(b) - 1)
            b[j : j + 2] = rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"])
    return bytes(b)


@dataclass
class Report:
    inputs: int = 0
    refused: int = 0
    accepted: int = 0
    spans: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    panics: int = 0
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.inputs:,} inputs in {self.seconds:.1f} s: {self.refused:,} refused by both, "
            f"{self.accepted:,} accepted by both ({self.spans:,} spans, rejections {dict(self.rejections)}), "
            f"{self.panics} native panics, {len(self.differences)} differences"
        )


def decoders(rng: random.Random) -> tuple[OtlpDecoder, OtlpDecoder, int | None]:
    """A Python and a native decoder of one random configuration, and a reference time."""
    bounds = rng.choice([TimeBounds(), TimeBounds(max_age_ns=3600 * 10**9, max_future_ns=600 * 10**9)])
    kw: dict[str, Any] = {
        "wanted_attributes": rng.choice([WANTED_ATTRIBUTES, KEYS]),
        "sample_rate_attribute": rng.choice([None, "SampleRate"]),
        "time_bounds": bounds,
    }
    reference = rng.choice([None, T0, T0 + 5 * 10**11])
    return OtlpDecoder(**kw), OtlpDecoder(**kw, native=native.proto_decoder(True)), reference


def run(
    seed: int,
    *,
    inputs: int | None = None,
    seconds: float | None = None,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Fuzz until ``inputs`` inputs or ``seconds`` have passed; the report of what happened."""
    assert native.AVAILABLE, "the prodloop_native extension is not installed: run make setup"
    rng = random.Random(seed)
    corpus = [sdk_record(rng) for _ in range(40)]
    configs = [decoders(rng) for _ in range(4)]
    report = Report()
    began = time.monotonic()
    while (inputs is None or report.inputs < inputs) and (
        seconds is None or time.monotonic() - began < seconds
    ):
        if rng.random() < 0.05:
            corpus[rng.randrange(len(corpus))] = sdk_record(rng)
        data = rng.choice(corpus)
        if rng.random() < 0.7:
            data = mutate(rng, data, corpus)
        py, nat, reference = rng.choice(configs)
        where = f"fuzz#{report.inputs}"
        want = outcome(py.decode_proto, data, where, reference)
        got = outcome(nat.decode_proto, data, where, reference)
        report.inputs += 1
        if isinstance(got, DecodeError) and PANIC in str(got):
            report.panics += 1
        diff = compare(want, got, where)
        if diff is not None:
            report.differences.append(f"{data.hex()}\n{diff}")
        elif isinstance(want, Decoded):
            report.accepted += 1
            report.spans += len(want.spans)
            report.rejections.update(r.reason for r in want.rejected)
        else:
            report.refused += 1
        if progress is not None and report.inputs % 10_000 == 0:
            report.seconds = time.monotonic() - began
            progress(report)
    report.seconds = time.monotonic() - began
    return report
