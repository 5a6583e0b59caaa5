"""The one batch processing of every ingest path: decode -> dedup -> attribute -> aggregate.

:class:`BatchProcessor` turns OTLP payloads into aggregate rows and their stats.  The stream
workers give it closed batches of Kafka records (:meth:`BatchProcessor.process`, deduplicated
per partition, attributed with the deploys the batch is tagged with); direct mode and file
ingest decode with its decoders and add spans to its open batch until they flush
(:meth:`BatchProcessor.add`, :meth:`BatchProcessor.drain`).

A processor of ``signal="logs"`` takes records of OTLP logs instead (the logs topic): each batch
aggregates the exceptions its log records carry, with no dedup window (a log record has no
span id) and no trace buffer (log records have no duration).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from attribution.aggregate import AggregateRow, Aggregator, BatchStats, NameRow, merge_sorted
from attribution.attribute import Attributor, FileSeen, FileSightings
from attribution.deploys import DeployTimeline
from attribution.model import DEFAULT_TIME_BOUNDS, DeployEvent, LogException, Span, TimeBounds
from attribution.repository import Repository
from attribution.tracebuffer import BufferStats, RebuildState, TraceBuffer
from collector.codec.framing import sniff_encoding
from collector.codec.otlp import OtlpDecoder
from collector.codec.otlp_logs import decode_logs
from collector.codec.results import Decoded, rejection_message
from collector.errors import DecodeError
from collector.processing import native
from collector.processing.dedup import SpanWindow

# (offset, timestamp ms, value) of one Kafka record; a timestamp < 0 means none
RawRecord = tuple[int, int, bytes]


@dataclass(frozen=True)
class ProcessorConfig:
    signal: Literal["traces", "logs"] = "traces"  # what the stream's records hold
    encoding: str = "otlp_proto"  # otlp_proto | otlp_json | auto
    dedup_horizon: int = 1000
    window_ns: int = 60_000_000_000
    max_groups_per_window: int = 10_000
    sample_rate_attribute: str = ""
    time_bounds: TimeBounds = DEFAULT_TIME_BOUNDS
    trace_wait_ms: int = 10_000  # a trace completes this long after its first record (see TraceBuffer)
    max_buffered_spans: int = 200_000  # per partition (stream), pipeline (direct) or file
    cpu_time_attribute: str = ""  # a span attribute holding CPU time; "" = none
    cpu_time_unit_ns: int = 1_000_000_000  # ns per unit of that attribute
    max_exception_types: int = 10  # per module and window
    native: bool = native.AVAILABLE  # the extension's twins of the hot path: aggregation.hot_path "auto"


@dataclass
class BatchOutcome:
    """What one batch of records aggregates to, and what went wrong on the way."""

    rows: list[AggregateRow]
    stats: BatchStats
    names: list[NameRow] = field(default_factory=list)
    files_seen: list[FileSeen] = field(default_factory=list)  # code files spans came from (last seen)
    buffer: BufferStats = field(default_factory=BufferStats)
    rebuild: RebuildState | None = None  # the trace buffer's state after the batch (stream)
    spans_in: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # offset, reason, message
    partial: list[tuple[int, str, str]] = field(
        default_factory=list
    )  # the same, records with some spans rejected
    rejected: dict[str, int] = field(default_factory=dict)  # invalid spans by reason
    detected: dict[str, int] = field(default_factory=dict)  # encoding auto-detections


class BatchProcessor:
    """Decode, deduplicate, attribute and aggregate spans into rows (see the module docstring).

    ``deploys`` seed the attributor's deploy timeline (direct mode, files); the stream
    attributes each batch with the attributor of its deploy selection instead.  Spans also go
    through a :class:`~attribution.tracebuffer.TraceBuffer` for their self time: the open
    batch's own buffer (direct, files), or the partition's (the stream).
    """

    def __init__(
        self, cfg: ProcessorConfig, repositories: Sequence[Repository], deploys: Iterable[DeployEvent] = ()
    ) -> None:
        self.cfg = cfg
        self.repositories = list(repositories)
        self.attributor = self.new_attributor(DeployTimeline(deploys))
        self.decoder = self.new_decoder()
        self._open = self.new_aggregator(self.attributor)
        self._open_stats = BatchStats()
        self.traces = self.new_buffer()
        self._position = 0

    def new_attributor(self, timeline: DeployTimeline) -> Attributor:
        """An attributor of this config's repositories over ``timeline``."""
        return Attributor(self.repositories, timeline, native_group_ids=native.group_ids(self.cfg.native))

    def new_window(self) -> SpanWindow:
        """A partition's dedup window of this config."""
        return native.dedup_window(self.cfg.dedup_horizon, self.cfg.native)

    def new_decoder(self) -> OtlpDecoder:
        """A decoder of this config; one per thread (its caches are not shared)."""
        cfg = self.cfg
        wanted = self.attributor.wanted_attributes
        if cfg.cpu_time_attribute:
            wanted = (*wanted, cfg.cpu_time_attribute)
        return OtlpDecoder(
            wanted_attributes=wanted,
            sample_rate_attribute=cfg.sample_rate_attribute or None,
            time_bounds=cfg.time_bounds,
            native=native.proto_decoder(cfg.native),
        )

    def new_aggregator(self, attributor: Attributor) -> Aggregator:
        cfg = self.cfg
        return Aggregator(
            attributor,
            window_ns=cfg.window_ns,
            max_groups_per_window=cfg.max_groups_per_window,
            cpu_time_attribute=cfg.cpu_time_attribute,
            cpu_time_unit_ns=cfg.cpu_time_unit_ns,
            max_exception_types=cfg.max_exception_types,
            native_windows=native.windows(cfg.native),
        )

    def new_buffer(self, exact: bool = False) -> TraceBuffer:
        cfg = self.cfg
        return TraceBuffer(
            window_ns=cfg.window_ns,
            wait_ms=cfg.trace_wait_ms,
            max_spans=cfg.max_buffered_spans,
            exact=exact,
            core=native.trace_core(cfg.native),
        )

    @staticmethod
    def _buffer(
        buffer: TraceBuffer,
        aggregator: Aggregator,
        offset: int,
        timestamp_ms: int,
        spans: Sequence[Span],
        emit: bool,
    ) -> None:
        """Hand ``spans``, as grouped by ``aggregator``'s last add, to the trace buffer."""
        att = aggregator.attributor
        gidx = buffer.group_indices(aggregator.last_gids, att.group, att)
        buffer.add_record(offset, timestamp_ms, spans, gidx, emit)

    # -- the open batch (direct mode, files): spans come as they are decoded ----------------

    def add_deploys(self, events: Iterable[DeployEvent]) -> None:
        """Deploys for the spans added from now on (the open batch's timeline)."""
        self.attributor.timeline.add_all(events)

    def add(self, spans: Sequence[Span], timestamp_ms: int = -1) -> None:
        """Attribute and aggregate ``spans`` (one request or file record, arrived at
        ``timestamp_ms``; -1: no time, files) into the open batch."""
        self._open.add(spans, self._open_stats)
        self._position += 1
        self._buffer(self.traces, self._open, self._position, timestamp_ms, spans, True)

    def add_log_exceptions(self, items: Sequence[LogException]) -> None:
        """Exceptions from OTLP log records, into the open batch."""
        self._open.add_log_exceptions(items, self._open_stats)

    def advance(self, now_ms: int) -> None:
        """Complete the open batch's traces that are due by ``now_ms`` (direct mode's arrival clock)."""
        self.traces.advance(now_ms)

    def complete_traces(self) -> None:
        """Complete every buffered trace of the open batch (the end of a file, a stop)."""
        self.traces.complete_all()

    def drain(self) -> tuple[list[AggregateRow], BatchStats]:
        """Close the open batch: its rows (in a deterministic order) and stats."""
        stats, self._open_stats = self._open_stats, BatchStats()
        return merge_sorted(self._open.drain(), self.traces.take_rows()), stats

    def drain_names(self) -> list[NameRow]:
        """The open batch's unattributed span names (since the last call)."""
        return self._open.drain_names()

    def drain_files_seen(self) -> list[FileSeen]:
        """The code files the open batch's attributed spans came from (since the last call)."""
        return self.attributor.drain_files_seen()

    # -- closed batches of records (the stream workers) ---------------------------------

    def _encoding(self, value: bytes, detected: dict[str, int]) -> str:
        enc = self.cfg.encoding
        if enc == "auto":
            enc = sniff_encoding(value)
            detected[enc] = detected.get(enc, 0) + 1
        return enc

    def _decode(
        self, source: str, offset: int, timestamp_ms: int, value: bytes, detected: dict[str, int]
    ) -> Decoded:
        enc = self._encoding(value, detected)
        # span times are judged against the record's timestamp: a pure function of the log
        reference = timestamp_ms * 1_000_000 if timestamp_ms >= 0 else None
        return self.decoder.decode(value, enc, f"{source}@{offset}", reference)

    def history(self, source: str, records: Sequence[RawRecord], window: SpanWindow) -> None:
        """Feed records before the committed offset to ``window`` only (logs have no window)."""
        if self.cfg.signal == "logs":
            return
        detected: dict[str, int] = {}
        for offset, ts, value in records:
            try:
                spans = self._decode(source, offset, ts, value, detected).spans
            except DecodeError:
                continue
            window.observe_spans(offset, spans)

    def process(
        self,
        source: str,
        records: Sequence[RawRecord],
        window: SpanWindow,
        attributor: Attributor,
        buffer: TraceBuffer | None = None,
        *,
        rebuild: bool = False,
        tick: bool = False,
        end_offset: int = -1,
        sightings: FileSightings | None = None,
    ) -> BatchOutcome:
        """One batch of ``source``'s records (``topic[partition]``), deduplicated in ``window``,
        through the partition's trace ``buffer``.

        ``rebuild``: records already written (between the committed offset and the batch end
        of the commit): they only rebuild the dedup window and the buffer, and nothing is
        counted.  ``tick``: no records; every buffered trace completes (an idle partition), and
        ``end_offset`` is where the partition stands.  ``sightings``: the partition's files
        reported so far (see :class:`~attribution.attribute.FileSightings`).  Logs: see
        :meth:`process_logs`."""
        if self.cfg.signal == "logs":
            return self.process_logs(source, records, attributor, sightings)
        aggregator = self.new_aggregator(attributor)
        out = BatchOutcome(rows=[], stats=BatchStats())
        for offset, ts, value in records:
            try:
                decoded = self._decode(source, offset, ts, value, out.detected)
            except DecodeError as exc:
                out.errors.append((offset, exc.reason, str(exc)))
                window.observe_spans(offset, ())
                continue
            if decoded.rejected:
                for rej in decoded.rejected:
                    out.rejected[rej.reason] = out.rejected.get(rej.reason, 0) + 1
                kept = len(decoded.spans)
                out.partial.append(
                    (
                        offset,
                        decoded.rejected[0].reason,
                        f"{rejection_message(decoded.rejected)}; the record's other {kept} span(s) were counted",
                    )
                )
            spans = decoded.spans
            out.spans_in += len(spans)
            dup = window.observe_spans(offset, spans)
            if True in dup:
                out.duplicates += sum(dup)
                spans = [s for s, d in zip(spans, dup, strict=True) if not d]
            aggregator.add(spans, out.stats)
            if buffer is not None:
                self._buffer(buffer, aggregator, offset, ts, spans, not rebuild)
        if rebuild:
            attributor.drain_files_seen()  # written with the batch that counted them
            return BatchOutcome(rows=[], stats=BatchStats())
        if buffer is None:
            out.rows = aggregator.drain()
        else:
            if tick:
                buffer.complete_all()
            out.rows = merge_sorted(aggregator.drain(), buffer.take_rows())
            out.buffer = buffer.take_stats()
            out.rebuild = buffer.rebuild_state(records[-1][0] + 1 if records else end_offset)
        out.names = aggregator.drain_names()
        out.files_seen = attributor.drain_files_seen(sightings)
        return out

    def process_logs(
        self,
        source: str,
        records: Sequence[RawRecord],
        attributor: Attributor,
        sightings: FileSightings | None = None,
    ) -> BatchOutcome:
        """One batch of ``source``'s records of OTLP logs: the exceptions they carry, aggregated.
        A record that cannot be decoded is an error of the outcome (dead-lettered)."""
        aggregator = self.new_aggregator(attributor)
        out = BatchOutcome(rows=[], stats=BatchStats())
        for offset, _, value in records:
            try:
                items = decode_logs(value, self._encoding(value, out.detected), f"{source}@{offset}")
            except DecodeError as exc:
                out.errors.append((offset, exc.reason, str(exc)))
                continue
            aggregator.add_log_exceptions(items, out.stats)
        out.rows = aggregator.drain()
        out.names = aggregator.drain_names()
        out.files_seen = attributor.drain_files_seen(sightings)
        return out
