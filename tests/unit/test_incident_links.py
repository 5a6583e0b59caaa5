"""Incident links: the deploy and the modules, each case against hand-computed values."""

from __future__ import annotations

import pytest

from attribution.dora import IncidentLink, changed_modules, previous_deploy
from attribution.history import Commit, CommitGraph, FileChange
from attribution.incident_links import link_incident
from attribution.model import DeployEvent, IncidentEvent

S = 1_000_000_000
MIN = 60 * S
T0 = 1_750_000_000 * S


def commit(sha: str, t: int, *files: tuple[str, str], parents: tuple[str, ...] = ()) -> Commit:
    changes = tuple(FileChange(path, added=5, removed=1, module=module) for path, module in files)
    return Commit("shop", sha * 40, tuple(p * 40 for p in parents), "Dev", "dev@x", t, t, f"c {sha}", changes)


# 1 - 2 - 3 - 4 - 5 - 6
GRAPH = CommitGraph(
    [
        commit("1", T0, ("cart/cart.py", "cart")),
        commit("2", T0 + 1 * S, ("payments/retry/policy.py", "payments/retry"), parents=("1",)),
        commit("3", T0 + 2 * S, ("payments/api/handler.py", "payments/api"), parents=("2",)),
        commit("4", T0 + 3 * S, ("cart/total.py", "cart"), parents=("3",)),
        commit("5", T0 + 4 * S, ("README.md", ""), parents=("4",)),
        commit("6", T0 + 5 * S, ("cart/coupons.py", "cart"), parents=("5",)),
    ]
)


def deploy(
    i: str, service: str, env: str, sha: str, minute: int, status: str = "succeeded", previous: str = ""
) -> DeployEvent:
    return DeployEvent(i, service, env, sha, T0 + minute * MIN, previous_sha=previous, status=status)


DEPLOYS = [
    deploy("d1", "payments", "production", "1" * 40, 0),
    deploy("s2", "payments", "staging", "4" * 40, 50),
    deploy("d2", "payments", "production", "4" * 12, 60),  # short SHA; the previous live one is d1
    deploy("c1", "cart", "production", "6" * 40, 65),
    deploy("dx", "payments", "production", "6" * 40, 70, status="failed"),
    deploy("d4", "payments", "production", "6" * 40, 100),  # replaces d2 (dx never went live)
]


def incident(minute: int, *services: str, **kw: object) -> IncidentEvent:
    return IncidentEvent(
        "INC-7",
        services,
        T0 + minute * MIN,
        "sev2",
        resolved_at_unix_nano=T0 + (minute + 45) * MIN,
        **kw,  # type: ignore[arg-type]
    )


def link(inc: IncidentEvent, regressed: tuple[str, ...] = (), window_min: int = 30) -> IncidentLink:
    return link_incident(inc, DEPLOYS, GRAPH, regressed, window_ns=window_min * MIN)


def test_explicit_deploy_id_wins_over_commit_sha_and_inference() -> None:
    got = link(incident(90, "payments", deploy_id="d1", commit_sha="4" * 40), ("cart", "search"))
    # d1 is the first deploy: every ancestor of 1 counts, i.e. cart
    assert got == IncidentLink(
        "INC-7",
        "d1",
        ("cart",),
        T0 + 90 * MIN,
        T0 + 135 * MIN,
        deploy_evidence="explicit deploy_id",
        modules_evidence="inferred: changed by d1 and regressed in the incident window",
    )
    # an unknown deploy_id falls through to the commit SHA
    assert link(incident(90, "payments", deploy_id="nope", commit_sha="4" * 40)).deploy_id == "d2"


def test_explicit_commit_sha_latest_live_deploy_before_the_start_else_earliest() -> None:
    # 4 went to staging (s2, minute 50) and production (d2, minute 60, short SHA)
    got = link(incident(90, "payments", commit_sha="4" * 40))
    assert (got.deploy_id, got.deploy_evidence) == ("d2", "explicit commit_sha")
    assert link(incident(90, "payments", commit_sha="4444444")).deploy_id == "d2"  # a short SHA resolves
    assert link(incident(55, "payments", commit_sha="4" * 40)).deploy_id == "s2"
    assert link(incident(40, "payments", commit_sha="4" * 40)).deploy_id == "s2"  # none before: earliest
    # another service's deploy of the SHA does not count; only live deploys do
    assert link(incident(66, "search", commit_sha="6" * 40)).deploy_id == ""
    # 6 went out with dx (failed, minute 70) and d4 (minute 100): the failed one is skipped, so
    # an incident at 72 gets the earliest live one after it, and one at 120 the latest before
    assert link(incident(72, "payments", commit_sha="6" * 40)).deploy_id == "d4"
    assert link(incident(120, "payments", commit_sha="6" * 40)).deploy_id == "d4"
    # a SHA no deploy carries: inferred instead
    got = link(incident(80, "payments", commit_sha="2" * 40))
    assert (got.deploy_id, got.deploy_evidence[:9]) == ("d2", "inferred:")


