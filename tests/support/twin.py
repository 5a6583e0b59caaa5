"""Both paths on every input: the Python reference and its native twin, compared as they go.

* :class:`TwinDecoder` is an :class:`~collector.codec.otlp.OtlpDecoder` (the Python path, whose
  result it returns) that also decodes each protobuf record on the native path and fails the
  test at the first difference: a span, a rejection, or whether the record is refused at all.
  The decoder tests, the golden files and the unit tests' ``otel.decode`` use it.
* :class:`TwinAggregator` does the same for :class:`~attribution.aggregate.Aggregator` and its
  native windows: the aggregation tests use it.

So each of those tests' inputs is a differential test.  Without the extension (no cargo on the
machine; ``tests/unit/test_native.py`` fails when cargo exists) they run the Python path alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attribution.aggregate import AggregateRow, Aggregator, BatchStats, NameRow
from attribution.attribute import Attributor
from attribution.model import LogException, Span
from collector.codec.otlp import OtlpDecoder
from collector.codec.results import Decoded
from collector.errors import DecodeError
from collector.processing import native


def canonical(decoded: Decoded) -> tuple[list[str], list[tuple[str, str]]]:
    """What must be identical, NaN-safe and type-strict (``repr``: True != 1, nan == nan)."""
    return [repr(tuple(s)) for s in decoded.spans], [(r.reason, r.message) for r in decoded.rejected]


def first_difference(want: Decoded, got: Decoded) -> str | None:
    """The first span or rejection that differs, named, or None when both are identical."""
    (ws, wr), (gs, gr) = canonical(want), canonical(got)
    for what, a, b in (("span", ws, gs), ("rejection", wr, gr)):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return f"{what} {i} differs:\n  python: {x}\n  native: {y}"
        if len(a) != len(b):
            return f"python has {len(a)} {what}s, native {len(b)}"
    return None


def outcome(
    decode: Callable[[bytes, str, int | None], Decoded], data: bytes, where: str, reference: int | None
) -> Decoded | DecodeError:
    """What ``decode`` (a ``decode_proto``) makes of a record: its result, or its DecodeError."""
    try:
        return decode(data, where, reference)
    except DecodeError as exc:
        return exc


def compare(want: Decoded | DecodeError, got: Decoded | DecodeError, where: str) -> str | None:
    """None when the two outcomes agree: both refuse the record (messages may differ; the
    native one still names ``where``), or both give identical spans and rejections."""
    if isinstance(want, DecodeError) or isinstance(got, DecodeError):
        if isinstance(want, DecodeError) and isinstance(got, DecodeError):
            return None if str(got).startswith(where) else f"the native error does not name {where!r}: {got}"
        return f"python: {want!r}\nnative: {got!r}"
    return first_difference(want, got)


class TwinDecoder(OtlpDecoder):
    """:class:`OtlpDecoder` whose ``decode_proto`` runs both paths and asserts they agree."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.twin = (
            OtlpDecoder(*args, **kwargs, native=native.proto_decoder(True)) if native.AVAILABLE else None
        )

    def decode_proto(
        self, data: bytes, where: str = "<bytes>", reference_unix_nano: int | None = None
    ) -> Decoded:
        want = outcome(super().decode_proto, data, where, reference_unix_nano)
        if self.twin is not None:
            diff = compare(want, outcome(self.twin.decode_proto, data, where, reference_unix_nano), where)
            assert diff is None, f"the native decoder differs from the Python one on {where}: {diff}"
        if isinstance(want, DecodeError):
            raise want
        return want


class TwinAggregator(Aggregator):
    """:class:`Aggregator` (the Python path, whose results it returns) fed in step with its
    native twin (``native_windows``, over an attributor of the same repositories and timeline
    with the native group lookup), asserting after each call that both agree: the stats, the
    group ids, the overflow count, the rows drained or collected and the span names."""

    def __init__(self, attributor: Attributor, **kwargs: Any) -> None:
        super().__init__(attributor, **kwargs)
        make = native.windows(native.AVAILABLE)
        self.twin = None
        if make is not None:
            twin_attributor = Attributor(
                attributor.repositories,
                attributor.timeline,
                cache_limit=attributor._cache_limit,
                throw_cache_limit=attributor._throw_cache_limit,
                native_group_ids=native.group_ids(True),
            )
            self.twin = Aggregator(twin_attributor, **kwargs, native_windows=make)
        self._twin_stats: dict[int, BatchStats] = {}

    def add(self, spans: Sequence[Span], stats: BatchStats | None = None) -> BatchStats:
        if self.twin is None:
            return super().add(spans, stats)
        mine = self._twin_stats.setdefault(id(stats), BatchStats()) if stats is not None else None
        got = self.twin.add(spans, mine)
        want = super().add(spans, stats)
        assert got == want, f"stats differ:\n  python: {want}\n  native: {got}"
        assert self.twin.last_gids == self.last_gids and self.twin.overflowed_spans == self.overflowed_spans
        assert len(self.twin) == len(self)
        return want

    def add_log_exceptions(
        self, items: Sequence[LogException], stats: BatchStats | None = None
    ) -> BatchStats:
        if self.twin is not None:
            self.twin.add_log_exceptions(items)
        return super().add_log_exceptions(items, stats)

    def _same(self, want: list[AggregateRow], got: list[AggregateRow]) -> list[AggregateRow]:
        for i, (a, b) in enumerate(zip(want, got, strict=False)):
            assert a == b, f"row {i} differs:\n  python: {a}\n  native: {b}"
        assert len(want) == len(got), f"python drained {len(want)} rows, native {len(got)}"
        return want

    def collect(self, now_unix_nano: int) -> list[AggregateRow]:
        want = super().collect(now_unix_nano)
        return want if self.twin is None else self._same(want, self.twin.collect(now_unix_nano))

    def drain(self) -> list[AggregateRow]:
        want = super().drain()
        return want if self.twin is None else self._same(want, self.twin.drain())

    def drain_names(self) -> list[NameRow]:
        want = super().drain_names()
        if self.twin is not None:
            assert self.twin.drain_names() == want
        return want
