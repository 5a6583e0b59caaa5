"""Trace files and payloads: framing (JSON lines, length-prefixed protobuf) and encoding sniffing.

:func:`sniff_encoding` is the one guess of an OTLP encoding from bytes, for files
(:func:`sniff_file_format`) and for Kafka records under ``kafka.traces_encoding: auto``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from collector.errors import DecodeError

_SNIFF_BYTES = 64


def sniff_encoding(head: bytes) -> str:
    """``"otlp_json"`` when the bytes open (after whitespace) with ``{`` or ``[``, else ``"otlp_proto"``."""
    return "otlp_json" if head.lstrip()[:1] in (b"{", b"[") else "otlp_proto"


def sniff_file_format(path: str | Path) -> str:
    """``"otlp_json"`` for JSON lines, ``"otlp_proto"`` for length-prefixed protobuf."""
    with Path(path).open("rb") as fh:
        return sniff_encoding(fh.read(_SNIFF_BYTES))


def iter_json_lines(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """OTLP/JSON lines: one request per line.  Yields ``("file:LINE", line_bytes)``."""
    p = Path(path)
    with p.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            stripped = line.strip()
            if stripped:
                yield f"{p}:{lineno}", stripped


def iter_length_prefixed(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Length-prefixed protobuf: 4-byte big-endian length, then the message.

    Yields ``("file@offset N", message_bytes)``.  A truncated frame raises ``DecodeError``
    naming its offset (everything before it has been yielded).
    """
    p = Path(path)
    data = p.read_bytes()
    offset = 0
    n = len(data)
    while offset < n:
        if offset + 4 > n:
            raise DecodeError(
                f"truncated length prefix: {n - offset} bytes left, need 4", where=f"{p}@offset {offset}"
            )
        size = int.from_bytes(data[offset : offset + 4], "big")
        start = offset + 4
        if start + size > n:
            raise DecodeError(
                f"truncated message: length prefix says {size} bytes, only {n - start} left",
                where=f"{p}@offset {offset}",
            )
        yield f"{p}@offset {offset}", data[start : start + size]
        offset = start + size
