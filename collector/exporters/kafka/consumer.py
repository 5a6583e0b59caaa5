"""The Kafka consumers: the traces topic in a group (:class:`TraceConsumer`), event topics read whole
(:class:`EventReader`).  They implement :class:`collector.ports.TraceSource` and
:class:`collector.ports.EventSource`; kafka-python's errors are wrapped once, as :class:`BrokerError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from collector.errors import BrokerError, ConfigError
from collector.exporters.kafka.compat import (
    ConsumerRebalanceListener,
    FencedInstanceIdError,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaError,
    MemberToRemove,
    NoError,
    OffsetAndMetadata,
    TopicPartition,
)
from collector.exporters.kafka.options import KafkaOptions
from collector.ports import Record

log = logging.getLogger("prodloop.kafka")

# Blocking calls of the traces consumer (committed offsets, commits, list offsets) give up after
# this, rather than kafka-python's request timeout (305 s for consumers): while one blocks, the
# loop does not poll, and a rebalance waits for this member's join.  A timeout is a BrokerError,
# which the pipeline waits out and retries.
_CALL_TIMEOUT_MS = 15_000


def _record(r: Any) -> Record:
    return Record(
        r.topic,
        r.partition,
        r.offset,
        r.timestamp,
        r.key,
        r.value if r.value is not None else b"",
        tuple((k, v if v is not None else b"") for k, v in (r.headers or ())),
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        consumer: Any,
        on_assigned: Callable[[list[int]], None],
        on_revoked: Callable[[list[int]], None],
    ) -> None:
        self._consumer = consumer
        self._assigned = on_assigned
        self._revoked = on_revoked

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self._revoked(sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        # kafka-python keeps the paused flag of a partition revoked and assigned again in one
        # rebalance: an assigned partition starts unpaused, as its new owner's state does
        self._consumer.resume(*assigned)
        self._assigned(sorted(tp.partition for tp in assigned))


def topic_exists(options: KafkaOptions, topic: str) -> bool:
    """Does ``topic`` exist on the brokers (raises BrokerError when they cannot tell)?"""
    try:
        c = KafkaConsumer(
            group_id=None, enable_auto_commit=False, request_timeout_ms=10_000, **options.client_config()
        )
        try:
            return bool(c.partitions_for_topic(topic))
        finally:
            c.close(autocommit=False)
    except KafkaError as exc:
        raise BrokerError(f"cannot ask {options.bootstrap_servers} about topic {topic!r}: {exc}") from exc


class TraceConsumer:
    """The traces topic, consumed in a consumer group with manual commits.

    With ``options.group_instance_id`` it is a static member (KIP-345): the broker keeps its
    partitions for it across a restart, for up to the session timeout.  kafka-python never
    sends a static member's LeaveGroup, so :meth:`close` removes it from the group itself when
    ``options.leave_group_on_stop`` (docs/deploy.md weighs the two).

    ``on_assigned`` gets partitions that start unpaused, even those this member held before.
    """

    def __init__(
        self,
        options: KafkaOptions,
        topic: str,
        group_id: str,
        *,
        on_assigned: Callable[[list[int]], None],
        on_revoked: Callable[[list[int]], None],
        max_partition_fetch_bytes: int = 2 * 1024 * 1024,
        session_timeout_ms: int | None = None,
        max_poll_interval_ms: int = 300_000,
    ) -> None:
        self.topic = topic
        self._options = options
        self._group_id = group_id
        self._fenced = False
        if session_timeout_ms is None:
            session_timeout_ms = options.session_timeout_ms
        try:
            self._c = KafkaConsumer(
                group_id=group_id,
                group_instance_id=options.group_instance_id or None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=max_partition_fetch_bytes,
                # kafka-python assembles each response in three copies, and fetched partitions
                # wait for the loop: 4 MiB responses keep that small (bench/kafka_e2e.py: consumer
                # peak RSS -60 MB against 16 MiB, same throughput); a larger record still comes
                # whole (KIP-74)
                fetch_max_bytes=4 * 1024 * 1024,
                session_timeout_ms=session_timeout_ms,
                # heartbeats carry the news of a rebalance: at most 3 s apart, as Kafka's default
                heartbeat_interval_ms=max(500, min(3000, session_timeout_ms // 4)),
                max_poll_interval_ms=max_poll_interval_ms,
                # check_crcs (the default) is cheap with the crc32c package, a dependency
                # notice partitions added to the topic within 30 s, not kafka-python's 5 min
                metadata_max_age_ms=30_000,
                **options.client_config(),
            )
            # Know the topic's partitions before joining the group: a leader that joins without
            # them assigns nothing and the group idles until the next metadata refresh.  Asked
            # after subscribing, the answer also updates the group's metadata snapshot: a leader
            # that assigns from a stale one rebalances again as soon as the metadata refreshes.
            self._c.subscribe([topic], listener=_Listener(self._c, on_assigned, on_revoked))
            self._c.partitions_for_topic(topic)
        except KafkaError as exc:
            raise BrokerError(f"cannot consume {topic!r} from {options.bootstrap_servers}: {exc}") from exc

    def _fenced_error(self, exc: Exception) -> ConfigError:
        self._fenced = True  # close() must not remove the member that took the id over
        return ConfigError(
            f"kafka.group_instance_id {self._options.group_instance_id!r} (PRODLOOP_KAFKA__GROUP_INSTANCE_ID) "
            f"is used by another consumer of group {self._group_id!r}: each replica needs its own id "
            f"(the chart uses the pod name): {exc}"
        )

    def _resume_stalled_rebalance(self) -> None:
        """kafka-python 3.0.12 abandons a rebalance started for a metadata change (the leader saw
        the partitions change) when its JoinGroup and SyncGroup outlast the poll that sent them:
        the leader's assignment sets its snapshot, ``need_rejoin()`` turns False, and no poll
        collects the result.  The member keeps no partitions, sends no heartbeats, and the broker
        expires it.  Asking for the rejoin again lets this poll finish the rebalance."""
        co = self._c._coordinator
        if co.rejoining and not co.need_rejoin():
            log.warning(
                "group %s: the Kafka client left a rebalance unfinished, with no partitions of %s; rejoining",
                self._group_id,
                self.topic,
            )
            co.request_rejoin()

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        self._resume_stalled_rebalance()
        try:
            batches = self._c.poll(timeout_ms=timeout_ms, max_records=max_records)
        except FencedInstanceIdError as exc:
            raise self._fenced_error(exc) from exc
        except KafkaError as exc:
            raise BrokerError(f"poll failed on {self.topic!r}: {exc}") from exc
        out: list[Record] = []
        for recs in batches.values():
            out.extend(_record(r) for r in recs)
        return out

    def committed(self, partition: int) -> int | None:
        got = self.committed_with_metadata(partition)
        return got[0] if got is not None else None

    def committed_with_metadata(self, partition: int) -> tuple[int, str] | None:
        """The committed offset of ``partition`` and the metadata committed with it."""
        try:
            om = self._c.committed(
                TopicPartition(self.topic, partition), metadata=True, timeout_ms=_CALL_TIMEOUT_MS
            )
        except KafkaError as exc:
            raise BrokerError(
                f"cannot read the committed offset of {self.topic}[{partition}]: {exc}"
            ) from exc
        return (int(om.offset), str(om.metadata or "")) if om is not None else None

    def beginning(self, partition: int) -> int:
        tp = TopicPartition(self.topic, partition)
        try:
            return int(self._c.beginning_offsets([tp], timeout_ms=_CALL_TIMEOUT_MS)[tp])
        except KafkaError as exc:
            raise BrokerError(f"cannot read the beginning of {self.topic}[{partition}]: {exc}") from exc

    def end(self, partitions: Iterable[int]) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if not tps:
            return {}
        try:
            return {
                tp.partition: int(o)
                for tp, o in self._c.end_offsets(tps, timeout_ms=_CALL_TIMEOUT_MS).items()
            }
        except KafkaError as exc:
            raise BrokerError(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc

    def seek(self, partition: int, offset: int) -> None:
        self._c.seek(TopicPartition(self.topic, partition), offset)

    def commit(self, offsets: Mapping[int, int], metadata: Mapping[int, str] | None = None) -> None:
        """Commit ``partition -> next offset to read`` (with ``metadata`` per partition).
        Raises BrokerError on failure."""
        if not offsets:
            return
        meta = metadata or {}
        try:
            self._c.commit(
                {
                    TopicPartition(self.topic, p): OffsetAndMetadata(o, meta.get(p, ""), -1)
                    for p, o in offsets.items()
                },
                timeout_ms=_CALL_TIMEOUT_MS,
            )
        except FencedInstanceIdError as exc:
            raise self._fenced_error(exc) from exc
        except KafkaError as exc:
            raise BrokerError(f"commit failed on {self.topic!r}: {exc}") from exc

    def pause(self, partitions: Iterable[int]) -> None:
        self._c.pause(*[TopicPartition(self.topic, p) for p in partitions])

    def resume(self, partitions: Iterable[int]) -> None:
        self._c.resume(*[TopicPartition(self.topic, p) for p in partitions])

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._c.assignment())

    def ends(self) -> dict[int, int]:
        """The end offset of each assigned partition: the high watermark the last fetch response
        carried (no round trip: ListOffsets costs the loop ~100 ms).  Paused partitions are not
        fetched, so their end is asked of the broker."""
        parts = self.assignment()
        paused = {tp.partition for tp in self._c.paused() if tp.topic == self.topic}
        ends: dict[int, int] = {}
        ask = []
        for p in parts:
            hw = None if p in paused else self._c.highwater(TopicPartition(self.topic, p))
            if hw is None:
                ask.append(p)
            else:
                ends[p] = int(hw)
        ends.update(self.end(ask))
        return ends

    def close(self) -> None:
        try:
            self._c.close(autocommit=False)
        except Exception as exc:
            log.warning("closing the traces consumer failed: %s", exc)
        o = self._options
        if o.group_instance_id and o.leave_group_on_stop and not self._fenced:
            self._leave_group()

    def _leave_group(self) -> None:
        """Remove this static member from the group, so the others take its partitions now."""
        instance = self._options.group_instance_id
        try:
            admin = KafkaAdminClient(
                **self._options.client_config(), request_timeout_ms=5_000, bootstrap_timeout_ms=5_000
            )
            try:
                result = admin.remove_group_members(
                    self._group_id, [MemberToRemove(group_instance_id=instance, reason="prodloop stopping")]
                )
            finally:
                admin.close()
        except Exception as exc:  # best effort: the broker drops the member after the session timeout
            log.warning(
                "could not leave group %s as %s (%s); its partitions wait up to kafka.session_timeout_ms (%d ms)",
                self._group_id,
                instance,
                exc,
                self._options.session_timeout_ms,
            )
            return
        errors = {k: e for k, e in result.items() if e is not NoError}
        if errors:
            log.info("leaving group %s as %s: %s", self._group_id, instance, errors)
        else:
            log.info("left group %s as static member %s", self._group_id, instance)


class EventReader:
    """A small topic every replica reads whole (deploys, incidents): manual assignment, no group.

    After a broker outage kafka-python's ListOffsets can stay stuck on a dead connection;
    a failed call therefore reopens the client at the positions already reached.
    """

    def __init__(self, options: KafkaOptions, topic: str) -> None:
        self.topic = topic
        self._options = options
        self._positions: dict[int, int] = {}
        self._open()

    def _open(self) -> None:
        options, topic = self._options, self.topic
        try:
            self._c = KafkaConsumer(
                enable_auto_commit=False,
                group_id=None,
                auto_offset_reset="earliest",
                request_timeout_ms=10_000,
                **options.client_config(),
            )
            parts = self._c.partitions_for_topic(topic)
            if not parts:
                raise BrokerError(f"topic {topic!r} does not exist on {options.bootstrap_servers}")
            self._tps = [TopicPartition(topic, p) for p in sorted(parts)]
            self._c.assign(self._tps)
            for tp in self._tps:
                if tp.partition in self._positions:
                    self._c.seek(tp, self._positions[tp.partition])
        except KafkaError as exc:
            raise BrokerError(f"cannot read {topic!r} from {options.bootstrap_servers}: {exc}") from exc

    def _reopen(self) -> None:
        with contextlib.suppress(Exception):
            self._c.close(autocommit=False)
        self._open()

    def seek(self, positions: Mapping[int, int]) -> None:
        for tp in self._tps:
            if tp.partition in positions:
                self._c.seek(tp, positions[tp.partition])
                self._positions[tp.partition] = positions[tp.partition]

    def poll(self, timeout_ms: int = 0) -> list[Record]:
        try:
            batches = self._c.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            self._reopen()
            raise BrokerError(f"poll failed on {self.topic!r}: {exc}") from exc
        out: list[Record] = []
        for recs in batches.values():
            out.extend(_record(r) for r in recs)
        out.sort(key=lambda r: (r.partition, r.offset))
        for r in out:
            self._positions[r.partition] = r.offset + 1
        return out

    def positions(self) -> dict[int, int]:
        try:
            return {tp.partition: int(self._c.position(tp)) for tp in self._tps}
        except KafkaError as exc:
            self._reopen()
            raise BrokerError(f"cannot read the positions on {self.topic!r}: {exc}") from exc

    def at_end(self) -> bool:
        """Has this reader consumed everything the topic holds right now?"""
        try:
            ends = self._c.end_offsets(self._tps)
            return all(int(self._c.position(tp)) >= int(ends[tp]) for tp in self._tps)
        except KafkaError as exc:
            self._reopen()
            raise BrokerError(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc

    def close(self) -> None:
        try:
            self._c.close(autocommit=False)
        except Exception as exc:
            log.warning("closing the %s reader failed: %s", self.topic, exc)
