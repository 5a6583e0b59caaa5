"""Request bodies as the receivers take them: media types, gzip, and JSON event documents."""

from __future__ import annotations

import json
import zlib

from collector.codec.results import MAX_NESTING_DEPTH
from collector.errors import RequestError
from collector.ports import JsonValue

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
EVENT_MEDIA_TYPES = (JSON, "application/x-ndjson", "application/jsonl")


def media_type(value: str | None) -> str:
    """The media type of a ``Content-Type`` value, lower-cased, without its parameters."""
    return (value or "").split(";", 1)[0].strip().lower()


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body, decompressed to at most ``limit`` bytes (413 past that)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, f"the body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise RequestError(
            413, f"the body is larger than {limit} bytes once decompressed (max_request_bytes)"
        )
    if not d.eof:
        raise RequestError(400, "the gzip body is truncated")
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
