"""``prodloop query dora|incidents|suspects|hotspots|dead-code``: git history joined with
deploys, incidents, tickets and the runtime aggregates.  The method: docs/history.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from attribution.events import format_rfc3339
from collector.cli.options import (
    SettingsFlags,
    format_option,
    now_ns,
    parse_time,
    range_options,
    store_options,
    time_range,
)
from collector.cli.render import human_duration, render_table

if TYPE_CHECKING:
    from collector.app.history_settings import HistorySettings
    from collector.app.longloop import LoopView
    from collector.exporters.clickhouse.store import ClickHouseStore


@contextmanager
def _view(flags: SettingsFlags) -> Iterator[tuple[ClickHouseStore, HistorySettings, LoopView, int]]:
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help
    from collector.app.longloop import load_view  # noqa: PLC0415  lazy: with the store

    settings = flags.settings()
    now = now_ns()
    store = build.open_store(settings, create=False)
    try:
        yield store, settings.history, load_view(store, settings.history, now_unix_nano=now), now
    finally:
        store.close()


def _when(unix_nano: int) -> str:
    return format_rfc3339(unix_nano)[:16].replace("T", " ") if unix_nano else "-"


def _echo_json(value: Any) -> None:
    from collector.app.longloop import jsonable  # noqa: PLC0415  lazy: with the store

    click.echo(json.dumps(jsonable(value), indent=2))


@click.command("dora")
@store_options
@range_options("-30d")
@click.option("--service", help="Only this service.")
@format_option(["table", "json"], "table")
def query_dora(flags: SettingsFlags, since: str, until: str, service: str | None, fmt: str) -> None:
    """DORA's four keys per service and per code module, in the production environment
    (history.production_environment), with the deploys and incidents behind each figure."""
    from collector.app.longloop import dora_rows  # noqa: PLC0415  lazy: with the store

    with _view(flags) as (_, hs, view, now):
        start, end = time_range(since, until, now)
        rows = [
            r
            for r in dora_rows(view, hs, from_unix_nano=start, to_unix_nano=end)
            if not service or r.service == service
        ]
    if fmt == "json":
        _echo_json({"environment": hs.production_environment, "rows": rows})
        return
    if not rows:
        click.echo(f"(no deploys to {hs.production_environment} in this range)")
        return
    table = [
        [
            r.service if not r.module else f"  {r.module}",
            str(r.deploys),
            f"{r.deploys_per_day:.2f}",
            str(r.failed_deploys),
            f"{r.change_failure_rate:.0%}",
            human_duration(r.lead_time_p50_s),
            human_duration(r.time_to_restore_p50_s),
            ",".join(r.failed_deploy_ids) or "-",
            ",".join(r.incident_ids) or "-",
        ]
        for r in rows
    ]
    headers = ["SERVICE / MODULE", "DEPLOYS", "PER DAY", "FAILED", "CFR", "LEAD p50", "RESTORE p50"]
    click.echo(render_table([*headers, "FAILED DEPLOYS", "INCIDENTS"], table, {1, 2, 3, 4, 5, 6}))


@click.command("incidents")
@store_options
@range_options("-90d", "incident start")
@format_option(["table", "json"], "table")
def query_incidents(flags: SettingsFlags, since: str, until: str, fmt: str) -> None:
    """Incidents, the deploy and the modules each is linked to, and the evidence: explicit in
    the event, or inferred (the last deploy of its service within
    history.incident_deploy_window_seconds; the modules that deploy changed and that regressed)."""
    with _view(flags) as (_, _hs, view, now):
        start, end = time_range(since, until, now)
        titles = {i.incident_id: i for i in view.incidents}
        links = [x for x in view.links if start <= x.started_at_unix_nano < end]
    if fmt == "json":
        out = [
            {
                **_link_json(x),
                "title": titles[x.incident_id].title,
                "severity": titles[x.incident_id].severity,
            }
            for x in links
        ]
        _echo_json({"incidents": out})
        return
    if not links:
        click.echo("(no incidents in this range: prodloop ingest --incidents FILE, or POST /v1/incidents)")
        return
    for x in links:
        inc = titles[x.incident_id]
        click.echo(f"{x.incident_id}  {inc.severity}  {inc.title}")
        click.echo(f"  started {_when(x.started_at_unix_nano)}, resolved {_when(x.resolved_at_unix_nano)}")
        click.echo(f"  deploy:  {x.deploy_id or '-'}  ({x.deploy_evidence})")
        click.echo(f"  modules: {', '.join(x.modules) or '-'}  ({x.modules_evidence})")


def _link_json(x: Any) -> dict[str, Any]:
    return {
        "incident_id": x.incident_id,
        "started_at": format_rfc3339(x.started_at_unix_nano),
        "resolved_at": format_rfc3339(x.resolved_at_unix_nano) if x.resolved_at_unix_nano else None,
        "deploy_id": x.deploy_id,
        "deploy_evidence": x.deploy_evidence,
        "modules": list(x.modules),
        "modules_evidence": x.modules_evidence,
    }


@click.command("suspects")
@store_options
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Suspects per finding.")
@format_option(["table", "json"], "table")
def query_suspects(flags: SettingsFlags, top: int, fmt: str) -> None:
    """For each incident linked to a deploy, and each regression_after_deploy ticket: the
    commits of that deploy ranked by whether they touched the implicated module, and by churn
    there (ties: the most recent first)."""
    from collector.app.longloop import suspect_lists  # noqa: PLC0415  lazy: with the store

    with _view(flags) as (_, _hs, view, _now):
        lists = suspect_lists(view, top=top)
    if fmt == "json":
        _echo_json({"findings": lists})
        return
    if not lists:
        click.echo("(no incident or regression ticket is linked to a deploy with scanned history)")
        return
    for s in lists:
        click.echo(f"{s.kind} {s.key}: deploy {s.deploy_id}, modules {', '.join(s.modules) or '-'}")
        table = [
            [
                str(c.rank),
                c.sha[:12],
                c.subject[:60],
                c.author_name,
                str(c.module_churn) if c.touched else "-",
                str(c.churn),
                ", ".join(c.files[:3]),
            ]
            for c in s.suspects
        ]
        click.echo(
            render_table(
                ["#", "COMMIT", "SUBJECT", "AUTHOR", "MODULE CHURN", "CHURN", "FILES"], table, {0, 4, 5}
            )
        )
        click.echo("")


@click.command("hotspots")
@store_options
@range_options("-30d")
@click.option("--limit", type=int, default=20, show_default=True, help="At most N rows (0: all).")
@format_option(["table", "json"], "table")
def query_hotspots(flags: SettingsFlags, since: str, until: str, limit: int, fmt: str) -> None:
    """Modules by change frequency x production pain (history.hotspot_weights: linked
    incidents, findings, self-time regression, cost share above traffic share)."""
    from attribution.hotspots import hotspots  # noqa: PLC0415  lazy: with the store
    from collector.app.longloop import changes_in, pain_rows  # noqa: PLC0415  lazy: with the store

    with _view(flags) as (store, hs, view, now):
        start, end = time_range(since, until, now)
        pain = pain_rows(store, view, hs, from_unix_nano=start, to_unix_nano=end)
        rows = hotspots(changes_in(view.commits, start, end), pain)
    rows = rows[:limit] if limit else rows
    if fmt == "json":
        _echo_json({"hotspots": rows, "pain": pain})
        return
    if not rows:
        click.echo("(no git history in this range: prodloop history scan --repo PATH)")
        return
    table = [[h.module, str(h.changes), str(h.churn), f"{h.pain:g}", f"{h.hotspot:g}"] for h in rows]
    click.echo(render_table(["MODULE", "CHANGES", "CHURN", "PAIN", "HOTSPOT"], table, {1, 2, 3, 4}))


@click.command("dead-code")
@store_options
@click.option(
    "--as-of",
    "as_of",
    default="now",
    show_default=True,
    help="Judge the spans up to this time (RFC 3339, unix s).",
)
@click.option("--limit", type=int, default=50, show_default=True, help="At most N rows (0: all).")
@format_option(["table", "json"], "table")
def query_dead_code(flags: SettingsFlags, as_of: str, limit: int, fmt: str) -> None:
    """Files at the scanned head that received no spans for history.dead_code_days, in
    repositories whose services emit code.file.path, weighted by size and by age."""
    from attribution.dead_code import dead_modules  # noqa: PLC0415  lazy: with the store
    from collector.app.longloop import dead_code_rows  # noqa: PLC0415  lazy: with the store

    with _view(flags) as (store, hs, view, now):
        at = parse_time(as_of, now)
        assert at is not None
        rows = dead_code_rows(store, view, hs, now_unix_nano=at)
        modules = dead_modules(store.load_head_files(), rows)
    shown = rows[:limit] if limit else rows
    if fmt == "json":
        _echo_json({"days": hs.dead_code_days, "files": shown, "modules": modules})
        return
    if not rows:
        click.echo(f"(no file at the scanned heads went {hs.dead_code_days} days without spans)")
        return
    table = [
        [
            d.path,
            d.module,
            str(d.lines),
            _when(d.last_changed_unix_nano)[:10],
            _when(d.last_seen_unix_nano)[:10],
            f"{d.confidence:.0%}",
            f"{d.weight:g}",
        ]
        for d in shown
    ]
    click.echo(
        render_table(
            ["FILE", "MODULE", "LINES", "CHANGED", "LAST SPAN", "CONFIDENCE", "WEIGHT"], table, {2, 5, 6}
        )
    )
    if modules:
        click.echo(
            "\nmodules without any span: " + ", ".join(f"{m.module} ({m.files} files)" for m in modules)
        )
