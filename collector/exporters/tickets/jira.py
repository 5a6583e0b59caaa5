"""The Jira Cloud sink (REST v3): create issue, add comment, transition; bodies in ADF.

Every issue carries a fingerprint label and a generation label; ``find`` looks the latter up
with JQL on labels.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from collector.errors import ConfigError, TicketError
from collector.exporters.tickets.http import HttpClient, create_once
from collector.ports import Note, RemoteState, TicketDraft, TicketRef


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
