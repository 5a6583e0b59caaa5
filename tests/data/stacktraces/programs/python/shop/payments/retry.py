"""Retries payment calls; gives up with its own error."""

from __future__ import annotations

from shop.payments import api


class RetriesExhausted(RuntimeError):
    """Every attempt failed."""


def charge_with_retry(body: str, attempts: int = 2) -> dict[str, object]:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return api.charge(body)
        except api.GatewayError as exc:
            last = exc
    raise RetriesExhausted(f"gave up after {attempts} attempts") from last


def refund(body: str) -> dict[str, object]:
    return api.refund(body)


def validate(amount: int) -> int:
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    return amount
