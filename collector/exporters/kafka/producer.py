"""The Kafka producers: the gateway's (:class:`KafkaProducerAdapter`, behind its
:class:`~collector.exporters.kafka.gateway.Producer` seam) and the dead letters'
(:class:`DeadLetters`, a :class:`collector.ports.DeadLetterSink`).  kafka-python's errors are
wrapped once, as :class:`BrokerError`.
"""

from __future__ import annotations

import logging
from typing import Any

from collector.errors import BrokerError
from collector.exporters.kafka.compat import KafkaError, KafkaProducer
from collector.exporters.kafka.gateway import AckFuture
from collector.exporters.kafka.options import KafkaOptions
from collector.ports import Record

log = logging.getLogger("prodloop.kafka")
_gateway_log = logging.getLogger("prodloop.gateway")


class KafkaProducerAdapter:
    """The gateway's ``Producer`` over kafka-python's ``KafkaProducer`` (acks=all, idempotence off)."""

    def __init__(
        self, client_config: dict[str, Any], *, max_request_size: int, max_block_s: float = 10.0
    ) -> None:
        try:
            self._p = KafkaProducer(
                acks="all",
                linger_ms=2,
                retries=3,
                max_block_ms=int(max_block_s * 1000),
                max_request_size=max(max_request_size, 1024 * 1024),
                **client_config,
            )
        except KafkaError as exc:
            raise BrokerError(
                f"cannot connect a producer to {client_config.get('bootstrap_servers')}: {exc}"
            ) from exc

    def send(self, topic: str, key: bytes | None, value: bytes) -> AckFuture:
        try:
            fut: AckFuture = self._p.send(topic, value=value, key=key)
        except KafkaError as exc:
            raise BrokerError(f"cannot produce to {topic!r}: {exc}") from exc
        return fut

    def close(self, timeout_s: float) -> None:
        try:
            self._p.close(timeout=timeout_s)
        except Exception as exc:  # closing is best effort
            _gateway_log.warning("closing the gateway's Kafka producer failed: %s", exc)


class DeadLetters:
    """Produces bad records to the dead-letter topic, with their origin and error in headers."""

    def __init__(self, options: KafkaOptions, topic: str) -> None:
        self.topic = topic
        try:
            self._p = KafkaProducer(acks="all", linger_ms=5, **options.client_config())
        except KafkaError as exc:
            raise BrokerError(f"cannot produce to {topic!r}: {exc}") from exc

    def send(self, record: Record, reason: str, error: str) -> None:
        headers = [
            ("prodloop.source.topic", record.topic.encode()),
            ("prodloop.source.partition", str(record.partition).encode()),
            ("prodloop.source.offset", str(record.offset).encode()),
            ("prodloop.error.reason", reason.encode()),
            ("prodloop.error.message", error.encode()[:4000]),
            *[(k, v) for k, v in record.headers if not k.startswith("prodloop.")],
        ]
        try:
            self._p.send(self.topic, value=record.value, key=record.key, headers=headers)
        except KafkaError as exc:
            raise BrokerError(f"cannot dead-letter to {self.topic!r}: {exc}") from exc

    def flush(self, timeout_s: float = 30) -> None:
        try:
            self._p.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise BrokerError(f"dead-letter flush to {self.topic!r} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._p.close(timeout=5)
        except Exception as exc:
            log.warning("closing the dead-letter producer failed: %s", exc)
