"""DORA metrics per service and per module against hand-computed values."""

from __future__ import annotations

import pytest

from attribution.dora import (
    DeployFailure,
    DoraRow,
    IncidentLink,
    TicketFinding,
    changed_modules,
    deploy_changes,
    deploy_failures,
    deploy_range,
    dora,
    time_to_restore_ns,
)
from attribution.history import Commit, CommitGraph, FileChange
from attribution.model import DeployEvent

S = 1_000_000_000
DAY = 86_400


def sha(c: str) -> str:
    return c * 40


def commit(c: str, t: int, *modules: str, parent: str = "", message: str = "") -> Commit:
    files = tuple(FileChange(f"{m}/f{i}.py", added=2, removed=1, module=m) for i, m in enumerate(modules))
    parents = (sha(parent),) if parent else ()
    return Commit("shop", sha(c), parents, "A", "a@x", t * S, t * S, message or f"c {c}", files)


def deploy(
    i: str, c: str, t: int, env: str = "production", status: str = "succeeded", service: str = "shop"
) -> DeployEvent:
    return DeployEvent(i, service, env, c if len(c) > 1 else sha(c), t * S, status=status)


# a linear history; 6 reverts 5 (short SHA in the message)
GRAPH = CommitGraph(
    [
        commit("1", 100, "cart"),
        commit("2", 200, "payments", parent="1"),
        commit("3", 300, "cart", "search", parent="2"),
        commit("4", 400, "search", parent="3"),
        commit("5", 500, "payments", parent="4"),
        commit("6", 5500, "payments", parent="5", message="Revert c 5\n\nThis reverts commit 5555555."),
        commit("7", 6000, "cart", parent="6"),
    ]
)
D0 = deploy("d0", "1", 900)  # before the range: only the previous of d1
D1 = deploy("d1", "2", 1000)
D2 = deploy("d2", "3", 2000)
D3 = deploy("d3", "4" * 7, 3000)  # short SHA
D4 = deploy("d4", "3", 3600)  # redeploys d2's SHA: rolls d3 back
DF = deploy("df", "5", 4000, status="failed")  # never live: not d5's previous
D5 = deploy("d5", "5", 5000)
S1 = deploy("s1", "4", 2500, env="staging")  # another environment
D6 = deploy("d6", "7", 6500)
DEPLOYS = [D0, D1, D2, D3, D4, DF, D5, S1, D6]
LINKS = [
    IncidentLink("inc-1", "d1", ("payments",), 1500 * S, 2300 * S),  # within d1's window
    IncidentLink("inc-2", "d6", ("cart",), 8000 * S, 8100 * S),  # 1500 s after d6: outside
    IncidentLink("inc-3", "", ("cart",), 2100 * S, 2200 * S),  # linked to no deploy
]
TICKETS = [TicketFinding("T-1", "d2", "cart", 2500 * S)]
WINDOW = 1000 * S
FROM, TO = 1000, 1000 + 2 * DAY  # d1..d6; two days


def run(**kw: object) -> list[DoraRow]:
    args: dict[str, object] = {
        "deploys": DEPLOYS,
        "graph": GRAPH,
        "links": LINKS,
        "tickets": TICKETS,
        "environment": "production",
        "window_ns": WINDOW,
        "from_unix_nano": FROM * S,
        "to_unix_nano": TO * S,
    }
    args.update(kw)
    return dora(**args)  # type: ignore[arg-type]


def test_changed_modules_are_those_of_the_range_since_the_previous_live_deploy() -> None:
    assert changed_modules(D0, None, GRAPH) == ("cart",)  # no previous: every ancestor, {1}
    assert changed_modules(D1, D0, GRAPH) == ("payments",)  # 1..2 = {2}
    assert changed_modules(D3, D2, GRAPH) == ("search",)  # 3..4 (short SHA) = {4}
    assert changed_modules(D4, D3, GRAPH) == ()  # 4..3 is empty
    assert [c.sha[0] for c in deploy_range(D5, D4, GRAPH)] == ["5", "4"]  # 3..5, newest first
    # an explicit previous_sha wins over the previous deploy
    explicit = DeployEvent("dx", "shop", "production", sha("5"), 5000 * S, previous_sha=sha("4")[:7])
    assert changed_modules(explicit, D4, GRAPH) == ("payments",)  # 4..5 = {5}
    changes = deploy_changes(DEPLOYS, GRAPH, environment="production")
    assert set(changes) == {"d0", "d1", "d2", "d3", "d4", "d5", "d6"}  # no df, no s1
    got = {i: c.modules for i, c in changes.items()}
    assert got == {
        "d0": ("cart",),
        "d1": ("payments",),
        "d2": ("cart", "search"),  # {3}
        "d3": ("search",),
        "d4": (),
        "d5": ("payments", "search"),  # previous is d4 (SHA 3; df failed): 3..5 = {4, 5}
        "d6": ("cart", "payments"),  # 5..7 = {6, 7}
    }
    assert changes["d5"].previous_sha == sha("3")


