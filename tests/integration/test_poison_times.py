"""Span times the store cannot hold, and rows the store refuses, never stop the writes.

Issue 10, item 1: one span starting at 2^64-1 ns, in 2107 or 2300 (past ClickHouse
``DateTime``), or at the OTLP/JSON string ``"-1000"`` used to be accepted, after which every
flush failed and was retried forever.  Now such spans are rejected at decode
(``time_out_of_range``: a partial success in direct mode, a dead letter in Kafka mode), and
rows the store refuses anyway are isolated by bisection and the rest is written.

The good spans around each bad one are counted from what the generator made, never by
running prodloop's code.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from attribution.aggregate import AggregateRow
from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.errors import StoreRejectedError
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.kafka.consumer import TraceConsumer
from collector.exporters.kafka.options import KafkaOptions
from collector.exporters.kafka.producer import DeadLetters
from collector.pipelines.direct import DirectPipeline
from collector.pipelines.stream import StreamConfig, StreamPipeline
from collector.ports import ModulesQuery
from collector.processing.batch import ProcessorConfig
from tests.support.sdk_requests import Requests
from tests.support.streaming import produce
from tests.support.twin import TwinDecoder

pytestmark = pytest.mark.integration

MODULES = """\
modules:
  - name: cart/store
    paths: ["services/cart/store/**"]
