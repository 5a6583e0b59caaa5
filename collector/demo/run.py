"""``prodloop demo``: the whole loop on the embedded store, on a bundled shop.

1. The shop's git history is built first (``collector/demo/history.py``, fixed dates), so its
   deploys carry real SHAs.
2. The shop (``collector/demo/shop.py``) runs its simulated traffic through the real
   OpenTelemetry SDK and OTLP encoder; the requests are written to a length-prefixed
   protobuf file, the deploy and incident events to JSON-lines files, as a user would have them.
3. ``prodloop ingest``'s own code path attributes and aggregates them into a fresh chDB
   store under ``./.prodloop/demo``; the history is scanned into it.
4. The module table, per deploy the modules that changed most, the tickets the rules open
   (with their suspect commits), the incidents' links and DORA are printed, and the report is
   written (``.prodloop/demo-data/report.html``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from attribution.analysis import deploy_impact
from attribution.attribute import Attributor
from attribution.deploys import DeployTimeline
from attribution.events import format_rfc3339, format_window
from attribution.repository import Repository
from collector.app import build
from collector.app.history import scan_path
from collector.app.history_settings import HistorySettings
from collector.app.longloop import dora_rows, load_view, report_data
from collector.app.settings import AttributionSettings, Settings, StoreSettings
from collector.cli.render import human_duration, render_modules_table
from collector.cli.report_html import render_report
from collector.codec.events import decode_deploy
from collector.demo.history import build_history, deploy_shas, prior_deploys
from collector.demo.shop import (
    DEFAULT_START_UNIX_NANO,
    ENVIRONMENT,
    REPOSITORY,
    SAMPLE_RATE_ATTRIBUTE,
    SERVICES,
    demo_dir,
    generate,
)

_S = 1_000_000_000


def _write_inputs(
    out: Path, requests: list[bytes], deploys: list[dict[str, Any]], incidents: list[dict[str, Any]]
) -> tuple[Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    traces = out / "traces.lpb"
    with traces.open("wb") as fh:
        for r in requests:
            fh.write(len(r).to_bytes(4, "big"))
            fh.write(r)
    deploy_file = out / "deploys.jsonl"
    deploy_file.write_text("".join(json.dumps(d) + "\n" for d in deploys))
    incident_file = out / "incidents.jsonl"
    incident_file.write_text("".join(json.dumps(i) + "\n" for i in incidents))
    return traces, deploy_file, incident_file


def demo_incidents(deploys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two incidents: one its responders linked to checkout's deploy and module by hand, one
    that names only the service (prodloop infers its deploy and module)."""
    at = {d["deploy_id"]: decode_deploy(d).deployed_at_unix_nano for d in deploys}
    pay, chk = at["deploy-payments-2.8.0"], at["deploy-checkout-1.8.4"]
    return [
        {
            "incident_id": "INC-101",
            "title": "Card payments slow and failing",
            "services": ["payments"],
            "started_at": format_rfc3339(pay + 90 * _S),
            "resolved_at": format_rfc3339(pay + 330 * _S),
            "severity": "sev2",
        },
        {
            "incident_id": "INC-102",
            "title": "Coupon totals off by a cent",
            "services": ["checkout"],
            "started_at": format_rfc3339(chk + 60 * _S),
            "resolved_at": format_rfc3339(chk + 150 * _S),
            "severity": "sev3",
            "deploy_id": "deploy-checkout-1.8.4",
            "modules": ["checkout/pricing"],
            "postmortem_url": "https://wiki.acme.example/postmortems/INC-102",
        },
    ]


def demo_settings(store_dsn: str) -> Settings:
    """The demo's settings: its store and attribution files; not read from the environment or a file."""
    d = demo_dir()
    return Settings.model_construct(
        store=StoreSettings(dsn=store_dsn),
        history=HistorySettings(production_environment=ENVIRONMENT),
        attribution=AttributionSettings(
            codeowners=d / "CODEOWNERS",
            modules=d / "modules.yaml",
            sample_rate_attribute=SAMPLE_RATE_ATTRIBUTE,
        ),
    )


