"""``prodloop query deploys|tickets``: the deploy timeline (with the modules each deploy changed,
when the history is scanned) and the tickets the rules opened."""

from __future__ import annotations

import json
from typing import Any

import click

from attribution.events import format_rfc3339
from collector.cli.options import (
    SettingsFlags,
    format_option,
    now_ns,
    range_options,
    store_options,
    time_range,
)
from collector.cli.render import render_table


@click.command("deploys")
@store_options
@range_options("-30d", "deployed_at")
@click.option("--service", envvar="PRODLOOP_QUERY__SERVICE", show_envvar=True, help="Only this service.")
@click.option(
    "--environment", envvar="PRODLOOP_QUERY__ENVIRONMENT", show_envvar=True, help="Only this environment."
)
@format_option(["table", "json"], "table")
def query_deploys(
    flags: SettingsFlags, since: str, until: str, service: str | None, environment: str | None, fmt: str
) -> None:
    """Deploys in the range, newest first, each with its final status, its range
    (previous..commit) and, when the history is scanned, the commits and modules it shipped."""
    from attribution.dora import deploy_range, previous_deploy  # noqa: PLC0415  lazy: with the store
    from attribution.history import CommitGraph  # noqa: PLC0415  lazy: with the store
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help

    start, end = time_range(since, until, now_ns())
    store = build.open_store(flags.settings(), create=False)
    try:
        deploys = store.load_deploys()
        graph = CommitGraph(store.load_commits())
    finally:
        store.close()
    live = [d for d in deploys if d.live]
    rows: list[dict[str, Any]] = []
    for d in sorted(deploys, key=lambda d: (-d.deployed_at_unix_nano, d.deploy_id)):
        if not start <= d.deployed_at_unix_nano < end:
            continue
        if (service and d.service != service) or (environment is not None and d.environment != environment):
            continue
        previous = previous_deploy(d, live)
        commits = deploy_range(d, previous, graph) if len(graph) else []
        rows.append(
            {
                "deploy_id": d.deploy_id,
                "service": d.service,
                "environment": d.environment,
                "deployed_at": format_rfc3339(d.deployed_at_unix_nano),
                "status": d.status,
                "commit_sha": d.commit_sha,
                "previous_sha": d.previous_sha or (previous.commit_sha if previous else ""),
                "previous_deploy_id": previous.deploy_id if previous else "",
                "repository": d.repository,
                "url": d.url,
                "commits": len(commits) if len(graph) else None,
                "modules": sorted({m for c in commits for m in c.modules}) if len(graph) else None,
            }
        )
    if fmt == "json":
        click.echo(json.dumps({"deploys": rows}, indent=2))
        return
    if not rows:
        click.echo(
            "(no deploys in this range: prodloop ingest --deploys FILE, POST /v1/deploys, or the deploys topic)"
        )
        return
    table = [
        [
            r["deploy_id"],
            f"{r['service']}/{r['environment']}",
            str(r["deployed_at"])[:16].replace("T", " "),
            r["status"],
            f"{str(r['previous_sha'])[:7] or '-'} -> {str(r['commit_sha'])[:7]}",
            "-" if r["commits"] is None else str(r["commits"]),
            "-" if r["modules"] is None else ", ".join(r["modules"]) or "(none)",
        ]
        for r in rows
    ]
    click.echo(render_table(["DEPLOY", "SERVICE", "AT", "STATUS", "RANGE", "COMMITS", "MODULES"], table, {5}))


@click.command("tickets")
@store_options
@click.option(
    "--state",
    type=click.Choice(["open", "all"]),
    default="open",
    show_default=True,
    help="open: open and recovered (the recovery comment posted, left open); all: closed too.",
)
@format_option(["table", "json"], "table")
def query_tickets(flags: SettingsFlags, state: str, fmt: str) -> None:
    """The tickets the alert rules opened: the latest of each finding on each sink."""
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help
    from collector.app.alerting import latest_tickets  # noqa: PLC0415  lazy: with the store

    store = build.open_store(flags.settings(), create=False)
    try:
        records = latest_tickets(store)
    finally:
        store.close()
    shown = [r for r in records if state == "all" or r.state in ("open", "recovered")]
    rows = [
        {
            "rule": r.rule,
            "kind": r.kind,
            "service": r.service,
            "environment": r.environment,
            "module": r.module,
            "state": r.state,
            "sink": r.sink,
            "ticket_key": r.ticket_key,
            "ticket_url": r.ticket_url,
            "opened_at": format_rfc3339(r.opened_at) if r.opened_at else None,
            "deploy_id": r.deploy_id,
            "generation": r.generation,
            "summary": r.summary,
        }
        for r in shown
    ]
    if fmt == "json":
        click.echo(json.dumps({"tickets": rows}, indent=2))
        return
    if not rows:
        click.echo(
            f"(no {'open ' if state == 'open' else ''}tickets: see `prodloop alerts evaluate --dry-run`)"
        )
        return
    table = [
        [
            str(r["ticket_key"] or r["ticket_url"] or "-"),
            str(r["state"]),
            str(r["rule"]),
            f"{r['service']}/{r['module'] or '-'}",
            str(r["opened_at"] or "-")[:16].replace("T", " "),
            str(r["summary"])[:70],
        ]
        for r in rows
    ]
    click.echo(render_table(["TICKET", "STATE", "RULE", "SERVICE/MODULE", "OPENED", "SUMMARY"], table, set()))
