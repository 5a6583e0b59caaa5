"""The stream pipeline's per-partition state: buffered records, batches in flight, commit position."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from attribution.tracebuffer import RebuildState
from collector.ports import Record, StreamIntent
from collector.processing.batch import BatchOutcome

_META_MAX = 3000  # bytes of commit metadata (brokers allow 4096 by default); larger states go in the intent


@dataclass(frozen=True)
class CommitMeta:
    """The metadata of a partition's commit: the end of the last batch written, where that batch
    started, and the trace buffer's rebuild state (None: too large, it is in that batch's intent)."""

    end: int
    batch_start: int
    state: RebuildState | None

    def dump(self) -> str:
        doc: dict[str, Any] = {"e": self.end, "s": self.batch_start}
        if self.state is not None:
            doc["r"] = self.state.to_json()
        text = json.dumps(doc, separators=(",", ":"))
        if len(text) > _META_MAX:
            text = json.dumps({"e": self.end, "s": self.batch_start}, separators=(",", ":"))
        return text

    @staticmethod
    def parse(text: str, low: int) -> CommitMeta:
        """A commit without prodloop's metadata (an older version's) ends where it is."""
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "e" not in doc:
            return CommitMeta(low, -1, RebuildState(low, None, ()))
        state = RebuildState.from_json(doc["r"]) if isinstance(doc.get("r"), dict) else None
        return CommitMeta(int(doc["e"]), int(doc.get("s", -1)), state)


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
    rebuild: bool = False  # records already written: they only rebuild the worker's state
    tick: bool = False  # no records: the idle partition's buffered traces complete


@dataclass(frozen=True)
class RebuildJob:
    """Records ``[.., end)`` already written, fed again to rebuild the trace buffer, with the
    deploy selection of the batch that wrote them (``positions`` None: not known, use the current)."""

    end: int
    positions: dict[int, int] | None
    bound: int


@dataclass
class PartitionState:
    partition: int
    start: int  # end of the last batch written: the next batch to write starts here
    history_until: int  # records before this offset only feed the dedup window
    history_from: int = 0  # where the dedup history is read from
    buffer: list[Record] = field(default_factory=list)
    fetched_to: int = 0  # one past the last record taken into the buffer
    next_start: int = 0  # where the next batch handed to the workers starts
    inflight: deque[Pending] = field(default_factory=deque)
    first_at: float = 0.0  # monotonic time the oldest buffered record arrived
    replay: StreamIntent | None = None  # an intent to reproduce exactly
    paused: bool = False
    low: int = -1  # the committed offset: the trace buffer's oldest record (start when -1)
    rebuild: deque[RebuildJob] = field(default_factory=deque)  # records [low, start) to feed again first
    restore: RebuildState | None = None  # the trace buffer's state at low, for the first job
    live_traces: bool = False  # the trace buffer held traces after the last batch written
    last_record_at: float = 0.0  # monotonic time a record was last taken

    def __post_init__(self) -> None:
        if self.low < 0:
            self.low = self.start
        self.fetched_to = self.next_start = self.low

    def uncommitted(self) -> int:
        """Records taken and not committed yet (buffered or at the workers)."""
        return len(self.buffer) + sum(len(x.batch) for x in self.inflight)
