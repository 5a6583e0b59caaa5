"""The write-ahead log read as a topic of one partition: the stream pipeline's trace source
(:class:`WalSource`, with commits) and its deploy and incident sources (:class:`WalEvents`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from collector.exporters.wal.log import WriteAheadLog
from collector.ports import Record

_DEFAULT_MAX_RECORDS = 500
_MIN_WAIT_S = 0.01


def _records(topic: str, got: list[tuple[int, int, bytes]]) -> list[Record]:
    return [Record(topic, 0, off, ts, None, value) for off, ts, value in got]


class WalSource:
    """A :class:`~collector.ports.TraceSource` over one log: partition 0, assigned at the first
    poll, committed offsets stored in the log itself.  Segments are removed only below the commit
    minus ``retain_records`` (the dedup horizon: a client's retry of a committed request is still
    recognised after a restart)."""

    def __init__(
        self,
        wal: WriteAheadLog,
        topic: str,
        on_assigned: Callable[[list[int]], None],
        *,
        retain_records: int = 0,
    ) -> None:
        self.wal = wal
        self.topic = topic
        self._on_assigned = on_assigned
        self._retain = retain_records
        self._assigned = False
        self._paused = False
        self._position = wal.first_offset

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        if not self._assigned:
            self._assigned = True
            self._on_assigned([0])
            return []
        # nothing to fetch: wait for a new record, at least a little (a busy loop polls with 0
        # while batches wait for their deploys; a local log would make that a spin)
        wait_s = max(timeout_ms / 1000, _MIN_WAIT_S)
        if self._paused:
            self.wal.wait_durable(2**62, wait_s)
            return []
        if self.wal.durable_end <= self._position:
            self.wal.wait_durable(self._position, wait_s)
        got = self.wal.read(self._position, max_records or _DEFAULT_MAX_RECORDS)
        if got:
            self._position = got[-1][0] + 1
        return _records(self.topic, got)

    def committed(self, partition: int) -> int | None:
        got = self.wal.committed()
        return got[0] if got is not None else None

    def committed_with_metadata(self, partition: int) -> tuple[int, str] | None:
        return self.wal.committed()

    def beginning(self, partition: int) -> int:
        return self.wal.first_offset

    def seek(self, partition: int, offset: int) -> None:
        self._position = offset

    def commit(self, offsets: Mapping[int, int], metadata: Mapping[int, str] | None = None) -> None:
        if 0 in offsets:
            self.wal.commit(offsets[0], (metadata or {}).get(0, ""), keep_from=offsets[0] - self._retain)

    def pause(self, partitions: Iterable[int]) -> None:
        if 0 in partitions:
            self._paused = True

    def resume(self, partitions: Iterable[int]) -> None:
        if 0 in partitions:
            self._paused = False

    def assignment(self) -> list[int]:
        return [0] if self._assigned else []

    def ends(self) -> dict[int, int]:
        return {0: self.wal.durable_end} if self._assigned else {}

    def close(self) -> None:
        """The log belongs to whoever opened it."""


class WalEvents:
    """An :class:`~collector.ports.EventSource` over one log (deploys or incidents), read whole."""

    def __init__(self, wal: WriteAheadLog, topic: str) -> None:
        self.wal = wal
        self.topic = topic
        self._position = wal.first_offset

    def poll(self, timeout_ms: int = 0) -> list[Record]:
        got = self.wal.read(self._position, _DEFAULT_MAX_RECORDS)
        if got:
            self._position = got[-1][0] + 1
        return _records(self.topic, got)

    def seek(self, positions: Mapping[int, int]) -> None:
        if 0 in positions:
            self._position = positions[0]

    def positions(self) -> dict[int, int]:
        return {0: self._position}

    def at_end(self) -> bool:
        return self._position >= self.wal.durable_end
