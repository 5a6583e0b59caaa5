"""The windows a deploy comparison covers, as tickets and `alerts evaluate` state them, and the
dashboard the demo's ticket link opens."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from attribution.events import format_rfc3339
from collector.cli.render import render_alerts
from collector.demo.run import DASHBOARD_URL
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.tickets.file import FileSink
from tests.integration.test_alerts import D0, D1, DEPLOY_AT, MIN, engine, seed

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_ticket_states_the_before_and_after_windows_it_compared(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    seed(store)
    path = tmp_path / "tickets.jsonl"
    eng = engine(store, [FileSink(path)])
    report = eng.evaluate_once(DEPLOY_AT + 20 * MIN)
    assert [a.action for a in report.actions] == ["open"]
    (opened,) = [json.loads(line) for line in path.read_text().splitlines()]
    # 20 minutes after the deploy: 20 minutes of each side (the rule's window is 30m)
    before = f"{format_rfc3339(DEPLOY_AT - 20 * MIN)}–{format_rfc3339(DEPLOY_AT)}"
    after = f"{format_rfc3339(DEPLOY_AT)}–{format_rfc3339(DEPLOY_AT + 20 * MIN)}"
    assert (
        f"Compared windows: before {before} (spans of `{D0.deploy_id}`), "
        f"after {after} (spans of `{D1.deploy_id}`)"
    ) in opened["markdown"]
    # `prodloop alerts evaluate` prints the same windows under its table
    text = render_alerts(report)
    assert f"payments-regression: {D0.deploy_id} before {before} vs {D1.deploy_id} after {after}" in text


def test_the_demo_ticket_link_opens_a_shipped_dashboard_with_its_variables() -> None:
    dashboards = {}
    for f in (REPO_ROOT / "grafana" / "dashboards").glob("*.json"):
        d = json.loads(f.read_text())
        dashboards[d["uid"]] = {v["name"] for v in d.get("templating", {}).get("list", [])}
    url = urlsplit(DASHBOARD_URL)
    match = re.fullmatch(r"/d/([^/]+)(/[^/]*)?", url.path)
    assert match is not None, url.path
    uid = match.group(1)
    assert uid in dashboards, f"{uid} is none of {sorted(dashboards)}"
    asked = {k.removeprefix("var-") for k in parse_qs(url.query) if k.startswith("var-")}
    assert asked and asked <= dashboards[uid]
