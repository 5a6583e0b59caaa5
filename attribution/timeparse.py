"""The time arguments of ``prodloop query`` and ``GET /api/v1/modules``: one parser for both."""

from __future__ import annotations

from attribution.events import EventValidationError, parse_rfc3339

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TIME_FORMATS = "use RFC 3339 (2026-11-23T10:00:00Z), unix seconds, or relative (-2h, -30m, -7d)"


def parse_time(value: str | None, now_ns: int) -> int | None:
    """RFC 3339, unix seconds, or relative to ``now_ns`` (``-2h``, ``-30m``, ``-7d``, ``now``).

    Raises :class:`ValueError` naming the value and the formats it takes.
    """
    if value is None:
        return None
    v = value.strip()
    if v == "now":
        return now_ns
    if v.startswith("-") and v[-1:] in _UNITS and v[1:-1].isdigit():
        return now_ns - int(v[1:-1]) * _UNITS[v[-1]] * 1_000_000_000
    if v.isdigit():
        return int(v) * 1_000_000_000
    try:
        return parse_rfc3339(v, "time")
    except EventValidationError:
        raise ValueError(f"{value!r}: {TIME_FORMATS}") from None
