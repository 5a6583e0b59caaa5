"""The module the error propagates through: it calls the store and lets its error out."""

from __future__ import annotations

from tests.support.fanout_code.store import fetch


def handle(table: dict[str, str], key: str) -> dict[str, object]:
    record = fetch(table, key)
    record["handled"] = True
    return record