def test_inferred_last_live_deploy_of_an_affected_service_within_the_window() -> None:
    got = link(incident(80, "payments"))  # live payments deploys in [50, 80]: s2, d2 (dx failed)
    assert (got.deploy_id, got.deploy_evidence) == (
        "d2",
        "inferred: last deploy of payments 20 min before the incident",
    )
    assert link(incident(80, "payments"), window_min=20).deploy_id == "d2"  # the window's edge is in
    got = link(incident(67, "payments", "cart"))
    assert (got.deploy_id, got.deploy_evidence) == (
        "c1",
        "inferred: last deploy of cart 2 min before the incident",
    )
    # d2 is 20 minutes before: outside a 15-minute window, so nothing is linked
    got = link(incident(80, "payments"), ("payments/api",), window_min=15)
    assert (got.deploy_id, got.deploy_evidence) == ("", "no deploy within 15 min before the incident")
    assert (got.modules, got.modules_evidence) == ((), "no deploy linked")
    assert link(incident(300, "payments"), window_min=120).deploy_evidence == (
        "no deploy within 2 h before the incident"
    )
    assert link(incident(80)).deploy_id == ""  # no service: nothing to infer from


def test_explicit_modules_are_kept_as_given() -> None:
    got = link(incident(80, "payments", modules=("payments/retry", "cart")), ("payments/api",))
    assert (got.deploy_id, got.modules, got.modules_evidence) == (
        "d2",
        ("payments/retry", "cart"),
        "explicit",
    )


def test_inferred_modules_are_those_the_deploy_changed_that_regressed() -> None:
    # d2 = d1..4: commits 2, 3, 4 changed payments/retry, payments/api, cart
    got = link(incident(80, "payments"), ("search", "payments/api", "payments/retry"))
    assert got.modules == ("payments/api", "payments/retry")
    assert got.modules_evidence == "inferred: changed by d2 and regressed in the incident window"


def test_nothing_regressed_that_the_deploy_changed() -> None:
    got = link(incident(80, "payments"), ("search",))
    assert (got.deploy_id, got.modules, got.modules_evidence) == (
        "d2",
        (),
        "changed by d2 but none regressed",
    )
    assert link(incident(80, "payments")).modules_evidence == "changed by d2 but none regressed"


def test_changed_modules_use_previous_sha_else_the_previous_live_deploy() -> None:
    assert changed_modules(DEPLOYS[2], previous_deploy(DEPLOYS[2], DEPLOYS), GRAPH) == (
        "cart",
        "payments/api",
        "payments/retry",
    )
    # d4's previous live production deploy is d2 (4), not the failed dx (6): 5 and 6
    assert changed_modules(DEPLOYS[5], previous_deploy(DEPLOYS[5], DEPLOYS), GRAPH) == ("cart",)
    # staging has no earlier deploy: every ancestor of 4
    assert changed_modules(DEPLOYS[1], previous_deploy(DEPLOYS[1], DEPLOYS), GRAPH) == (
        "cart",
        "payments/api",
        "payments/retry",
    )
    explicit = deploy("d9", "payments", "production", "4" * 40, 200, previous="3" * 40)
    assert changed_modules(explicit, previous_deploy(explicit, DEPLOYS), GRAPH) == ("cart",)
    redeploy = deploy("d5", "payments", "production", "6" * 40, 110)
    assert changed_modules(redeploy, previous_deploy(redeploy, [*DEPLOYS, redeploy]), GRAPH) == ()


def test_a_deploy_outside_the_history_changed_nothing_known() -> None:
    unknown = deploy("dz", "search", "production", "f" * 40, 75)
    got = link_incident(incident(80, "search"), [*DEPLOYS, unknown], GRAPH, ("search",), window_ns=30 * MIN)
    assert (got.deploy_id, got.modules) == ("dz", ())
    assert got.modules_evidence == "commit ffffffffffff of dz is not in the history"
    with pytest.raises(ValueError, match="window_ns"):
        link_incident(incident(80, "search"), DEPLOYS, GRAPH, (), window_ns=-1)
