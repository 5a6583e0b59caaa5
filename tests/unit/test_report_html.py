"""The HTML report: sections, charts (marks counted), tables (raw numbers), escaping, no network, determinism."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

from collector.cli.report_html import _duration, _pct, render_report

SECTIONS = ["pain", "hotspots", "coupling", "dora", "incidents", "dead-code", "tickets"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    ancestors: list[Element]
    text: list[str] = field(default_factory=list)

    def within(self, other: Element) -> bool:
        return any(a is other for a in self.ancestors)

    @property
    def parent(self) -> Element | None:
        return self.ancestors[-1] if self.ancestors else None


class Collector(HTMLParser):
    """Every element with its attributes, ancestors and the text inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    def _add(self, tag: str, attrs: list[tuple[str, str | None]]) -> Element:
        element = Element(tag, {k: v or "" for k, v in attrs}, list(self.stack))
        self.elements.append(element)
        return element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = self._add(tag, attrs)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.elements
            if e.tag == tag and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def parse(text: str) -> Collector:
    collector = Collector()
    collector.feed(text)
    collector.close()
    assert not collector.stack, [e.tag for e in collector.stack]
    return collector


def suspect(rank: int, sha: str, pulls: list[int]) -> dict[str, Any]:
    return {
        "rank": rank,
        "sha": sha,
        "subject": f"change {rank}",
        "author": "dev@example.com",
        "module_churn": 10 * rank,
        "files": ["payments/retry/policy.py"],
        "pull_requests": pulls,
        "commit_url": f"https://git.example.com/shop/commit/{sha}",
        "pull_urls": [f"https://git.example.com/shop/pull/{p}" for p in pulls],
    }


