"""A stop while a store write is being retried ends within the grace period (issue 10, item 3),
and direct mode's last-flush time is when the flushed queue was cut (item 7).

The store is the real engine behind ``FaultyStore``, which fails writes on demand.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.app.attribution_files import load_attribution
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.kafka.consumer import TraceConsumer
from collector.exporters.kafka.options import KafkaOptions
from collector.pipelines.direct import DirectPipeline
from collector.pipelines.stream import StreamConfig, StreamPipeline
from collector.ports import ModulesQuery
from collector.processing.batch import ProcessorConfig
from tests.support.faults import FaultyStore
from tests.support.sdk_requests import Requests
from tests.support.streaming import produce

pytestmark = pytest.mark.integration

GRACE_S = 2.0


def _repositories(tmp: Path) -> list[Any]:
    (tmp / "modules.yaml").write_text(
        'modules:\n  - name: cart/store\n    paths: ["services/cart/store/**"]\n'
    )
    (tmp / "CODEOWNERS").write_text("/services/cart/  @acme/cart\n")
    return load_attribution(codeowners=tmp / "CODEOWNERS", modules=tmp / "modules.yaml").repositories


def _payload(k: int, n: int = 4) -> bytes:
    base = time.time_ns() - 60 * 1_000_000_000 + k * 10_000_000
    return Requests(seed=k).proto([(base + i, base + i + 1_000_000) for i in range(n)])


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_kafka_mode_stops_within_the_grace_period_while_the_store_fails(
    store: ClickHouseStore, kafka_broker: Any, new_topic: Callable[..., str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    traces = new_topic(1)
    produce(kafka_broker.bootstrap, traces, [_payload(k) for k in range(3)])
    faulty = FaultyStore(store)
    opts = KafkaOptions((kafka_broker.bootstrap,))
    group = f"g-{uuid.uuid4().hex[:8]}"

    def factory(on_assigned: Any, on_revoked: Any) -> Any:
        return TraceConsumer(opts, traces, group, on_assigned=on_assigned, on_revoked=on_revoked)

    stop = threading.Event()
    cfg = StreamConfig(
        group_id=group,
        processing=ProcessorConfig(trace_wait_ms=1000),
        linger_ms=50,
        batch_records=3,
        backoff_max_s=10.0,
        grace_s=GRACE_S,
    )
    p = StreamPipeline(cfg, factory, faulty, _repositories(tmp_path), stop=stop)
    try:
        _wait(
            lambda: (p.step(100), p.metrics.value("prodloop_committed_offset", partition="0") >= 3)[1],
            60,
            "first batch",
        )
        faulty.down()
        produce(kafka_broker.bootstrap, traces, [_payload(k) for k in range(3, 6)])
        errors: list[BaseException] = []

        def loop() -> None:
            try:
                while not stop.is_set():
                    p.step(100)
                p.flush_all(GRACE_S)  # as `prodloop run` does after the loop
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        worker = threading.Thread(target=loop)
        worker.start()
        _wait(lambda: faulty.failures >= 4, 60, "the write was not retried")  # the backoff has grown past 1 s
        assert not p.store_healthy
        caplog.set_level(logging.INFO, logger="prodloop.pipeline")
        t0 = time.monotonic()
        stop.set()
        worker.join(GRACE_S + 5)
        elapsed = time.monotonic() - t0
        if worker.is_alive():  # do not leave it stepping on a closed consumer
            faulty.up()
            worker.join(30)
            pytest.fail("still retrying after the grace period")
        assert not errors, errors
        assert elapsed < GRACE_S + 1.5, elapsed
        # nothing it had not written is committed; what is left is named for the replay
        assert p.metrics.value("prodloop_committed_offset", partition="0") == 3
        assert "the next owner replays them from offset 3" in caplog.text
        assert "gave up write" in caplog.text
    finally:
        p.close()
    assert sum(int(r["spans"]) for r in store.query_modules()) == 3 * 4


def test_direct_mode_stops_within_the_grace_period_while_the_store_fails(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    faulty = FaultyStore(store)
    p = DirectPipeline(faulty, _repositories(tmp_path), flush_interval_s=0.05)  # type: ignore[arg-type]
    try:
        p.export_traces(_payload(0), "otlp_proto")
        assert p.flush(30)
        faulty.down()
        p.export_traces(_payload(1), "otlp_proto")
        _wait(lambda: p.stats.flush_failures >= 6, 60, "the flush was not retried")  # backoff now 6.4-10 s
        assert not p.store_healthy
        t0 = time.monotonic()
        p.close(GRACE_S)
        elapsed = time.monotonic() - t0
        assert elapsed < GRACE_S + 0.5, elapsed
        assert not p._worker.is_alive(), "the flush is still being retried after close()"
        assert p.stats.spans_lost_at_stop == 4
    finally:
        faulty.up()
    assert sum(int(r["spans"]) for r in store.query_modules()) == 4


class _SlowStore:
    """The real store, whose aggregate writes wait for ``release`` (a slow server)."""

    def __init__(self, store: ClickHouseStore) -> None:
        self._store = store
        self.writing = threading.Event()
        self.release = threading.Event()

    def write_aggregates(self, *args: Any, **kwargs: Any) -> int:
        self.writing.set()
        assert self.release.wait(30)
        return int(self._store.write_aggregates(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_the_last_flush_time_is_when_the_queue_was_cut(store: ClickHouseStore, tmp_path: Path) -> None:
    slow = _SlowStore(store)
    p = DirectPipeline(slow, _repositories(tmp_path), flush_interval_s=3600)  # type: ignore[arg-type]
    try:
        p.export_traces(_payload(0), "otlp_proto")
        before_cut = time.time_ns()
        done = threading.Thread(target=p.flush, args=(30,))
        done.start()
        assert slow.writing.wait(30)
        during = time.time_ns()  # acknowledged while the write is under way: not flushed by it
        p.export_traces(_payload(1), "otlp_proto")
        slow.release.set()
        done.join(30)
        stamped = p.stats.last_flush_unix_nano
        assert before_cut <= stamped <= during
        assert sum(int(r["spans"]) for r in p.query_modules(ModulesQuery())) == 4
        assert p.flush(30)
        assert p.stats.last_flush_unix_nano > during
        assert sum(int(r["spans"]) for r in p.query_modules(ModulesQuery())) == 8
    finally:
        slow.release.set()
        p.close(5)
