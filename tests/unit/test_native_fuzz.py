"""The differential fuzz target of the native ``otlp_proto`` decoder, bounded for ``make test``
(``scripts/fuzz_decoder.py --seconds N`` runs it longer): every input gets the same outcome on
both paths, no input panics, and the inputs reach every outcome they should."""

from __future__ import annotations

import pytest

from collector.processing import native
from tests.support import decoder_fuzz

if not native.AVAILABLE:
    pytest.skip(
        "the native path is tested in test_native.py, which fails without it", allow_module_level=True
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_both_decoders_agree_on_every_fuzzed_input(seed: int) -> None:
    report = decoder_fuzz.run(seed, inputs=25_000)
    assert not report.differences, f"{report.line()}\nthe first:\n{report.differences[0]}"
    assert report.panics == 0, report.line()
    # the inputs reach what they should: refused records, accepted spans, every rejection reason
    assert report.refused > 1000 and report.accepted > 1000 and report.spans > 10_000, report.line()
    reasons = {"bad_trace_id", "bad_span_id", "bad_parent_span_id", "end_before_start", "time_out_of_range"}
    assert set(report.rejections) == reasons, report.line()
