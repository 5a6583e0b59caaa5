"""The GitHub Issues sink (REST, ``application/vnd.github+json``, API version 2022-11-28).

Bodies are Markdown; every issue carries the fingerprint label, and ``find`` lists issues by it
(never the lagging full-text search) to match the hidden marker of the wanted generation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from collector.codec.ticket_document import fingerprint_label, marker
from collector.errors import ConfigError
from collector.exporters.tickets.http import HttpClient, create_once
from collector.ports import Note, RemoteState, TicketDraft, TicketRef


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
