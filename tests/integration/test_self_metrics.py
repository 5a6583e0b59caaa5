"""prodloop's self-observability: the process and build series on /metrics, only the series of
the mode that runs, the INFO summaries and the shutdown totals in the JSON log, fatal start-up
errors as JSON log lines, and the "prodloop self" dashboard against what /metrics serves.

The service is a real `prodloop run` in direct mode (the in-memory queue) on the embedded
store, fed by the OpenTelemetry SDK's encoder over OTLP/HTTP.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.processing.metrics import ActivityLog, Metrics, service_registry
from tests.support.sdk_requests import Requests
from tests.support.streaming import RunProcess, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "dashboards" / "prodloop-self.json"
SPANS = 7

# the dashboard's series that only stream mode serves (checked against its registry below)
STREAM_ONLY = {
    "prodloop_spans_in_total",
    "prodloop_rejected_total",
    "prodloop_consumer_lag",
    "prodloop_write_seconds_bucket",
    "prodloop_batches_written_total",
    "prodloop_commit_failures_total",
    "prodloop_last_commit_timestamp_seconds",
}


@dataclass
class DirectRun:
    metrics: str  # one /metrics scrape after the first flush
    log: list[dict[str, Any]]  # every log line, parsed
    exit_code: int


def _poll(check: Callable[[], bool], timeout: float, what: str, run: RunProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert run.alive(), run.log_tail()
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s\n{run.log_tail()}"
        time.sleep(0.1)


def _scrape(run: RunProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/metrics", timeout=5) as r:
        return str(r.read().decode())


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectRun]:
    """Start, send SPANS spans, scrape after the first flush, SIGTERM."""
    tmp = tmp_path_factory.mktemp("direct")
    http_port = free_port()
    env = {
        "PRODLOOP_STORE__DSN": f"chdb://{tmp / 'store'}",
        "PRODLOOP_RECEIVER__DURABILITY": "memory",
        "PRODLOOP_RECEIVER__FLUSH_INTERVAL_SECONDS": "0.5",
        "PRODLOOP_RECEIVER__HTTP_PORT": str(http_port),
        "PRODLOOP_SERVICE__LOG_FORMAT": "json",
    }
    run = RunProcess(env, REPO, tmp / "run.log")
    try:
        _poll(lambda: run.metrics().get("prodloop_receiver_requests_total") == 0, 60, "ready", run)
        now = time.time_ns()
        body = Requests().proto([(now - 2_000_000_000, now - 1_000_000_000)] * SPANS)
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        _poll(lambda: run.metrics().get("prodloop_direct_flushes_total", 0) >= 1, 30, "a flush", run)
        _poll(lambda: '"in the last ' in run.log_path.read_text(), 10, "a summary line", run)
        scrape = _scrape(run)
        code = run.terminate()
    finally:
        run.close()
    lines = run.log_path.read_text().splitlines()
    yield DirectRun(scrape, [json.loads(line) for line in lines], code)


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_direct_mode_serves_the_process_and_build_series_and_no_stream_ones(direct_run: DirectRun) -> None:
    assert direct_run.exit_code == 0
    samples = _samples(direct_run.metrics)
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "python_gc_collections_total",
        "python_gc_objects_collected_total",
    ):
        assert name in samples, name
    assert samples["process_resident_memory_bytes"][0][1] > 10e6
    assert samples["process_open_fds"][0][1] > 3
    assert {labels["generation"] for labels, _ in samples["python_gc_collections_total"]} == {"0", "1", "2"}
    assert samples["prodloop_build_info"] == [
        (
            {
                "version": version("prodloop"),
                "native": "true" if shutil.which("cargo") else "false",  # make setup builds it with cargo
                "python": platform.python_version(),
                "mode": "direct",
            },
            1.0,
        )
    ]
    assert samples["prodloop_receiver_spans_accepted_total"] == [({}, float(SPANS))]
    assert samples["prodloop_direct_write_seconds_count"][0][1] >= 1
    assert samples["prodloop_direct_write_seconds_sum"][0][1] > 0
    assert "_created" not in direct_run.metrics
    stream = {"kafka", "consumer_lag", "partition", "committed_offset", "records_in", "fetch_paused"}
    assert not [line for line in direct_run.metrics.splitlines() if any(w in line for w in stream)]
    assert "prodloop_spans_in_total" not in samples  # the stream pipeline's series are not registered


def test_the_log_has_json_summaries_and_the_shutdown_totals(direct_run: DirectRun) -> None:
    log = direct_run.log
    summaries = [r for r in log if r["msg"].startswith("in the last ")]
    assert summaries, log
    assert all(r["level"] == "info" and r["logger"] == "prodloop.service" for r in summaries)
    assert summaries[0]["counts"]["spans_accepted"] == SPANS  # one request: all in the first line
    assert set(summaries[0]["counts"]) == {
        "flushes",
        "spans_accepted",
        "rows_written",
        "spans_rejected",
        "requests_refused",
        "flush_failures",
    }
    (shutdown,) = [r for r in log if r["msg"].startswith("shutdown after ")]
    totals = shutdown["counts"]
    assert totals["spans_accepted"] == SPANS and totals["spans_rejected"] == 0
    assert totals["flushes"] >= 1 and totals["rows_written"] >= 1 and totals["flush_failures"] == 0
    assert totals["uptime_seconds"] > 0
    assert f"{SPANS} spans accepted" in shutdown["msg"]
    assert log.index(shutdown) > max(log.index(r) for r in summaries)
    # which hot path runs is said once, at start (make setup builds the extension with cargo)
    (hot,) = [r["msg"] for r in log if r["msg"].startswith("hot path: ")]
    assert hot.startswith("hot path: native" if shutil.which("cargo") else "hot path: pure Python"), hot


def test_summaries_come_at_most_every_10s_and_count_since_the_last(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    spans = Counter("prodloop_spans_in", "", registry=registry)
    rejected = Counter("prodloop_rejected", "", ["reason"], registry=registry)
    now = [100.0]
    activity = ActivityLog(
        registry,
        (("spans", "prodloop_spans_in_total"), ("rejected", "prodloop_rejected_total")),
        clock=lambda: now[0],
    )
    caplog.set_level(logging.INFO, "prodloop.service")

    def lines() -> list[tuple[str, dict[str, Any]]]:
        return [(r.getMessage(), r.__dict__.get("counts", {})) for r in caplog.records]

    activity.tick()
    assert lines() == []  # idle: nothing to say
    now[0] = 101.0
    spans.inc(5)
    activity.tick()
    assert lines() == [("in the last 1s: 5 spans, 0 rejected", {"spans": 5, "rejected": 0})]
    for t in range(2, 11):  # busy, but within 10 s of the last line
        now[0] = 100.0 + t
        spans.inc()
        rejected.labels(reason="decode_error").inc()
        activity.tick()
    assert len(lines()) == 1
    now[0] = 111.0
    rejected.labels(reason="bad_time").inc()
    activity.tick()
    assert lines()[1] == ("in the last 10s: 9 spans, 10 rejected", {"spans": 9, "rejected": 10})
    now[0] = 130.0
    activity.tick()
    assert len(lines()) == 2  # idle again
    activity.close()
    assert lines()[2] == (
        "shutdown after 30.0s: 14 spans, 10 rejected in total",
        {"spans": 14, "rejected": 10, "uptime_seconds": 30.0},
    )


def _fatal(tmp_path: Path, env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    run = RunProcess({"PRODLOOP_SERVICE__LOG_FORMAT": "json", **env}, REPO, tmp_path / "run.log")
    try:
        code = run.wait(60)
    finally:
        run.close()
    text = run.log_path.read_text()
    return code, [json.loads(line) for line in text.splitlines()], text


@pytest.mark.parametrize(
    ("env", "code", "message"),
    [
        pytest.param(
            {"PRODLOOP_SERVICE__GRACE_SECONDS": "soon"},
            2,
            r"fatal: settings: service\.grace_seconds \(env PRODLOOP_SERVICE__GRACE_SECONDS\): .*number",
            id="bad-setting",
        ),
        pytest.param(
            {"PRODLOOP_ATTRIBUTION__MODULES": "/nonexistent/modules.yaml"},
            2,
            r"fatal: /nonexistent/modules\.yaml: .*not found",
            id="missing-modules-file",
        ),
        pytest.param(
            {
                "PRODLOOP_STORE__DSN": "http://prodloop:pw-s3cr3t-42@127.0.0.1:{port}/prodloop",
                "PRODLOOP_RECEIVER__DURABILITY": "memory",
            },
            1,
            r"fatal: opening the store failed on http://prodloop:\*\*\*@127\.0\.0\.1:\d+/prodloop: .*refused",
            id="unreachable-store",
        ),
    ],
)
def test_a_fatal_start_error_is_a_json_log_line(
    tmp_path: Path, env: dict[str, str], code: int, message: str
) -> None:
    env = {k: v.replace("{port}", str(free_port())) for k, v in env.items()}
    exit_code, log, text = _fatal(tmp_path, env)
    assert exit_code == code, text
    fatal = log[-1]
    assert fatal["level"] == "critical" and fatal["logger"] == "prodloop.service", fatal
    assert re.match(message, fatal["msg"]), fatal
    assert "prodloop: error:" not in text  # not the command group's plain-text line
    assert "pw-s3cr3t-42" not in text


def _expr_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", " ", expr)
    return {
        m.group()
        for m in re.finditer(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
        if not bare[m.end() :].lstrip().startswith("(")  # a function
    }


def _dashboard_names() -> set[str]:
    d = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for p in d["panels"]:
        for t in p.get("targets", []):
            names |= _expr_names(t["expr"])
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            names |= set(re.findall(r"label_values\((\w+),", v["definition"]))
    return names


_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def served_names(metrics: str) -> set[str]:
    """The sample names a /metrics text serves, labelled series with no child yet too."""
    return {
        f.name + suffix
        for f in text_string_to_metric_families(metrics)
        for suffix in _SUFFIXES.get(f.type, ("",))
    }


def assert_stream_metrics(metrics: str) -> None:
    """A stream-mode /metrics (checked on a live scrape by test_ops_endpoints.py's Kafka test)."""
    samples = _samples(metrics)
    assert samples["prodloop_build_info"][0][0]["mode"] == "stream"
    assert "process_resident_memory_bytes" in samples and "python_gc_collections_total" in samples
    assert "_created" not in metrics
    assert "prodloop_direct_" not in metrics and "prodloop_receiver_spans_accepted" not in metrics
    missing = STREAM_ONLY - served_names(metrics)
    assert not missing, missing


def test_the_self_dashboard_reads_only_served_series(direct_run: DirectRun) -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "prodloop-self"
    datasource = d["templating"]["list"][0]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for p in d["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    names = _dashboard_names()
    assert len(names) > 20, names
    assert names - set(_samples(direct_run.metrics)) == STREAM_ONLY
    # stream mode's registry, as `prodloop run` builds it (a live scrape: test_ops_endpoints.py)
    assert_stream_metrics(generate_latest(Metrics(service_registry("stream", False)).registry).decode())
