"""What decoding yields: :class:`Decoded` spans and :class:`Rejection` values, worded here.

A span that parses but is invalid (bad id length, ``end < start``, a time the store cannot hold
or outside the plausibility window of :class:`~attribution.model.TimeBounds`) is a
:class:`Rejection`, never an exception: the rest of the record still gets through.  Both the
protobuf and the JSON decoder word their rejections with :func:`reject`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from attribution.model import STORE_MAX_UNIX_NANO, Span, TimeBounds

# How deeply a request may nest: protobuf's recursion limit, which upb enforces on the binary
# encoding; OTLP/JSON deeper than the JSON parser can take is refused with the same message.
MAX_NESTING_DEPTH = 100
TOO_DEEP = f"the request nests too deeply: OTLP allows at most {MAX_NESTING_DEPTH} levels of nesting"

ZERO_TRACE_ID = bytes(16)
ZERO_SPAN_ID = bytes(8)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A span or record that was not accepted.  ``reason`` is a stable metric label."""

    reason: str
    message: str


class Decoded(NamedTuple):
    spans: list[Span]
    rejected: list[Rejection]


def rejection_message(rejected: Sequence[Rejection]) -> str:
    """How many spans were rejected, and the first one in full (OTLP's partial-success
    ``error_message``; the dead-letter message of a record with some spans rejected)."""
    if not rejected:
        return ""
    first = rejected[0]
    more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
    return f"{len(rejected)} span(s) rejected; first: {first.reason}: {first.message}{more}"


def _iso(unix_nano: int) -> str:
    try:
        return datetime.fromtimestamp(unix_nano // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return "out of the calendar's range"


def reject(
    bounds: TimeBounds,
    where: str,
    path: str,
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    start: int,
    end: int,
    reference_unix_nano: int | None,
) -> Rejection:
    """Why the span at ``path`` is invalid (the decoders call this only for a span that is)."""
    prefix = f"{where}: {path}" if where else path
    if len(trace_id) != 16:
        return Rejection("bad_trace_id", f"{prefix}: trace_id must be 16 bytes, got {len(trace_id)}")
    if trace_id == ZERO_TRACE_ID:
        return Rejection("bad_trace_id", f"{prefix}: trace_id is all zeroes")
    if len(span_id) != 8:
        return Rejection(
            "bad_span_id",
            f"{prefix} (trace_id={trace_id.hex()}): span_id must be 8 bytes, got {len(span_id)}",
        )
    if span_id == ZERO_SPAN_ID:
        return Rejection("bad_span_id", f"{prefix} (trace_id={trace_id.hex()}): span_id is all zeroes")
    if parent and len(parent) != 8:
        return Rejection(
            "bad_parent_span_id",
            f"{prefix} (span_id={span_id.hex()}): parent_span_id must be 8 bytes or empty, got {len(parent)}",
        )
    if end < start:
        return Rejection(
            "end_before_start",
            f"{prefix} (span_id={span_id.hex()}): end_time_unix_nano {end} is before "
            f"start_time_unix_nano {start}",
        )
    return _time_rejection(bounds, f"{prefix} (span_id={span_id.hex()})", start, end, reference_unix_nano)


def _time_rejection(b: TimeBounds, prefix: str, start: int, end: int, reference: int | None) -> Rejection:
    lo, hi = b.window(reference)
    ref = f"the reference time {_iso(reference or 0)} (the record's timestamp or the request's arrival)"
    if start < 0:
        why = f"start_time_unix_nano {start} is negative"
    elif start < lo:
        why = (
            f"start_time_unix_nano {start} ({_iso(start)}) is more than {b.max_age_ns // 1_000_000_000} s "
            f"before {ref} (aggregation.max_age_seconds)"
            if reference is not None and b.max_age_ns is not None and lo > 0
            else f"start_time_unix_nano {start} is before 1970"
        )
    elif end > STORE_MAX_UNIX_NANO:
        what = "start_time_unix_nano" if start > STORE_MAX_UNIX_NANO else "end_time_unix_nano"
        value = start if start > STORE_MAX_UNIX_NANO else end
        why = f"{what} {value} ({_iso(value)}) is after {_iso(STORE_MAX_UNIX_NANO)}, the last time the store holds"
    else:
        assert reference is not None and b.max_future_ns is not None and end > hi
        what = "start_time_unix_nano" if start > hi else "end_time_unix_nano"
        value = start if start > hi else end
        why = (
            f"{what} {value} ({_iso(value)}) is more than {b.max_future_ns // 1_000_000_000} s "
            f"after {ref} (aggregation.max_future_seconds)"
        )
    return Rejection("time_out_of_range", f"{prefix}: {why}")
