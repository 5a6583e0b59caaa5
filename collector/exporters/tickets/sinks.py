"""Ticket sinks: GitHub Issues, Jira Cloud, a signed webhook, and a local JSON-lines file.

Every sink implements :class:`TicketSink`:

* ``find(fingerprint, generation)`` - the ticket an earlier attempt created, found by
  *listing* on the fingerprint label (GitHub's issue list, Jira's JQL on labels; never the
  lagging full-text search), so an intent recorded before a crash resolves to the ticket
  that was actually created instead of a duplicate;
* ``create(draft)``, ``comment(ref, note)``, ``state(ref)``, ``close_ticket(ref, note)``;
  ``close()`` releases connections.

Bodies are built once as a small document (:class:`Doc`) and rendered per sink: Markdown
for GitHub, the webhook and the file; Atlassian Document Format for Jira.

HTTP goes through :class:`HttpClient`: rate limits (403/429 with ``Retry-After`` or
``x-ratelimit-remaining: 0`` + ``x-ratelimit-reset``) are waited out, 5xx and transport
errors back off exponentially.  A create that failed *uncertainly* (5xx, timeout) is never
blindly retried: the sink first looks for the ticket by its labels.  Tokens are
``SecretStr`` until the header is built; they never appear in messages, reprs or logs.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import hmac
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import SecretStr

from attribution.codeowners import owner_kind
from collector.errors import ConfigError, TicketError

log = logging.getLogger("prodloop.tickets")

USER_AGENT = "prodloop/0.1 (+https://github.com/acme/prodloop)"
T = TypeVar("T")

# -- the ticket document ---------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str
    bold: bool = False
    code: bool = False
    href: str = ""


Inline = Text | str


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 3


@dataclass(frozen=True)
class Para:
    parts: tuple[Inline, ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[tuple[Inline, ...], ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Heading | Para | Bullets | Table


@dataclass(frozen=True)
class Doc:
    blocks: tuple[Block, ...]
    marker: str = ""  # hidden in Markdown (an HTML comment); omitted in ADF

    def markdown(self) -> str:
        return render_markdown(self)

    def adf(self) -> dict[str, Any]:
        return render_adf(self)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_inline(part: Inline) -> str:
    if isinstance(part, str):
        return _md_escape(part)
    if part.code:
        tick = "``" if "`" in part.text else "`"
        out = f"{tick}{part.text}{tick}"
    else:
        out = _md_escape(part.text)
    if part.bold:
        out = f"**{out}**"
    if part.href:
        out = f"[{out}]({part.href.replace(')', '%29').replace(' ', '%20')})"
    return out


def render_markdown(doc: Doc) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + _md_escape(b.text))
        elif isinstance(b, Para):
            out.append("".join(_md_inline(p) for p in b.parts))
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + "".join(_md_inline(p) for p in item) for item in b.items))
        else:
            rows = [b.header, tuple("---" for _ in b.header), *b.rows]
            out.append("\n".join("| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows))
    if doc.marker:
        out.append(f"<!-- {doc.marker} -->")
    return "\n\n".join(out) + "\n"


def _adf_inline(part: Inline) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    marks: list[dict[str, Any]] = []
    if part.bold:
        marks.append({"type": "strong"})
    if part.code:
        marks.append({"type": "code"})
    if part.href:
        marks.append({"type": "link", "attrs": {"href": part.href}})
    node: dict[str, Any] = {"type": "text", "text": part.text}
    if marks:
        node["marks"] = marks
    return node


def _adf_para(parts: Sequence[Inline]) -> dict[str, Any]:
    content = [_adf_inline(p) for p in parts if (p if isinstance(p, str) else p.text)]
    return {"type": "paragraph", "content": content} if content else {"type": "paragraph"}


def render_adf(doc: Doc) -> dict[str, Any]:
    """Atlassian Document Format (version 1), the body format of Jira Cloud REST v3."""
    content: list[dict[str, Any]] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            content.append(
                {
                    "type": "heading",
                    "attrs": {"level": b.level},
                    "content": [{"type": "text", "text": b.text}],
                }
            )
        elif isinstance(b, Para):
            content.append(_adf_para(b.parts))
        elif isinstance(b, Bullets):
            content.append(
                {
                    "type": "bulletList",
                    "content": [{"type": "listItem", "content": [_adf_para(item)]} for item in b.items],
                }
            )
        else:

            def cell(kind: str, text: str) -> dict[str, Any]:
                return {"type": kind, "content": [_adf_para([text])]}

            rows = [{"type": "tableRow", "content": [cell("tableHeader", h) for h in b.header]}]
            rows += [{"type": "tableRow", "content": [cell("tableCell", c) for c in r]} for r in b.rows]
            content.append({"type": "table", "content": rows})
    return {"type": "doc", "version": 1, "content": content}


# -- what sinks get and return ----------------------------------------------------------------


@dataclass(frozen=True)
class TicketDraft:
    fingerprint: str
    generation: int
    title: str
    doc: Doc
    labels: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()  # CODEOWNERS owners: users are assigned, teams mentioned
    assign_owners: bool = True
    severity: str = "medium"
    previous_url: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)  # the finding, for the webhook/file
    at_unix_nano: int = 0

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(o.lstrip("@") for o in self.owners if owner_kind(o) == "user")

    @property
    def teams(self) -> tuple[str, ...]:
        return tuple(o for o in self.owners if owner_kind(o) == "team")


@dataclass(frozen=True)
class Note:
    """A comment: fresh numbers, a recovery, or a closing remark."""

    kind: str  # "update" | "recovered" | "closing"
    doc: Doc
    fingerprint: str
    generation: int
    data: Mapping[str, Any] = field(default_factory=dict)
    at_unix_nano: int = 0


@dataclass(frozen=True)
class TicketRef:
    key: str  # GitHub issue number, Jira issue key, or a synthetic id
    url: str = ""


@dataclass(frozen=True)
class RemoteState:
    open: bool
    closed_at_unix_nano: int | None = None
    closed_by_us: bool = False


class TicketSink(Protocol):
    name: str

    def find(self, fingerprint: str, generation: int) -> TicketRef | None: ...

    def create(self, draft: TicketDraft) -> TicketRef: ...

    def comment(self, ref: TicketRef, note: Note) -> None: ...

    def state(self, ref: TicketRef) -> RemoteState: ...

    def close_ticket(self, ref: TicketRef, note: Note) -> None: ...

    def close(self) -> None:
        """Release connections."""


def fingerprint_label(fingerprint: str) -> str:
    return f"prodloop:{fingerprint}"


def marker(fingerprint: str, generation: int) -> str:
    return f"prodloop:fingerprint={fingerprint} generation={generation}"


# -- HTTP with rate limits and backoff ----------------------------------------------------------


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
        for attempt in range(p.max_attempts):
            try:
                response = self.client.request(
                    method, path, json=json_body, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
                log.warning("%s: %s %s failed (%s); attempt %d", self.what, method, path, last, attempt + 1)
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
                    raise TicketError(f"{self.what}: {method} {path} -> {status}: {_brief(response)}")
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
                log.warning("%s: %s %s -> %d; attempt %d", self.what, method, path, status, attempt + 1)
                if attempt + 1 < p.max_attempts:
                    self.sleep(self._backoff(attempt))
                if not safe:
                    raise Uncertain(last)
                continue
            raise TicketError(f"{self.what}: {method} {path} -> {status}: {_brief(response)}")
        raise TicketError(f"{self.what}: {method} {path} failed after {p.max_attempts} attempts ({last})")


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


def read_secret(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    """A secret from settings/env, or from a file (trailing newline stripped)."""
    if value is not None and value.get_secret_value():
        return value
    if path is None:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{what}: {path} is empty")
    return SecretStr(text)


# -- GitHub ------------------------------------------------------------------------------------


class GitHubSink:
    """GitHub Issues over REST (``application/vnd.github+json``, API version 2022-11-28)."""

    def __init__(
        self,
        repository: str,
        token: SecretStr,
        *,
        api_url: str = "https://api.github.com",
        labels: Sequence[str] = ("prodloop",),
        name: str = "github",
        http: HttpClient | None = None,
        **http_kw: Any,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
            raise ConfigError(f"github.repository: {repository!r} must be OWNER/NAME")
        self.name = name
        self.repository = repository
        self.labels = tuple(labels)
        self.http = http or HttpClient(
            api_url.rstrip("/"),
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Authorization": f"Bearer {token.get_secret_value()}",
            },
            what=f"github {repository}",
            **http_kw,
        )

    def __repr__(self) -> str:
        return f"GitHubSink({self.repository!r})"

    def close(self) -> None:
        self.http.close()

    @property
    def _base(self) -> str:
        return f"/repos/{self.repository}/issues"

    def find(self, fingerprint: str, generation: int) -> TicketRef | None:
        wanted = f"<!-- {marker(fingerprint, generation)} -->"
        for page in range(1, 11):
            r = self.http.request(
                "GET",
                self._base,
                params={
                    "labels": fingerprint_label(fingerprint),
                    "state": "all",
                    "per_page": 100,
                    "page": page,
                    "sort": "created",
                    "direction": "desc",
                },
            )
            issues = r.json()
            for issue in issues:
                if "pull_request" in issue:
                    continue
                if wanted in (issue.get("body") or ""):
                    return TicketRef(str(issue["number"]), issue.get("html_url", ""))
            if len(issues) < 100:
                break
        return None

    def create(self, draft: TicketDraft) -> TicketRef:
        body: dict[str, Any] = {
            "title": draft.title[:256],
            "body": draft.doc.markdown(),
            "labels": list(
                dict.fromkeys([*self.labels, *draft.labels, fingerprint_label(draft.fingerprint)])
            ),
        }
        if draft.assign_owners and draft.users:
            body["assignees"] = list(draft.users)[:10]

        def attempt() -> TicketRef:
            r = self.http.request("POST", self._base, json_body=body, safe=False)
            issue = r.json()
            return TicketRef(str(issue["number"]), issue.get("html_url", ""))

        return create_once(self, draft, attempt)

    def comment(self, ref: TicketRef, note: Note) -> None:
        self.http.request("POST", f"{self._base}/{ref.key}/comments", json_body={"body": note.doc.markdown()})
        if note.kind == "recovered":
            self.http.request(
                "POST", f"{self._base}/{ref.key}/labels", json_body={"labels": ["prodloop:recovered"]}
            )

    def state(self, ref: TicketRef) -> RemoteState:
        issue = self.http.request("GET", f"{self._base}/{ref.key}").json()
        if issue.get("state") != "closed":
            return RemoteState(True)
        closed = issue.get("closed_at")
        at = int(datetime.fromisoformat(closed.replace("Z", "+00:00")).timestamp() * 1e9) if closed else None
        return RemoteState(False, at)

    def close_ticket(self, ref: TicketRef, note: Note) -> None:
        self.comment(ref, note)
        self.http.request(
            "PATCH", f"{self._base}/{ref.key}", json_body={"state": "closed", "state_reason": "completed"}
        )


# -- Jira Cloud --------------------------------------------------------------------------------


class JiraSink:
    """Jira Cloud REST v3: create issue, add comment, transition; bodies in ADF."""

    def __init__(
        self,
        base_url: str,
        email_address: str,
        api_token: SecretStr,
        project: str,
        *,
        issue_type: str = "Task",
        labels: Sequence[str] = ("prodloop",),
        priorities: Mapping[str, str] | None = None,
        name: str = "jira",
        http: HttpClient | None = None,
        **http_kw: Any,
    ) -> None:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]+", project):
            raise ConfigError(f"jira.project: {project!r} must be a project key like OPS")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.issue_type = issue_type
        self.labels = tuple(labels)
        self.priorities = dict(priorities or {})
        self.http = http or HttpClient(
            self.base_url,
            {"Accept": "application/json"},
            auth=httpx.BasicAuth(email_address, api_token.get_secret_value()),
            what=f"jira {project}",
            **http_kw,
        )

    def __repr__(self) -> str:
        return f"JiraSink({self.base_url!r}, {self.project!r})"

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _labels(fingerprint: str, generation: int) -> tuple[str, str]:
        # Jira labels cannot contain spaces; ':' is fine but '-' reads better in JQL
        return f"prodloop-{fingerprint}", f"prodloop-{fingerprint}-g{generation}"

    def find(self, fingerprint: str, generation: int) -> TicketRef | None:
        _, gen_label = self._labels(fingerprint, generation)
        r = self.http.request(
            "POST",
            "/rest/api/3/search/jql",
            json_body={
                "jql": f'project = "{self.project}" AND labels = "{gen_label}" ORDER BY created ASC',
                "fields": ["summary", "labels"],
                "maxResults": 10,
            },
        )
        issues = r.json().get("issues", [])
        if not issues:
            return None
        key = issues[0]["key"]
        return TicketRef(key, f"{self.base_url}/browse/{key}")

    def create(self, draft: TicketDraft) -> TicketRef:
        fp_label, gen_label = self._labels(draft.fingerprint, draft.generation)
        labels = [re.sub(r"\s+", "-", x) for x in (*self.labels, *draft.labels)]
        fields: dict[str, Any] = {
            "project": {"key": self.project},
            "issuetype": {"name": self.issue_type},
            "summary": draft.title.replace("\n", " ")[:255],
            "description": draft.doc.adf(),
            "labels": list(dict.fromkeys([*labels, fp_label, gen_label])),
        }
        if draft.severity in self.priorities:
            fields["priority"] = {"name": self.priorities[draft.severity]}

        def attempt() -> TicketRef:
            r = self.http.request("POST", "/rest/api/3/issue", json_body={"fields": fields}, safe=False)
            key = r.json()["key"]
            return TicketRef(key, f"{self.base_url}/browse/{key}")

        return create_once(self, draft, attempt)

    def comment(self, ref: TicketRef, note: Note) -> None:
        self.http.request("POST", f"/rest/api/3/issue/{ref.key}/comment", json_body={"body": note.doc.adf()})

    def state(self, ref: TicketRef) -> RemoteState:
        issue = self.http.request(
            "GET", f"/rest/api/3/issue/{ref.key}", params={"fields": "status,resolutiondate"}
        ).json()
        fields = issue.get("fields", {})
        category = (fields.get("status") or {}).get("statusCategory", {}).get("key", "")
        if category != "done":
            return RemoteState(True)
        resolved = fields.get("resolutiondate")
        at = None
        if resolved:
            with contextlib.suppress(ValueError):
                at = int(datetime.strptime(resolved, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1e9)
        return RemoteState(False, at)

    def close_ticket(self, ref: TicketRef, note: Note) -> None:
        self.comment(ref, note)
        transitions = self.http.request("GET", f"/rest/api/3/issue/{ref.key}/transitions").json()
        done = [
            t
            for t in transitions.get("transitions", [])
            if t.get("to", {}).get("statusCategory", {}).get("key") == "done"
        ]
        if not done:
            raise TicketError(f"jira {ref.key}: no transition leads to a done status; close it by hand")
        self.http.request(
            "POST",
            f"/rest/api/3/issue/{ref.key}/transitions",
            json_body={"transition": {"id": done[0]["id"]}},
        )


# -- webhook -----------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Prodloop-Signature-256"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs JSON events signed with HMAC-SHA256 (``X-Prodloop-Signature-256: sha256=<hex>``).

    A webhook cannot be listed, so ``find`` finds nothing; instead every event carries a
    deterministic ``Idempotency-Key`` (fingerprint, generation, event) for receivers to
    drop repeats, and ``state`` is always open (the receiver owns the lifecycle).
    """

    def __init__(
        self,
        url: str,
        secret: SecretStr,
        *,
        name: str = "webhook",
        headers: Mapping[str, str] | None = None,
        http: HttpClient | None = None,
        **http_kw: Any,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook.url: {url!r} must be an http(s) URL")
        self.name = name
        self.url = url
        self._secret = secret
        self.http = http or HttpClient("", dict(headers or {}), what="webhook", **http_kw)

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r})"

    def close(self) -> None:
        self.http.close()

    def _post(self, event: str, key: str, payload: dict[str, Any]) -> None:
        body = json.dumps({"event": event, **payload}, sort_keys=True, separators=(",", ":")).encode()
        self.http.request(
            "POST",
            self.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Prodloop-Event": event,
                "Idempotency-Key": key,
                SIGNATURE_HEADER: sign(self._secret.get_secret_value().encode(), body),
            },
        )

    def find(self, fingerprint: str, generation: int) -> TicketRef | None:
        return None

    def create(self, draft: TicketDraft) -> TicketRef:
        key = f"{draft.fingerprint}-{draft.generation}"
        self._post(
            "ticket.opened",
            f"{key}:opened",
            {
                "fingerprint": draft.fingerprint,
                "generation": draft.generation,
                "title": draft.title,
                "markdown": draft.doc.markdown(),
                "labels": list(draft.labels),
                "owners": list(draft.owners),
                "severity": draft.severity,
                "previous_url": draft.previous_url or None,
                "finding": dict(draft.data),
                "at_unix_nano": draft.at_unix_nano,
            },
        )
        return TicketRef(key, "")

    def _note(self, event: str, ref: TicketRef, note: Note) -> None:
        self._post(
            event,
            f"{ref.key}:{note.kind}:{note.at_unix_nano}",
            {
                "fingerprint": note.fingerprint,
                "generation": note.generation,
                "kind": note.kind,
                "markdown": note.doc.markdown(),
                "finding": dict(note.data),
                "at_unix_nano": note.at_unix_nano,
            },
        )

    def comment(self, ref: TicketRef, note: Note) -> None:
        self._note("ticket.comment", ref, note)

    def state(self, ref: TicketRef) -> RemoteState:
        return RemoteState(True)

    def close_ticket(self, ref: TicketRef, note: Note) -> None:
        self._note("ticket.closed", ref, note)