"""
CODEOWNERS = "/services/cart/  @acme/cart\n"
MIN = 60_000_000_000
GOOD = 5  # good spans per request


def _ns(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000


POISON: dict[str, tuple[int, int] | None] = {
    "2^64-1": (2**64 - 1, 2**64 - 1),
    "year-2107": (_ns(2107), _ns(2107) + 1_000_000),
    "year-2300": (_ns(2300), _ns(2300) + 1_000_000),
    'json-"-1000"': None,  # start "-1000" in OTLP/JSON
}


def _good_times(now: int, k: int) -> list[tuple[int, int]]:
    base = now - 120 * 1_000_000_000 + k * 1_000_000
    return [(base + i * 1000, base + i * 1000 + 2_000_000) for i in range(GOOD)]


def _requests(variant: str, now: int) -> tuple[list[tuple[str, bytes]], int]:
    """(encoding, payload) for: a good request, the poison request (the bad span between good
    ones), a good request.  Returns them and the number of good spans."""
    gen = Requests()
    before = ("otlp_proto", gen.proto(_good_times(now, 0)))
    after = ("otlp_proto", gen.proto(_good_times(now, 2)))
    good = _good_times(now, 1)
    bad = POISON[variant]
    if bad is None:
        times = [*good[:2], (now - 1_000_000_000, now), *good[2:]]
        poison = ("otlp_json", gen.json(times, start_override={2: "-1000"}))
    else:
        poison = ("otlp_proto", gen.proto([*good[:2], bad, *good[2:]]))
    return [before, poison, after], 3 * GOOD


def _repositories(tmp: Path) -> list[Any]:
    (tmp / "modules.yaml").write_text(MODULES)
    (tmp / "CODEOWNERS").write_text(CODEOWNERS)
    return load_attribution(codeowners=tmp / "CODEOWNERS", modules=tmp / "modules.yaml").repositories


def _stored(store: ClickHouseStore) -> int:
    return sum(int(r["spans"]) for r in store.query_modules())


# -- the decoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(POISON))
def test_the_decoder_rejects_times_the_store_cannot_hold(variant: str) -> None:
    now = time.time_ns()
    requests, _ = _requests(variant, now)
    encoding, poison = requests[1]
    got = TwinDecoder().decode(poison, encoding, "<request>", now)
    assert len(got.spans) == GOOD
    assert [r.reason for r in got.rejected] == ["time_out_of_range"]
    message = got.rejected[0].message
    assert "<request>" in message and ("store holds" in message or "negative" in message), message


def test_the_plausibility_window_is_around_the_reference_time() -> None:
    gen = Requests()
    now = time.time_ns()
    day = 86_400 * 1_000_000_000
    times = [(now - 10 * day, now - 10 * day + 1), (now + 2 * day, now + 2 * day + 1), (now, now + 1)]
    payload = gen.proto(times)
    default = TwinDecoder().decode(payload, "otlp_proto", "r", now)
    assert len(default.spans) == 2  # more than 1 day in the future is rejected; the past is not
    assert "aggregation.max_future_seconds" in default.rejected[0].message
    settings = Settings(aggregation={"max_age_seconds": 86_400})
    strict = TwinDecoder(time_bounds=settings.time_bounds()).decode(payload, "otlp_proto", "r", now)
    assert len(strict.spans) == 1 and [r.reason for r in strict.rejected] == ["time_out_of_range"] * 2
    assert any("aggregation.max_age_seconds" in r.message for r in strict.rejected)
    # files have no reference time: only the store's own range holds
    assert len(TwinDecoder().decode(payload, "otlp_proto", "r").spans) == 3
    # the retention is the default age limit when it is set
    ttl = Settings(store={"ttl_days": 7}).time_bounds()
    assert ttl.max_age_ns == 7 * day


# -- the store: refused rows are isolated, the rest is written, a replay splits the same way ---------


def _row(window: int, module: str = "cart/store", spans: int = 1) -> AggregateRow:
    return AggregateRow(window, "cart", "prod", "", module, ("@acme/cart",), "", "", "", spans, spans * 1000,
                        0, 0, 5 * spans, 5 * spans, 5, 5, {1: spans})  # fmt: skip


@pytest.mark.parametrize("chunk_rows", [0, 3])
def test_rows_the_store_refuses_are_isolated_and_a_replay_splits_the_same_way(
    store: ClickHouseStore, chunk_rows: int
) -> None:
    good = [_row(MIN * i, spans=i) for i in range(1, 9)]
    bad = [_row(_ns(2107) // MIN * MIN, spans=100), _row((2**64 - 1) // MIN * MIN, spans=1000)]
    rows = [*good[:3], bad[0], *good[3:6], bad[1], *good[6:]]
    refused: list[tuple[AggregateRow, str]] = []
    written = store.write_aggregates(
        rows, MIN, dedup_token="poison", chunk_rows=chunk_rows, on_refused=lambda r, m: refused.append((r, m))
    )
    assert written == len(good)
    assert [r for r, _ in refused] == bad
    assert all("window_start" in m for _, m in refused)
    assert _stored(store) == sum(r.spans for r in good)
    # the replay of the same batch (a crash before the commit) makes the same inserts: nothing doubles
    again: list[tuple[AggregateRow, str]] = []
    store.write_aggregates(
        rows, MIN, dedup_token="poison", chunk_rows=chunk_rows, on_refused=lambda r, m: again.append((r, m))
    )
    assert [r for r, _ in again] == bad
    assert _stored(store) == sum(r.spans for r in good)
    # without a handler, a refusal is an error once the rest is in: never retried as a transient one
    with pytest.raises(StoreRejectedError, match="2 of 10 aggregate rows were refused"):
        store.write_aggregates(rows, MIN, dedup_token="poison-2", chunk_rows=chunk_rows)
    assert _stored(store) == 2 * sum(r.spans for r in good)


# -- direct mode: a partial success, and the writes go on -----------------------------------------


@pytest.fixture
def receivers(store: ClickHouseStore, tmp_path: Path) -> Iterator[Receivers]:
    settings = Settings(receiver={"grpc_enabled": False, "http_port": 0, "flush_interval_seconds": 3600})
    r = start_receivers(settings, store=store, repositories=_repositories(tmp_path))
    try:
        yield r
    finally:
        r.stop(5)


def _post(r: Receivers, encoding: str, body: bytes) -> tuple[int, Any]:
    assert r.http_port is not None
    ctype = "application/x-protobuf" if encoding == "otlp_proto" else "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if encoding == "otlp_json":
        return resp.status, json.loads(data)
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    return resp.status, trace_service_pb2.ExportTraceServiceResponse.FromString(data)


@pytest.mark.parametrize("variant", list(POISON))
def test_direct_mode_answers_a_partial_success_and_keeps_writing(receivers: Receivers, variant: str) -> None:
    sink = receivers.sink
    assert isinstance(sink, DirectPipeline)
    requests, good = _requests(variant, time.time_ns())
    answers = [_post(receivers, enc, body) for enc, body in requests]
    assert [status for status, _ in answers] == [200, 200, 200]
    _, partial = answers[1]
    if isinstance(partial, dict):
        assert partial["partialSuccess"]["rejectedSpans"] == "1"
        message = partial["partialSuccess"]["errorMessage"]
    else:
        assert partial.partial_success.rejected_spans == 1
        message = partial.partial_success.error_message
    assert "time_out_of_range" in message
    assert sink.flush(30), sink.stats.last_error
    assert sum(int(r["spans"]) for r in sink.query_modules(ModulesQuery())) == good
    # and the next flush works too: nothing is stuck behind the bad span
    _post(receivers, *requests[0])
    assert sink.flush(30), sink.stats.last_error
    assert sum(int(r["spans"]) for r in sink.query_modules(ModulesQuery())) == good + GOOD
    assert sink.stats.flush_failures == 0


# -- Kafka mode: the record is dead-lettered, the partition moves on -----------------------------


class _RefusingStore:
    """The real store, but rows of ``service`` get a window no ``DateTime`` holds, so that the
    real engine refuses them (the second layer, behind the decoder's check)."""

    def __init__(self, store: ClickHouseStore, service: str) -> None:
        self._store = store
        self._service = service

    def write_aggregates(self, rows: list[AggregateRow], *args: Any, **kwargs: Any) -> int:
        poisoned = [
            r._replace(window_start_unix_nano=_ns(2107)) if r.service == self._service else r for r in rows
        ]
        return self._store.write_aggregates(poisoned, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _run_stream(
    store: Any, tmp: Path, bootstrap: str, traces: str, dlq: str, done: Callable[[StreamPipeline], bool]
) -> StreamPipeline:
    opts = KafkaOptions((bootstrap,))
    group = f"g-{uuid.uuid4().hex[:8]}"

    def factory(on_assigned: Any, on_revoked: Any) -> Any:
        return TraceConsumer(opts, traces, group, on_assigned=on_assigned, on_revoked=on_revoked)

    cfg = StreamConfig(
        group_id=group,
        processing=ProcessorConfig(encoding="auto", trace_wait_ms=1000),
        linger_ms=50,
        batch_records=2,
        backoff_max_s=0.5,
    )
    dead = DeadLetters(opts, dlq)
    p = StreamPipeline(cfg, factory, store, _repositories(tmp), dead_letters=dead)
    try:
        deadline = time.monotonic() + 60
        while not done(p):
            assert time.monotonic() < deadline, "the partition did not move past the bad record"
            p.step(100)
    finally:
        p.close()
        dead.close()
    return p


def _dead_letters(bootstrap: str, topic: str) -> list[Any]:
    c = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        return list(c)
    finally:
        c.close()


@pytest.mark.parametrize("variant", list(POISON))
def test_kafka_mode_dead_letters_the_record_and_moves_on(
    store: ClickHouseStore, kafka_broker: Any, new_topic: Callable[..., str], tmp_path: Path, variant: str
) -> None:
    traces, dlq = new_topic(1), new_topic(1)
    requests, good = _requests(variant, time.time_ns())
    produce(kafka_broker.bootstrap, traces, [body for _, body in requests])
    p = _run_stream(
        store, tmp_path, kafka_broker.bootstrap, traces, dlq,
        lambda p: p.metrics.value("prodloop_committed_offset", partition="0") >= 3,
    )  # fmt: skip
    assert _stored(store) == good
    assert p.metrics.value("prodloop_rejected_total", reason="time_out_of_range") == 1
    (dead,) = _dead_letters(kafka_broker.bootstrap, dlq)
    headers = dict(dead.headers)
    assert dead.value == requests[1][1]
    assert headers["prodloop.error.reason"] == b"time_out_of_range"
    assert int(headers["prodloop.source.offset"]) == 1
    assert f"other {GOOD} span(s) were counted" in headers["prodloop.error.message"].decode()


def test_kafka_mode_dead_letters_rows_the_store_refuses(
    store: ClickHouseStore, kafka_broker: Any, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    traces, dlq = new_topic(1), new_topic(1)
    now = time.time_ns()
    cart, payments = Requests(seed=1), Requests("payments", "services/payments/api.py", seed=2)
    values = [
        cart.proto(_good_times(now, 0)),
        payments.proto(_good_times(now, 1)),
        cart.proto(_good_times(now, 2)),
    ]
    produce(kafka_broker.bootstrap, traces, values)
    p = _run_stream(
        _RefusingStore(store, "payments"), tmp_path, kafka_broker.bootstrap, traces, dlq,
        lambda p: p.metrics.value("prodloop_committed_offset", partition="0") >= 3,
    )  # fmt: skip
    assert _stored(store) == 2 * GOOD  # the cart spans; the payments rows were refused
    # the payments spans' row, and the row of their self time, written when their trace completed
    assert p.metrics.value("prodloop_store_rows_refused_total") == 2
    assert p.metrics.value("prodloop_rejected_total", reason="store_refused") == GOOD
    dead = _dead_letters(kafka_broker.bootstrap, dlq)
    assert [dict(d.headers)["prodloop.error.reason"] for d in dead] == [b"store_refused"] * 2
    rows = [json.loads(d.value)["aggregate_row"] for d in dead]
    assert all(r["service"] == "payments" for r in rows)
    assert sorted((r["spans"], r["self_spans"]) for r in rows) == [(0, GOOD), (GOOD, 0)]