def sample() -> dict[str, Any]:
    return {
        "title": "prodloop report",
        "generated_at": "2026-01-02T03:04:05Z",
        "from": "2025-12-01T00:00:00Z",
        "to": "2026-01-01T00:00:00Z",
        "pain": [
            {
                "service": "payments",
                "module": "retry",
                "owners": ["@pay"],
                "pain": 7.25,
                "incidents": 2,
                "findings": 3,
                "self_time_regressions": 1,
                "cost_share": 0.31,
                "traffic_share": 0.08,
                "changes": 14,
            },
            {
                "service": "payments",
                "module": "ledger",
                "owners": [],
                "pain": 3.5,
                "incidents": 1,
                "findings": 0,
                "self_time_regressions": 0,
                "cost_share": None,
                "traffic_share": None,
                "changes": 6,
            },
            {
                "service": "payments",
                "module": "api",
                "owners": ["@pay", "@web"],
                "pain": 1.0,
                "incidents": 0,
                "findings": 1,
                "self_time_regressions": 0,
                "cost_share": 0.1,
                "traffic_share": 0.5,
                "changes": 3,
            },
            {
                "service": "payments",
                "module": "legacy<b>",
                "owners": ["@old"],
                "pain": 0.0,
                "incidents": 0,
                "findings": 0,
                "self_time_regressions": 0,
                "cost_share": 0.0,
                "traffic_share": 0.0,
                "changes": 1,
            },
        ],
        "hotspots": [
            {"repository": "shop", "module": "retry", "changes": 14, "pain": 7.25, "hotspot": 101.5},
            {"repository": "shop", "module": "ledger", "changes": 6, "pain": 3.5, "hotspot": 21.0},
            {"repository": "shop", "module": "api", "changes": 3, "pain": 1.0, "hotspot": 3.0},
            {"repository": "shop", "module": "legacy<b>", "changes": 1, "pain": 0.0, "hotspot": 0.0},
        ],
        "coupling": [
            {
                "repository": "shop",
                "module_a": "retry",
                "module_b": "ledger",
                "co_changes": 4,
                "coupling": 0.5,
            },
            {"repository": "shop", "module_a": "api", "module_b": "retry", "co_changes": 2, "coupling": 0.25},
        ],
        "dora": [
            {
                "service": "payments",
                "environment": "production",
                "module": "",
                "deploys": 8,
                "deploys_per_day": 0.26,
                "failed_deploys": 2,
                "change_failure_rate": 0.25,
                "lead_time_p50_s": 12600.0,
                "time_to_restore_p50_s": 2700.0,
                "deploy_ids": ["d1", "d2"],
                "incident_ids": ["INC-1"],
            },
            {
                "service": "payments",
                "environment": "production",
                "module": "retry",
                "deploys": 5,
                "deploys_per_day": 0.16,
                "failed_deploys": 2,
                "change_failure_rate": 0.4,
                "lead_time_p50_s": 45,
                "time_to_restore_p50_s": None,
                "deploy_ids": ["d1"],
                "incident_ids": ["INC-1"],
            },
            {
                "service": "payments",
                "environment": "production",
                "module": "ledger",
                "deploys": 3,
                "deploys_per_day": 0.1,
                "failed_deploys": 0,
                "change_failure_rate": 0.0,
                "lead_time_p50_s": 181440.0,
                "time_to_restore_p50_s": None,
                "deploy_ids": ["d2"],
                "incident_ids": [],
            },
        ],
        "incidents": [
            {
                "incident_id": "INC-1",
                "title": "<b>Checkout</b> down",
                "severity": "sev1",
                "started_at": "2025-12-10T10:00:00Z",
                "resolved_at": None,
                "deploy_id": "d1",
                "deploy_evidence": "deploy 20m before start",
                "modules": ["retry", "ledger"],
                "modules_evidence": "error spans",
                "suspects": [suspect(1, "a" * 40, [12]), suspect(2, "b" * 40, [])],
            },
        ],
        "dead_code": [
            {
                "repository": "shop",
                "path": "payments/legacy/old.py",
                "module": "legacy<b>",
                "lines": 120,
                "last_changed": "2024-03-01",
                "confidence": 0.9,
                "weight": 108.0,
            },
        ],
        "tickets": [
            {
                "rule": "pain-top",
                "service": "payments",
                "environment": "production",
                "module": "retry",
                "state": "open",
                "ticket_url": "https://tracker.example.com/browse/PAY-7",
                "ticket_key": "PAY-7",
                "summary": "Refactor retry",
                "suspects": [suspect(1, "a" * 40, [12])],
            },
        ],
        "weights": {"incidents": 1.0, "findings": 0.5, "self_time_regression": 0.25, "cost_excess": 2.0},
    }


def empty() -> dict[str, Any]:
    data = sample()
    for key in ("pain", "hotspots", "coupling", "dora", "incidents", "dead_code", "tickets"):
        data[key] = []
    return data


def lead(doc: Collector, section: Element) -> str:
    children = [e for e in doc.elements if e.parent is section]
    assert [e.tag for e in children[:2]] == ["h2", "p"]
    assert children[1].attrs.get("class") == "lead"
    return "".join(children[1].text).strip()


def test_sections_in_order_each_with_a_lead_sentence() -> None:
    doc = parse(render_report(sample()))
    sections = doc.find("section")
    assert [s.attrs["id"] for s in sections] == SECTIONS
    leads = {s.attrs["id"]: lead(doc, s) for s in sections}
    assert all(text.endswith(".") for text in leads.values()), leads
    assert leads["pain"] == (
        "payments/retry: 14 changes, 2 incidents, 31% of cost for 8% of traffic — refactor candidate."
    )
    assert "retry and ledger" in leads["coupling"]
    assert "payments/retry" in leads["dora"] and "40%" in leads["dora"]