# -- local file --------------------------------------------------------------------------------


class FileSink:
    """JSON lines, one event per line: ``opened``, ``comment``, ``closed``.  For the demo and dry runs.

    People close a ticket by appending ``{"event": "closed", "key": KEY, "by": "person"}``.
    """

    def __init__(self, path: Path, *, name: str = "file") -> None:
        self.name = name
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileSink({str(self.path)!r})"

    def close(self) -> None:
        pass

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _append(self, record: dict[str, Any]) -> None:
        try:
            with self._locked() as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            raise TicketError(f"file sink {self.path}: {exc.strerror}") from exc

    def find(self, fingerprint: str, generation: int) -> TicketRef | None:
        for e in self.events():
            if (
                e.get("event") == "opened"
                and e.get("fingerprint") == fingerprint
                and e.get("generation") == generation
            ):
                return TicketRef(str(e["key"]), f"file://{self.path}#{e['key']}")
        return None

    def create(self, draft: TicketDraft) -> TicketRef:
        key = f"{draft.fingerprint}-{draft.generation}"
        self._append(
            {
                "event": "opened",
                "key": key,
                "fingerprint": draft.fingerprint,
                "generation": draft.generation,
                "title": draft.title,
                "labels": list(draft.labels),
                "owners": list(draft.owners),
                "assignees": list(draft.users) if draft.assign_owners else [],
                "severity": draft.severity,
                "previous_url": draft.previous_url or None,
                "markdown": draft.doc.markdown(),
                "finding": dict(draft.data),
                "at_unix_nano": draft.at_unix_nano,
            }
        )
        return TicketRef(key, f"file://{self.path}#{key}")

    def comment(self, ref: TicketRef, note: Note) -> None:
        self._append(
            {
                "event": "comment",
                "key": ref.key,
                "kind": note.kind,
                "markdown": note.doc.markdown(),
                "finding": dict(note.data),
                "at_unix_nano": note.at_unix_nano,
            }
        )

    def state(self, ref: TicketRef) -> RemoteState:
        for e in reversed(self.events()):
            if e.get("key") != ref.key:
                continue
            if e.get("event") == "closed":
                return RemoteState(False, e.get("at_unix_nano"), e.get("by") == "prodloop")
            if e.get("event") == "reopened":
                return RemoteState(True)
        return RemoteState(True)

    def close_ticket(self, ref: TicketRef, note: Note) -> None:
        self.comment(ref, note)
        self._append({"event": "closed", "key": ref.key, "by": "prodloop", "at_unix_nano": note.at_unix_nano})
