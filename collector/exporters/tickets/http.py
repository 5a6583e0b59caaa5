"""The ticket sinks' HTTP client: rate limits waited out, 5xx and transport errors backed off.

Rate limits (403/429 with ``Retry-After``, or ``x-ratelimit-remaining: 0`` with
``x-ratelimit-reset``) are waited out up to ``max_wait_s``; 5xx and transport errors back off
exponentially.  A create that failed *uncertainly* (5xx, timeout) is never blindly retried:
:func:`create_once` first looks for the ticket by its labels.  Tokens stay in the headers;
they never appear in messages, reprs or logs, and URLs are shown through :func:`redact_url`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from collector.errors import TicketError
from collector.ports import TicketDraft, TicketRef, TicketSink

log = logging.getLogger("prodloop.tickets")


def redact_url(url: str) -> str:
    """``url`` as it may be shown: its userinfo and every query value (tokens) replaced by ``***``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


USER_AGENT = "prodloop/0.1 (+https://github.com/acme/prodloop)"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_wait_s: float = 900.0  # a longer rate-limit wait fails this attempt (the next evaluation retries)
    secondary_wait_s: float = 60.0  # GitHub: a secondary rate limit without headers waits at least a minute
    timeout_s: float = 30.0


class Uncertain(Exception):
    """A request that may or may not have been applied (5xx, timeout, dropped connection)."""


def _parse_reset(value: str, now_s: float) -> float | None:
    """Seconds to wait from an ``x-ratelimit-reset`` (epoch seconds, or ISO 8601 as Jira sends)."""
    v = value.strip()
    if not v:
        return None
    try:
        return max(0.0, float(v) - now_s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return max(0.0, dt.timestamp() - now_s)


def _parse_retry_after(value: str, now_s: float) -> float | None:
    v = value.strip()
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - now_s)


def rate_limit_wait(response: httpx.Response, now_s: float, policy: RetryPolicy) -> float | None:
    """How long a 403/429 asks us to wait, or None when it is not a rate limit."""
    h = response.headers
    if "retry-after" in h:
        wait = _parse_retry_after(h["retry-after"], now_s)
        if wait is not None:
            return wait
    if h.get("x-ratelimit-remaining", "").strip() == "0" and "x-ratelimit-reset" in h:
        wait = _parse_reset(h["x-ratelimit-reset"], now_s)
        if wait is not None:
            return wait + 0.5 if wait else 0.0
    if response.status_code == 429:
        return policy.secondary_wait_s
    text = response.text[:2000].lower()
    if response.status_code == 403 and "rate limit" in text:
        return policy.secondary_wait_s
    return None


class HttpClient:
    """An httpx client with prodloop's retry rules.  ``transport``, ``sleep`` and ``clock`` are seams."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        auth: httpx.Auth | None = None,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        what: str = "ticket sink",
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.what = what
        self.client = httpx.Client(
            base_url=base_url,
            headers={"User-Agent": USER_AGENT, **headers},
            auth=auth,
            timeout=self.policy.timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:  # never show headers (they hold tokens)
        return f"HttpClient({str(self.client.base_url)!r})"

    def _backoff(self, attempt: int) -> float:
        base = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2.0**attempt)
        return base * (0.5 + self.rng.random() / 2)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        safe: bool = True,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send, waiting out rate limits and backing off on 5xx.

        ``safe=False`` (creating something): a 5xx or transport error raises
        :class:`Uncertain` after the backoff instead of resending; the caller checks
        whether the first attempt landed.
        """
        p = self.policy
        last = ""
        shown = redact_url(path)
        for attempt in range(p.max_attempts):
            try:
                response = self.client.request(
                    method, path, json=json_body, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
                log.warning("%s: %s %s failed (%s); attempt %d", self.what, method, shown, last, attempt + 1)
                if attempt + 1 < p.max_attempts:
                    self.sleep(self._backoff(attempt))
                if not safe:
                    raise Uncertain(last) from None
                continue
            status = response.status_code
            if status < 300:
                return response
            if status in (403, 429):
                wait = rate_limit_wait(response, self.clock(), p)
                if wait is None:
                    raise TicketError(f"{self.what}: {method} {shown} -> {status}: {_brief(response)}")
                if wait > p.max_wait_s:
                    raise TicketError(
                        f"{self.what}: rate limited for {wait:.0f}s (more than max_wait {p.max_wait_s:.0f}s); "
                        "the next evaluation retries"
                    )
                log.warning("%s: rate limited (%d); waiting %.1fs", self.what, status, wait)
                self.sleep(wait)
                last = f"{status} rate limited"
                continue
            if status >= 500:
                last = f"{status}"
                log.warning("%s: %s %s -> %d; attempt %d", self.what, method, shown, status, attempt + 1)
                if attempt + 1 < p.max_attempts:
                    self.sleep(self._backoff(attempt))
                if not safe:
                    raise Uncertain(last)
                continue
            raise TicketError(f"{self.what}: {method} {shown} -> {status}: {_brief(response)}")
        raise TicketError(f"{self.what}: {method} {shown} failed after {p.max_attempts} attempts ({last})")


def _brief(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        msgs = [str(data.get("message", ""))] if data.get("message") else []
        msgs += [str(m) for m in data.get("errorMessages", []) or []]
        if isinstance(data.get("errors"), dict):
            msgs += [f"{k}: {v}" for k, v in data["errors"].items()]
        elif isinstance(data.get("errors"), list):
            msgs += [json.dumps(e)[:200] for e in data["errors"]]
        if msgs:
            return "; ".join(msgs)[:500]
    return json.dumps(data)[:300]


def create_once(
    sink: TicketSink, draft: TicketDraft, attempt: Callable[[], TicketRef], tries: int = 3
) -> TicketRef:
    """Create without duplicates: after an uncertain failure, find before trying again."""
    for _ in range(tries):
        try:
            return attempt()
        except Uncertain:
            found = sink.find(draft.fingerprint, draft.generation)
            if found is not None:
                return found
    raise TicketError(f"{sink.name}: creating the ticket kept failing; the next evaluation retries")
