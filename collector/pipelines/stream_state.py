"""The stream pipeline's per-partition state: buffered records, batches in flight, commit position."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from collector.ports import Record, StreamIntent
from collector.processing.batch import BatchOutcome


@dataclass
class Pending:
    """A batch handed to the workers, to be written and committed in offset order."""

    batch: list[Record]
    start: int
    end: int
    bound: int
    positions: dict[int, int]
    replay: StreamIntent | None  # the intent this batch reproduces, if any
    nbytes: int
    outcome: BatchOutcome | None = None


@dataclass
class PartitionState:
    partition: int
    start: int  # committed offset: the next batch to write starts here
    history_until: int  # records before this offset only feed the dedup window
    buffer: list[Record] = field(default_factory=list)
    fetched_to: int = 0  # one past the last record taken into the buffer
    next_start: int = 0  # where the next batch handed to the workers starts
    inflight: deque[Pending] = field(default_factory=deque)
    first_at: float = 0.0  # monotonic time the oldest buffered record arrived
    replay: StreamIntent | None = None  # an intent to reproduce exactly
    paused: bool = False

    def __post_init__(self) -> None:
        self.fetched_to = self.next_start = self.start

    def uncommitted(self) -> int:
        """Records taken and not committed yet (buffered or at the workers)."""
        return len(self.buffer) + sum(len(x.batch) for x in self.inflight)