def test_each_kind_of_failure_with_its_evidence() -> None:
    failures = deploy_failures(DEPLOYS, GRAPH, LINKS, TICKETS, environment="production", window_ns=WINDOW)
    assert failures == {
        # inc-1 started 500 s after d1, blames payments (changed); resolved at 2300
        "d1": [DeployFailure("d1", "incident", "inc-1", 1500 * S, ("payments",), 2300 * S)],
        # T-1 500 s after d2, module cart (changed)
        "d2": [DeployFailure("d2", "ticket", "T-1", 2500 * S, ("cart",), 0)],
        # d4 (600 s later) deploys 3, a strict ancestor of d3's 4: all of d3's changed modules
        "d3": [DeployFailure("d3", "rollback", "d4", 3600 * S, ("search",), 3600 * S)],
        # commit 6 (500 s after d5) reverts 5, in d5's range: payments; d6 ships 6 at 6500
        "d5": [DeployFailure("d5", "revert", sha("6"), 5500 * S, ("payments",), 6500 * S)],
        # d6: inc-2 started 1500 s after it, outside the 1000 s window
    }
    # restore: incident 2300 - 1500; rollback 3600 - 3000; revert 6500 - 5000; ticket never
    assert time_to_restore_ns(D1, failures["d1"]) == 800 * S
    assert time_to_restore_ns(D3, failures["d3"]) == 600 * S
    assert time_to_restore_ns(D5, failures["d5"]) == 1500 * S
    assert time_to_restore_ns(D2, failures["d2"]) is None


def test_dora_per_service_and_per_module() -> None:
    rows = run()
    assert [r.module for r in rows] == ["", "cart", "payments", "search"]
    assert {r.environment for r in rows} == {"production"} and {r.service for r in rows} == {"shop"}
    svc, cart, payments, search = rows
    # lead times (first live production deploy containing each commit; 1 went out with d0):
    # 2: d1 1000-200 = 800; 3: d2 2000-300 = 1700; 4: d3 3000-400 = 2600; 5: d5 5000-500 = 4500;
    # 6: d6 6500-5500 = 1000; 7: d6 6500-6000 = 500
    assert svc == DoraRow(
        "shop",
        "production",
        "",
        deploys=6,  # d1..d6 (d0 before the range, df failed, s1 staging)
        deploys_per_day=3.0,  # 6 / 2 days
        failed_deploys=4,  # d1, d2, d3, d5
        change_failure_rate=pytest.approx(4 / 6),  # type: ignore[arg-type]
        lead_time_p50_s=1350.0,  # 500 800 1000 | 1700 2600 4500 -> (1000 + 1700) / 2
        time_to_restore_p50_s=800.0,  # d1 800, d3 600, d5 1500 (d2 never) -> 800
        deploy_ids=("d1", "d2", "d3", "d4", "d5", "d6"),
        incident_ids=("inc-1",),
        failed_deploy_ids=("d1", "d2", "d3", "d5"),
    )
    # cart: d2 ({3}), d6 ({7}); failed: d2 (T-1); lead: 3 1700, 7 500 -> 1100; T-1 never restores
    assert cart == DoraRow(
        "shop", "production", "cart", 2, 1.0, 1, 0.5, 1100.0, None, ("d2", "d6"), (), ("d2",)
    )
    # payments: d1 ({2}), d5 ({5}), d6 ({6}); failed: d1 (inc-1), d5 (revert);
    # lead: 2 800, 5 4500, 6 1000 -> 1000; restore: 800, 1500 -> 1150
    assert payments == DoraRow(
        "shop",
        "production",
        "payments",
        3,
        1.5,
        2,
        pytest.approx(2 / 3),  # type: ignore[arg-type]
        1000.0,
        1150.0,
        ("d1", "d5", "d6"),
        ("inc-1",),
        ("d1", "d5"),
    )
    # search: d2 ({3}), d3 ({4}), d5 ({4}); failed: d3 (rollback; d2's ticket is cart's, d5's
    # revert payments'); lead: 3 1700, 4 2600 -> 2150; restore: 600
    assert search == DoraRow(
        "shop",
        "production",
        "search",
        3,
        1.5,
        1,
        pytest.approx(1 / 3),  # type: ignore[arg-type]
        2150.0,
        600.0,
        ("d2", "d3", "d5"),
        (),
        ("d3",),
    )


