"""The one batch processing of every ingest path: decode -> dedup -> attribute -> aggregate.

:class:`BatchProcessor` turns OTLP payloads into aggregate rows and their stats.  The stream
workers give it closed batches of Kafka records (:meth:`BatchProcessor.process`, deduplicated
per partition, attributed with the deploys the batch is tagged with); direct mode and file
ingest decode with its decoders and add spans to its open batch until they flush
(:meth:`BatchProcessor.add`, :meth:`BatchProcessor.drain`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from attribution.aggregate import AggregateRow, Aggregator, BatchStats
from attribution.attribute import Attributor
from attribution.deploys import DeployTimeline
from attribution.model import DEFAULT_TIME_BOUNDS, DeployEvent, Span, TimeBounds
from attribution.repository import Repository
from collector.codec.framing import sniff_encoding
from collector.codec.otlp import OtlpDecoder
from collector.codec.results import Decoded, rejection_message
from collector.errors import DecodeError
from collector.processing.dedup import DedupWindow

# (offset, timestamp ms, value) of one Kafka record; a timestamp < 0 means none
RawRecord = tuple[int, int, bytes]


@dataclass(frozen=True)
class ProcessorConfig:
    encoding: str = "otlp_proto"  # otlp_proto | otlp_json | auto
    dedup_horizon: int = 1000
    window_ns: int = 60_000_000_000
    max_groups_per_window: int = 10_000
    sample_rate_attribute: str = ""
    time_bounds: TimeBounds = DEFAULT_TIME_BOUNDS


@dataclass
class BatchOutcome:
    """What one batch of records aggregates to, and what went wrong on the way."""

    rows: list[AggregateRow]
    stats: BatchStats
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
    attributes each batch with the attributor of its deploy selection instead.
    """

    def __init__(
        self, cfg: ProcessorConfig, repositories: Sequence[Repository], deploys: Iterable[DeployEvent] = ()
    ) -> None:
        self.cfg = cfg
        self.repositories = list(repositories)
        self.attributor = Attributor(self.repositories, DeployTimeline(deploys))
        self.decoder = self.new_decoder()
        self._open = self.new_aggregator(self.attributor)
        self._open_stats = BatchStats()

    def new_decoder(self) -> OtlpDecoder:
        """A decoder of this config; one per thread (its caches are not shared)."""
        cfg = self.cfg
        return OtlpDecoder(
            wanted_attributes=self.attributor.wanted_attributes,
            sample_rate_attribute=cfg.sample_rate_attribute or None,
            time_bounds=cfg.time_bounds,
        )

    def new_aggregator(self, attributor: Attributor) -> Aggregator:
        cfg = self.cfg
        return Aggregator(
            attributor, window_ns=cfg.window_ns, max_groups_per_window=cfg.max_groups_per_window
        )

    # -- the open batch (direct mode, files): spans come as they are decoded ----------------

    def add_deploys(self, events: Iterable[DeployEvent]) -> None:
        """Deploys for the spans added from now on (the open batch's timeline)."""
        self.attributor.timeline.add_all(events)

    def add(self, spans: Sequence[Span]) -> None:
        """Attribute and aggregate ``spans`` into the open batch."""
        self._open.add(spans, self._open_stats)

    def drain(self) -> tuple[list[AggregateRow], BatchStats]:
        """Close the open batch: its rows (in a deterministic order) and stats."""
        stats, self._open_stats = self._open_stats, BatchStats()
        return self._open.drain(), stats

    # -- closed batches of records (the stream workers) ---------------------------------

    def _decode(
        self, source: str, offset: int, timestamp_ms: int, value: bytes, detected: dict[str, int]
    ) -> Decoded:
        enc = self.cfg.encoding
        if enc == "auto":
            enc = sniff_encoding(value)
            detected[enc] = detected.get(enc, 0) + 1
        # span times are judged against the record's timestamp: a pure function of the log
        reference = timestamp_ms * 1_000_000 if timestamp_ms >= 0 else None
        return self.decoder.decode(value, enc, f"{source}@{offset}", reference)

    def history(self, source: str, records: Sequence[RawRecord], window: DedupWindow) -> None:
        """Feed records before the committed offset to ``window`` only."""
        detected: dict[str, int] = {}
        for offset, ts, value in records:
            try:
                spans = self._decode(source, offset, ts, value, detected).spans
            except DecodeError:
                continue
            window.observe(offset, [s.trace_id + s.span_id for s in spans])

    def process(
        self, source: str, records: Sequence[RawRecord], window: DedupWindow, attributor: Attributor
    ) -> BatchOutcome:
        """One batch of ``source``'s records (``topic[partition]``), deduplicated in ``window``."""
        aggregator = self.new_aggregator(attributor)
        out = BatchOutcome(rows=[], stats=BatchStats())
        for offset, ts, value in records:
            try:
                decoded = self._decode(source, offset, ts, value, out.detected)
            except DecodeError as exc:
                out.errors.append((offset, exc.reason, str(exc)))
                window.observe(offset, [])
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
            dup = window.observe(offset, [s.trace_id + s.span_id for s in spans])
            if True in dup:
                out.duplicates += sum(dup)
                spans = [s for s, d in zip(spans, dup, strict=True) if not d]
            aggregator.add(spans, out.stats)
        out.rows = aggregator.drain()
        return out
