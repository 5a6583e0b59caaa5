"""Comparing `query modules` rows with the demo shop's ground truth (built by construction)."""

from __future__ import annotations

from typing import Any

from attribution.sketch import exact_quantile
from collector.demo.shop import Traffic


def assert_matches_truth(
    rows: list[dict[str, Any]], traffic: Traffic, *, quantiles: bool = True, factor: int = 1
) -> None:
    got = {
        (r["service"], r["environment"], r["module"], tuple(r["owners"]), r["commit_sha"]): r for r in rows
    }
    truth = traffic.truth
    missing = sorted(set(truth) - set(got))
    extra = sorted(set(got) - set(truth))
    assert not missing and not extra, f"missing {missing[:3]} extra {extra[:3]}"
    total_got = sum(r["spans"] for r in rows)
    total_truth = sum(t.spans for t in truth.values()) * factor
    assert total_got == total_truth, f"{total_got} spans stored, ground truth {total_truth}"
    for key, t in truth.items():
        row = got[key]
        assert row["spans"] == t.spans * factor, (key, row["spans"], t.spans)
        assert row["errors"] == t.errors * factor, (key, row["errors"], t.errors)
        assert abs(row["spans_adjusted"] - t.spans_adjusted * factor) < 1e-6, key
        if quantiles and factor == 1:
            d = sorted(t.durations_ns)
            for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
                exact = exact_quantile(d, q)
                assert abs(row[col] * 1e6 - exact) <= 0.01 * exact + 1e-6, (key, col, row[col], exact)