def test_staging_is_its_own_environment() -> None:
    rows = run(environment="staging")
    # s1 alone: range = every ancestor of 4 = {1, 2, 3, 4}; no failures (links name production deploys)
    assert [(r.module, r.deploys, r.failed_deploys) for r in rows] == [
        ("", 1, 0),
        ("cart", 1, 0),
        ("payments", 1, 0),
        ("search", 1, 0),
    ]
    assert rows[0].deploy_ids == ("s1",)
    # 1: 2500-100 = 2400, 2: 2300, 3: 2200, 4: 2100 -> (2300 + 2200) / 2
    assert rows[0].lead_time_p50_s == 2250.0


def test_an_incident_outside_the_window_does_not_fail_the_deploy() -> None:
    late = [IncidentLink("inc-1", "d1", ("payments",), (1000 + 1001) * S, 2300 * S)]  # 1001 s after d1
    failures = deploy_failures(DEPLOYS, GRAPH, late, [], environment="production", window_ns=WINDOW)
    assert "d1" not in failures
    edge = [IncidentLink("inc-1", "d1", (), 2000 * S)]  # exactly at the window's end; open; no modules
    failures = deploy_failures(DEPLOYS, GRAPH, edge, [], environment="production", window_ns=WINDOW)
    assert failures["d1"] == [DeployFailure("d1", "incident", "inc-1", 2000 * S, ("payments",), 0)]
    svc = run(links=edge, tickets=[])[0]
    assert (svc.failed_deploys, svc.incident_ids, svc.failed_deploy_ids) == (
        3,
        ("inc-1",),
        ("d1", "d3", "d5"),
    )


def test_a_ticket_for_an_unchanged_module_fails_only_the_service() -> None:
    tickets = [TicketFinding("T-2", "d3", "cart", 3100 * S)]  # d3 changed search only
    rows = run(links=[], tickets=tickets)
    failures = deploy_failures(DEPLOYS, GRAPH, [], tickets, environment="production", window_ns=WINDOW)
    assert failures["d3"] == [  # by time: the ticket (3100) before the rollback (3600)
        DeployFailure("d3", "ticket", "T-2", 3100 * S, (), 0),
        DeployFailure("d3", "rollback", "d4", 3600 * S, ("search",), 3600 * S),
    ]
    by_module = {r.module: r.failed_deploy_ids for r in rows}
    assert by_module == {"": ("d3", "d5"), "cart": (), "payments": ("d5",), "search": ("d3",)}


def test_empty_graph_changes_nothing_and_has_no_lead_time() -> None:
    rows = run(graph=CommitGraph([]))
    # no ranges: no module rows, no rollback (no ancestry), no revert; inc-1 and T-1 still fail
    # d1 and d2 for the service, implicating no module
    assert rows == [
        DoraRow(
            "shop",
            "production",
            "",
            deploys=6,
            deploys_per_day=3.0,
            failed_deploys=2,
            change_failure_rate=pytest.approx(2 / 6),  # type: ignore[arg-type]
            lead_time_p50_s=None,
            time_to_restore_p50_s=800.0,  # inc-1: 2300 - 1500
            deploy_ids=("d1", "d2", "d3", "d4", "d5", "d6"),
            incident_ids=("inc-1",),
            failed_deploy_ids=("d1", "d2"),
        )
    ]
    assert changed_modules(D1, D0, CommitGraph([])) == ()


def test_no_deploys_in_range() -> None:
    assert run(deploys=[]) == []
    # the service has deploys, none in the range: a row of zeros and Nones
    rows = run(from_unix_nano=10 * DAY * S, to_unix_nano=11 * DAY * S)
    assert rows == [DoraRow("shop", "production", "", 0, 0.0, 0, 0.0, None, None, (), (), ())]
    # only a failed deploy: no live one
    assert run(deploys=[DF], links=[], tickets=[]) == [
        DoraRow("shop", "production", "", 0, 0.0, 0, 0.0, None, None, (), (), ())
    ]


def test_a_monorepo_deploy_changes_only_the_modules_its_service_runs() -> None:
    # d2's range 2..3 changed cart and search; the web service only runs cart
    web = [deploy("w1", "2", 1000, service="web"), deploy("w2", "3", 2000, service="web")]
    everything = deploy_changes(web, GRAPH, environment="production")
    assert everything["w2"].modules == ("cart", "search")
    scoped = deploy_changes(web, GRAPH, environment="production", service_modules={"web": {"cart"}})
    assert scoped["w2"].modules == ("cart",)
    rows = dora(
        web, GRAPH, [], [], environment="production", window_ns=DAY * S, from_unix_nano=1500 * S,
        to_unix_nano=2500 * S, service_modules={"web": {"cart"}},
    )  # fmt: skip
    assert [(r.module, r.deploys) for r in rows] == [("", 1), ("cart", 1)]
