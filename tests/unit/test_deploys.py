"""The deploy timeline (attribution/deploys.py): which commit was live, and when."""

from __future__ import annotations

import itertools
import random

import pytest

from attribution.deploys import DeployTimeline
from attribution.model import DeployEvent

T0 = 1_700_000_040 * 1_000_000_000
SECOND = 1_000_000_000
END_OF_TIME = (1 << 63) - 1


def sha(n: int) -> str:
    return f"{n:040x}"


def ev(
    deploy_id: str,
    commit: str,
    at: int,
    *,
    service: str = "checkout",
    env: str = "prod",
    status: str = "succeeded",
) -> DeployEvent:
    return DeployEvent(
        deploy_id=deploy_id,
        service=service,
        environment=env,
        commit_sha=commit,
        deployed_at_unix_nano=at,
        status=status,
    )


def test_empty_timeline_knows_nothing() -> None:
    tl = DeployTimeline()
    assert len(tl) == 0
    assert tl.deploy_at("checkout", "prod", T0) is None
    assert tl.commit_at("checkout", "prod", T0) == ""
    assert tl.intervals("checkout", "prod") == []


def test_latest_live_deploy_at_or_before_t() -> None:
    tl = DeployTimeline([ev("d1", sha(1), T0), ev("d2", sha(2), T0 + 10 * SECOND)])
    assert tl.commit_at("checkout", "prod", T0 - 1) == ""  # before the first deploy: unknown
    assert tl.commit_at("checkout", "prod", T0) == sha(1)  # at: inclusive
    assert tl.commit_at("checkout", "prod", T0 + 10 * SECOND - 1) == sha(1)
    assert tl.commit_at("checkout", "prod", T0 + 10 * SECOND) == sha(2)
    assert tl.commit_at("checkout", "prod", T0 + 10**6 * SECOND) == sha(2)  # stays live
    d = tl.deploy_at("checkout", "prod", T0 + 5 * SECOND)
    assert d is not None and d.deploy_id == "d1"


def test_failed_deploys_never_go_live() -> None:
    tl = DeployTimeline(
        [
            ev("d1", sha(1), T0),
            ev("d2", sha(2), T0 + 10 * SECOND, status="failed"),
            ev("d0", sha(9), T0 - 10 * SECOND, status="failed"),
        ]
    )
    assert tl.commit_at("checkout", "prod", T0 - 5 * SECOND) == ""
    assert tl.commit_at("checkout", "prod", T0 + 20 * SECOND) == sha(1)
    assert [d.deploy_id for _, _, d in tl.intervals("checkout", "prod")] == ["d1"]
    assert len(tl) == 3  # still recorded, just never live


def test_rolled_back_status_was_live_until_replaced() -> None:
    tl = DeployTimeline(
        [
            ev("d1", sha(1), T0),
            ev("d2", sha(2), T0 + 10 * SECOND, status="rolled_back"),
            ev("d3", sha(1), T0 + 20 * SECOND),
        ]
    )
    assert tl.commit_at("checkout", "prod", T0 + 15 * SECOND) == sha(2)
    assert tl.commit_at("checkout", "prod", T0 + 25 * SECOND) == sha(1)


def test_rollback_is_a_later_deploy_of_an_older_sha() -> None:
    tl = DeployTimeline(
        [
            ev("d1", sha(1), T0),
            ev("d2", sha(2), T0 + 10 * SECOND),
            ev("rollback", sha(1), T0 + 20 * SECOND),
        ]
    )
    assert [tl.commit_at("checkout", "prod", T0 + s * SECOND) for s in (5, 15, 25)] == [
        sha(1),
        sha(2),
        sha(1),
    ]
    d = tl.deploy_at("checkout", "prod", T0 + 25 * SECOND)
    assert d is not None and d.deploy_id == "rollback"
    rb = tl.deploy_at("checkout", "prod", T0 + 25 * SECOND)
    assert rb is not None
    prev = tl.previous(rb)
    assert prev is not None and prev.deploy_id == "d2"


