"""``prodloop query``: the aggregates, from the store or from a running service."""

from __future__ import annotations

import json
from typing import Any

import click

from collector.cli.options import SettingsFlags, format_option, now_ns, parse_time, store_options
from collector.cli.render import render_modules_table
from collector.errors import StoreLockedError


@click.group()
def query() -> None:
    """Query the aggregates."""


@query.command("modules")
@store_options
@click.option(
    "--from",
    "from_",
    envvar="PRODLOOP_QUERY__FROM",
    show_envvar=True,
    help="Start (RFC 3339, unix s, or -2h).",
)
@click.option("--to", envvar="PRODLOOP_QUERY__TO", show_envvar=True, help="End, exclusive.")
@click.option("--service", envvar="PRODLOOP_QUERY__SERVICE", show_envvar=True, help="Only this service.")
@click.option(
    "--environment",
    envvar="PRODLOOP_QUERY__ENVIRONMENT",
    show_envvar=True,
    default=None,
    help="Only this environment.",
)
@click.option(
    "--attributed-only",
    is_flag=True,
    envvar="PRODLOOP_QUERY__ATTRIBUTED_ONLY",
    show_envvar=True,
    help="Hide (unattributed) rows.",
)
@format_option(["table", "json"], "table")
@click.option(
    "--limit",
    type=int,
    default=0,
    envvar="PRODLOOP_QUERY__LIMIT",
    show_envvar=True,
    help="At most N rows (0: all).",
)
@click.option(
    "--url",
    envvar="PRODLOOP_QUERY__URL",
    show_envvar=True,
    default=None,
    help="Ask a running `prodloop run` (http(s)://HOST:4318) instead of opening the store; "
    "found automatically when it holds the embedded store.",
)
def query_modules(
    flags: SettingsFlags,
    from_: str | None,
    to: str | None,
    service: str | None,
    environment: str | None,
    attributed_only: bool,
    fmt: str,
    limit: int,
    url: str | None,
) -> None:
    """Per module: traffic, errors, latency, owners and commit, sorted by p95."""
    from collector.app import build  # noqa: PLC0415  lazy: the store and pipelines cost 0.3 s of --help
    from collector.app.query_client import discover_service, fetch_modules  # noqa: PLC0415  lazy: urllib and ssl

    settings = flags.settings()
    now = now_ns()
    for t in (from_, to):  # bad times fail here, not in the service
        parse_time(t, now)
    store = None
    if not url:
        try:
            store = build.open_store(settings)
        except StoreLockedError:
            url = discover_service(build.store_dsn(settings))
            if not url:
                raise
            click.echo(f"prodloop: the store is held by a running service; asking it at {url}", err=True)
    rows: list[dict[str, Any]]
    if url:
        r = settings.receiver
        rows = fetch_modules(
            url,
            from_=from_,
            to=to,
            service=service,
            environment=environment,
            attributed_only=attributed_only,
            token=r.bearer_token.get_secret_value() if r.bearer_token else "",
            cafile=r.tls_cert_file,
        )
    else:
        assert store is not None
        try:
            rows = store.query_modules(
                from_unix_nano=parse_time(from_, now),
                to_unix_nano=parse_time(to, now),
                service=service,
                environment=environment,
                attributed_only=attributed_only,
            )
        finally:
            store.close()
    if limit:
        rows = rows[:limit]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_modules_table(rows))
