"""One self-contained HTML report for a tech lead: pain, hotspots, coupling, DORA, incidents, dead code, tickets.

:func:`render_report` turns the report's data (plain mappings, as the queries return them) into one HTML5
file that needs no network: no JavaScript, no external CSS, fonts or images.  The charts are SVG drawn
server-side by matplotlib (its SVG backend on a :class:`~matplotlib.figure.Figure`, no pyplot, so no global
figure state) and inlined.  Output is deterministic: the same data renders the same bytes.

The markup is a contract for tests: each chart is ``<figure class="chart" data-chart=NAME data-marks=N>``
whose marks are the SVG elements with ids ``mark-NAME-0`` …; each table is ``<table class="data"
data-table=NAME>``, its numeric cells carry ``data-field`` and ``data-value`` (the raw number, ``""`` for
None) and the first cell of each row a ``data-key``.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from collector.cli.render import human_duration

_DASH = "–"
_PAIN_TOP = 15
_HOTSPOT_LABELS = 5
_SUSPECTS_SHOWN = 3
_BAR = "#c0392b"
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1100px;margin:1.5em auto;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
p.meta{color:#666;margin-top:0}p.lead{font-weight:600}p.note{color:#555;font-size:.9em}
nav a{margin-right:1em}
table.data{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}
table.data th,table.data td{border-bottom:1px solid #eee;padding:.25em .5em;text-align:left;vertical-align:top}
table.data th{background:#f6f6f6}table.data td.num{text-align:right;font-variant-numeric:tabular-nums}
table.data tr.service td{font-weight:600;background:#fafafa}table.data tr.module td:first-child{padding-left:1.5em}
figure.chart{margin:1em 0}figure.chart svg{max-width:100%;height:auto}figcaption{color:#555;font-size:.85em}
code{font-size:.95em}ul.suspects{margin:0;padding-left:1.2em}details summary{cursor:pointer;color:#555}
"""


# -- formatting ---------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """A data value as escaped HTML text; None is a dash."""
    return _DASH if value is None else html.escape(str(value))


def _pct(x: float | None) -> str:
    """A share (0.31) as a percentage ("31%", "12.5%"); None is a dash."""
    if x is None:
        return _DASH
    text = f"{x * 100:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def _duration(seconds: float | None) -> str:
    return human_duration(seconds, none=_DASH)


def _num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return _DASH
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def _raw(x: Any) -> str:
    """The unformatted number for ``data-value``: ``repr`` round-trips floats; None is empty."""
    return "" if x is None else html.escape(repr(x), quote=True)


def _plural(n: int | None, word: str) -> str:
    return f"{_num(n)} {word}" + ("" if n == 1 else "s")


def _short(sha: str) -> str:
    return sha[:7]


def _module_label(service: str, module: str) -> str:
    return f"{service}/{module}" if service and module else (module or service)


# -- tables ---------------------------------------------------------------------------------------------