def test_same_deploy_id_is_replaced_by_the_last_event() -> None:
    tl = DeployTimeline()
    assert tl.add(ev("d1", sha(1), T0)) is True
    v = tl.version
    assert tl.add(ev("d1", sha(1), T0)) is False  # identical: no change
    assert tl.version == v
    # a corrected event: another time and commit
    assert tl.add(ev("d1", sha(2), T0 + 10 * SECOND)) is True
    assert tl.version > v
    assert len(tl) == 1
    assert tl.commit_at("checkout", "prod", T0 + 5 * SECOND) == ""
    assert tl.commit_at("checkout", "prod", T0 + 10 * SECOND) == sha(2)
    # replaced by a failure: no longer live
    tl.add(ev("d1", sha(2), T0 + 10 * SECOND, status="failed"))
    assert tl.commit_at("checkout", "prod", T0 + 20 * SECOND) == ""


def test_replaced_event_can_move_to_another_service() -> None:
    tl = DeployTimeline([ev("d1", sha(1), T0, service="checkout")])
    tl.add(ev("d1", sha(1), T0, service="payments"))
    assert tl.commit_at("checkout", "prod", T0) == ""
    assert tl.commit_at("payments", "prod", T0) == sha(1)


def test_add_all_counts_changes() -> None:
    tl = DeployTimeline()
    events = [ev("d1", sha(1), T0), ev("d2", sha(2), T0 + 1), ev("d1", sha(1), T0)]
    assert tl.add_all(events) == 2
    assert tl.add_all(events) == 0


def test_ties_are_broken_by_deploy_id_whatever_the_insertion_order() -> None:
    tied = [ev("deploy-b", sha(2), T0), ev("deploy-a", sha(1), T0), ev("deploy-c", sha(3), T0)]
    answers = set()
    for order in itertools.permutations(tied):
        tl = DeployTimeline([ev("d0", sha(9), T0 - SECOND), *order])
        d = tl.deploy_at("checkout", "prod", T0)
        assert d is not None
        answers.add((d.deploy_id, tl.commit_at("checkout", "prod", T0 + SECOND)))
        assert [x.deploy_id for x in tl.events()] == ["d0", "deploy-a", "deploy-b", "deploy-c"]
    assert len(answers) == 1
    # the winner is one of the tied deploys, never the earlier one
    ((winner, commit),) = answers
    assert winner in {"deploy-a", "deploy-b", "deploy-c"}
    assert commit == {"deploy-a": sha(1), "deploy-b": sha(2), "deploy-c": sha(3)}[winner]


