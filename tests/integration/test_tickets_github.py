"""The GitHub Issues sink against a local server that validates every request against the
published OpenAPI description (@octokit/openapi, tests/data/github-openapi-subset.json)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from collector.codec.ticket_blocks import Bullets, Heading, Para, Table, Text
from collector.codec.ticket_document import Doc, fingerprint_label, marker
from collector.errors import TicketError
from collector.exporters.tickets.github import GitHubSink
from collector.exporters.tickets.http import RetryPolicy
from collector.ports import Note, TicketDraft
from tests.integration.ticket_servers import GITHUB_SPEC, FakeServer, Fault, GitHubApi, serve

TOKEN = "ghp_test_token_never_logged"
FP = "0123456789abcdef"


@pytest.fixture
def github() -> Iterator[tuple[FakeServer, GitHubApi]]:
    api = GitHubApi("acme", "shop", TOKEN)
    for server in serve(api):
        yield server, api


class Waits:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(min(seconds, 0.05))


OPEN: list[GitHubSink] = []


@pytest.fixture(autouse=True)
def _close_sinks() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def sink(server: FakeServer, waits: Waits | None = None, **policy: float) -> GitHubSink:
    s = GitHubSink(
        "acme/shop",
        SecretStr(TOKEN),
        api_url=server.url,
        sleep=waits or Waits(),
        policy=RetryPolicy(backoff_initial_s=0.01, secondary_wait_s=0.2, **policy),  # type: ignore[arg-type]
    )
    OPEN.append(s)
    return s


def draft(generation: int = 1) -> TicketDraft:
    doc = Doc(
        (
            Para(
                (
                    Text("payments/retry", bold=True),
                    " regressed after ",
                    Text("deploy-payments-2.8.0", code=True),
                )
            ),
            Heading("Evidence"),
            Table(("metric", "before", "after"), (("p95", "12.0 ms", "27.9 ms"),)),
            Bullets((("Owners ", "@acme/payments, @carol"),)),
        ),
        marker(FP, generation),
    )
    return TicketDraft(
        FP, generation, "[prodloop] payments/retry: p95 +132%", doc, ("perf",), ("@acme/payments", "@carol")
    )


def test_the_subset_records_its_source() -> None:
    assert GITHUB_SPEC["source"].startswith("npm @octokit/openapi@")
    assert set(GITHUB_SPEC["operations"]) == {
        "issues/create",
        "issues/list-for-repo",
        "issues/get",
        "issues/update",
        "issues/create-comment",
        "issues/add-labels",
    }


def test_create_find_comment_state_close(github: tuple[FakeServer, GitHubApi]) -> None:
    server, api = github
    s = sink(server)
    ref = s.create(draft())
    assert ref.key == "1" and ref.url == "https://github.com/acme/shop/issues/1"
    create = server.of("POST", "/repos/acme/shop/issues")[0]
    body = create.json
    assert body["title"] == "[prodloop] payments/retry: p95 +132%"
    assert body["labels"] == ["prodloop", "perf", fingerprint_label(FP)]
    assert body["assignees"] == ["carol"]  # users are assigned; teams are mentioned in the body
    assert "@acme/payments" in body["body"] and f"<!-- {marker(FP, 1)} -->" in body["body"]
    assert "| p95 | 12.0 ms | 27.9 ms |" in body["body"]
    # found by listing on the fingerprint label, and only for its generation
    assert s.find(FP, 1) == ref
    assert s.find(FP, 2) is None
    lists = server.of("GET", "/repos/acme/shop/issues")
    assert lists[0].query["labels"] == [fingerprint_label(FP)] and lists[0].query["state"] == ["all"]
    s.comment(ref, Note("update", Doc((Para(("still slow",)),)), FP, 1))
    assert api.comments[1] == ["still slow\n"]
    assert s.state(ref).open
    s.close_ticket(ref, Note("recovered", Doc((Para(("recovered",)),)), FP, 1))
    assert api.issues[1]["state"] == "closed"
    patch = server.of("PATCH", "/repos/acme/shop/issues/1")[0]
    assert patch.json == {"state": "closed", "state_reason": "completed"}
    assert server.of("POST", "/repos/acme/shop/issues/1/labels")[0].json == {"labels": ["prodloop:recovered"]}
    state = s.state(ref)
    assert not state.open and state.closed_at_unix_nano == 1_767_225_600 * 10**9
    for r in server.requests:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(s) and TOKEN not in repr(s.http)


def test_primary_rate_limit_waits_until_the_reset(github: tuple[FakeServer, GitHubApi]) -> None:
    server, api = github
    waits = Waits()
    reset = int(time.time()) + 2
    server.inject(
        Fault(
            "POST",
            "/repos/acme/shop/issues",
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset), "x-ratelimit-limit": "5000"},
            {"message": "API rate limit exceeded for user ID 1."},
        )
    )
    sink(server, waits).create(draft())
    assert len(api.issues) == 1
    assert len(waits.waits) == 1 and 0.5 <= waits.waits[0] <= 3.0  # until x-ratelimit-reset (+0.5 s)


def test_429_and_secondary_limits_honour_retry_after(github: tuple[FakeServer, GitHubApi]) -> None:
    server, api = github
    waits = Waits()
    server.inject(
        Fault("POST", "/repos/acme/shop/issues", 429, {"retry-after": "3"}, {"message": "slow down"}),
        Fault(
            "POST",
            "/repos/acme/shop/issues",
            403,
            {},
            {
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            },
        ),
    )
    sink(server, waits).create(draft())
    assert waits.waits == [3.0, 0.2]  # Retry-After, then the configured secondary-limit wait
    assert len(api.issues) == 1


def test_a_rate_limit_longer_than_max_wait_fails_for_the_next_evaluation(
    github: tuple[FakeServer, GitHubApi],
) -> None:
    server, api = github
    server.inject(Fault("POST", "/repos/acme/shop/issues", 429, {"retry-after": "3600"}))
    with pytest.raises(TicketError, match="rate limited for 3600s"):
        sink(server, max_wait_s=60).create(draft())
    assert not api.issues


def test_server_errors_back_off_and_retry_reads(github: tuple[FakeServer, GitHubApi]) -> None:
    server, _ = github
    s = sink(server)
    ref = s.create(draft())
    waits = Waits()
    s.http.sleep = waits
    server.inject(
        Fault("GET", "/repos/acme/shop/issues/1", 502), Fault("GET", "/repos/acme/shop/issues/1", 503)
    )
    assert s.state(ref).open
    assert len(waits.waits) == 2 and waits.waits[1] > waits.waits[0] * 0.7  # exponential, jittered
    assert len(server.of("GET", "/repos/acme/shop/issues/1")) == 3


def test_permission_errors_are_not_retried(github: tuple[FakeServer, GitHubApi]) -> None:
    server, _ = github
    server.inject(
        Fault(
            "POST", "/repos/acme/shop/issues", 403, {}, {"message": "Resource not accessible by integration"}
        )
    )
    with pytest.raises(TicketError, match="Resource not accessible by integration"):
        sink(server).create(draft())
    assert len(server.of("POST", "/repos/acme/shop/issues")) == 1


def test_an_uncertain_create_is_found_not_duplicated(github: tuple[FakeServer, GitHubApi]) -> None:
    """The server creates the issue, then the connection drops before the answer (or a 502)."""
    server, api = github
    server.inject(Fault("POST", "/repos/acme/shop/issues", drop_after_apply=True))
    ref = sink(server).create(draft())
    assert len(api.issues) == 1 and ref.key == "1"
    assert len(server.of("POST", "/repos/acme/shop/issues")) == 1  # not resent: found by its label
    # a 502 that did not create anything: looked for, not found, sent again
    server.inject(Fault("POST", "/repos/acme/shop/issues", 502))
    ref2 = sink(server).create(draft(generation=2))
    assert len(api.issues) == 2 and ref2.key == "2"


def test_requests_outside_the_published_api_are_rejected(github: tuple[FakeServer, GitHubApi]) -> None:
    """The validator itself: a body the OpenAPI schema forbids fails the request."""
    server, _ = github
    s = sink(server)
    with pytest.raises(TicketError, match="422"):
        s.http.request("POST", "/repos/acme/shop/issues", json_body={"body": "no title"})
    with pytest.raises(TicketError, match="422"):
        s.http.request("GET", "/repos/acme/shop/issues", params={"state": "everything"})
    assert len(server.failures) == 2
    server.failures.clear()