def run_demo(
    *,
    minutes: int = 10,
    seed: int = 7,
    store_dsn: str | None = None,
    echo: Callable[[str], None] = click.echo,
) -> dict[str, Any]:
    t0 = time.monotonic()
    base = Path.cwd() / ".prodloop"
    data_dir = base / "demo-data"
    if store_dsn is None:
        store_dir = base / "demo"
        if store_dir.exists():
            shutil.rmtree(store_dir)
        store_dsn = "chdb://" + str(store_dir.resolve())

    echo(f"prodloop demo: {minutes} simulated minutes of a 4-service shop, seed {seed}")
    repo_dir = base / "demo-repo"
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    history = build_history(
        repo_dir, start_unix_nano=DEFAULT_START_UNIX_NANO, run_seconds=minutes * 60, seed=seed
    )
    echo(f"  the shop's git history: {history.commits} commits over 3 weeks -> {repo_dir}")
    with click.progressbar(
        length=minutes * 60, label="  generating traffic (OpenTelemetry SDK)", width=30
    ) as bar:
        last = [0]

        def progress(done: int, total: int) -> None:
            step = int(done * minutes * 60 / max(total, 1))
            if step > last[0]:
                bar.update(step - last[0])
                last[0] = step

        traffic = generate(seed=seed, minutes=minutes, progress=progress, commit_shas=deploy_shas(history))
        bar.update(minutes * 60 - last[0])
    incidents = demo_incidents(traffic.deploys)
    earlier = prior_deploys(history, SERVICES, ENVIRONMENT, REPOSITORY)
    traces, deploy_file, incident_file = _write_inputs(
        data_dir, traffic.requests, earlier + traffic.deploys, incidents
    )
    n_spans = sum(r.spans for r in traffic.truth.values())

    settings = demo_settings(store_dsn)
    loaded = build.load_attribution(settings)
    store = build.open_store(settings)
    try:
        size = traces.stat().st_size
        with click.progressbar(length=size, label="  attributing and aggregating    ", width=30) as bar:
            summary = build.ingest_files(
                settings,
                store,
                loaded.repositories,
                [traces],
                [deploy_file],
                now_unix_nano=traffic.end_unix_nano,
                progress=bar.update,
                incident_files=[incident_file],
            )
        echo(
            f"  {summary.spans_read} spans ({n_spans} emitted), {100 * summary.attributed_ratio:.1f}% attributed, "
            f"{summary.rows_written} aggregate rows, {summary.deploys_read} deploys, "
            f"{summary.incidents_read} incidents -> {store_dsn}"
        )
        scan = scan_path(store, Attributor(loaded.repositories), repo_dir, name=loaded.repositories[0].name)
        echo(f"  history scan: {scan.new_commits} commits, {scan.head_files} files at the head")
        rows = store.query_modules(attributed_only=False)
        echo("")
        echo("Modules, slowest p95 first (the whole run):")
        echo(render_modules_table(rows[:25]))
        if len(rows) > 25:
            echo(f"  ... {len(rows) - 25} more rows: prodloop query modules --store {store_dsn}")

        timeline = DeployTimeline(store.load_deploys())
        window_ns = 60_000_000_000
        impacts: dict[str, Any] = {}
        echo("")
        echo(
            "Deploy impact (3 windows before and after each deploy; alert rules use their own, shown in tickets):"
        )
        for ev in timeline.events():
            prev = timeline.previous(ev)
            if prev is None:
                continue
            span_ns = 3 * window_ns
            all_rows = store.load_rows(
                service=ev.service,
                environment=ev.environment,
                from_unix_nano=ev.deployed_at_unix_nano - span_ns - window_ns,
                to_unix_nano=ev.deployed_at_unix_nano + span_ns + window_ns,
            )
            result = deploy_impact(all_rows, ev, prev, span_ns, window_ns=window_ns)
            impacts[ev.deploy_id] = result
            t = ev.deployed_at_unix_nano
            echo(
                f"  {ev.deploy_id}  {ev.service}/{ev.environment}  {prev.commit_sha[:10]} -> {ev.commit_sha[:10]}"
                f"  before {format_window(t - span_ns, t)}, after {format_window(t, t + span_ns)}"
            )
            if not result:
                echo("    (not enough traffic on both sides to compare)")
            for m in result[:3]:
                echo(
                    f"    {m.module:<22} p95 {m.p95_before_ms:8.2f} -> {m.p95_after_ms:8.2f} ms (x{m.p95_ratio:.2f})"
                    f"   errors {100 * m.before.error_rate:5.2f}% -> {100 * m.after.error_rate:5.2f}%"
                    f"   owners {', '.join(m.owners) or '-'}"
                )
        tickets = _alert_tickets(store, loaded.repositories, traffic.end_unix_nano, data_dir, echo)
        loop = _long_loop(store, settings, traffic.start_unix_nano, traffic.end_unix_nano, data_dir, echo)
    finally:
        store.close()
    echo("")
    echo(
        f"done in {time.monotonic() - t0:.1f}s.  Explore: prodloop query modules --store {store_dsn} --format json"
    )
    echo(f"report: {loop['report']}")
    return {"summary": summary, "impacts": impacts, "traffic": traffic, "tickets": tickets, **loop}


