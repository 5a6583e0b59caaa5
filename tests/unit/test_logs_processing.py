"""The logs path of the stream processing (``signal="logs"``) and of the Kafka gateway.

Log records come from the real SDK logging real exceptions (:mod:`tests.support.log_app`);
the truth is which module raised how many of which type.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs as encode_logs_json
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

from attribution.aggregate import AggregateRow
from attribution.repository import Repository
from collector.app.attribution_files import load_attribution
from collector.codec.otlp_logs import decode_logs
from collector.exporters.kafka.gateway import KafkaGateway
from collector.processing.batch import ProcessorConfig, RawRecord
from collector.processing.deploy_sets import DeployLog
from collector.processing.partitions import Job
from collector.processing.workers import InlineWorkers
from tests.support.log_app import Generator, Truth, requests_of, write_app

T0_MS = 1_700_000_000_000


@pytest.fixture
def app(tmp_path: Path) -> tuple[Generator, list[Repository], InMemoryLogRecordExporter]:
    mods = write_app(tmp_path)
    repos = load_attribution(
        codeowners=tmp_path / "CODEOWNERS", modules=tmp_path / "modules.yaml"
    ).repositories
    gen = Generator(mods, seed=5)
    exporter = InMemoryLogRecordExporter()
    gen.emit(60, {"cart": exporter, "payments": exporter})
    return gen, repos, exporter


def _thrown(rows: Sequence[AggregateRow]) -> Truth:
    got: Truth = Counter()
    for r in rows:
        for etype, n in r.exception_types.items():
            got[(r.service, r.module, etype)] += n
    return got


def _process(repos: list[Repository], encoding: str, records: list[RawRecord]) -> Any:
    workers = InlineWorkers(ProcessorConfig(signal="logs", encoding=encoding), repos)
    workers.reset(0)
    workers.history("logs", 0, records[:2])  # no dedup window: nothing to rebuild
    job = Job(DeployLog().select(T0_MS, {}), records[-1][0] + 1)
    workers.submit("logs", 0, records, job)
    ((_, outcome),) = workers.results()
    return outcome


def test_a_logs_batch_counts_each_exception_on_the_module_that_threw_it(app: Any) -> None:
    gen, repos, exporter = app
    values = requests_of(exporter, 5)
    # one record as OTLP/JSON (the topic mixes encodings under auto), and one undecodable
    records = list(enumerate(values))
    records[1] = (
        1,
        json.dumps(json.loads(encode_logs_json(list(exporter.get_finished_logs())[5:10]).to_json())).encode(),
    )
    records.insert(3, (3, b"\x0a\xff not protobuf"))
    raw = [(o, T0_MS + o, v) for o, (_, v) in enumerate(records)]

    out = _process(repos, "auto", raw)

    assert _thrown(out.rows) == gen.truth
    assert [(o, reason) for o, reason, _ in out.errors] == [(3, "decode_error")]
    assert out.stats.log_exceptions == gen.truth.total()
    assert out.detected == {"otlp_json": 1, "otlp_proto": len(raw) - 1}
    assert out.spans_in == out.duplicates == 0 and out.rebuild is None
    # a replay of the batch makes the same rows (so the same insert-deduplication blocks)
    assert _process(repos, "auto", raw).rows == out.rows


class _Acked:
    def get(self, timeout: float | None = None) -> None:
        return None


class _Refused:
    retriable = False

    def get(self, timeout: float | None = None) -> None:
        raise self.Error()

    class Error(Exception):
        retriable = False


class _Producer:
    def __init__(self, refuse_unkeyed: bool = False) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.refuse_unkeyed = refuse_unkeyed

    def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        return _Refused() if self.refuse_unkeyed and key is None else _Acked()

    def close(self, timeout_s: float) -> None:
        pass


def _gateway(producer: _Producer) -> KafkaGateway:
    return KafkaGateway(producer, traces_topic="t", logs_topic="logs", deploys_topic="d", incidents_topic="i")


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_the_gateway_produces_logs_keyed_by_trace_id(app: Any, encoding: str) -> None:
    gen, _, exporter = app
    records = list(exporter.get_finished_logs())
    body = (
        requests_of(exporter, len(records))[0]
        if encoding == "otlp_proto"
        else encode_logs_json(records).to_json().encode()
    )
    producer = _Producer()
    accepted = _gateway(producer).accept_logs(body, encoding, received_unix_nano=0)

    assert (accepted.spans, accepted.rejected) == (len(records), 0)
    assert {topic for topic, _, _ in producer.sent} == {"logs"}
    keys = [key for _, key, _ in producer.sent]
    assert len(set(keys)) == len(keys) and None in keys  # one record per trace, one without
    thrown: Counter[str] = Counter()
    for _, key, value in producer.sent:
        for x in decode_logs(value, "otlp_proto"):
            assert key == (x.trace_id.hex().encode() or None)
            thrown[x.exception.type] += 1
    assert thrown == _by_type(gen.truth)


def _by_type(truth: Truth) -> Counter[str]:
    out: Counter[str] = Counter()
    for (_, _, etype), n in truth.items():
        out[etype] += n
    return out


def test_log_records_kafka_refused_are_rejected_not_lost_silently(app: Any) -> None:
    _, _, exporter = app
    records = list(exporter.get_finished_logs())
    unkeyed = sum(1 for r in records if not r.log_record.trace_id)
    assert 0 < unkeyed < len(records)
    accepted = _gateway(_Producer(refuse_unkeyed=True)).accept_logs(
        requests_of(exporter, len(records))[0], "otlp_proto", received_unix_nano=0
    )
    assert (accepted.spans, accepted.rejected) == (len(records) - unkeyed, unkeyed)
    assert "Kafka refused" in accepted.message
