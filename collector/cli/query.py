"""``prodloop query``: the aggregates, from the store or from a running service."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from typing import Any

import click

from attribution.cost import apportion
from attribution.events import format_rfc3339
from collector.cli.options import (
    SettingsFlags,
    format_option,
    now_ns,
    parse_time,
    splits_option,
    store_options,
)
from collector.cli.render import format_range, render_modules_table
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
@click.option(
    "--by",
    envvar="PRODLOOP_QUERY__BY",
    show_envvar=True,
    default="",
    help="Split each module's row by any of commit,owners,deploy (comma-separated); "
    "by default one row per module: owners the union, commit and deploy the latest deploy's.",
)
@click.option(
    "--min-spans",
    type=click.IntRange(min=0),
    default=0,
    envvar="PRODLOOP_QUERY__MIN_SPANS",
    show_envvar=True,
    help="Only rows of at least N spans.",
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
    by: str,
    min_spans: int,
    fmt: str,
    limit: int,
    url: str | None,
) -> None:
    """Per module: traffic, errors, latency, self time, exceptions, cost, owners, commit and deploy.

    Within each service the module that costs most self time comes first (then errors).  Self
    time is a span's duration minus its children's; SELF% is the module's share of its
    service's self time.  Cost needs configured costs (`prodloop costs`), and the store.
    """
    from collector.app import build  # noqa: PLC0415  lazy: the store and pipelines cost 0.3 s of --help
    from collector.app.query_client import discover_service, fetch_modules  # noqa: PLC0415  lazy: urllib and ssl

    settings = flags.settings()
    now = now_ns()
    from_ns, to_ns = parse_time(from_, now), parse_time(to, now)  # bad times fail here, not in the service
    splits = splits_option(by)
    extent: tuple[int, int] | None = None
    store = None
    if not url:
        try:
            store = build.open_store(settings, create=False)
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
            by=splits,
            min_spans=min_spans,
            token=r.bearer_token.get_secret_value() if r.bearer_token else "",
            cafile=r.tls_cert_file,
        )
    else:
        assert store is not None
        try:
            rows = store.query_modules(
                from_unix_nano=from_ns,
                to_unix_nano=to_ns,
                service=service,
                environment=environment,
                attributed_only=attributed_only,
                by=splits,
                min_spans=min_spans,
            )
            if rows:
                start, end = _costed_range(rows, from_ns, to_ns)
                apply_module_costs(
                    rows, store.module_costs_micro_usd(start, end, service or None, environment)
                )
            else:
                extent = store.aggregates_extent(service or None, environment)
        finally:
            store.close()
    if limit:
        rows = rows[:limit]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        title = f"modules {_covered(rows, from_ns, to_ns)}; rows by self time, then errors, in each service"
        click.echo(render_modules_table(rows, shutil.get_terminal_size((100, 24)).columns, title))
    elif from_ns is not None or to_ns is not None or min_spans:
        what = f"no module of at least {min_spans} spans" if min_spans else "no data"
        held = f"the store holds {format_range(*extent)}" if extent else "the store is empty"
        click.echo(f"{what} in {_asked(from_ns, to_ns, now)}" + ("" if url else f"; {held}"))
    else:
        click.echo(render_modules_table(rows))


def _covered(rows: list[dict[str, Any]], from_ns: int | None, to_ns: int | None) -> str:
    """The range a table covers: the one asked, its open ends filled in from the rows' windows."""
    text = format_range(*_costed_range(rows, from_ns, to_ns))
    if from_ns is None and to_ns is None:
        return f"{text} (from store data)"
    if from_ns is None or to_ns is None:
        return f"{text} ({'start' if from_ns is None else 'end'} from store data)"
    return text


def _asked(from_ns: int | None, to_ns: int | None, now: int) -> str:
    if from_ns is None:
        return "the store" if to_ns is None else f"before {format_rfc3339(to_ns)}"
    return format_range(from_ns, now if to_ns is None else to_ns)


def _costed_range(rows: list[dict[str, Any]], from_ns: int | None, to_ns: int | None) -> tuple[int, int]:
    """The range whose costs the rows get: the one asked, else the windows found."""
    start = from_ns if from_ns is not None else min(int(r["first_window_unix_nano"]) for r in rows)
    end = to_ns if to_ns is not None else max(int(r["last_window_end_unix_nano"]) for r in rows)
    return start, end


def apply_module_costs(rows: list[dict[str, Any]], costs: Mapping[tuple[str, str, str], int]) -> None:
    """Set each row's ``cost_usd`` from micro-USD per (service, environment, module).

    A module's cost is split over its rows (one per --by split) by their adjusted self
    time, else their adjusted spans, summing back exactly.  ``None`` where the service and
    environment have no cost at all; 0 for a module that got none of its service's cost.
    """
    priced = {(svc, env) for svc, env, _ in costs}
    by_module: dict[tuple[str, str, str], list[int]] = {}
    for i, r in enumerate(rows):
        by_module.setdefault((str(r["service"]), str(r["environment"]), str(r["module"])), []).append(i)
    for key, idx in by_module.items():
        if key[:2] not in priced:
            for i in idx:
                rows[i]["cost_usd"] = None
            continue
        weights = {i: _weight(rows[i], "self_time_adjusted_sum_ns") for i in idx}
        if not any(weights.values()):
            weights = {i: _weight(rows[i], "spans_adjusted") for i in idx}
        if not any(weights.values()):
            weights = dict.fromkeys(idx, 1)
        for i, micro in apportion(costs.get(key, 0), weights).items():
            rows[i]["cost_usd"] = micro / 1e6


def _weight(row: Mapping[str, Any], column: str) -> int:
    v = row.get(column)
    return round(v) if isinstance(v, int | float) and v > 0 else 0
