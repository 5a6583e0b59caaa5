"""The long loop on the real engine (issue 13): a real git history (tests/support/gitrepo.Shop),
deploys with a rollback, a revert, two incidents (one linked explicitly, one inferred from the
aggregates), a regression ticket - and the links, DORA per service and module, and suspects
that come out, against values computed by hand from what the test wrote.

    c1 (cart, payments/api)  c2 (cart, payments/api)  f1 (search, cart; on a branch)
    c3 (payments/api)  m1 (merge of f1)  c4 (cart: rename)  c5 (revert of c3)
    d1 T0+350 ships c3      -> its range c1 c2 c3: cart, payments/api
    d2 T0+700 ships c5      -> its range f1 m1 c4 c5: cart, payments/api, search
    d3 T0+800 ships c3 again: a rollback of d2
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attribution.aggregate import NO_MIN, AggregateRow
from attribution.hotspots import hotspots
from attribution.model import DeployEvent, IncidentEvent
from attribution.repository import Repository
from collector.app.history import scan_path
from collector.app.history_settings import CouplingSettings, HistorySettings
from collector.app.longloop import changes_in, coupling_rows, dora_rows, load_view, pain_rows, suspect_lists
from collector.exporters.clickhouse.alert_state import TicketBook
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.ports import TicketRecord
from tests.support.gitrepo import T0, Shop

pytestmark = pytest.mark.integration

S = 1_000_000_000


def _rows(window_s: int, module: str, spans: int, own_errors: int) -> AggregateRow:
    return AggregateRow(
        window_s * S, "shop", "production", "shop", module, (), "", "", "",
        spans, 1000 * spans, own_errors, 1000 * own_errors, spans * 1_000_000, spans * 1_000_000,
        1_000_000, 1_000_000, {400: spans},
        self_spans=spans, self_spans_adjusted_milli=1000 * spans, self_time_sum_ns=spans * 1_000_000,
        self_time_adjusted_sum_ns=spans * 1_000_000, self_time_min_ns=1_000_000 if spans else NO_MIN,
        self_time_max_ns=1_000_000, self_bins={400: spans}, own_errors=own_errors,
        own_errors_adjusted_milli=1000 * own_errors, exception_types={},
    )  # fmt: skip


@pytest.fixture
def loop(store: ClickHouseStore, tmp_path: Path) -> tuple[ClickHouseStore, Shop]:
    from attribution.attribute import Attributor

    shop = Shop(tmp_path / "shop")
    scan_path(store, Attributor([Repository(name="shop")]), shop.repo.path, name="shop")
    deploys = [
        DeployEvent("d1", "shop", "production", shop.c3, (T0 + 350) * S, repository="shop"),
        DeployEvent("d2", "shop", "production", shop.c5, (T0 + 700) * S, repository="shop"),
        DeployEvent("d3", "shop", "production", shop.c3, (T0 + 800) * S, repository="shop"),
        DeployEvent("s1", "shop", "staging", shop.c5, (T0 + 650) * S, repository="shop"),  # not production
    ]
    store.write_deploys(deploys, T0 * S)
    incidents = [
        IncidentEvent(
            "INC-1", ("shop",), (T0 + 750) * S, "sev2", (T0 + 1350) * S, deploy_id="d2", modules=("search",)
        ),
        IncidentEvent("INC-2", ("shop",), (T0 + 720) * S, "sev1", (T0 + 1320) * S, title="checkout errors"),
    ]
    store.write_incidents(incidents, T0 * S)
    # INC-2's window is [T0+720, T0+1320), its baseline [T0+120, T0+720): cart's own errors go
    # from 0 to 10%, payments/api's stay at 1%, search's at 0 (the shop service runs all three)
    rows = [
        _rows(T0 + 120, "cart", 100, 0),
        _rows(T0 + 120, "payments/api", 100, 1),
        _rows(T0 + 120, "search", 100, 0),
        _rows(T0 + 780, "cart", 100, 10),
        _rows(T0 + 780, "payments/api", 100, 1),
        _rows(T0 + 780, "search", 100, 0),
    ]
    store.write_aggregates(rows, 60 * S, dedup_token="longloop-test")
    # a regression_after_deploy ticket blaming d1 for cart, opened at T0+400
    TicketBook(store).save(
        TicketRecord(
            "f" * 16, "github", 1, "cart-latency", "shop", "production", "cart", "open", "acme/shop#9",
            opened_at=(T0 + 400) * S, kind="regression_after_deploy", deploy_id="d1",
        ),
        (T0 + 400) * S,
    )  # fmt: skip
    return store, shop


def test_incidents_are_linked_explicitly_and_by_inference_with_evidence(
    loop: tuple[ClickHouseStore, Shop],
) -> None:
    store, _ = loop
    view = load_view(store, HistorySettings(), now_unix_nano=(T0 + 3600) * S)
    links = {x.incident_id: x for x in view.links}
    assert (links["INC-1"].deploy_id, links["INC-1"].deploy_evidence) == ("d2", "explicit deploy_id")
    assert (links["INC-1"].modules, links["INC-1"].modules_evidence) == (("search",), "explicit")
    # INC-2 names no deploy: shop's last deploy before T0+720 is d2 (20 s before; s1 is earlier)
    assert links["INC-2"].deploy_id == "d2"
    assert links["INC-2"].deploy_evidence == "inferred: last deploy of shop 0 min before the incident"
    # d2 changed cart, payments/api and search; of those only cart regressed
    assert links["INC-2"].modules == ("cart",)
    assert links["INC-2"].modules_evidence == (
        "inferred: changed by d2 and regressed in the incident window (cart: own error rate 0.00% -> 10.00%)"
    )
    # the links are stored with their evidence, once
    stored = {x.incident_id: x for x in store.load_incident_links()}
    assert stored == links
    load_view(store, HistorySettings(), now_unix_nano=(T0 + 3700) * S)
    (count,) = store.query("SELECT count() FROM incident_links")[0]
    assert count == 2


def test_dora_per_service_and_module_with_the_evidence(loop: tuple[ClickHouseStore, Shop]) -> None:
    store, _ = loop
    view = load_view(store, HistorySettings(), now_unix_nano=(T0 + 3600) * S)
    rows = {
        r.module: r
        for r in dora_rows(view, HistorySettings(), from_unix_nano=T0 * S, to_unix_nano=(T0 + 3600) * S)
    }
    service = rows[""]
    # d1 failed: c5 reverts c3 (in d1's range) 250 s later, and the ticket; d2 failed: the
    # rollback d3, INC-1, INC-2; d3 did not
    assert (service.deploys, service.failed_deploys) == (3, 2)
    assert service.change_failure_rate == pytest.approx(2 / 3)
    assert service.deploys_per_day == 72.0  # 3 deploys in 1 h
    assert service.deploy_ids == ("d1", "d2", "d3") and service.failed_deploy_ids == ("d1", "d2")
    assert service.incident_ids == ("INC-1", "INC-2")
    # lead times: d1 ships c1 350, c2 250, c3 50; d2 ships f1 500, m1 300, c4 200, c5 100 -> 250
    assert service.lead_time_p50_s == 250.0
    # restore: d1 when d2 shipped the revert (350 s), d2 at the rollback (100 s) -> 225
    assert service.time_to_restore_p50_s == 225.0
    # per module: a deploy counts for the modules it changed, a failure against those it implicates
    cart, pay, search = rows["cart"], rows["payments/api"], rows["search"]
    assert (cart.deploys, cart.failed_deploys, cart.incident_ids) == (
        2,
        2,
        ("INC-2",),
    )  # d1 ticket, d2 rollback
    assert (pay.deploys, pay.failed_deploys, pay.incident_ids) == (2, 2, ())  # d1 revert, d2 rollback
    assert (search.deploys, search.failed_deploys, search.incident_ids) == (1, 1, ("INC-1",))
    assert set(rows) == {"", "cart", "payments/api", "search"}


def test_suspects_rank_the_deploy_range_by_the_implicated_module(loop: tuple[ClickHouseStore, Shop]) -> None:
    store, shop = loop
    view = load_view(store, HistorySettings(), now_unix_nano=(T0 + 3600) * S)
    lists = {(s.kind, s.key): s for s in suspect_lists(view)}
    # INC-2 (d2, cart): f1 and c4 touched cart by 1 line each: the later c4 first; then c5 (churn
    # 1, not cart); the merge m1 is skipped (its diff repeats f1)
    assert [c.sha for c in lists[("incident", "INC-2")].suspects] == [shop.c4, shop.f1, shop.c5]
    # INC-1 (d2, search): f1 (4 lines of search); then by churn, ties to the most recent: c5, c4
    assert [c.sha for c in lists[("incident", "INC-1")].suspects] == [shop.f1, shop.c5, shop.c4]
    # the ticket (d1, cart): c1 (3 lines of cart), c2 (2), then c3 (not cart)
    ticket = lists[("ticket", "acme/shop#9")]
    assert [(c.sha, c.module_churn) for c in ticket.suspects] == [(shop.c1, 3), (shop.c2, 2), (shop.c3, 0)]
    assert ticket.suspects[1].pull_requests == (12,)  # "c2: both again (#12)"


def test_the_report_draws_in_headless_chromium_offline_and_shows_the_query_results(
    loop: tuple[ClickHouseStore, Shop], tmp_path: Path
) -> None:
    from collector.app.longloop import report_data
    from collector.cli.report_html import render_report
    from tests.support.browser import open_page

    store, _ = loop
    # coupling thresholds this small history passes: cart & payments/api, cart & search
    settings = HistorySettings(
        coupling=CouplingSettings(min_revisions=1, min_shared_commits=1, min_coupling=0)
    )
    span = {"from_unix_nano": T0 * S, "to_unix_nano": (T0 + 3600) * S}
    data = report_data(store, settings, now_unix_nano=(T0 + 3600) * S, **span)
    page = tmp_path / "report.html"
    page.write_text(render_report(data), encoding="utf-8")
    with open_page(page, screenshot="report.png") as browser:
        assert browser.console_errors() == []
        assert browser.network_requests() == []  # the file itself is not a request
        charts = browser.run(
            "return [...document.querySelectorAll('figure.chart')].map(f => [f.dataset.chart,"
            " Number(f.dataset.marks), f.querySelectorAll('svg [id^=\"mark-' + f.dataset.chart + '-\"]').length,"
            " f.querySelector('svg').getBoundingClientRect().width])"
        )
        drawn = {name: (expected, marks, width) for name, expected, marks, width in charts}
        # one mark per module with pain, per changed module, per coupled pair, per DORA module row
        view = load_view(store, settings, now_unix_nano=(T0 + 3600) * S)
        dora = dora_rows(view, settings, **span)
        assert drawn["dora"][:2] == (3, 3)  # cart, payments/api, search
        assert drawn["hotspots"][:2] == (3, 3)  # cart, payments/api, search changed
        assert drawn["pain"][:2] == (len(data["pain"]), len(data["pain"]))
        assert drawn["coupling"][:2] == (2, 2)  # one cell per coupled pair
        assert all(width > 100 for _, _, width in drawn.values())
        table = (
            "return [...document.querySelectorAll('table[data-table=NAME] td[data-key]')].map(k =>"
            " [k.dataset.key, [...k.parentElement.querySelectorAll('td[data-value]')]"
            ".map(c => [c.dataset.field, c.dataset.value])])"
        )
        dora_cells = {key: dict(v) for key, v in browser.run(table.replace("NAME", "dora"))}
        hotspot_cells = {key: dict(v) for key, v in browser.run(table.replace("NAME", "hotspots"))}
        pairs = browser.run(
            "return [...document.querySelectorAll('table[data-table=coupling] td[data-key]')].map(k =>"
            " [k.dataset.key, k.nextElementSibling.textContent,"
            " Number(k.parentElement.querySelector('td[data-field=co_changes]').dataset.value),"
            " Number(k.parentElement.querySelector('td[data-field=coupling]').dataset.value)])"
        )
    for row in dora:
        values = dora_cells[row.module or row.service]
        assert float(values["change_failure_rate"]) == pytest.approx(row.change_failure_rate)
        assert int(values["deploys"]) == row.deploys and int(values["failed_deploys"]) == row.failed_deploys
    # the hotspots table shows what `prodloop query hotspots` answers
    pain = pain_rows(store, view, settings, **span)
    spots = hotspots(changes_in(view.commits, span["from_unix_nano"], span["to_unix_nano"]), pain)
    assert {h.module: (h.changes, h.pain, h.hotspot) for h in spots} == {
        key: (int(v["changes"]), float(v["pain"]), float(v["hotspot"])) for key, v in hotspot_cells.items()
    }
    assert (
        sorted(map(tuple, pairs))
        == sorted(
            (p.module_a, p.module_b, p.co_changes, p.coupling)
            for p in coupling_rows(
                [c for c in view.commits if c.committed_at_unix_nano < (T0 + 3600) * S], settings
            )
        )
        == [("cart", "payments/api", 2, 0.5), ("cart", "search", 1, 0.4)]
    )
    assert spots[0].module == "cart"  # 4 changes x pain 4 (INC-2 x 3, the ticket x 1)
