"""The Jira Cloud sink (REST v3, ADF bodies validated against @atlaskit/adf-schema) and the
signed webhook sink, each against a local server."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from collector.codec.ticket_blocks import Bullets, Heading, Para, Table, Text
from collector.codec.ticket_document import Doc, marker
from collector.errors import TicketError
from collector.exporters.tickets.http import RetryPolicy
from collector.exporters.tickets.jira import JiraSink
from collector.exporters.tickets.webhook import SIGNATURE_HEADER, WebhookSink
from collector.ports import Note, TicketDraft
from tests.integration.ticket_servers import FakeServer, Fault, JiraApi, WebhookReceiver, serve, validate_adf

FP = "fedcba9876543210"
JIRA_TOKEN = "atlassian-api-token-secret"
HOOK_SECRET = "webhook-signing-secret"


def doc(generation: int = 1) -> Doc:
    return Doc(
        (
            Para(
                (
                    Text("payments/retry", bold=True),
                    " regressed after ",
                    Text("deploy-payments-2.8.0", code=True),
                    ".",
                )
            ),
            Heading("Evidence"),
            Table(
                ("metric", "before", "after"),
                (("p95", "12.0 ms", "27.9 ms"), ("error_rate", "1.00%", "6.10%")),
            ),
            Heading("Deploy"),
            Bullets(
                (
                    ("Commits ", Text("0a1b2c3d4e5f", code=True), " → ", Text("9f8e7d6c5b4a", code=True)),
                    (Text("compare", href="https://github.com/acme/shop/compare/0a1b...9f8e"),),
                )
            ),
        ),
        marker(FP, generation),
    )


def draft(generation: int = 1) -> TicketDraft:
    return TicketDraft(
        FP, generation, "[prodloop] payments/retry: p95 +132%", doc(generation), ("perf",), severity="high"
    )


class NoSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, s: float) -> None:
        self.waits.append(s)


@pytest.fixture
def jira() -> Iterator[tuple[FakeServer, JiraApi, JiraSink, NoSleep]]:
    api = JiraApi("bot@acme.test", JIRA_TOKEN, "OPS")
    for server in serve(api):
        waits = NoSleep()
        sink = JiraSink(
            server.url,
            "bot@acme.test",
            SecretStr(JIRA_TOKEN),
            "OPS",
            priorities={"high": "High"},
            sleep=waits,
            policy=RetryPolicy(backoff_initial_s=0.01),
        )
        try:
            yield server, api, sink, waits
        finally:
            sink.close()


def test_our_adf_is_valid_and_the_validator_rejects_bad_adf() -> None:
    validate_adf(doc().adf(), "doc")
    with pytest.raises(AssertionError):
        validate_adf(
            {
                "type": "doc",
                "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}],
            },
            "bad",
        )


def test_jira_create_find_comment_close(jira: tuple[FakeServer, JiraApi, JiraSink, NoSleep]) -> None:
    server, api, sink, _ = jira
    ref = sink.create(draft())
    assert ref.key == "OPS-1" and ref.url == f"{server.url}/browse/OPS-1"
    fields = server.of("POST", "/rest/api/3/issue")[0].json["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
    assert fields["priority"] == {"name": "High"}
    assert fields["labels"] == ["prodloop", "perf", f"prodloop-{FP}", f"prodloop-{FP}-g1"]
    assert fields["description"]["type"] == "doc" and fields["description"]["version"] == 1
    table = next(n for n in fields["description"]["content"] if n["type"] == "table")
    assert len(table["content"]) == 3  # header + 2 rows
    assert sink.find(FP, 1) == ref and sink.find(FP, 2) is None
    sink.comment(ref, Note("update", Doc((Para(("still slow",)),)), FP, 1))
    assert api.comments["OPS-1"][0]["content"][0]["content"][0]["text"] == "still slow"
    assert sink.state(ref).open
    sink.close_ticket(ref, Note("recovered", Doc((Para(("recovered",)),)), FP, 1))
    assert api.issues["OPS-1"]["status"] == "done"
    state = sink.state(ref)
    assert not state.open and state.closed_at_unix_nano == 1_767_225_600 * 10**9
    for r in server.requests:
        assert r.headers["authorization"].startswith("Basic ")
        assert r.headers["accept"] == "application/json"


def test_jira_rate_limits_and_uncertain_creates(jira: tuple[FakeServer, JiraApi, JiraSink, NoSleep]) -> None:
    server, api, sink, waits = jira
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    server.inject(
        Fault("POST", "/rest/api/3/issue", 429, {"Retry-After": "2"}),
        Fault("POST", "/rest/api/3/issue", 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}),
        Fault("POST", "/rest/api/3/issue", drop_after_apply=True),
    )
    ref = sink.create(draft())
    assert waits.waits[0] == 2.0 and 0.0 <= waits.waits[1] <= 3.5  # Retry-After, then the ISO reset
    assert len(api.issues) == 1 and ref.key == "OPS-1"  # the dropped create was found by its label


def test_jira_errors_are_reported_with_their_messages(
    jira: tuple[FakeServer, JiraApi, JiraSink, NoSleep],
) -> None:
    server, _, sink, _ = jira
    server.inject(
        Fault(
            "POST",
            "/rest/api/3/issue",
            400,
            {},
            {"errorMessages": [], "errors": {"summary": "Summary is required"}},
        )
    )
    with pytest.raises(TicketError, match="summary: Summary is required"):
        sink.create(draft())


def test_webhook_events_are_signed_and_carry_idempotency_keys() -> None:
    receiver = WebhookReceiver(HOOK_SECRET)
    for server in serve(receiver):
        sink = WebhookSink(server.url + "/hooks/prodloop", SecretStr(HOOK_SECRET), sleep=NoSleep())
        try:
            server.inject(Fault("POST", "/hooks/prodloop", 503))
            ref = sink.create(draft())
            sink.comment(ref, Note("update", Doc((Para(("still slow",)),)), FP, 1, at_unix_nano=5))
            sink.close_ticket(ref, Note("recovered", Doc((Para(("ok",)),)), FP, 1, at_unix_nano=9))
        finally:
            sink.close()
        assert [e["event"] for e in receiver.events] == ["ticket.opened", "ticket.comment", "ticket.closed"]
        opened = receiver.events[0]
        assert (
            opened["fingerprint"] == FP
            and opened["generation"] == 1
            and "payments/retry" in opened["markdown"]
        )
        first = server.of("POST", "/hooks/prodloop")[1]
        body = first.body
        assert (
            first.headers[SIGNATURE_HEADER.lower()]
            == "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        )
        assert first.headers["idempotency-key"] == f"{FP}-1:opened"
        assert json.loads(body)["event"] == "ticket.opened"
        # the 503 was retried with the same key: receivers can drop a repeat
        assert server.of("POST", "/hooks/prodloop")[0].headers["idempotency-key"] == f"{FP}-1:opened"


def test_webhook_with_a_wrong_secret_is_refused() -> None:
    receiver = WebhookReceiver(HOOK_SECRET)
    for server in serve(receiver):
        sink = WebhookSink(server.url, SecretStr("not-the-secret"), sleep=NoSleep())
        try:
            with pytest.raises(TicketError, match="401"):
                sink.create(draft())
        finally:
            sink.close()
        assert not receiver.events
