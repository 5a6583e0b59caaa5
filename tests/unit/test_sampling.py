"""Sampling probability (attribution/sampling.py): ``ot=th:`` thresholds and a SampleRate attribute.

Thresholds follow the OpenTelemetry "TraceState: Probability Sampling" specification: the
rejection threshold is the hex value right-padded to 14 digits, the keep probability is
``1 - T / 2**56``.  The spec's own examples are used as expectations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

from attribution.sampling import probability_from_sample_rate, probability_from_tracestate
from tests.support.twin import TwinDecoder

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000


@pytest.mark.parametrize(
    ("trace_state", "probability"),
    [
        ("ot=th:0", 1.0),  # always kept
        ("ot=th:8", 0.5),
        ("ot=th:c", 0.25),
        ("ot=th:4", 0.75),
        ("ot=th:e", 0.125),
        ("ot=th:80000000000000", 0.5),  # the full 14 digits
        ("ot=th:ff", 1 / 256),
        ("ot=th:fffffffffffff", 1 / 2**52),
        ("ot=th:ffffffffffffff", 1 / 2**56),  # the smallest representable probability
        # other sub-keys and other vendors around it
        ("ot=rv:abcdef01234567;th:8", 0.5),
        ("ot=th:c;rv:abcdef01234567", 0.25),
        ("vendor=x,ot=th:8", 0.5),
        ("vendor=x, ot=th:c ,other=y", 0.25),
    ],
)
def test_threshold_to_probability(trace_state: str, probability: float) -> None:
    assert probability_from_tracestate(trace_state) == probability


@pytest.mark.parametrize(
    ("trace_state", "approx"),
    [
        # the specification's examples (probability -> threshold)
        ("ot=th:aaab", 1 / 3),
        ("ot=th:fd70a4", 0.01),
        ("ot=th:ffbe77", 0.001),
    ],
)
def test_spec_examples(trace_state: str, approx: float) -> None:
    assert probability_from_tracestate(trace_state) == pytest.approx(approx, rel=1e-4)


@pytest.mark.parametrize(
    "trace_state",
    [
        "",
        "vendor=x",
        "ot=rv:abcdef01234567",  # randomness only, no threshold
        "ot=th:",  # empty
        "ot=th:xyz",  # not hex
        "ot=th:fffffffffffffff",  # 15 digits: too long
        "ot=th",  # no colon
        "ot",  # no '='
        "xot=th:8",  # another key
        "ot=thx:8",
    ],
)
def test_missing_or_invalid_threshold_means_probability_one(trace_state: str) -> None:
    assert probability_from_tracestate(trace_state) == 1.0


@pytest.mark.parametrize("trace_state", ["ot=th:-1", "ot=th:+8", "ot=th:8_0", "ot=th: 8"])
def test_threshold_that_is_not_plain_hex_means_probability_one(trace_state: str) -> None:
    assert probability_from_tracestate(trace_state) == 1.0


def test_probability_is_always_in_zero_one() -> None:
    for digits in range(1, 15):
        for lead in "0123456789abcdef":
            p = probability_from_tracestate(f"ot=th:{lead * digits}")
            assert 0.0 < p <= 1.0


def test_more_threshold_digits_mean_finer_probabilities() -> None:
    # th:8, th:80, th:800 ... are all exactly one half
    assert {probability_from_tracestate("ot=th:" + "8" + "0" * n) for n in range(14)} == {0.5}


@pytest.mark.parametrize(
    ("value", "probability"),
    [
        (4, 0.25),
        ("4", 0.25),
        (4.0, 0.25),
        (10, 0.1),
        (3, 1 / 3),
        (1, 1.0),
        ("1", 1.0),
    ],
)
def test_sample_rate_is_one_in_n(value: object, probability: float) -> None:
    assert probability_from_sample_rate(value) == probability


@pytest.mark.parametrize("value", [0, 0.5, -4, "abc", "", None, math.inf, math.nan, "nan", [4]])
def test_invalid_sample_rate_means_probability_one(value: object) -> None:
    assert probability_from_sample_rate(value) == 1.0


# ------------------------------------------------------------------- end to end (real SDK)


def test_decoder_reads_the_threshold_from_the_sdk_tracestate(otel: Otel) -> None:
    batch = otel.batch({"service.name": "checkout"})
    batch.add("kept-half", T0, T0 + 1, trace_state="ot=th:8")
    batch.add("kept-quarter", T0, T0 + 1, trace_state="vendor=a,ot=rv:abcdef01234567;th:c")
    batch.add("plain", T0, T0 + 1)
    batch.add("bad", T0, T0 + 1, trace_state="ot=th:zz")
    for encoding in ("proto", "json"):
        got = {s.name: s.sample_probability for s in otel.decode(batch.spans, encoding)}
        assert got == {"kept-half": 0.5, "kept-quarter": 0.25, "plain": 1.0, "bad": 1.0}, encoding


def test_decoder_prefers_the_sample_rate_attribute(otel: Otel) -> None:
    batch = otel.batch({"service.name": "checkout"})
    batch.add("rate-and-threshold", T0, T0 + 1, attributes={"SampleRate": 10}, trace_state="ot=th:8")
    batch.add("rate-as-string", T0, T0 + 1, attributes={"SampleRate": "4"})
    batch.add("threshold-only", T0, T0 + 1, trace_state="ot=th:c")
    batch.add("bad-rate", T0, T0 + 1, attributes={"SampleRate": "often"})
    decoder = TwinDecoder(sample_rate_attribute="SampleRate")
    for encoding in ("proto", "json"):
        got = {s.name: s.sample_probability for s in otel.decode(batch.spans, encoding, decoder)}
        assert got == {
            "rate-and-threshold": 0.1,
            "rate-as-string": 0.25,
            "threshold-only": 0.25,
            "bad-rate": 1.0,
        }
    # without the setting the attribute is not even read
    plain = {s.name: s.sample_probability for s in otel.decode(batch.spans)}
    assert plain["rate-and-threshold"] == 0.5
    assert plain["rate-as-string"] == 1.0


@pytest.mark.parametrize("native_path", [False, True])
def test_a_smallest_probability_weighs_at_most_one_in_2_to_the_32(otel: Otel, native_path: bool) -> None:
    """th:ffffffffffffff (2^-56, valid by the specification) and a SampleRate of 10^30 would weigh
    more than an int64 holds: they weigh 1 in 2^32, in the aggregates and the trace buffer alike,
    and a CPU-time attribute of infinity is not counted (neither stops the batch)."""
    from collector.processing import native
    from collector.processing.batch import BatchProcessor, ProcessorConfig

    if native_path and not native.AVAILABLE:
        pytest.fail("the prodloop_native extension is not installed: run make setup")
    batch = otel.batch({"service.name": "checkout"})
    batch.add("tiny-threshold", T0, T0 + 10, trace_state="ot=th:ffffffffffffff")
    batch.add("huge-rate", T0, T0 + 10, attributes={"SampleRate": 1e30, "cpu.time": math.inf})
    cfg = ProcessorConfig(
        sample_rate_attribute="SampleRate", cpu_time_attribute="cpu.time", native=native_path
    )
    proc = BatchProcessor(cfg, [])
    proc.add(otel.decode(batch.spans, decoder=proc.decoder), 0)
    proc.complete_traces()
    rows, _ = proc.drain()
    assert sum(r.spans for r in rows) == 2
    cap = 1000 * 2**32
    assert sum(r.spans_adjusted_milli for r in rows) == 2 * cap
    assert sum(r.self_spans_adjusted_milli for r in rows) == 2 * cap
    assert sum(r.duration_adjusted_sum_ns for r in rows) == 2 * 10 * 2**32
    assert sum(r.cpu_time_sum_ns for r in rows) == 0
