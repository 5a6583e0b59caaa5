"""``prodloop report``: one self-contained HTML file a tech lead reads in five minutes."""

from __future__ import annotations

from pathlib import Path

import click

from collector.cli.options import SettingsFlags, now_ns, store_options, time_range


@click.command("report")
@store_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--since", "--from", "since", default="-30d", show_default=True, help="Start (RFC 3339, unix s, or -30d)."
)
@click.option("--until", "--to", "until", default="now", show_default=True, help="End, exclusive.")
def report(flags: SettingsFlags, out: Path, since: str, until: str) -> None:
    """Write the report: modules ranked by production pain, hotspots, change coupling, DORA per
    service and module, incidents and their modules, dead-code candidates, and the open refactor
    tickets with their suspect commits.  One HTML file with its charts inlined (SVG): it needs
    no network and no JavaScript."""
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help
    from collector.app.longloop import report_data  # noqa: PLC0415  lazy: with the store
    from collector.cli.report_html import render_report  # noqa: PLC0415  lazy: matplotlib, 0.5 s

    settings = flags.settings()
    now = now_ns()
    start, end = time_range(since, until, now)
    store = build.open_store(settings, create=False)
    try:
        data = report_data(store, settings.history, from_unix_nano=start, to_unix_nano=end, now_unix_nano=now)
    finally:
        store.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(data), encoding="utf-8")
    click.echo(f"report: {out.resolve()}")
