"""`prodloop run` against the real Kafka broker and the real ClickHouse engine (chDB).

The ground truth is the demo shop's, built by construction; nothing here runs the
attributor to compute expectations.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, Traffic, demo_dir, generate
from tests.support import fanout
from tests.support.procs import catches, child_pids, running
from tests.support.streaming import (
    RunProcess,
    committed_group_offsets,
    end_offsets,
    free_port,
    produce,
    produce_deploys,
    wait_consumed,
)
from tests.support.truth import assert_matches_truth

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(seed=5, minutes=3)


@dataclass
class Setup:
    bootstrap: str
    traces: str
    deploys: str
    incidents: str
    dlq: str
    group: str
    partitions: int
    store_dir: Path
    tmp: Path
    procs: list[RunProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        d = demo_dir()
        env = {
            "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "PRODLOOP_KAFKA__TRACES_TOPIC": self.traces,
            "PRODLOOP_KAFKA__DEPLOYS_TOPIC": self.deploys,
            "PRODLOOP_KAFKA__INCIDENTS_TOPIC": self.incidents,
            "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": self.dlq,
            "PRODLOOP_KAFKA__GROUP_ID": self.group,
            "PRODLOOP_STORE__DSN": f"chdb://{self.store_dir}",
            "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(d / "CODEOWNERS"),
            "PRODLOOP_ATTRIBUTION__MODULES": str(d / "modules.yaml"),
            "PRODLOOP_ATTRIBUTION__SAMPLE_RATE_ATTRIBUTE": SAMPLE_RATE_ATTRIBUTE,
            "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "200",
            "PRODLOOP_STREAM__LINGER_MS": "100",
            "PRODLOOP_SERVICE__GRACE_SECONDS": "20",
            # a killed run's partitions pass to the next after this (the default is 10 s)
            "PRODLOOP_KAFKA__SESSION_TIMEOUT_MS": "3000",
        }
        env.update(extra)
        return env

    def start(self, name: str = "run", **extra: str) -> RunProcess:
        proc = RunProcess(self.env(**extra), REPO, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def ends(self) -> dict[int, int]:
        return end_offsets(self.bootstrap, self.traces, self.partitions)

    def wait(self, procs: list[RunProcess], timeout: float = 120) -> None:
        wait_consumed(self.bootstrap, self.group, self.traces, self.ends(), timeout, procs)

    def query(self) -> list[dict[str, Any]]:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "collector.cli",
                "query",
                "modules",
                "--store",
                f"chdb://{self.store_dir}",
                "--by",
                "commit,owners",  # the ground truth is per owners and commit
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        rows: list[dict[str, Any]] = json.loads(res.stdout)
        return rows


@pytest.fixture
def setup(kafka_broker: Any, new_topic: Callable[..., str], tmp_path: Path) -> Iterator[Setup]:
    s = Setup(
        bootstrap=kafka_broker.bootstrap,
        traces=new_topic(4),
        deploys=new_topic(1),
        incidents=new_topic(1),
        dlq=new_topic(1),
        group=f"g-{uuid.uuid4().hex[:8]}",
        partitions=4,
        store_dir=tmp_path / "store",
        tmp=tmp_path,
    )
    yield s
    for proc in s.procs:
        proc.close()


def _feed(s: Setup, traffic: Traffic, compression: str | None = None) -> None:
    produce_deploys(s.bootstrap, s.deploys, traffic.deploys)
    produce(s.bootstrap, s.traces, traffic.requests, partitions=s.partitions, compression=compression)


@pytest.mark.parametrize(
    ("encoding", "compression"),
    [("otlp_proto", "zstd"), ("otlp_json", "gzip"), ("otlp_proto", "snappy"), ("auto", "lz4")],
)
def test_run_aggregates_equal_ground_truth(
    setup: Setup, traffic: Traffic, encoding: str, compression: str
) -> None:
    if encoding == "otlp_json":
        data = generate(seed=5, minutes=3, encoding="otlp_json")
    elif encoding == "auto":  # a topic that mixes both encodings
        js = generate(seed=5, minutes=3, encoding="otlp_json")
        data = Traffic(
            [r if i % 2 else js.requests[i] for i, r in enumerate(traffic.requests)],
            traffic.deploys,
            traffic.truth,
            traffic.start_unix_nano,
            traffic.end_unix_nano,
            traffic.regressed,
        )
    else:
        data = traffic
    _feed(setup, data, compression)
    run = setup.start(PRODLOOP_KAFKA__TRACES_ENCODING=encoding)
    setup.wait([run])
    m = run.metrics()
    assert run.terminate() == 0, run.log_tail()
    assert_matches_truth(setup.query(), traffic)
    assert m["prodloop_deploys_in_total"] == len(traffic.deploys)
    assert m["prodloop_spans_in_total"] == sum(t.spans for t in traffic.truth.values())
    if encoding == "auto":
        assert m['prodloop_encoding_detected_total{encoding="otlp_json"}'] > 0
        assert m['prodloop_encoding_detected_total{encoding="otlp_proto"}'] > 0


@pytest.mark.parametrize("point", ["before_write", "mid_write", "after_write", "after_commit"])
def test_crash_at_each_point_neither_loses_nor_double_counts(
    setup: Setup, traffic: Traffic, point: str
) -> None:
    _feed(setup, traffic)
    crashed = setup.start(
        "crash",
        PRODLOOP_TESTING_HOOKS=json.dumps({"crash_at": f"{point}:3"}),
        PRODLOOP_STREAM__BATCH_RECORDS="7",
        PRODLOOP_STREAM__WRITE_CHUNK_ROWS="10",  # several inserts per batch: mid_write falls between two
    )
    assert crashed.wait(timeout=120) == 137, crashed.log_tail()
    assert f"crash injected at {point}" in crashed.log_path.read_text()
    # the replay fetches with other batch boundaries than the crashed run used
    again = setup.start("again", PRODLOOP_STREAM__BATCH_RECORDS="11")
    setup.wait([again])
    assert again.terminate() == 0, again.log_tail()
    assert_matches_truth(setup.query(), traffic)


def _fanout_truth_holds(s: Setup, traffic: fanout.FanoutTraffic) -> None:
    got = {r["module"]: r for r in s.query() if r["service"] == fanout.SERVICE}
    assert set(got) == set(traffic.truth), got.keys()
    for module, t in traffic.truth.items():
        r = got[module]
        assert (r["spans"], r["errors"], r["own_errors"]) == (t.spans, t.errors, t.own_errors), module
        assert r["self_time_sum_ns"] == t.self_ns, (module, r["self_time_sum_ns"], t.self_ns)
        assert round(r["duration_sum_ms"] * 1_000_000) == t.duration_ns, module
        assert (r["exception_events"], r["exceptions"]) == (t.exception_events, t.exceptions), module


@pytest.mark.parametrize("point", ["", "before_write", "mid_write", "after_write", "after_commit"])
def test_self_time_and_exceptions_are_exact_through_crashes_while_traces_span_batches(
    setup: Setup, point: str
) -> None:
    """Real SDK traces with threaded fan-out and recorded exceptions, each split over several
    records of one partition: with batches of 3 records, traces span uncommitted batches when
    the process is killed, and the restart rebuilds the trace buffer from the commit.  Across
    paths: the crashed run computes self times natively, the restart in Python (without a
    crash, the one run is native)."""
    traffic = fanout.generate(
        traces=400, seed=3, partitions=setup.partitions, start_unix_nano=time.time_ns() - 600 * 10**9
    )
    (setup.tmp / "modules.yaml").write_text(fanout.modules_yaml())
    (setup.tmp / "CODEOWNERS").write_text(fanout.codeowners())
    files = {
        "PRODLOOP_ATTRIBUTION__MODULES": str(setup.tmp / "modules.yaml"),
        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(setup.tmp / "CODEOWNERS"),
        "PRODLOOP_AGGREGATION__TRACE_WAIT_MS": "1500",
    }
    produce(setup.bootstrap, setup.traces, traffic.records, partition_of=traffic.partition_of)
    if point:
        crashed = setup.start(
            "crash",
            PRODLOOP_TESTING_HOOKS=json.dumps({"crash_at": f"{point}:4"}),
            PRODLOOP_STREAM__BATCH_RECORDS="3",
            PRODLOOP_STREAM__WRITE_CHUNK_ROWS="2",
            PRODLOOP_AGGREGATION__HOT_PATH="native",
            **files,
        )
        assert crashed.wait(timeout=120) == 137, crashed.log_tail()
        committed = committed_group_offsets(setup.bootstrap, setup.group, setup.traces)
        assert sum(committed.values()) < sum(setup.ends().values())
    hot_path = "python" if point else "native"
    again = setup.start(
        "again", PRODLOOP_STREAM__BATCH_RECORDS="5", PRODLOOP_AGGREGATION__HOT_PATH=hot_path, **files
    )
    setup.wait([again])  # the commits reach the end once the idle partitions' traces completed
    assert f"hot path: {'pure Python' if point else 'native'}" in again.log_path.read_text()
    m = again.metrics()
    assert again.terminate() == 0, again.log_tail()
    if point:  # the commits trailed the batches written: the restart rebuilt the buffer first
        assert "rebuilding the trace buffer from" in again.log_path.read_text(), again.log_tail()
    _fanout_truth_holds(setup, traffic)
    if not point:
        assert m.get("prodloop_spans_orphaned_total", 0) == 0
        assert m['prodloop_traces_completed_total{how="early"}'] == 0


def test_negative_control_without_idempotence_the_crash_test_sees_double_counts(
    setup: Setup, traffic: Traffic
) -> None:
    _feed(setup, traffic)
    hooks = {"crash_at": "after_write:3", "disable_idempotence": True}
    crashed = setup.start(
        "crash", PRODLOOP_TESTING_HOOKS=json.dumps(hooks), PRODLOOP_STREAM__BATCH_RECORDS="7"
    )
    assert crashed.wait(timeout=120) == 137
    unsafe = json.dumps({"disable_idempotence": True})
    again = setup.start("again", PRODLOOP_TESTING_HOOKS=unsafe, PRODLOOP_STREAM__BATCH_RECORDS="11")
    setup.wait([again])
    assert again.terminate() == 0
    rows = setup.query()
    total = sum(r["spans"] for r in rows)
    truth = sum(t.spans for t in traffic.truth.values())
    assert total > truth, "the crash test must detect the double count when deduplication is off"
    with pytest.raises(AssertionError):
        assert_matches_truth(rows, traffic)


def test_kill_minus_nine_at_random_moments(setup: Setup) -> None:
    big = generate(seed=9, minutes=30)
    assert sum(t.spans for t in big.truth.values()) >= 200_000
    _feed(setup, big, "lz4")
    rng = random.Random(1234)
    kills = 0
    slow = {"PRODLOOP_STREAM__BATCH_RECORDS": "3"}
    while kills < 6:
        run = setup.start(f"kill{kills}", **slow)
        time.sleep(rng.uniform(2.5, 5.0))  # start-up is ~2 s: kill while it writes
        if not run.alive():
            break
        run.kill()
        kills += 1
    assert kills >= 5
    committed = committed_group_offsets(setup.bootstrap, setup.group, setup.traces)
    assert sum(committed.values()) < sum(setup.ends().values()), "the kills must interrupt the stream"
    final = setup.start("final")
    setup.wait([final], timeout=300)
    assert final.terminate() == 0, final.log_tail()
    assert_matches_truth(setup.query(), big, quantiles=False)


def test_a_killed_worker_stops_the_replica_and_the_restart_is_exact(setup: Setup) -> None:
    big = generate(seed=21, minutes=12)
    _feed(setup, big)
    total = sum(setup.ends().values())
    run = setup.start("workers", PRODLOOP_STREAM__BATCH_RECORDS="3", PRODLOOP_STREAM__WORKERS="2")
    deadline = time.monotonic() + 60
    while sum(run.committed().values()) == 0:
        assert run.alive() and time.monotonic() < deadline, run.log_tail()
        time.sleep(0.05)
    workers = child_pids(run.proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)  # as the OOM killer would
    assert run.wait(60) == 1
    log = run.log_path.read_text()
    assert re.search(rf"worker process \d \(pid {workers[0]}\) died with exit code -9", log), log[-2000:]
    deadline = time.monotonic() + 10
    while any(running(w) for w in workers):
        assert time.monotonic() < deadline, "the other worker outlived its replica"
        time.sleep(0.1)
    committed = committed_group_offsets(setup.bootstrap, setup.group, setup.traces)
    assert sum(committed.values()) < total, "the kill must interrupt the stream"
    final = setup.start("final")
    setup.wait([final], timeout=300)
    assert final.terminate() == 0, final.log_tail()
    assert_matches_truth(setup.query(), big, quantiles=False)


def test_two_replicas_with_a_rebalance_in_the_middle(setup: Setup) -> None:
    big = generate(seed=13, minutes=12)
    # a third of the stream first: replica a may consume all of it before b has joined, so the
    # rest is produced once both hold partitions, and both then have records to write
    first = len(big.requests) // 3
    produce_deploys(setup.bootstrap, setup.deploys, big.deploys)
    produce(setup.bootstrap, setup.traces, big.requests[:first], partitions=setup.partitions)
    slow = {"PRODLOOP_STREAM__BATCH_RECORDS": "4"}
    # chDB: one process per store directory, so each replica writes its own store; the
    # aggregates of the two stores merge exactly (sums), like two writers on a server.
    a = setup.start("a", **slow)
    b = setup.start("b", PRODLOOP_STORE__DSN=f"chdb://{setup.store_dir}-b", **slow)
    deadline = time.monotonic() + 60

    def both_hold(
        batches: int,
    ) -> bool:  # a rebalance in progress may leave one without partitions for a while
        ma, mb = a.metrics(), b.metrics()
        return all(
            m.get("prodloop_batches_written_total", 0) >= batches
            and m.get("prodloop_partitions_assigned", 0) >= 1
            for m in (ma, mb)
        )

    def both_consuming() -> bool:
        return both_hold(3)

    while time.monotonic() < deadline and not both_hold(0):
        time.sleep(0.2)
    assert both_hold(0), (a.log_tail(), b.log_tail())
    produce(setup.bootstrap, setup.traces, big.requests[first:], partitions=setup.partitions)
    while time.monotonic() < deadline and not both_consuming():
        time.sleep(0.2)
    assert both_consuming(), (a.log_tail(), b.log_tail())
    assert b.terminate() == 0, b.log_tail()  # leaves the group: a gets all four partitions
    time.sleep(2)
    b2 = setup.start("b2", PRODLOOP_STORE__DSN=f"chdb://{setup.store_dir}-b", **slow)  # comes back
    # a may finish the stream before b2 has started; b2 still joins and takes its share
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and b2.metrics().get("prodloop_partitions_assigned", 0) < 1:
        assert b2.alive(), b2.log_tail()
        time.sleep(0.2)
    assert b2.metrics().get("prodloop_partitions_assigned", 0) >= 1, b2.log_tail()
    setup.wait([a, b2], timeout=240)
    assert a.terminate() == 0 and b2.terminate() == 0
    rows = setup.query()
    other = Setup(**{**setup.__dict__, "store_dir": Path(f"{setup.store_dir}-b"), "procs": []}).query()
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows + other:
        k = (r["service"], r["environment"], r["module"], tuple(r["owners"]), r["commit_sha"])
        if k in merged:
            merged[k]["spans"] += r["spans"]
            merged[k]["errors"] += r["errors"]
            merged[k]["spans_adjusted"] += r["spans_adjusted"]
        else:
            merged[k] = dict(r)
    assert_matches_truth(list(merged.values()), big, quantiles=False)


def test_a_sigterm_during_start_up_exits_cleanly(setup: Setup) -> None:
    run = setup.start("early")
    deadline = time.monotonic() + 30
    while not catches(run.proc.pid, signal.SIGTERM):  # the earliest moment a handler exists
        assert time.monotonic() < deadline and run.alive(), run.log_tail()
        time.sleep(0.002)
    run.proc.send_signal(signal.SIGTERM)  # while the service is still being imported and set up
    assert run.wait(60) == 0, run.log_tail()
    log = run.log_path.read_text()
    assert "stopped during start-up, before consuming anything" in log, log


def test_with_no_broker_reachable_it_waits_and_a_sigterm_still_exits_cleanly(setup: Setup) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # a port nobody listens on
    run = setup.start("nobroker", PRODLOOP_KAFKA__BOOTSTRAP_SERVERS=nobody)
    deadline = time.monotonic() + 60
    while "waiting for Kafka" not in run.log_path.read_text():
        assert time.monotonic() < deadline and run.alive(), run.log_tail()
        time.sleep(0.1)
    assert run.metrics(), "/metrics answers while it waits"
    t0 = time.monotonic()
    assert run.terminate() == 0, run.log_tail()
    assert time.monotonic() - t0 < 10
    log = run.log_path.read_text()
    assert f"{nobody}: Connection refused" in log and "stopped while waiting for Kafka" in log, log
    # and with a short start-up timeout it fails, naming the server
    failed = setup.start(
        "nobroker-timeout",
        PRODLOOP_KAFKA__BOOTSTRAP_SERVERS=nobody,
        PRODLOOP_KAFKA__STARTUP_TIMEOUT_SECONDS="1",
    )
    assert failed.wait(60) != 0
    assert f"no Kafka broker reachable within 1 s (kafka.startup_timeout_seconds): {nobody}" in (
        failed.log_path.read_text()
    )


def test_bad_records_are_dead_lettered_and_the_rest_is_exact(setup: Setup, traffic: Traffic) -> None:
    produce_deploys(setup.bootstrap, setup.deploys, traffic.deploys)
    bad = [b"\xff\xfe not protobuf", traffic.requests[0][:57], b""]
    values = list(traffic.requests[:20]) + bad + list(traffic.requests[20:])
    produce(setup.bootstrap, setup.traces, values, partitions=setup.partitions)
    produce(setup.bootstrap, setup.deploys, [b'{"deploy_id": "x"}'])  # invalid deploy event
    run = setup.start()
    setup.wait([run])
    m = run.metrics()
    assert run.terminate() == 0
    assert_matches_truth(setup.query(), traffic)
    assert m["prodloop_dead_lettered_total"] >= 3

    from kafka import KafkaConsumer

    c = KafkaConsumer(
        setup.dlq, bootstrap_servers=setup.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        got = list(c)
    finally:
        c.close()
    heads = [dict(r.headers) for r in got]
    assert {h["prodloop.source.topic"].decode() for h in heads} == {setup.traces, setup.deploys}
    trace_dl = [
        r for r, h in zip(got, heads, strict=True) if h["prodloop.source.topic"].decode() == setup.traces
    ]
    assert sorted(r.value for r in trace_dl) == sorted(v for v in bad if v) or len(trace_dl) == len(bad)
    for h in heads:
        assert int(h["prodloop.source.offset"]) >= 0 and h["prodloop.error.message"]


def test_exporter_retries_are_not_counted_twice(setup: Setup, traffic: Traffic) -> None:
    produce_deploys(setup.bootstrap, setup.deploys, traffic.deploys)
    values: list[bytes] = []
    for i, r in enumerate(traffic.requests):
        values.append(r)
        if i % 5 == 0:
            values.append(r)  # the exporter retried: the same request again, next in line
    produce(setup.bootstrap, setup.traces, values, partitions=1)
    run = setup.start(PRODLOOP_STREAM__BATCH_RECORDS="5")
    setup.wait([run])
    m = run.metrics()
    assert run.terminate() == 0
    assert_matches_truth(setup.query(), traffic)
    assert m["prodloop_spans_duplicate_total"] > 0


# -- in-process: store outages and broker restarts ----------------------------------------------


def _in_process_pipeline(setup: Setup, store: Any, **cfg: Any) -> Any:
    from collector.app.attribution_files import load_attribution
    from collector.exporters.kafka.consumer import EventReader, TraceConsumer
    from collector.exporters.kafka.options import KafkaOptions
    from collector.exporters.kafka.producer import DeadLetters
    from collector.pipelines.stream import StreamConfig, StreamPipeline
    from collector.processing.batch import ProcessorConfig

    d = demo_dir()
    loaded = load_attribution(codeowners=d / "CODEOWNERS", modules=d / "modules.yaml")
    opts = KafkaOptions((setup.bootstrap,))

    def factory(on_assigned: Any, on_revoked: Any) -> Any:
        return TraceConsumer(opts, setup.traces, setup.group, on_assigned=on_assigned, on_revoked=on_revoked)

    config = StreamConfig(
        group_id=setup.group,
        # traces complete as soon as a later record's timestamp passes theirs, so the commits
        # advance batch by batch (as these tests watch them do), not all at an idle tick
        processing=ProcessorConfig(sample_rate_attribute=SAMPLE_RATE_ATTRIBUTE, trace_wait_ms=0),
        deploy_skew_ms=200,
        linger_ms=100,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        **cfg,
    )
    return StreamPipeline(
        config,
        factory,
        store,
        loaded.repositories,
        deploys=EventReader(opts, setup.deploys),
        dead_letters=DeadLetters(opts, setup.dlq),
    )


@pytest.fixture
def pipeline_runner() -> Iterator[Callable[[Any, Callable[[], bool], float], None]]:
    pipelines: list[Any] = []

    def run(p: Any, done: Callable[[], bool], timeout: float) -> None:
        pipelines.append(p)
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "pipeline did not finish in time"
            p.step(100)

    yield run
    for p in pipelines:
        p.close()
        if p.deploys is not None:
            p.deploys.close()
        if p.dead_letters is not None:
            p.dead_letters.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_a_clickhouse_outage_in_the_middle_loses_nothing(
    setup: Setup, traffic: Traffic, store: Any, pipeline_runner: Any, workers: int
) -> None:
    from tests.support.faults import FaultyStore

    _feed(setup, traffic)
    faulty = FaultyStore(store)
    p = _in_process_pipeline(setup, faulty, batch_records=5, workers=workers)
    ends = setup.ends()
    total = sum(ends.values())

    def committed() -> int:
        return sum(int(p.metrics.value("prodloop_committed_offset", partition=str(i))) for i in range(4))

    pipeline_runner(p, lambda: committed() >= total // 4, 60)
    faulty.fail_next(2, "timeout")
    faulty.fail_next(3, "after_commit")  # the write landed, the acknowledgement did not
    faulty.fail_next(2, "error")
    pipeline_runner(p, lambda: committed() >= total // 2, 60)
    p.update_lag()
    lag = {i: p.metrics.value("prodloop_consumer_lag", partition=str(i)) for i in range(4)}
    assert sum(lag.values()) == total - committed() > 0  # the end minus the committed offsets
    # an outage: the loop blocks in its retry, fetching paused, polling on so the group keeps us
    faulty.down()
    done = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not done.is_set() and committed() < total:
                p.step(100)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while p.metrics.value("prodloop_fetch_paused") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.metrics.value("prodloop_fetch_paused") == 1
        before = committed()
        time.sleep(3)
        assert committed() == before  # nothing committed while the store is down
        assert p.metrics.value("prodloop_partitions_assigned") == 4  # still in the group
        faulty.up()
        deadline = time.monotonic() + 120
        while committed() < total and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.1)
    finally:
        done.set()
        worker.join(timeout=60)
    assert not errors, errors
    assert committed() >= total
    assert p.metrics.value("prodloop_fetch_paused") == 0
    p.update_lag()
    assert [p.metrics.value("prodloop_consumer_lag", partition=str(i)) for i in range(4)] == [0] * 4
    assert faulty.failures >= 7
    assert_matches_truth(store.query_modules(), traffic)


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_a_broker_restart_is_survived(
    setup: Setup, traffic: Traffic, store: Any, kafka_broker: Any, pipeline_runner: Any, workers: int
) -> None:
    if not kafka_broker.can_restart:
        pytest.skip("external broker: cannot restart it")  # only with PRODLOOP_KAFKA_BOOTSTRAP set
    _feed(setup, traffic)
    p = _in_process_pipeline(setup, store, batch_records=5, workers=workers)
    total = sum(setup.ends().values())

    def committed() -> int:
        return sum(int(p.metrics.value("prodloop_committed_offset", partition=str(i))) for i in range(4))

    pipeline_runner(p, lambda: committed() >= total // 3, 60)
    before = committed()
    kafka_broker.restart()  # the pipeline's clients see their connections drop mid-stream
    pipeline_runner(p, lambda: committed() >= total, 180)
    assert before < total
    assert_matches_truth(store.query_modules(), traffic)


def test_run_evaluates_the_alert_rules_and_opens_the_regression_ticket(setup: Setup) -> None:
    """`prodloop run` evaluates rules.yaml on its interval: live traffic whose deploy regressed
    payments/retry yields a ticket naming that module, its owners and the deploy's SHA range."""
    now = time.time_ns()
    live = generate(seed=7, minutes=10, start_unix_nano=now - 11 * 60 * 1_000_000_000)
    _feed(setup, live)
    tickets = setup.tmp / "tickets.jsonl"
    run = setup.start(
        PRODLOOP_ALERTS__RULES=str(demo_dir() / "rules.yaml"),
        PRODLOOP_ALERTS__INTERVAL_SECONDS="2",
        PRODLOOP_ALERTS__SETTLE_SECONDS="0",
        PRODLOOP_ALERTS__FILE__PATH=str(tickets),
    )
    setup.wait([run])
    deadline = time.monotonic() + 60
    opened: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not opened:
        time.sleep(0.5)
        if tickets.exists():
            opened = [
                e
                for e in (json.loads(line) for line in tickets.read_text().splitlines() if line.strip())
                if e.get("event") == "opened" and "payments/retry" in e.get("title", "")
            ]
    assert run.terminate() == 0, run.log_tail()
    assert opened, f"no regression ticket for payments/retry:\n{run.log_tail()}"
    _, module, deploy_id = live.regressed
    assert module == "payments/retry"
    deploy = next(d for d in live.deploys if d["deploy_id"] == deploy_id)
    text = json.dumps(opened[0])
    assert "@carol" in text and "@acme/payments" in text
    assert deploy["commit_sha"][:7] in text and deploy["previous_sha"][:7] in text
