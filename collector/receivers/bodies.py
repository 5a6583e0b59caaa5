"""Request bodies as the receivers take them: media types, content encodings (gzip, deflate,
zstd; decompressed to a bounded size) and JSON event documents."""

from __future__ import annotations

import io
import json
import zlib

import zstandard

from collector.codec.results import MAX_NESTING_DEPTH
from collector.errors import RequestError
from collector.ports import JsonValue

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
EVENT_MEDIA_TYPES = (JSON, "application/x-ndjson", "application/jsonl")
# as the Collector's confighttp takes them; "deflate" is the zlib format (RFC 9110)
CONTENT_ENCODINGS = ("gzip", "deflate", "zstd")


def media_type(value: str | None) -> str:
    """The media type of a ``Content-Type`` value, lower-cased, without its parameters."""
    return (value or "").split(";", 1)[0].strip().lower()


def content_encoding(value: str | None) -> str:
    """The ``Content-Encoding`` of a request: ``identity`` or one of :data:`CONTENT_ENCODINGS` (415 else)."""
    encoding = (value or "identity").strip().lower()
    if encoding != "identity" and encoding not in CONTENT_ENCODINGS:
        raise RequestError(
            415,
            f"Content-Encoding {encoding!r} is not supported: use {', '.join(CONTENT_ENCODINGS)} or none",
            close=True,
        )
    return encoding


def decompress(encoding: str, data: bytes, limit: int) -> bytes:
    """A body in ``encoding`` (see :func:`content_encoding`), decompressed to at most ``limit``
    bytes: past that 413, and never more than ``limit + 1`` bytes are inflated (no zip bomb)."""
    if encoding == "identity":
        return data
    if encoding == "zstd":
        return _unzstd(data, limit)
    return _inflate(data, limit, gzip=encoding == "gzip")


def _too_large(limit: int) -> RequestError:
    return RequestError(413, f"the body is larger than {limit} bytes once decompressed (max_request_bytes)")


def _inflate(data: bytes, limit: int, *, gzip: bool) -> bytes:
    name = "gzip" if gzip else "deflate (zlib)"
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, f"the body is not valid {name}: {exc}") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not d.eof:
        raise RequestError(400, f"the {name} body is truncated")
    return out


def _unzstd(data: bytes, limit: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(data)
        if declared > limit:  # -1: not declared
            raise _too_large(limit)
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise RequestError(400, f"the body is not valid zstd: {exc}") from None
    if len(out) > limit:
        raise _too_large(limit)
    return out


def events_from_body(body: bytes) -> list[JsonValue]:
    """One JSON object, a JSON array of objects, or newline-delimited objects."""
    try:
        doc: JsonValue = json.loads(body)
    except RecursionError:
        raise RequestError(400, f"the body nests too deeply (at most {MAX_NESTING_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if len(lines) <= 1:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None
        docs: list[JsonValue] = []
        for i, line in enumerate(lines, start=1):
            try:
                docs.append(json.loads(line))
            except RecursionError:
                raise RequestError(
                    400, f"line {i} nests too deeply (at most {MAX_NESTING_DEPTH} levels)"
                ) from None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestError(400, f"line {i} is not valid JSON: {e}") from None
        return docs
    return doc if isinstance(doc, list) else [doc]
