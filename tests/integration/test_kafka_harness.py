"""The Kafka harness against a real broker: round trips, every codec, consumer groups, broker restarts.

These run kafka-python 3 against the broker from ``scripts/kafka.py`` (or PRODLOOP_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

if TYPE_CHECKING:
    from .conftest import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

NewTopic = Callable[..., str]

# Record batch attributes, bits 0-2 (KIP-98 message format v2).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


# Reconnects back off exponentially up to 30 s by default; a broker restart here takes a few seconds.
RECONNECT_BACKOFF_MAX_MS = 1000


def _producer(kafka_broker: KafkaBroker, **config: object) -> KafkaProducer:
    settings: dict[str, object] = {
        "bootstrap_servers": kafka_broker.bootstrap,
        "client_id": "prodloop-test-producer",
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    settings.update(config)
    return KafkaProducer(**settings)


def _consumer(kafka_broker: KafkaBroker, **config: object) -> KafkaConsumer:
    settings: dict[str, object] = {
        "bootstrap_servers": kafka_broker.bootstrap,
        "client_id": "prodloop-test-consumer",
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    settings.update(config)
    return KafkaConsumer(**settings)


def _subscribe(consumer: KafkaConsumer, topic: str) -> None:
    """Join the group knowing the topic's partitions, as collector.exporters.kafka.consumer.TraceConsumer does: a
    leader that joins without them assigns nothing until its next metadata refresh (5 min)."""
    assert consumer.partitions_for_topic(topic), f"no partitions known for {topic}"
    consumer.subscribe([topic])


@pytest.fixture
def consumers() -> Iterator[list[KafkaConsumer]]:
    """Consumers registered here are closed after the test, even when it fails."""
    opened: list[KafkaConsumer] = []
    yield opened
    for consumer in opened:
        consumer.close()


def _drain(consumer: KafkaConsumer, count: int, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """Poll until ``count`` records arrived (then poll briefly for extras), or fail at the deadline."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    assert len(records) >= count, f"got {len(records)} of {count} records within {timeout_s}s"
    for batch in consumer.poll(timeout_ms=300).values():  # nothing more must be there
        records.extend(batch)
    return records


def _segment_codecs(data_dir: Path, topic: str, partition: int = 0) -> set[str]:
    """The codecs of the record batches the broker wrote to its log segments for a partition."""
    names = {v: k for k, v in CODEC_IDS.items()}
    codecs: set[str] = set()
    for segment in sorted((data_dir / f"{topic}-{partition}").glob("*.log")):
        raw = segment.read_bytes()
        pos = 0
        while pos + 23 <= len(raw):
            # baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc int32, attributes int16
            (batch_length,) = struct.unpack_from(">i", raw, pos + 8)
            magic = raw[pos + 16]
            (attributes,) = struct.unpack_from(">h", raw, pos + 21)
            assert magic == 2, f"unexpected record batch magic {magic} in {segment}"
            codecs.add(names[attributes & 0x07])
            pos += 12 + batch_length
    return codecs


