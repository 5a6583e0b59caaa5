"""The module that throws: a lookup that fails on a missing key."""

from __future__ import annotations

import json


class RecordMissing(LookupError):
    """A record the store does not hold."""


def fetch(table: dict[str, str], key: str) -> dict[str, object]:
    try:
        raw = table[key]
    except KeyError as exc:
        raise RecordMissing(f"no record {key!r}") from exc
    decoded: dict[str, object] = json.loads(raw)
    return decoded
