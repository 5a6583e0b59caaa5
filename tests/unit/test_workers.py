"""The worker processes of the streaming pipeline: same answers as in one process, and no
orphans or silent deaths.  Traffic is the demo shop's, made with the real OpenTelemetry SDK."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from attribution.attribute import Attributor
from attribution.events import parse_deploy_event
from collector.app.attribution_files import load_attribution
from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, Traffic, demo_dir, generate
from collector.errors import WorkerDied
from collector.processing import native
from collector.processing.batch import BatchOutcome, ProcessorConfig
from collector.processing.deploy_sets import DeployLog
from collector.processing.partitions import Job
from collector.processing.workers import InlineWorkers, ProcessWorkers, resolve_workers
from tests.support.procs import running

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(seed=11, minutes=2)


@pytest.fixture(scope="module")
def repositories() -> list[Any]:
    d = demo_dir()
    return load_attribution(codeowners=d / "CODEOWNERS", modules=d / "modules.yaml").repositories


def _jobs(traffic: Traffic) -> list[tuple[Any, ...]]:
    """A job sequence with history, retried (duplicate) records, a bad record and two deploy sets."""
    reqs = traffic.requests
    events = [parse_deploy_event(e) for e in traffic.deploys]
    half = len(events) // 2
    assert half >= 2
    # deploys as read from a one-partition topic: record time i s, offset i
    topic = [(i * 1000, 0, i, ev) for i, ev in enumerate(events)]
    log = DeployLog()
    log.add([], topic)
    first_half = log.select(half * 1000 - 1, {0: len(events)})
    every = log.select(10**15, {0: len(events)})
    replayed = log.select(10**15, {0: half + 1})  # a replay whose reader had read less: excluded
    assert first_half[1:] == (half, ()) and every[1:] == (len(events), ())
    assert replayed[2] == tuple(range(half + 1, len(events)))
    jobs: list[tuple[Any, ...]] = [("deploys", [], topic)]
    for p in (0, 1):
        mine = reqs[p::2]
        t0_ms = traffic.start_unix_nano // 1_000_000  # record timestamps: when the spans were sent
        records = [(o, t0_ms + 1000 * o, v) for o, v in enumerate(mine)]
        jobs.append(("reset", p))
        jobs.append(("history", p, records[:5]))
        n = len(records)
        assert n >= 30
        a, b = n // 2, 3 * n // 4
        # a batch with a resent record (an exporter retry) and an undecodable one, then the rest
        batch = (
            records[5:a]
            + [(a, t0_ms, records[a - 3][2]), (a + 1, t0_ms, b"\x0a\xff garbage")]
            + [(o + 2, ts, v) for o, ts, v in records[a:b]]
        )
        jobs.append(("batch", p, batch, first_half))
        jobs.append(("batch", p, [(o + 2, ts, v) for o, ts, v in records[b:]], every if p == 0 else replayed))
    return jobs


def _run(workers: Any, jobs: list[tuple[Any, ...]]) -> dict[int, BatchOutcome]:
    tickets = []
    for job in jobs:
        if job[0] == "reset":
            workers.reset(job[1])
        elif job[0] == "history":
            workers.history("spans", job[1], job[2])
        elif job[0] == "deploys":
            workers.add_deploys(job[1], job[2])
        else:
            _, p, records, selection = job
            tickets.append(workers.submit("spans", p, records, Job(selection, records[-1][0] + 1)))
    got: dict[int, BatchOutcome] = {}
    deadline = time.monotonic() + 60
    while len(got) < len(tickets):
        assert time.monotonic() < deadline, "workers did not answer"
        workers.wait(0.5)
        got.update(workers.results())
    assert sorted(got) == sorted(tickets)
    return got


CFG = ProcessorConfig(sample_rate_attribute=SAMPLE_RATE_ATTRIBUTE, dedup_horizon=100)


def test_repositories_survive_pickling_with_identical_attribution(
    repositories: Any, traffic: Traffic
) -> None:
    copy = pickle.loads(pickle.dumps(repositories))
    a, b = Attributor(repositories), Attributor(copy)
    assert a.wanted_attributes == b.wanted_attributes
    from collector.codec.otlp import OtlpDecoder

    spans = [s for r in traffic.requests[:50] for s in OtlpDecoder().decode_proto(r).spans]
    assert len(spans) > 500
    assert [a.attribute(s) for s in spans] == [b.attribute(s) for s in spans]


def test_the_native_and_the_python_path_give_identical_outcomes(repositories: Any, traffic: Traffic) -> None:
    """The whole hot path, decoder included, on the demo shop's traffic with history, a retried
    record and an undecodable one: the same rows, stats, names, buffer state and counts; only
    the wording of a refused record may differ (its offset and reason may not)."""
    if not native.AVAILABLE:
        pytest.fail("the prodloop_native extension is not installed: run make setup")
    jobs = _jobs(traffic)
    paths = [_run(InlineWorkers(replace(CFG, native=n), repositories), jobs) for n in (False, True)]
    python, rust = ({t: replace(o, errors=[e[:2] for e in o.errors]) for t, o in p.items()} for p in paths)
    for ticket in sorted(python):
        for a, b in zip(python[ticket].rows, rust[ticket].rows, strict=True):
            assert a == b, f"batch {ticket}: the first differing row:\n  python: {a}\n  native: {b}"
        assert rust[ticket] == python[ticket], f"batch {ticket} differs"
    assert sum(len(o.errors) for o in python.values()) == 2
    assert sum(o.stats.spans for o in python.values()) > 1000


def test_worker_processes_give_exactly_what_one_process_gives(repositories: Any, traffic: Traffic) -> None:
    jobs = _jobs(traffic)
    inline = _run(InlineWorkers(CFG, repositories), jobs)
    pool = ProcessWorkers(2, CFG, repositories)
    try:
        spread = _run(pool, jobs)
    finally:
        pool.close()
    assert [spread[t] for t in sorted(spread)] == [inline[t] for t in sorted(inline)]
    outcomes = list(inline.values())
    # the job sequence exercises what it should: duplicates, a dead letter, attributed spans
    assert sum(o.duplicates for o in outcomes) > 0
    assert [len(o.errors) for o in outcomes] == [1, 0, 1, 0]
    assert all(o.stats.attributed > 0 and o.rows for o in outcomes)
    # the deploy selections tag spans, each with its own set: the last deploys only in the one
    # batch that selects every deploy (partition 0's second)
    ids = [{r.deploy_id for r in o.rows} - {""} for o in outcomes]
    events = [parse_deploy_event(e) for e in traffic.deploys]
    last = {e.deploy_id for e in events[len(events) // 2 + 1 :]}
    assert all(ids) and ids[1] & last and not (ids[0] | ids[2] | ids[3]) & last
    assert sum(o.spans_in for o in outcomes) - sum(o.duplicates for o in outcomes) == sum(
        r.spans for o in outcomes for r in o.rows
    )


def test_a_worker_that_dies_is_reported_not_waited_for(repositories: Any) -> None:
    pool = ProcessWorkers(2, CFG, repositories)
    try:
        victim = pool._workers[1].process
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        pool.wait(1)
        with pytest.raises(WorkerDied, match=r"worker process 1 \(pid \d+\) died with exit code -9"):
            pool.results()
    finally:
        pool.close()


def test_a_failing_worker_reports_what_failed_and_where(repositories: Any, traffic: Traffic) -> None:
    pool = ProcessWorkers(1, CFG, repositories)
    try:
        pool.reset(0)
        # a selection from deploys the worker was never sent (a bug, not bad input)
        pool.submit("spans", 0, [(0, -1, traffic.requests[0])], Job((99, 0, ()), 1))
        deadline = time.monotonic() + 30
        with pytest.raises(
            WorkerDied,
            match=r"(?s)worker process 0 failed: ValueError: deploy selection of version 99.*deploy_sets\.py",
        ):
            while time.monotonic() < deadline:
                pool.wait(0.5)
                pool.results()
        assert pool._workers[0].process.wait(10) == 70
    finally:
        pool.close()


_PARENT = """
import sys, time
from collector.app.attribution_files import load_attribution
from collector.demo.shop import demo_dir
from collector.processing.batch import ProcessorConfig
from collector.processing.workers import ProcessWorkers
d = demo_dir()
repos = load_attribution(codeowners=d / "CODEOWNERS", modules=d / "modules.yaml").repositories
pool = ProcessWorkers(2, ProcessorConfig(), repos)
print(" ".join(str(w.process.pid) for w in pool._workers), flush=True)
time.sleep(600)
"""


def test_workers_exit_when_their_consumer_process_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)  # alive
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in pids if running(pid)]
        assert alive == [], f"orphaned workers {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_workers_setting(tmp_path: Path) -> None:
    assert resolve_workers(0) == 0
    assert resolve_workers(3) == 3
    cores = min(8, len(os.sched_getaffinity(0)))
    unlimited = tmp_path / "cpu.max"
    unlimited.write_text("max 100000\n")
    assert resolve_workers("auto", unlimited) == (cores if cores >= 2 else 0)
    assert resolve_workers("auto", tmp_path / "absent") == (cores if cores >= 2 else 0)
    # a container limited to 1.5 CPUs gets 2 workers (if it may run on 2 cores); to 1 CPU, none
    limited = tmp_path / "limited"
    limited.write_text("150000 100000\n")
    assert resolve_workers("auto", limited) == (2 if cores >= 2 else 0)
    limited.write_text("100000 100000\n")
    assert resolve_workers("auto", limited) == 0


def test_kafka_python_checks_crcs_in_c() -> None:
    import importlib

    import crc32c

    import collector.exporters.kafka.compat  # noqa: F401  (imports kafka-python, minding its deprecation warnings)

    util = importlib.import_module("kafka.record.util")

    # the consumers check fetched batches' CRC-32C; in pure Python that costs ~0.2 s per MB
    assert util._crc32c is crc32c.crc32c
