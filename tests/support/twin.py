"""Both ``otlp_proto`` decoders on every record: the Python reference and the native twin.

:class:`TwinDecoder` is an :class:`~collector.codec.otlp.OtlpDecoder` (the Python path, whose
result it returns) that also decodes each protobuf record on the native path and fails the
test at the first difference: a span, a rejection, or whether the record is refused at all.
The decoder tests, the golden files and the unit tests' ``otel.decode`` use it, so each of
their records is a differential test.  Without the extension (no cargo on the machine,
``tests/unit/test_native.py`` says so) it is the Python decoder alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