def test_chart_marks_match_the_ids_drawn_and_the_input() -> None:
    doc = parse(render_report(sample()))
    figures = doc.find("figure")
    assert [f.attrs["data-chart"] for f in figures] == ["pain", "hotspots", "coupling", "dora"]
    expected = {"pain": 4, "hotspots": 4, "coupling": 2, "dora": 2}
    for figure in figures:
        name = figure.attrs["data-chart"]
        assert figure.attrs["class"] == "chart"
        inside = [e for e in doc.elements if e.within(figure)]
        assert [e.tag for e in inside if e.parent is figure] == ["svg", "figcaption"]
        marks = [e for e in inside if e.attrs.get("id", "").startswith(f"mark-{name}-")]
        assert int(figure.attrs["data-marks"]) == len(marks) == expected[name], name
        assert [m.attrs["id"] for m in marks] == [f"mark-{name}-{i}" for i in range(len(marks))]
        section = figure.parent
        assert section is not None and section.attrs["id"] == name
    ids = [e.attrs["id"] for e in doc.elements if "id" in e.attrs]
    assert len(ids) == len(set(ids)), "ids collide across the inline charts"


def test_pain_chart_shows_the_top_15_and_dora_skips_modules_without_deploys() -> None:
    data = sample()
    row = data["pain"][0]
    data["pain"] = [{**row, "module": f"m{i:02d}", "pain": 20.0 - i} for i in range(20)]
    data["dora"].append({**data["dora"][2], "module": "idle", "deploys": 0, "change_failure_rate": None})
    doc = parse(render_report(data))
    marks = {f.attrs["data-chart"]: int(f.attrs["data-marks"]) for f in doc.find("figure")}
    assert marks["pain"] == 15 and marks["dora"] == 2
    assert len([r for r in doc.find("tr") if r.within(doc.find("table", data_table="pain")[0])]) == 21
    assert len(doc.find("td", data_key="idle")) == 1


def test_no_script_and_nothing_fetched_from_the_network() -> None:
    text = render_report(sample())
    lowered = text.lower()
    for banned in (
        "<script",
        'src="http',
        "@import",
        "url(http",
        "<link",
        "<img",
        "<iframe",
        "<?xml",
        "<!doctype svg",
    ):
        assert banned not in lowered, banned
    assert lowered.startswith("<!doctype html>")
    doc = parse(text)
    for element in doc.elements:
        assert not any(k.startswith("on") for k in element.attrs), element
        for key, value in element.attrs.items():
            if "http" in value:
                assert (element.tag, key) == ("a", "href"), (element.tag, key, value)
    without_links = re.sub(r'<a href="[^"]*">', "", text)
    assert "http" not in without_links
    hrefs = {a.attrs["href"] for a in doc.find("a")}
    assert "https://tracker.example.com/browse/PAY-7" in hrefs
    assert "https://git.example.com/shop/commit/" + "a" * 40 in hrefs
    assert "https://git.example.com/shop/pull/12" in hrefs


def cells(doc: Collector, table: str) -> dict[str, dict[str, str]]:
    """data-key -> {data-field: data-value} for every row of the tables named ``table``."""
    out: dict[str, dict[str, str]] = {}
    for t in doc.find("table", data_table=table):
        assert t.attrs["class"] == "data"
        for row in (r for r in doc.find("tr") if r.within(t)):
            tds = [d for d in doc.elements if d.tag == "td" and d.parent is row]
            if not tds:
                continue
            key = tds[0].attrs["data-key"]
            assert key not in out, key
            out[key] = {d.attrs["data-field"]: d.attrs["data-value"] for d in tds if "data-value" in d.attrs}
    return out


def raw(value: Any) -> Any:
    return "" if value is None else value


def as_number(text: str) -> Any:
    return "" if text == "" else float(text)


NUMERIC = {
    "pain": ("pain", "module", ["pain", "incidents", "findings", "cost_share", "traffic_share", "changes"]),
    "hotspots": ("hotspots", "module", ["changes", "pain", "hotspot"]),
    "coupling": ("coupling", "module_a", ["co_changes", "coupling"]),
    "dead-code": ("dead_code", "path", ["lines", "confidence", "weight"]),
}


@pytest.mark.parametrize("table", sorted(NUMERIC))
def test_table_data_values_are_the_input_numbers(table: str) -> None:
    data = sample()
    source, key, fields = NUMERIC[table]
    got = cells(parse(render_report(data)), table)
    want = {str(r[key]): {f: raw(r[f]) for f in fields} for r in data[source]}
    assert {k: {f: as_number(v) for f, v in row.items()} for k, row in got.items()} == want