def _long_loop(
    store: build.Store, settings: Settings, start: int, end: int, data_dir: Path, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Incidents and their links, DORA, hotspots, and the report (docs/history.md)."""
    hs = settings.history
    view = load_view(store, hs, now_unix_nano=end)
    echo("")
    echo("Incidents, linked to a deploy and to modules (prodloop query incidents):")
    for x in view.links:
        echo(f"  {x.incident_id}  deploy {x.deploy_id or '-'}  ({x.deploy_evidence})")
        echo(f"    modules {', '.join(x.modules) or '-'}  ({x.modules_evidence})")
    since = start - 21 * 86_400 * _S
    dora = dora_rows(view, hs, from_unix_nano=start, to_unix_nano=end)
    echo("")
    echo(f"DORA in {hs.production_environment}, this run (prodloop query dora):")
    for r in dora:
        if r.deploys:
            echo(
                f"  {(r.service if not r.module else '  ' + r.module):<24} {r.deploys} deploys, "
                f"{r.failed_deploys} failed ({r.change_failure_rate:.0%}), lead time p50 "
                f"{human_duration(r.lead_time_p50_s)}"
                f"  [{', '.join(r.failed_deploy_ids) or 'no failure'}]"
            )
    report = data_dir / "report.html"
    # up to and including the last evaluation (the tickets it opened)
    data = report_data(store, hs, from_unix_nano=since, to_unix_nano=end + _S, now_unix_nano=end)
    report.write_text(render_report(data), encoding="utf-8")
    top = data["hotspots"][:1]
    if top:
        h = top[0]
        echo("")
        echo(f"Top hotspot: {h['module']}: {h['changes']} changes x pain {h['pain']:g} = {h['hotspot']:g}")
    return {"links": view.links, "dora": dora, "report": report.resolve(), "report_data": data}


# The module dashboard of grafana/dashboards/module-detail.json (uid prodloop-module).
DASHBOARD_URL = (
    "http://localhost:3000/d/prodloop-module/prodloop-module-detail?var-service={service}"
    "&var-environment={environment}&var-module={module}&from={from_ms}&to={to_ms}"
)


def _alert_tickets(
    store: build.Store,
    repositories: list[Repository],
    now_unix_nano: int,
    data_dir: Path,
    echo: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Evaluate collector/demo/rules.yaml with the file sink and print the tickets it opened."""
    out = data_dir / "tickets.jsonl"
    out.unlink(missing_ok=True)
    engine, sink = build.file_alert_engine(
        store,
        demo_dir() / "rules.yaml",
        out,
        repositories,
        dashboard_url=DASHBOARD_URL,
    )
    report = engine.evaluate_once(now_unix_nano)
    opened = [e for e in sink.events() if e["event"] == "opened"]
    echo("")
    echo(
        f"Alert rules (collector/demo/rules.yaml): {len(report.firing)} firing, {len(opened)} ticket(s) -> {out}"
    )
    for e in opened:
        echo("")
        echo(f"  # {e['title']}")
        echo(f"  owners: {', '.join(e['owners']) or '-'}   labels: {', '.join(e['labels'])}")
        for line in e["markdown"].splitlines():
            echo(f"  {line}" if line else "")
    return opened
