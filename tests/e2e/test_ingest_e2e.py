"""End to end: traces made by the real OpenTelemetry SDK -> `prodloop ingest` -> chDB ->
`prodloop query modules --format json`, against the ground truth of the traffic generator.

The truth comes from the generator by construction (it decides the module, owners and
commit of every span it emits), never from running the attributor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attribution.sketch import exact_quantile
from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, Traffic, demo_dir, generate
from tests.conftest import run_prodloop

pytestmark = pytest.mark.e2e

MINUTES = 4


def _write(tmp: Path, traffic: Traffic, encoding: str) -> tuple[Path, Path]:
    deploys = tmp / "deploys.jsonl"
    deploys.write_text("".join(json.dumps(d) + "\n" for d in traffic.deploys))
    if encoding == "otlp_json":
        traces = tmp / "traces.jsonl"
        traces.write_bytes(b"".join(r + b"\n" for r in traffic.requests))
    else:
        traces = tmp / "traces.lpb"
        traces.write_bytes(b"".join(len(r).to_bytes(4, "big") + r for r in traffic.requests))
    return traces, deploys


def _ingest_and_query(
    tmp: Path, traffic: Traffic, encoding: str
) -> tuple[dict[str, object], list[dict[str, object]]]:
    traces, deploys = _write(tmp, traffic, encoding)
    store = f"chdb://{tmp / 'store'}"
    d = demo_dir()
    ing = run_prodloop(
        "ingest",
        "--traces",
        str(traces),
        "--deploys",
        str(deploys),
        "--codeowners",
        str(d / "CODEOWNERS"),
        "--modules",
        str(d / "modules.yaml"),
        "--sample-rate-attribute",
        SAMPLE_RATE_ATTRIBUTE,
        "--store",
        store,
        "--format",
        "json",
        "--strict",
    )
    assert ing.returncode == 0, ing.stderr + ing.stdout
    summary = json.loads(ing.stdout)
    q = run_prodloop("query", "modules", "--store", store, "--format", "json", "--by", "commit,owners")
    assert q.returncode == 0, q.stderr
    return summary, json.loads(q.stdout)


@pytest.fixture(scope="module")
def traffic_proto() -> Traffic:
    return generate(seed=11, minutes=MINUTES)


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_aggregates_equal_ground_truth(tmp_path: Path, traffic_proto: Traffic, encoding: str) -> None:
    traffic = (
        traffic_proto
        if encoding == "otlp_proto"
        else generate(seed=11, minutes=MINUTES, encoding="otlp_json")
    )
    summary, rows = _ingest_and_query(tmp_path, traffic, encoding)

    total = sum(t.spans for t in traffic.truth.values())
    assert summary["spans_read"] == total
    assert summary["rejected_records"] == 0 and summary["rejected_spans"] == 0
    assert summary["deploys_read"] == len(traffic.deploys)

    got = {
        (r["service"], r["environment"], r["module"], tuple(r["owners"]), r["commit_sha"]): r for r in rows
    }
    assert set(got) == set(traffic.truth), (
        f"missing {sorted(set(traffic.truth) - set(got))[:5]} extra {sorted(set(got) - set(traffic.truth))[:5]}"
    )
    for key, truth in traffic.truth.items():
        row = got[key]
        assert row["spans"] == truth.spans, key
        assert row["errors"] == truth.errors, key
        assert row["spans_adjusted"] == pytest.approx(truth.spans_adjusted, abs=1e-6), key
        durations = sorted(truth.durations_ns)
        assert row["duration_sum_ms"] == pytest.approx(sum(durations) / 1e6, rel=1e-12), key
        for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            exact = exact_quantile(durations, q)
            est = float(row[col]) * 1e6  # type: ignore[arg-type]
            assert abs(est - exact) <= 0.01 * exact + 1e-6, (key, col, est, exact)
    # the sampled service really was sampled, and adjusted counts differ from raw ones
    assert any(t.spans_adjusted > t.spans for t in traffic.truth.values())


def test_reingesting_the_same_file_does_not_double_count(tmp_path: Path, traffic_proto: Traffic) -> None:
    _, first = _ingest_and_query(tmp_path, traffic_proto, "otlp_proto")
    _, second = _ingest_and_query(tmp_path, traffic_proto, "otlp_proto")
    assert (
        sum(r["spans"] for r in first)
        == sum(r["spans"] for r in second)
        == sum(  # type: ignore[misc]
            t.spans for t in traffic_proto.truth.values()
        )
    )


def test_bad_records_are_rejected_named_and_the_rest_gets_through(
    tmp_path: Path, traffic_proto: Traffic
) -> None:
    good = traffic_proto.requests[:3]
    bad_json = tmp_path / "mixed.jsonl"
    json_traffic = generate(seed=11, minutes=1, encoding="otlp_json")
    lines = [json_traffic.requests[0], b"{not json", json_traffic.requests[1]]
    bad_json.write_bytes(b"\n".join(lines) + b"\n")
    lpb = tmp_path / "truncated.lpb"
    blob = b"".join(len(r).to_bytes(4, "big") + r for r in good)
    lpb.write_bytes(blob + (500).to_bytes(4, "big") + b"\x0a\x05abc")
    store = f"chdb://{tmp_path / 'store'}"
    res = run_prodloop(
        "ingest", "--traces", str(bad_json), "--traces", str(lpb), "--store", store, "--format", "json"
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["rejected_records"] == 2
    messages = "\n".join(summary["messages"])
    assert f"{bad_json}:2" in messages and "not valid JSON" in messages
    assert f"{lpb}@offset {len(blob)}" in messages and "truncated" in messages
    from collector.codec.otlp import OtlpDecoder

    dec = OtlpDecoder()
    expected = sum(len(dec.decode_json(r).spans) for r in (lines[0], lines[2])) + sum(
        len(dec.decode_proto(r).spans) for r in good
    )
    assert summary["spans_read"] == expected
    strict = run_prodloop("ingest", "--traces", str(bad_json), "--store", store, "--strict")
    assert strict.returncode == 1