def test_round_trip_keys_values_headers(
    kafka_broker: KafkaBroker, new_topic: NewTopic, consumers: list[KafkaConsumer]
) -> None:
    topic = new_topic(partitions=1)
    sent: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
        (
            f"key-{i}".encode(),
            f"value-{i}".encode() * (i + 1),
            [("trace", f"t{i}".encode()), ("n", str(i).encode())],
        )
        for i in range(20)
    ]
    sent.append((None, b"keyless", []))
    sent.append((b"empty-value", b"", [("dup", b"1"), ("dup", b"2")]))
    producer = _producer(kafka_broker)
    try:
        metadata = [producer.send(topic, key=k, value=v, headers=h).get(timeout=30) for k, v, h in sent]
    finally:
        producer.close()
    assert [m.offset for m in metadata] == list(range(len(sent)))

    consumer = _consumer(kafka_broker)
    consumers.append(consumer)
    consumer.assign([TopicPartition(topic, 0)])
    records = _drain(consumer, len(sent))

    assert [(r.key, r.value, list(r.headers)) for r in records] == sent
    assert [r.offset for r in records] == list(range(len(sent)))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_round_trip(
    kafka_broker: KafkaBroker, new_topic: NewTopic, consumers: list[KafkaConsumer], codec: str
) -> None:
    topic = new_topic(partitions=1)
    # Compressible, span-like payloads, batched so that batches hold many records.
    sent = [
        (str(i).encode(), (f'{{"span":{i},"service":"checkout","attr":"' + "x" * 200 + '"}').encode())
        for i in range(300)
    ]
    producer = _producer(kafka_broker, compression_type=codec, linger_ms=50, batch_size=64 * 1024)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in sent]
        producer.flush(timeout=30)
        assert all(f.get(timeout=1).offset == i for i, f in enumerate(futures))
    finally:
        producer.close()

    consumer = _consumer(kafka_broker)
    consumers.append(consumer)
    consumer.assign([TopicPartition(topic, 0)])
    records = _drain(consumer, len(sent))
    assert [(r.key, r.value) for r in records] == sent

    if kafka_broker.data_dir is not None:  # our own broker: the log shows what the producer really sent
        assert _segment_codecs(kafka_broker.data_dir, topic) == {codec}


def test_consumer_group_commit_and_resume(
    kafka_broker: KafkaBroker, new_topic: NewTopic, consumers: list[KafkaConsumer]
) -> None:
    topic = new_topic(partitions=3)
    group = f"g-{uuid.uuid4().hex[:10]}"
    first = {f"first-{i}".encode() for i in range(30)}
    second = {f"second-{i}".encode() for i in range(12)}
    producer = _producer(kafka_broker)
    try:
        for value in sorted(first):
            producer.send(topic, key=value, value=value)
        producer.flush(timeout=30)

        reader = _consumer(kafka_broker, group_id=group)
        consumers.append(reader)
        _subscribe(reader, topic)
        assert {r.value for r in _drain(reader, len(first))} == first
        reader.commit()
        partitions = [TopicPartition(topic, p) for p in range(3)]
        committed = {tp: reader.committed(tp) for tp in partitions}
        assert sum(offset or 0 for offset in committed.values()) == len(first)
        reader.close()

        for value in sorted(second):
            producer.send(topic, key=value, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()

    resumed = _consumer(kafka_broker, group_id=group)
    consumers.append(resumed)
    _subscribe(resumed, topic)
    records = _drain(resumed, len(second))
    assert {r.value for r in records} == second  # resumes at the commit: nothing of the first batch again
    assert len(records) == len(second)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_clients_survive_broker_restart(
    kafka_broker: KafkaBroker, new_topic: NewTopic, consumers: list[KafkaConsumer], kill: bool
) -> None:
    if not kafka_broker.can_restart:
        pytest.skip("PRODLOOP_KAFKA_BOOTSTRAP names an external broker, which the harness cannot restart")
    topic = new_topic(partitions=1)
    group = f"g-{uuid.uuid4().hex[:10]}"
    before = [f"before-{i}".encode() for i in range(10)]
    after = [f"after-{i}".encode() for i in range(10)]

    producer = _producer(kafka_broker)
    try:
        for value in before:
            producer.send(topic, value=value)
        producer.flush(timeout=30)
        consumer = _consumer(kafka_broker, group_id=group)
        consumers.append(consumer)
        _subscribe(consumer, topic)
        assert [r.value for r in _drain(consumer, len(before))] == before
        consumer.commit()

        kafka_broker.restart(kill=kill)

        # The same client objects carry on against the restarted broker.
        for value in after:
            producer.send(topic, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()
    assert [r.value for r in _drain(consumer, len(after), timeout_s=60)] == after
    consumer.commit()
    assert consumer.committed(TopicPartition(topic, 0)) == len(before) + len(after)
