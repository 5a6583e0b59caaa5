"""Capped exponential backoff: the delays between retries of a failed store or broker call."""

from __future__ import annotations


class Backoff:
    """``initial_s``, doubled after each failure, at most ``max_s`` (0.2, 0.4, 0.8 ... 10, 10).

    The stream pipeline's store and broker retries, its intent reads and the direct pipeline's
    flushes all wait by this arithmetic; each retry loop takes a fresh one.
    """

    __slots__ = ("_delay", "max_s")

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._delay = initial_s
        self.max_s = max_s

    def next(self) -> float:
        """The delay before the next attempt; the one after it doubles (up to ``max_s``)."""
        delay = self._delay
        self._delay = min(self.max_s, delay * 2)
        return delay