def test_dora_tables_hold_each_row_with_its_deploys_and_incidents() -> None:
    data = sample()
    doc = parse(render_report(data))
    fields = [
        "deploys",
        "deploys_per_day",
        "failed_deploys",
        "change_failure_rate",
        "lead_time_p50_s",
        "time_to_restore_p50_s",
    ]
    got = cells(doc, "dora")
    want = {(r["module"] or r["service"]): {f: raw(r[f]) for f in fields} for r in data["dora"]}
    assert {k: {f: as_number(v) for f, v in row.items()} for k, row in got.items()} == want
    table = doc.find("table", data_table="dora")[0]
    rows = [r for r in doc.find("tr") if r.within(table) and r.attrs.get("class")]
    assert [r.attrs["class"] for r in rows] == ["service", "module", "module"]
    text = "".join(table.text)
    assert "3.5h" in text and "45m" in text and "45s" in text and "2.1d" in text
    details = [d for d in doc.find("details") if d.within(table)]
    assert any("d1" in "".join(d.text) and "d2" in "".join(d.text) for d in details)
    assert any("INC-1" in "".join(d.text) for d in details)


def test_incidents_dead_code_and_tickets_rows() -> None:
    doc = parse(render_report(sample()))
    assert set(cells(doc, "incidents")) == {"INC-1"}
    assert set(cells(doc, "dead-code")) == {"payments/legacy/old.py"}
    assert set(cells(doc, "tickets")) == {"pain-top|retry"}
    incidents = doc.find("table", data_table="incidents")[0]
    suspects = [li for li in doc.find("li") if li.within(incidents)]
    assert len(suspects) == 2 and "aaaaaaa" in "".join(suspects[0].text)
    tickets = doc.find("table", data_table="tickets")[0]
    links = [a.attrs["href"] for a in doc.find("a") if a.within(tickets)]
    assert links[0] == "https://tracker.example.com/browse/PAY-7"


def test_data_strings_are_escaped() -> None:
    text = render_report(sample())
    assert "<b>" not in text
    assert "&lt;b&gt;Checkout&lt;/b&gt; down" in text
    doc = parse(text)
    assert doc.find("td", data_key="legacy<b>")
    assert not doc.find("b")


def test_dollar_signs_are_text_not_math() -> None:
    data = empty()
    data["pain"] = [{**sample()["pain"][0], "module": "$x$"}]
    doc = parse(render_report(data))
    svg_text = "".join(e for t in doc.find("text") for e in t.text)
    assert "payments/$x$" in svg_text


def test_empty_input_renders_leads_and_no_charts() -> None:
    text = render_report(empty())
    doc = parse(text)
    assert [s.attrs["id"] for s in doc.find("section")] == SECTIONS
    assert doc.find("figure") == [] and doc.find("svg") == []
    assert doc.find("table") == []
    leads = {s.attrs["id"]: lead(doc, s) for s in doc.find("section")}
    assert all(t.startswith("No ") for t in leads.values()), leads
    assert "prodloop ingest --incidents FILE, POST /v1/incidents" in leads["incidents"]
    assert "POST /v1/deploys" in leads["dora"]
    assert "data-chart" not in text


def test_rendering_is_deterministic() -> None:
    data = sample()
    before = copy.deepcopy(data)
    assert render_report(data) == render_report(data)
    assert data == before
    assert render_report(empty()) == render_report(empty())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (0, "0s"), (45, "45s"), (720, "12m"), (12600, "3.5h"), (181440, "2.1d")],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert _duration(seconds) == text


@pytest.mark.parametrize(
    ("share", "text"), [(None, "–"), (0.31, "31%"), (0.08, "8%"), (0.125, "12.5%"), (1.0, "100%")]
)
def test_pct(share: float | None, text: str) -> None:
    assert _pct(share) == text
