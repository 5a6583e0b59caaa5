"""A stream worker's state over its partitions: their dedup windows and the deploy log's attributors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from attribution.attribute import Attributor, FileSightings
from attribution.deploys import DeployTimeline
from attribution.model import DeployEvent
from attribution.repository import Repository
from attribution.tracebuffer import RebuildState, TraceBuffer
from collector.processing.batch import BatchOutcome, BatchProcessor, ProcessorConfig, RawRecord
from collector.processing.dedup import SpanWindow
from collector.processing.deploy_sets import DeployLog, Selection, TopicDeploy

_ATTRIBUTORS_KEPT = 8


class Job(NamedTuple):
    """How a worker processes one batch of a partition (see :meth:`BatchProcessor.process`)."""

    selection: Selection
    end_offset: int
    rebuild: bool = False  # records already written: rebuild the dedup window and trace buffer only
    tick: bool = False  # no records: complete every buffered trace (an idle partition)
    restore: RebuildState | None = None  # start the partition's trace buffer from this state


class PartitionProcessor:
    """The :class:`BatchProcessor` of one worker, with each partition's dedup window, trace
    buffer and files reported (so the outcomes do not depend on which process a partition is
    in), and the attributors of the deploy selections its batches are tagged with."""

    def __init__(self, cfg: ProcessorConfig, repositories: Sequence[Repository]) -> None:
        self.cfg = cfg
        self.batches = BatchProcessor(cfg, repositories)
        self.windows: dict[int, SpanWindow] = {}
        self.buffers: dict[int, TraceBuffer] = {}
        self.sightings: dict[int, FileSightings] = {}
        self.deploys = DeployLog()
        self._attributors: dict[Selection, Attributor] = {}  # of the log's current version

    def reset(self, partition: int) -> None:
        self.windows[partition] = self.batches.new_window()
        self.buffers[partition] = self.batches.new_buffer(exact=True)
        self.sightings.pop(partition, None)

    def drop(self, partition: int) -> None:
        self.windows.pop(partition, None)
        self.buffers.pop(partition, None)
        self.sightings.pop(partition, None)

    def _window(self, partition: int) -> SpanWindow:
        w = self.windows.get(partition)
        if w is None:
            w = self.windows[partition] = self.batches.new_window()
        return w

    def _sightings(self, partition: int) -> FileSightings:
        s = self.sightings.get(partition)
        if s is None:
            s = self.sightings[partition] = FileSightings(self.cfg.window_ns)
        return s

    def history(self, topic: str, partition: int, records: Sequence[RawRecord]) -> None:
        """Feed records before the committed offset to the dedup window only."""
        self.batches.history(f"{topic}[{partition}]", records, self._window(partition))

    def add_deploys(self, static: Sequence[DeployEvent], topic: Sequence[TopicDeploy]) -> None:
        if self.deploys.add(static, topic):
            self._attributors.clear()

    def attributor(self, selection: Selection) -> Attributor:
        att = self._attributors.get(selection)
        if att is None:
            events = self.deploys.events(selection)
            if len(self._attributors) >= _ATTRIBUTORS_KEPT:
                self._attributors.pop(next(iter(self._attributors)))
            att = self.batches.new_attributor(DeployTimeline(events))
            self._attributors[selection] = att
        return att

    def process(self, topic: str, partition: int, records: Sequence[RawRecord], job: Job) -> BatchOutcome:
        buffer = self.buffers.get(partition)
        if buffer is None or job.restore is not None:
            buffer = self.buffers[partition] = self.batches.new_buffer(exact=True)
            if job.restore is not None:
                buffer.restore(job.restore)
        return self.batches.process(
            f"{topic}[{partition}]",
            records,
            self._window(partition),
            self.attributor(job.selection),
            buffer,
            rebuild=job.rebuild,
            tick=job.tick,
            end_offset=job.end_offset,
            sightings=self._sightings(partition),
        )