def test_random_histories_answer_the_same_in_any_insertion_order() -> None:
    """Replicas and replays that saw the same events agree (also with replaced ids)."""
    for seed in range(20):
        rng = random.Random(seed)
        events = [
            ev(
                f"d{rng.randrange(12)}",
                sha(rng.randrange(5)),
                T0 + rng.randrange(6) * SECOND,
                service=rng.choice(["checkout", "payments"]),
                status=rng.choice(["succeeded", "succeeded", "failed"]),
            )
            for _ in range(15)
        ]
        # keep one event per id so that "last one wins" does not depend on the shuffle
        unique = list({e.deploy_id: e for e in events}.values())
        answers = []
        for _ in range(5):
            rng.shuffle(unique)
            tl = DeployTimeline(unique)
            answers.append(
                [
                    tl.commit_at(svc, "prod", T0 + t * SECOND // 2)
                    for svc in ("checkout", "payments")
                    for t in range(-1, 14)
                ]
            )
        assert all(a == answers[0] for a in answers), seed


def test_random_histories_against_a_brute_force_definition() -> None:
    for seed in range(20):
        rng = random.Random(1000 + seed)
        events = [
            ev(
                f"d{i}",
                sha(rng.randrange(4)),
                T0 + rng.randrange(8) * SECOND,
                service=rng.choice(["checkout", "payments"]),
                env=rng.choice(["prod", "staging"]),
                status=rng.choice(["succeeded", "rolled_back", "failed"]),
            )
            for i in range(12)
        ]
        tl = DeployTimeline(events)
        for svc, env in itertools.product(("checkout", "payments"), ("prod", "staging")):
            for t in range(-1, 10):
                at = T0 + t * SECOND
                live = [
                    e
                    for e in events
                    if e.service == svc
                    and e.environment == env
                    and e.status != "failed"
                    and e.deployed_at_unix_nano <= at
                ]
                want = max(live, key=lambda e: (e.deployed_at_unix_nano, e.deploy_id), default=None)
                assert tl.deploy_at(svc, env, at) == want, (seed, svc, env, t)


def test_timeline_is_per_service_and_environment() -> None:
    tl = DeployTimeline(
        [
            ev("d1", sha(1), T0, service="checkout", env="prod"),
            ev("d2", sha(2), T0, service="checkout", env="staging"),
            ev("d3", sha(3), T0, service="payments", env="prod"),
            ev("d4", sha(4), T0, service="payments", env=""),
        ]
    )
    assert tl.commit_at("checkout", "prod", T0) == sha(1)
    assert tl.commit_at("checkout", "staging", T0) == sha(2)
    assert tl.commit_at("payments", "prod", T0) == sha(3)
    assert tl.commit_at("payments", "", T0) == sha(4)
    assert tl.commit_at("payments", "staging", T0) == ""
    assert tl.commit_at("search", "prod", T0) == ""


def test_intervals_tile_the_timeline() -> None:
    tl = DeployTimeline(
        [
            ev("d2", sha(2), T0 + 10 * SECOND),
            ev("d1", sha(1), T0),
            ev("dx", sha(3), T0 + 5 * SECOND, status="failed"),
        ]
    )
    got = [(start, until, d.deploy_id) for start, until, d in tl.intervals("checkout", "prod")]
    assert got == [(T0, T0 + 10 * SECOND, "d1"), (T0 + 10 * SECOND, END_OF_TIME, "d2")]


def test_previous_of_the_first_deploy_or_of_a_failed_one_is_none() -> None:
    first, second = ev("d1", sha(1), T0), ev("d2", sha(2), T0 + SECOND)
    failed = ev("d3", sha(3), T0 + 2 * SECOND, status="failed")
    tl = DeployTimeline([first, second, failed])
    assert tl.previous(first) is None
    assert tl.previous(second) == first
    assert tl.previous(failed) is None


def test_version_bumps_on_every_change() -> None:
    tl = DeployTimeline()
    versions = [tl.version]
    for i in range(3):
        tl.add(ev(f"d{i}", sha(i), T0 + i))
        versions.append(tl.version)
    assert versions == sorted(set(versions))


@pytest.mark.parametrize("status", ["succeeded", "rolled_back"])
def test_live_property(status: str) -> None:
    assert ev("d", sha(1), T0, status=status).live
    assert not ev("d", sha(1), T0, status="failed").live


def test_interval_at_agrees_with_intervals_everywhere() -> None:
    """The binary search attribution uses (interval_at) against the list (intervals)."""
    rng = random.Random(5)
    events = [
        ev(
            f"d{i}",
            sha(i),
            T0 + rng.randrange(0, 50) * SECOND,
            service=rng.choice(["checkout", "cart"]),
            status=rng.choice(["succeeded", "succeeded", "failed"]),
        )
        for i in range(60)
    ]
    tl = DeployTimeline(events)
    for service in ("checkout", "cart", "nobody"):
        spans = tl.intervals(service, "prod")
        probes = [T0 + x * SECOND // 2 for x in range(-4, 110)] + [-(1 << 63), END_OF_TIME]
        probes += [start for start, _, _ in spans] + [until - 1 for _, until, _ in spans]
        for t in probes:
            lo, hi, got = tl.interval_at(service, "prod", t)
            assert lo <= t < hi, (service, t, lo, hi)
            inside = [e for start, until, e in spans if start <= t < until]
            assert got == (inside[0] if inside else None), (service, t)
            if got is None and spans and t < spans[0][0]:
                assert (lo, hi) == (-(1 << 63), spans[0][0])
            if t < END_OF_TIME:  # (intervals end there; deploy_at does not care)
                # the deploy live at both ends of the interval is the one live at t
                assert lo == -(1 << 63) or tl.deploy_at(service, "prod", lo) == got
                assert tl.deploy_at(service, "prod", hi - 1) == got
