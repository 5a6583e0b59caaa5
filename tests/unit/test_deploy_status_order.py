"""The statuses of one deploy are ordered by their own time and id, not by arrival (issue 10).

A replayed or late older status (GitHub redelivers, a proxy retries, two replicas see events
in another order) must never replace a newer one: a failed deploy stays failed.  Here: the
pure timeline, the event contract (``status_at``, ``status_id``), the GitHub mapping, the
Kafka mode's deploy log as the workers read it, and the bearer scheme of the receivers.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from attribution.deploys import DeployTimeline
from attribution.events import EventValidationError, deploy_event_to_json, parse_deploy_event
from attribution.model import DeployEvent
from collector.errors import EventError
from collector.processing.deploy_sets import DeployLog
from collector.receivers.auth import bearer_matches
from collector.receivers.github import GithubDeliveries, deploy_from_github
from tests.unit.test_events import DEPLOY, MIN_DEPLOY, _schema_fields

T0 = 1_772_323_200 * 1_000_000_000  # 2026-03-01T00:00:00Z
SECOND = 1_000_000_000
OLD, NEW = "1" * 40, "2" * 40


def status(state: str, at: int, status_id: int, *, commit: str = NEW) -> DeployEvent:
    """One status of deployment 42, as the GitHub mapping makes it."""
    return DeployEvent(
        deploy_id="github:acme/app:42",
        service="cart",
        environment="prod",
        commit_sha=commit,
        deployed_at_unix_nano=at,
        status=state,
        status_at_unix_nano=at,
        status_id=status_id,
    )


BASE = DeployEvent("base", "cart", "prod", OLD, T0)
SUCCESS = status("succeeded", T0 + 60 * SECOND, 1001)
FAILURE = status("failed", T0 + 120 * SECOND, 1002)
LATER = T0 + 600 * SECOND


# -- the timeline ------------------------------------------------------------------------


def test_a_replayed_success_does_not_revive_a_failed_deploy() -> None:
    tl = DeployTimeline([BASE])
    assert tl.add(SUCCESS) and tl.commit_at("cart", "prod", LATER) == NEW
    assert tl.add(FAILURE) and tl.commit_at("cart", "prod", LATER) == OLD
    v = tl.version
    assert tl.add(SUCCESS) is False  # the replay: no change at all
    assert tl.version == v
    assert tl.commit_at("cart", "prod", LATER) == OLD
    assert [e.status for e in tl.events() if e.deploy_id == SUCCESS.deploy_id] == ["failed"]


def test_statuses_that_arrive_out_of_order_keep_the_newest() -> None:
    tl = DeployTimeline([BASE, FAILURE])
    assert tl.add(SUCCESS) is False
    assert tl.commit_at("cart", "prod", LATER) == OLD


def test_every_arrival_order_of_a_history_gives_the_newest_status() -> None:
    history = [
        status("succeeded", T0 + 10 * SECOND, 7),
        status("failed", T0 + 20 * SECOND, 3),  # a later time beats a higher id
        status("succeeded", T0 + 20 * SECOND, 9),  # same time: the higher id wins
        status("failed", T0 + 5 * SECOND, 99),
    ]
    for order in itertools.permutations(history):
        tl = DeployTimeline([BASE, *order])
        (got,) = [e for e in tl.events() if e.deploy_id == SUCCESS.deploy_id]
        assert got == history[2], order
        assert tl.commit_at("cart", "prod", LATER) == NEW


def test_events_without_an_order_keep_last_arrival_wins() -> None:
    a = DeployEvent("d1", "cart", "prod", OLD, T0)
    b = DeployEvent("d1", "cart", "prod", NEW, T0, status="failed")
    tl = DeployTimeline([a, b])
    assert tl.commit_at("cart", "prod", LATER) == ""
    assert tl.add(a) is True  # the same content again is a change back: last one wins
    assert tl.commit_at("cart", "prod", LATER) == OLD


def test_an_event_without_an_order_counts_as_the_oldest() -> None:
    tl = DeployTimeline([FAILURE])
    unordered = DeployEvent(FAILURE.deploy_id, "cart", "prod", NEW, T0 + 60 * SECOND)
    assert tl.add(unordered) is False
    assert tl.commit_at("cart", "prod", LATER) == ""


# -- Kafka mode: the deploy log every replica and worker keeps -----------------------------


def test_the_workers_timeline_from_the_deploy_topic_order_keeps_the_failure() -> None:
    """Topic order (record time, partition, offset) is arrival order: success, failure, replay."""
    for arrivals in ([SUCCESS, FAILURE, SUCCESS], [FAILURE, SUCCESS]):
        log = DeployLog()
        log.add([BASE], [(1000 + i, 0, i, e) for i, e in enumerate(arrivals)])
        selection = log.select(10_000, {0: len(arrivals)})
        tl = DeployTimeline(log.events(selection))  # what collector/processing/workers.py builds per batch
        assert tl.commit_at("cart", "prod", LATER) == OLD, arrivals


# -- the event contract ------------------------------------------------------------------


def test_status_at_and_status_id_parse_and_round_trip() -> None:
    obj = dict(MIN_DEPLOY, status_at="2026-03-01T00:01:00.5Z", status_id=1001)
    assert DEPLOY.is_valid(obj)
    d = parse_deploy_event(obj)
    assert (d.status_at_unix_nano, d.status_id) == (T0 + 60 * SECOND + SECOND // 2, 1001)
    assert d.status_order == (T0 + 60 * SECOND + SECOND // 2, 1001)
    out = deploy_event_to_json(d)
    assert DEPLOY.is_valid(out) and (out["status_at"], out["status_id"]) == (
        "2026-03-01T00:01:00.500000000Z",
        1001,
    )
    assert parse_deploy_event(json.loads(json.dumps(out))) == d
    plain = parse_deploy_event(MIN_DEPLOY)
    assert plain.status_order == (0, 0)
    assert "status_at" not in deploy_event_to_json(plain) and "status_id" not in deploy_event_to_json(plain)
    assert parse_deploy_event(dict(MIN_DEPLOY, status_id=7.0)).status_id == 7  # an integer to the schema


@pytest.mark.parametrize(
    "obj",
    [
        dict(MIN_DEPLOY, status_at="yesterday"),
        dict(MIN_DEPLOY, status_at=1795428900),
        dict(MIN_DEPLOY, status_at="2026-03-01T00:00:00"),
        dict(MIN_DEPLOY, status_id="1001"),
        dict(MIN_DEPLOY, status_id=-1),
        dict(MIN_DEPLOY, status_id=1.5),
        dict(MIN_DEPLOY, status_id=True),
        dict(MIN_DEPLOY, status_id=1 << 63),
    ],
)
def test_invalid_status_order_is_rejected_by_schema_and_parser_naming_the_field(obj: dict[str, Any]) -> None:
    (field,) = (k for k in ("status_at", "status_id") if k in obj)
    assert _schema_fields(DEPLOY, obj) == {field}
    with pytest.raises(EventValidationError) as info:
        parse_deploy_event(obj)
    assert info.value.field == field


def test_status_at_outside_the_store_range_is_rejected() -> None:
    for at in ("1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2262-04-12T00:00:00Z"):
        with pytest.raises(EventValidationError, match="status_at"):
            parse_deploy_event(dict(MIN_DEPLOY, status_at=at))


# -- the GitHub mapping and its deliveries -----------------------------------------------


def _github(state: str, status_id: int | None, updated_at: str) -> dict[str, Any]:
    st: dict[str, Any] = {"state": state, "created_at": "2026-03-01T00:00:00Z", "updated_at": updated_at}
    if status_id is not None:
        st["id"] = status_id
    return {
        "deployment_status": st,
        "deployment": {"id": 42, "sha": NEW, "payload": {"service": "cart", "environment": "prod"}},
        "repository": {"name": "app", "full_name": "acme/app"},
    }


def test_github_statuses_carry_their_own_time_and_id() -> None:
    ev = deploy_from_github(_github("failure", 1002, "2026-03-01T00:02:00Z"))
    assert ev is not None
    assert (ev.status, ev.status_at_unix_nano, ev.status_id) == ("failed", T0 + 120 * SECOND, 1002)
    assert deploy_event_to_json(ev)["status_id"] == 1002  # travels to the deploys topic
    old = deploy_from_github(_github("success", 1001, "2026-03-01T00:01:00Z"))
    assert old is not None and old.status_order < ev.status_order
    no_id = deploy_from_github(_github("success", None, "2026-03-01T00:01:00Z"))
    assert no_id is not None and no_id.status_order == (T0 + 60 * SECOND, 0)
    with pytest.raises(EventError, match="status_id"):
        deploy_from_github(_github("success", -5, "2026-03-01T00:01:00Z"))


def test_github_deliveries_are_bounded_oldest_first() -> None:
    seen = GithubDeliveries(3)
    for d in ("a", "b", "c"):
        seen.add(d)
    assert "a" in seen
    seen.add("a")  # seen again: now the newest
    seen.add("d")
    assert ("a" in seen, "b" in seen, "c" in seen, "d" in seen) == (True, False, True, True)


# -- the Authorization scheme (RFC 7235: case-insensitive) ---------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Bearer tok-EN",
        "bearer tok-EN",
        "BEARER tok-EN",
        "bEaReR tok-EN",
        "Bearer   tok-EN",
        "  Bearer tok-EN  ",
    ],
)
def test_the_bearer_scheme_is_case_insensitive(value: str) -> None:
    assert bearer_matches(value, b"tok-EN")
    assert bearer_matches(value.encode(), b"tok-EN")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "tok-EN",
        "Basic tok-EN",
        "Bearer tok-en",
        "Bearer TOK-EN",
        "Bearertok-EN",
    ],
)
def test_a_wrong_scheme_or_token_is_refused(value: str | None) -> None:
    assert not bearer_matches(value, b"tok-EN")