def _attr(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _td_num(field: str, value: Any, text: str | None = None) -> str:
    shown = text if text is not None else _num(value)
    return f'<td class="num" data-field="{field}" data-value="{_raw(value)}">{shown}</td>'


def _td_key(key: Any, inner: str) -> str:
    return f'<td data-key="{_attr(key)}">{inner}</td>'


def _table(name: str, headers: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(rows)
    return (
        f'<table class="data" data-table="{name}">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def _link(url: Any, text: str) -> str:
    """A plain link, when the data gives a URL; else just the (already escaped) text."""
    if not url:
        return text
    return f'<a href="{_attr(url)}">{text}</a>'


def _suspects(suspects: Sequence[Mapping[str, Any]], limit: int | None = None) -> str:
    if not suspects:
        return _DASH
    items = []
    for s in suspects[:limit] if limit else suspects:
        sha = _link(s.get("commit_url"), f"<code>{_e(_short(str(s.get('sha') or '')))}</code>")
        pulls = s.get("pull_requests") or []
        urls = s.get("pull_urls") or []
        pr_links = [
            _link(urls[i] if i < len(urls) else None, f"#{_e(number)}") for i, number in enumerate(pulls)
        ]
        prs = f" ({', '.join(pr_links)})" if pr_links else ""
        items.append(
            f"<li>{_e(s.get('rank'))}. {sha} {_e(s.get('subject'))} — {_e(s.get('author'))}, "
            f"{_plural(s.get('module_churn'), 'changed line')} in the module{prs}</li>"
        )
    return '<ul class="suspects">' + "".join(items) + "</ul>"


# -- charts ---------------------------------------------------------------------------------------------

_ID = re.compile(r'\bid="([^"]+)"')


def _svg(fig: Figure, name: str) -> str:
    """The figure as an inline ``<svg>``: no prolog, DOCTYPE, comments, metadata or namespace URLs; ids
    other than the marks prefixed with the chart's name so the charts' ids do not collide."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = text.replace("<svg ", f'<svg role="img" aria-label="{name} chart" ', 1)
    ids = {i for i in _ID.findall(text) if not i.startswith("mark-")}

    def rename(m: re.Match[str]) -> str:
        ident = m.group(2)
        return f"{m.group(1)}chart-{name}-{ident}" if ident in ids else m.group(0)

    text = re.sub(r'(\bid=")([^"]+)', rename, text)
    text = re.sub(r"(url\(#)([^)]+)", rename, text)
    text = re.sub(r'(href="#)([^"]+)', rename, text)
    return text.strip()


def _figure(name: str, marks: int, caption: str, draw: Callable[[], Figure]) -> str:
    # hashsalt: deterministic ids; fonttype none: text stays text; parse_math off: a "$" in data is a "$"
    with matplotlib.rc_context(
        {"svg.hashsalt": "prodloop", "svg.fonttype": "none", "text.parse_math": False, "font.size": 9.0}
    ):
        fig = draw()
        FigureCanvasSVG(fig)
        svg = _svg(fig, name)
    return (
        f'<figure class="chart" data-chart="{name}" data-marks="{marks}">\n{svg}\n'
        f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>"
    )


def _pain_chart(rows: Sequence[Mapping[str, Any]]) -> Figure:
    labels = [_module_label(str(r["service"]), str(r["module"])) for r in rows]
    values = [float(r["pain"] or 0) for r in rows]
    fig = Figure(figsize=(8, 0.32 * len(rows) + 1.0))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(rows)), values, color=_BAR)
    for i, bar in enumerate(bars.patches):
        bar.set_gid(f"mark-pain-{i}")
    ax.set_yticks(range(len(rows)), labels=labels)
    ax.invert_yaxis()
    ax.set_xlabel("pain")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _hotspot_chart(rows: Sequence[Mapping[str, Any]]) -> Figure:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for i, r in enumerate(rows):
        x, y = float(r["changes"] or 0), float(r["pain"] or 0)
        ax.scatter([x], [y], s=36, color=_BAR if i < _HOTSPOT_LABELS else "#7f8c8d", gid=f"mark-hotspots-{i}")
        if i < _HOTSPOT_LABELS:
            ax.annotate(str(r["module"]), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("changes in range")
    ax.set_ylabel("pain")
    ax.margins(0.12)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _coupling_cells(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[list[str], dict[tuple[int, int], Mapping[str, Any]]]:
    """The modules of the pairs (in order of appearance) and each pair's cell (row < column: the upper
    triangle); a pair listed twice keeps its stronger coupling."""
    modules: list[str] = []
    for r in rows:
        for m in (str(r["module_a"]), str(r["module_b"])):
            if m not in modules:
                modules.append(m)
    cells: dict[tuple[int, int], Mapping[str, Any]] = {}
    for r in rows:
        a, b = modules.index(str(r["module_a"])), modules.index(str(r["module_b"]))
        if a == b:
            continue
        cell = (min(a, b), max(a, b))
        if cell not in cells or float(r["coupling"] or 0) > float(cells[cell]["coupling"] or 0):
            cells[cell] = r
    return modules, cells


def _coupling_chart(modules: Sequence[str], cells: Mapping[tuple[int, int], Mapping[str, Any]]) -> Figure:
    n = len(modules)
    size = min(9.0, 1.6 + 0.55 * n)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["Reds"]
    for i, ((row, col), r) in enumerate(sorted(cells.items())):
        value = float(r["coupling"] or 0)
        ax.add_patch(
            Rectangle(
                (col, row),
                1,
                1,
                facecolor=cmap(0.15 + 0.85 * min(max(value, 0.0), 1.0)),
                edgecolor="white",
                gid=f"mark-coupling-{i}",
            )
        )
        ax.text(
            col + 0.5,
            row + 0.5,
            str(r["co_changes"]),
            ha="center",
            va="center",
            color="white" if value > 0.5 else "black",
            fontsize=8,
        )
    ticks = [i + 0.5 for i in range(n)]
    labels = list(modules)
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    ax.set_aspect("equal")
    ax.set_xticks(ticks, labels=labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=labels)
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    return fig


def _dora_chart(rows: Sequence[Mapping[str, Any]]) -> Figure:
    labels = [_module_label(str(r["service"]), str(r["module"])) for r in rows]
    values = [100 * float(r["change_failure_rate"] or 0) for r in rows]
    fig = Figure(figsize=(8, 0.32 * len(rows) + 1.0))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(rows)), values, color=_BAR)
    for i, bar in enumerate(bars.patches):
        bar.set_gid(f"mark-dora-{i}")
    ax.set_yticks(range(len(rows)), labels=labels)
    ax.invert_yaxis()
    ax.set_xlabel("change failure rate (%)")
    ax.set_xlim(0, max([100.0, *values]) if values else 100.0)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# -- sections -------------------------------------------------------------------------------------------


def _section(ident: str, title: str, lead: str, *parts: str) -> str:
    body = "\n".join(p for p in parts if p)
    return f'<section id="{ident}">\n<h2>{html.escape(title)}</h2>\n<p class="lead">{lead}</p>\n{body}\n</section>'


def _pain(rows: Sequence[Mapping[str, Any]], weights: Mapping[str, Any]) -> str:
    if not rows:
        lead = (
            "No module has production pain in this range: send traces, incidents and deploys "
            "(prodloop ingest --traces/--incidents/--deploys, POST /v1/traces) so modules can be ranked."
        )
        return _section("pain", "Production pain by module", lead)
    top = rows[0]
    shares = ""
    if top["cost_share"] is not None and top["traffic_share"] is not None:
        shares = f", {_pct(top['cost_share'])} of cost for {_pct(top['traffic_share'])} of traffic"
    elif top["cost_share"] is not None:
        shares = f", {_pct(top['cost_share'])} of cost"
    lead = (
        f"{_e(_module_label(str(top['service']), str(top['module'])))}: {_plural(top['changes'], 'change')}, "
        f"{_plural(top['incidents'], 'incident')}{shares} — refactor candidate."
    )
    chart_rows = rows[:_PAIN_TOP]
    figure = _figure(
        "pain",
        len(chart_rows),
        f"Pain of the top {len(chart_rows)} of {len(rows)} modules.",
        lambda: _pain_chart(chart_rows),
    )
    table = _table(
        "pain",
        [
            "Service",
            "Module",
            "Owners",
            "Pain",
            "Incidents",
            "Findings",
            "Cost share",
            "Traffic share",
            "Changes",
        ],
        (
            f"<tr>{_td_key(r['module'], _e(r['service']))}<td>{_e(r['module'])}</td>"
            f"<td>{_e(', '.join(str(o) for o in r['owners'] or [])) if r['owners'] else _DASH}</td>"
            f"{_td_num('pain', r['pain'])}{_td_num('incidents', r['incidents'])}"
            f"{_td_num('findings', r['findings'])}"
            f"{_td_num('cost_share', r['cost_share'], _pct(r['cost_share']))}"
            f"{_td_num('traffic_share', r['traffic_share'], _pct(r['traffic_share']))}"
            f"{_td_num('changes', r['changes'])}</tr>"
            for r in rows
        ),
    )
    w = weights
    formula = (
        f'<p class="note">pain = {_e(_num(w.get("incidents")))} × incidents + {_e(_num(w.get("findings")))} × findings'
        f" + {_e(_num(w.get('self_time_regression')))} × self-time regressions"
        f" + {_e(_num(w.get('cost_excess')))} × cost excess (cost share above traffic share).</p>"
    )
    return _section("pain", "Production pain by module", lead, figure, table, formula)


def _hotspots(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        lead = (
            "No hotspots in this range: they need both git history (changes per module) and production "
            "pain for the same modules — ingest traces and incidents for a service whose repository is known."
        )
        return _section("hotspots", "Hotspots: change frequency × pain", lead)
    top = rows[0]
    lead = (
        f"{_e(top['module'])} changes often and hurts: {_plural(top['changes'], 'change')} × pain "
        f"{_e(_num(top['pain']))} = {_e(_num(top['hotspot']))} — stabilise or split it first."
    )
    figure = _figure(
        "hotspots",
        len(rows),
        f"Changes (x) against pain (y), one point per module; the top {min(len(rows), _HOTSPOT_LABELS)} labelled.",
        lambda: _hotspot_chart(rows),
    )
    table = _table(
        "hotspots",
        ["Module", "Repository", "Changes", "Pain", "Hotspot"],
        (
            f"<tr>{_td_key(r['module'], _e(r['module']))}<td>{_e(r['repository'])}</td>"
            f"{_td_num('changes', r['changes'])}{_td_num('pain', r['pain'])}"
            f"{_td_num('hotspot', r['hotspot'])}</tr>"
            for r in rows
        ),
    )
    return _section("hotspots", "Hotspots: change frequency × pain", lead, figure, table)


def _coupling(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        lead = (
            "No co-changing module pairs in this range: coupling comes from git history with commits that "
            "touch more than one module (prodloop query coupling)."
        )
        return _section("coupling", "Change coupling", lead)
    top = max(rows, key=lambda r: (float(r["coupling"] or 0), int(r["co_changes"] or 0)))
    lead = (
        f"{_e(top['module_a'])} and {_e(top['module_b'])} changed together in "
        f"{_plural(top['co_changes'], 'commit')} ({_pct(top['coupling'])} coupling) — merge them or cut "
        "the hidden dependency."
    )
    modules, cells = _coupling_cells(rows)
    figure = (
        _figure(
            "coupling",
            len(cells),
            "Coupling of each pair (colour) and its shared commits (number); each pair once, above the diagonal.",
            lambda: _coupling_chart(modules, cells),
        )
        if cells
        else ""
    )
    table = _table(
        "coupling",
        ["Module A", "Module B", "Repository", "Shared commits", "Coupling"],
        (
            f"<tr>{_td_key(r['module_a'], _e(r['module_a']))}<td>{_e(r['module_b'])}</td>"
            f"<td>{_e(r['repository'])}</td>{_td_num('co_changes', r['co_changes'])}"
            f"{_td_num('coupling', r['coupling'], _pct(r['coupling']))}</tr>"
            for r in rows
        ),
    )
    return _section("coupling", "Change coupling", lead, figure, table)


def _ids(label: str, ids: Sequence[Any]) -> str:
    if not ids:
        return ""
    items = ", ".join(f"<code>{_e(i)}</code>" for i in ids)
    return f"<details><summary>{len(ids)} {label}</summary>{items}</details>"


def _dora_row(r: Mapping[str, Any]) -> str:
    module = str(r["module"] or "")
    cls = "module" if module else "service"
    name = _e(module) if module else f"{_e(r['service'])} <small>({_e(r['environment'])})</small>"
    evidence = _ids("deploys", r["deploy_ids"] or []) + _ids("incidents", r["incident_ids"] or [])
    return (
        f'<tr class="{cls}" data-service="{_attr(r["service"])}" data-environment="{_attr(r["environment"])}">'
        f"{_td_key(module or r['service'], name)}"
        f"{_td_num('deploys', r['deploys'])}{_td_num('deploys_per_day', r['deploys_per_day'])}"
        f"{_td_num('failed_deploys', r['failed_deploys'])}"
        f"{_td_num('change_failure_rate', r['change_failure_rate'], _pct(r['change_failure_rate']))}"
        f"{_td_num('lead_time_p50_s', r['lead_time_p50_s'], _duration(r['lead_time_p50_s']))}"
        f"{_td_num('time_to_restore_p50_s', r['time_to_restore_p50_s'], _duration(r['time_to_restore_p50_s']))}"
        f"<td>{evidence or _DASH}</td></tr>"
    )


def _dora(rows: Sequence[Mapping[str, Any]]) -> str:
    title = "DORA metrics"
    if not rows:
        lead = (
            "No deploys in this range: send deploy events (prodloop ingest --deploys FILE, POST /v1/deploys)."
        )
        return _section("dora", title, lead)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["service"]), str(r["environment"])), []).append(r)
    module_rows = [r for r in rows if r["module"] and (r["deploys"] or 0) > 0]
    services = [r for r in rows if not r["module"]]
    if module_rows:
        worst = max(module_rows, key=lambda r: float(r["change_failure_rate"] or 0))
        lead = (
            f"{_e(_module_label(str(worst['service']), str(worst['module'])))} fails most: "
            f"{_pct(worst['change_failure_rate'])} of its {_plural(worst['deploys'], 'deploy')} failed "
            f"(restore p50 {_duration(worst['time_to_restore_p50_s'])}) — review how its changes are tested and rolled out."
        )
    else:
        first = services[0] if services else rows[0]
        lead = (
            f"{_e(first['service'])}: {_plural(first['deploys'], 'deploy')}, change failure rate "
            f"{_pct(first['change_failure_rate'])}; no module rows — map deploys to modules to see which fail."
        )
    headers = ["Module", "Deploys", "Per day", "Failed", "CFR", "Lead time p50", "Restore p50", "Evidence"]
    tables = []
    for (service, environment), members in groups.items():
        members = sorted(members, key=lambda r: (bool(r["module"]), str(r["module"])))
        tables.append(f"<h3>{_e(service)} <small>({_e(environment)})</small></h3>")
        tables.append(_table("dora", headers, (_dora_row(r) for r in members)))
    figure = (
        _figure(
            "dora",
            len(module_rows),
            "Change failure rate per module (modules with deploys in range).",
            lambda: _dora_chart(module_rows),
        )
        if module_rows
        else ""
    )
    return _section("dora", title, lead, figure, *tables)


def _incidents(rows: Sequence[Mapping[str, Any]]) -> str:
    title = "Incidents"
    if not rows:
        lead = "No incidents in this range: send incident events (prodloop ingest --incidents FILE, POST /v1/incidents)."
        return _section("incidents", title, lead)
    top = rows[0]
    suspects = top["suspects"] or []
    blame = (
        f" — top suspect {_e(_short(str(suspects[0]['sha'])))} “{_e(suspects[0]['subject'])}”, check it first"
        if suspects
        else " — no suspect commit: link the deploy or the modules"
    )
    modules = ", ".join(str(m) for m in top["modules"] or []) or "no module"
    lead = f"{_plural(len(rows), 'incident')}; {_e(top['incident_id'])} ({_e(top['severity'])}) hit {_e(modules)}{blame}."
    table = _table(
        "incidents",
        ["Id", "Title", "Severity", "Started", "Resolved", "Deploy", "Modules", "Top suspects"],
        (
            f"<tr>{_td_key(r['incident_id'], _e(r['incident_id']))}<td>{_e(r['title'])}</td>"
            f"<td>{_e(r['severity'])}</td><td>{_e(r['started_at'])}</td>"
            f"<td>{_e(r['resolved_at']) if r['resolved_at'] else 'unresolved'}</td>"
            f"<td>{_e(r['deploy_id'])}<br><small>{_e(r['deploy_evidence'])}</small></td>"
            f"<td>{_e(', '.join(str(m) for m in r['modules'])) if r['modules'] else _DASH}"
            f"<br><small>{_e(r['modules_evidence'])}</small></td>"
            f"<td>{_suspects(r['suspects'] or [], _SUSPECTS_SHOWN)}</td></tr>"
            for r in rows
        ),
    )
    return _section("incidents", title, lead, table)


def _dead_code(rows: Sequence[Mapping[str, Any]]) -> str:
    title = "Dead-code candidates"
    if not rows:
        lead = (
            "No dead-code candidates in this range: they need traces (or coverage) showing which files of a "
            "known repository never run in production."
        )
        return _section("dead-code", title, lead)
    lines = sum(int(r["lines"] or 0) for r in rows)
    top = rows[0]
    lead = (
        f"{_plural(len(rows), 'file')} ({_plural(lines, 'line')}) never ran in production; start with "
        f"{_e(top['path'])} ({_pct(top['confidence'])} confidence) — delete it or prove it runs."
    )
    table = _table(
        "dead-code",
        ["Path", "Module", "Repository", "Lines", "Last changed", "Confidence", "Weight"],
        (
            f"<tr>{_td_key(r['path'], '<code>' + _e(r['path']) + '</code>')}<td>{_e(r['module'])}</td>"
            f"<td>{_e(r['repository'])}</td>{_td_num('lines', r['lines'])}<td>{_e(r['last_changed'])}</td>"
            f"{_td_num('confidence', r['confidence'], _pct(r['confidence']))}"
            f"{_td_num('weight', r['weight'])}</tr>"
            for r in rows
        ),
    )
    return _section("dead-code", title, lead, table)


def _ticket_key(r: Mapping[str, Any]) -> str:
    return f"{r['rule']}|{r['module']}"


def _tickets(rows: Sequence[Mapping[str, Any]]) -> str:
    title = "Refactor tickets"
    if not rows:
        lead = "No refactor tickets: alert rules open them (rules.yaml; prodloop alerts evaluate)."
        return _section("tickets", title, lead)
    top = rows[0]
    lead = (
        f"{_plural(len(rows), 'refactor ticket')}; {_e(top['ticket_key'] or top['rule'])} "
        f"({_e(top['rule'])} on {_e(_module_label(str(top['service']), str(top['module'])))}) "
        "names its suspect commits — assign it to the module's owners."
    )
    table = _table(
        "tickets",
        ["Ticket", "Rule", "Service", "Module", "State", "Summary", "Suspects"],
        (
            f"<tr>{_td_key(_ticket_key(r), _link(r['ticket_url'], _e(r['ticket_key'] or 'ticket')))}"
            f"<td>{_e(r['rule'])}</td><td>{_e(r['service'])} <small>({_e(r['environment'])})</small></td>"
            f"<td>{_e(r['module'])}</td><td>{_e(r['state'])}</td><td>{_e(r['summary'])}</td>"
            f"<td>{_suspects(r['suspects'] or [])}</td></tr>"
            for r in rows
        ),
    )
    return _section("tickets", title, lead, table)


_NAV = [
    ("pain", "Pain"),
    ("hotspots", "Hotspots"),
    ("coupling", "Coupling"),
    ("dora", "DORA"),
    ("incidents", "Incidents"),
    ("dead-code", "Dead code"),
    ("tickets", "Tickets"),
]


def render_report(data: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML5 document (no JavaScript, no network)."""
    title = _e(data.get("title") or "prodloop report")
    nav = " ".join(f'<a href="#{ident}">{label}</a>' for ident, label in _NAV)
    sections = [
        _pain(data.get("pain") or [], data.get("weights") or {}),
        _hotspots(data.get("hotspots") or []),
        _coupling(data.get("coupling") or []),
        _dora(data.get("dora") or []),
        _incidents(data.get("incidents") or []),
        _dead_code(data.get("dead_code") or []),
        _tickets(data.get("tickets") or []),
    ]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{title}</h1>\n"
        f'<p class="meta">{_e(data.get("from"))} → {_e(data.get("to"))} · generated {_e(data.get("generated_at"))}</p>\n'
        f"<nav>{nav}</nav></header>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
