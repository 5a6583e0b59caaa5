"""``prodloop``: the command line.  Thin: it builds settings once and calls adapters.

Every option has an environment variable (shown in ``--help``); nested settings use
``PRODLOOP_SECTION__KEY`` like the YAML config and the Helm values.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from attribution import timeparse
from collector.errors import ConfigError, ProdloopError, StoreLockedError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"prodloop: error: {message}", err=True)
    sys.exit(code)


def _now_ns() -> int:
    return time.time_ns()


# -- shared options ------------------------------------------------------------------------


def store_options(f: F) -> F:
    f = click.option(
        "--database",
        envvar="PRODLOOP_STORE__DATABASE",
        show_envvar=True,
        default=None,
        help="ClickHouse database holding prodloop's tables [default: prodloop].",
    )(f)
    f = click.option(
        "--store",
        "store_dsn",
        envvar="PRODLOOP_STORE__DSN",
        show_envvar=True,
        default=None,
        help="chdb:///path (embedded, default ./.prodloop/store) or http(s)://user:pass@host:8123/db.",
    )(f)
    f = click.option(
        "--config",
        "config_file",
        envvar="PRODLOOP_CONFIG",
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="YAML config file (prodloop.yaml); flags and env vars override it.",
    )(f)
    return f


def attribution_options(f: F) -> F:
    f = click.option(
        "--source-root",
        "source_roots",
        multiple=True,
        envvar="PRODLOOP_ATTRIBUTION__SOURCE_ROOTS",
        show_envvar=True,
        help="Prefix stripped from absolute code.file.path values (repeatable).",
    )(f)
    f = click.option(
        "--attribution",
        "attribution_file",
        envvar="PRODLOOP_ATTRIBUTION__CONFIG",
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Multi-repository attribution file (repositories: name, url, services, codeowners, modules).",
    )(f)
    f = click.option(
        "--modules",
        "modules_file",
        envvar="PRODLOOP_ATTRIBUTION__MODULES",
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="modules.yaml: code location -> module rules.",
    )(f)
    f = click.option(
        "--codeowners",
        "codeowners_file",
        envvar="PRODLOOP_ATTRIBUTION__CODEOWNERS",
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="GitHub CODEOWNERS file.",
    )(f)
    return f


def _settings(
    config_file: Path | None,
    *,
    store_dsn: str | None = None,
    database: str | None = None,
    codeowners_file: Path | None = None,
    modules_file: Path | None = None,
    attribution_file: Path | None = None,
    source_roots: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Any:
    from collector.app.settings import load_settings

    overrides: dict[str, Any] = {"store": {}, "attribution": {}}
    if store_dsn:
        overrides["store"]["dsn"] = store_dsn
    if database:
        overrides["store"]["database"] = database
    if codeowners_file:
        overrides["attribution"]["codeowners"] = codeowners_file
    if modules_file:
        overrides["attribution"]["modules"] = modules_file
    if attribution_file:
        overrides["attribution"]["config"] = attribution_file
    roots = [r for chunk in source_roots for r in chunk.replace(",", " ").split()]
    if roots:
        overrides["attribution"]["source_roots"] = roots
    for k, v in (extra or {}).items():
        overrides.setdefault(k, {}).update(v)
    return load_settings(config_file, overrides)


def _open_store(settings: Any, *, migrate: bool = True) -> Any:
    from collector.exporters.clickhouse.store import ClickHouseStore, default_dsn

    dsn = settings.store.dsn or default_dsn()
    store = ClickHouseStore(dsn, settings.store.database, password=_password(settings))
    if migrate:
        store.apply_migrations()
    return store


def _load_attribution(settings: Any) -> Any:
    from collector.app.attribution_files import load_attribution_from

    return load_attribution_from(settings)


def _warn_problems(loaded: Any) -> None:
    for p in loaded.codeowners_problems:
        click.echo(f"prodloop: {p.severity}: {p.source}:{p.line}: {p.message}", err=True)
    for m in loaded.module_problems:
        click.echo(f"prodloop: {m}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreLockedError as exc:
            _fail(str(exc), 3)
        except ConfigError as exc:
            _fail(str(exc), 2)
        except ProdloopError as exc:
            _fail(str(exc), 1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="prodloop")
def main() -> None:
    """prodloop: which module, which owner, which commit - from production traces.

    Start with `prodloop demo`.  Ingest OTLP files with `prodloop ingest`, ask with
    `prodloop query modules`, and debug attribution with `prodloop explain` and `prodloop check`.
    """


# -- ingest --------------------------------------------------------------------------------


@main.command()
@click.option(
    "--traces",
    "trace_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="OTLP file: JSON lines (one request per line) or length-prefixed protobuf. Repeatable.",
)
@click.option(
    "--deploys",
    "deploy_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Deploy events, one JSON object per line (schemas/events/deploy.schema.json). Repeatable.",
)
@attribution_options
@store_options
@click.option(
    "--window-seconds",
    envvar="PRODLOOP_AGGREGATION__WINDOW_SECONDS",
    show_envvar=True,
    type=int,
    default=None,
    help="Aggregation window [default: 60].",
)
@click.option(
    "--sample-rate-attribute",
    envvar="PRODLOOP_ATTRIBUTION__SAMPLE_RATE_ATTRIBUTE",
    show_envvar=True,
    default=None,
    help="Span attribute holding '1 in N' sampling (e.g. SampleRate); else the ot=th tracestate is used.",
)
@click.option(
    "--strict",
    is_flag=True,
    envvar="PRODLOOP_STRICT",
    show_envvar=True,
    help="Exit 1 if any record was rejected.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="PRODLOOP_FORMAT",
    show_envvar=True,
)
def ingest(
    trace_files: tuple[Path, ...],
    deploy_files: tuple[Path, ...],
    codeowners_file: Path | None,
    modules_file: Path | None,
    attribution_file: Path | None,
    source_roots: tuple[str, ...],
    config_file: Path | None,
    store_dsn: str | None,
    database: str | None,
    window_seconds: int | None,
    sample_rate_attribute: str | None,
    strict: bool,
    fmt: str,
) -> None:
    """Ingest OTLP trace files (and deploy events) into the store."""
    from collector.pipelines.files import ingest as run_ingest

    extra: dict[str, Any] = {}
    if window_seconds:
        extra["aggregation"] = {"window_seconds": window_seconds}
    if sample_rate_attribute:
        extra["attribution"] = {"sample_rate_attribute": sample_rate_attribute}
    settings = _settings(
        config_file,
        store_dsn=store_dsn,
        database=database,
        codeowners_file=codeowners_file,
        modules_file=modules_file,
        attribution_file=attribution_file,
        source_roots=source_roots,
        extra=extra,
    )
    loaded = _load_attribution(settings)
    _warn_problems(loaded)
    store = _open_store(settings)
    from collector.processing.runtime import tune_gc

    tune_gc()
    try:
        summary = run_ingest(
            store,
            loaded.repositories,
            list(trace_files),
            list(deploy_files),
            now_unix_nano=_now_ns(),
            window_ns=settings.aggregation.window_seconds * 1_000_000_000,
            max_groups_per_window=settings.aggregation.max_groups_per_window,
            sample_rate_attribute=settings.attribution.sample_rate_attribute,
        )
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        _print_summary(summary)
    if strict and summary.rejected:
        sys.exit(1)


def _print_summary(s: Any) -> None:
    click.echo(f"files:            {s.files}")
    click.echo(f"records:          {s.records}")
    click.echo(f"spans read:       {s.spans_read}")
    click.echo(f"attributed:       {s.spans_attributed} ({100 * s.attributed_ratio:.1f}%)")
    for reason, n in sorted(s.unattributed_by_reason.items()):
        click.echo(f"  unattributed ({reason}): {n}")
    if s.overflow_spans:
        click.echo(f"overflow spans:   {s.overflow_spans} (cardinality cap reached)")
    click.echo(f"deploys read:     {s.deploys_read}")
    rejected = s.rejected_records + s.rejected_spans + s.deploys_rejected
    click.echo(
        f"rejected:         {rejected} ({s.rejected_records} records, {s.rejected_spans} spans, {s.deploys_rejected} deploys)"
    )
    for reason, n in sorted(s.rejected_by_reason.items()):
        click.echo(f"  {reason}: {n}")
    for m in s.messages:
        click.echo(f"  - {m}")
    click.echo(f"rows written:     {s.rows_written}")


# -- query -----------------------------------------------------------------------------------


def parse_time(value: str | None, now_ns: int) -> int | None:
    """:func:`attribution.timeparse.parse_time`, its error as click's."""
    try:
        return timeparse.parse_time(value, now_ns)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.group()
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
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    envvar="PRODLOOP_FORMAT",
    show_envvar=True,
)
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
    config_file: Path | None,
    store_dsn: str | None,
    database: str | None,
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
    settings = _settings(config_file, store_dsn=store_dsn, database=database)
    now = _now_ns()
    for t in (from_, to):  # bad times fail here, not in the service
        parse_time(t, now)
    if not url:
        try:
            store = _open_store(settings)
        except StoreLockedError:
            from collector.app.query_client import discover_service
            from collector.exporters.clickhouse.store import default_dsn

            url = discover_service(settings.store.dsn or default_dsn())
            if not url:
                raise
            click.echo(f"prodloop: the store is held by a running service; asking it at {url}", err=True)
    if url:
        from collector.app.query_client import fetch_modules

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


def _short_sha(sha: str) -> str:
    return sha[:10] if sha else "-"


def render_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def render_modules_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no data: ingest traces first, e.g. `prodloop ingest --traces FILE`, or run `prodloop demo`)"
    headers = [
        "SERVICE",
        "ENV",
        "MODULE",
        "OWNERS",
        "COMMIT",
        "SPANS",
        "ADJ",
        "ERR%",
        "P50 ms",
        "P95 ms",
        "P99 ms",
        "TOTAL s",
    ]
    body = []
    for r in rows:
        owners = ",".join(r["owners"]) or "-"
        module = r["module"]
        if r.get("unattributed_reasons"):
            module += " [" + ",".join(r["unattributed_reasons"]) + "]"
        body.append(
            [
                r["service"],
                r["environment"] or "-",
                module,
                owners if len(owners) <= 40 else owners[:37] + "...",
                _short_sha(r["commit_sha"]),
                f"{r['spans']}",
                f"{r['spans_adjusted']:.0f}",
                f"{100 * r['error_rate']:.2f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p95_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['duration_adjusted_sum_ms'] / 1000:.1f}",
            ]
        )
    return render_table(headers, body, right={5, 6, 7, 8, 9, 10, 11})


# -- explain / check -----------------------------------------------------------------------


@main.command()
@attribution_options
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PRODLOOP_CONFIG",
    show_envvar=True,
    default=None,
    help="YAML config file.",
)
@click.option(
    "--service",
    envvar="PRODLOOP_EXPLAIN__SERVICE",
    show_envvar=True,
    default="",
    help="Service, to pick its repository and service-scoped rules.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    envvar="PRODLOOP_FORMAT",
    show_envvar=True,
)
@click.argument("paths", nargs=-1, required=True)
def explain(
    codeowners_file: Path | None,
    modules_file: Path | None,
    attribution_file: Path | None,
    source_roots: tuple[str, ...],
    config_file: Path | None,
    service: str,
    fmt: str,
    paths: tuple[str, ...],
) -> None:
    """Why is PATH attributed to that module and those owners?"""
    from attribution.attribute import Attributor

    settings = _settings(
        config_file,
        codeowners_file=codeowners_file,
        modules_file=modules_file,
        attribution_file=attribution_file,
        source_roots=source_roots,
    )
    loaded = _load_attribution(settings)
    attributor = Attributor(loaded.repositories)
    results: list[dict[str, Any]] = []
    for p in paths:
        e = attributor.explain(p, service)
        results.append(
            {
                "path": e.path,
                "normalized_path": e.normalized_path,
                "repository": e.repository,
                "module": e.module,
                "module_rule": e.module_rule or None,
                "owners": list(e.owners),
                "codeowners_line": (
                    {"number": e.codeowners_line, "text": e.codeowners_text} if e.codeowners_line else None
                ),
                "unattributed_reason": e.reason or None,
            }
        )
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(f"{r['path']}")
        if r["normalized_path"] is None:
            click.echo("  unattributed: external (outside every source root; add --source-root)")
            continue
        click.echo(f"  normalized path: {r['normalized_path']}")
        click.echo(f"  module:          {r['module']}")
        click.echo(f"  module rule:     {r['module_rule']}")
        click.echo(f"  owners:          {', '.join(r['owners']) or '(none)'}")
        line = r["codeowners_line"]
        click.echo(
            f"  CODEOWNERS line: {line['number']}: {line['text']}"
            if line
            else "  CODEOWNERS line: (no line matches)"
        )


@main.command()
@attribution_options
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PRODLOOP_CONFIG",
    show_envvar=True,
    default=None,
    help="YAML config file.",
)
def check(
    codeowners_file: Path | None,
    modules_file: Path | None,
    attribution_file: Path | None,
    source_roots: tuple[str, ...],
    config_file: Path | None,
) -> None:
    """Validate CODEOWNERS and modules files; exit 1 on errors."""
    settings = _settings(
        config_file,
        codeowners_file=codeowners_file,
        modules_file=modules_file,
        attribution_file=attribution_file,
        source_roots=source_roots,
    )
    if not (settings.attribution.codeowners or settings.attribution.modules or settings.attribution.config):
        _fail("nothing to check: give --codeowners, --modules or --attribution")
    loaded = _load_attribution(settings)
    errors = 0
    warnings = 0
    for p in loaded.codeowners_problems:
        click.echo(f"{p.source}:{p.line}: {p.severity}: {p.message}")
        if p.text:
            click.echo(f"    {p.text}")
        errors += p.severity == "error"
        warnings += p.severity != "error"
    for m in loaded.module_problems:
        click.echo(str(m))
        errors += m.severity == "error"
        warnings += m.severity != "error"
    rules = sum(len(r.codeowners.rules) for r in loaded.repositories)
    modules = sum(len(r.modules.rules) for r in loaded.repositories)
    click.echo(
        f"checked {len(loaded.repositories)} repositories: {rules} CODEOWNERS rules, {modules} module rules; "
        f"{errors} errors, {warnings} warnings"
    )
    if errors:
        sys.exit(1)


# -- schema ----------------------------------------------------------------------------------


@main.group()
def schema() -> None:
    """Manage the ClickHouse schema."""


@schema.command("apply")
@store_options
@click.option(
    "--ttl-days",
    type=int,
    default=None,
    envvar="PRODLOOP_STORE__TTL_DAYS",
    show_envvar=True,
    help="Expire aggregates after N days (default: keep).",
)
def schema_apply(
    config_file: Path | None, store_dsn: str | None, database: str | None, ttl_days: int | None
) -> None:
    """Apply pending numbered migrations (idempotent)."""
    extra = {"store": {"ttl_days": ttl_days}} if ttl_days else None
    settings = _settings(config_file, store_dsn=store_dsn, database=database, extra=extra)
    store = _open_store(settings, migrate=False)
    try:
        done = store.apply_migrations()
        if settings.store.ttl_days:
            store.set_ttl(settings.store.ttl_days)
        for m in done:
            click.echo(f"applied {m.version:04d}_{m.name}")
        click.echo(
            f"schema up to date ({len(store.applied_versions())} migrations) in {store.dsn} database {store.database}"
        )
    finally:
        store.close()


# -- run -------------------------------------------------------------------------------------


@main.command()
@store_options
@attribution_options
@click.option(
    "--bootstrap-servers",
    envvar="PRODLOOP_KAFKA__BOOTSTRAP_SERVERS",
    show_envvar=True,
    default=None,
    help="Kafka brokers (host:port, comma-separated). Without Kafka, the OTLP receivers run in direct mode.",
)
@click.option(
    "--traces-topic",
    envvar="PRODLOOP_KAFKA__TRACES_TOPIC",
    show_envvar=True,
    default=None,
    help="[default: otlp_spans]",
)
@click.option(
    "--traces-encoding",
    type=click.Choice(["otlp_proto", "otlp_json", "auto"]),
    envvar="PRODLOOP_KAFKA__TRACES_ENCODING",
    show_envvar=True,
    default=None,
    help="As the Collector's kafka exporter writes it [default: otlp_proto]; auto detects per record and counts it.",
)
@click.option(
    "--group-id",
    envvar="PRODLOOP_KAFKA__GROUP_ID",
    show_envvar=True,
    default=None,
    help="Consumer group [default: prodloop].",
)
@click.option(
    "--metrics-port",
    type=int,
    envvar="PRODLOOP_SERVICE__METRICS_PORT",
    show_envvar=True,
    default=None,
    help="/metrics, /healthz, /readyz [default: 9464].",
)
@click.option(
    "--receiver-mode",
    type=click.Choice(["auto", "direct", "gateway"]),
    envvar="PRODLOOP_RECEIVER__MODE",
    show_envvar=True,
    default=None,
    help="OTLP receivers: direct (aggregate here), gateway (produce to Kafka) [default: auto, "
    "gateway when Kafka is configured].",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    envvar="PRODLOOP_RECEIVER__GRPC_PORT",
    show_envvar=True,
    default=None,
    help="OTLP/gRPC port [default: 4317; 0: any free port].",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    envvar="PRODLOOP_RECEIVER__HTTP_PORT",
    show_envvar=True,
    default=None,
    help="OTLP/HTTP and events API port [default: 4318; 0: any free port].",
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST",
    help="Address both receivers listen on (receiver.grpc_host and receiver.http_host) "
    "[default: 127.0.0.1; 0.0.0.0: every interface].",
)
def run(
    config_file: Path | None,
    store_dsn: str | None,
    database: str | None,
    codeowners_file: Path | None,
    modules_file: Path | None,
    attribution_file: Path | None,
    source_roots: tuple[str, ...],
    bootstrap_servers: str | None,
    traces_topic: str | None,
    traces_encoding: str | None,
    group_id: str | None,
    metrics_port: int | None,
    receiver_mode: str | None,
    grpc_port: int | None,
    http_port: int | None,
    listen: str | None,
) -> None:
    """Run the service: consume Kafka (or receive OTLP), attribute, aggregate, write.

    All settings can come from --config prodloop.yaml and PRODLOOP_* variables (nested
    keys joined by __, e.g. PRODLOOP_STREAM__BATCH_RECORDS); `prodloop config` prints every
    key with its effective value.
    """
    from collector.processing.runtime import catch_stop_signals

    stop = catch_stop_signals()  # first: a SIGTERM while starting up still exits cleanly
    from collector.app.service import run as run_service

    kafka: dict[str, Any] = {}
    if bootstrap_servers:
        kafka["bootstrap_servers"] = bootstrap_servers
    if traces_topic:
        kafka["traces_topic"] = traces_topic
    if traces_encoding:
        kafka["traces_encoding"] = traces_encoding
    if group_id:
        kafka["group_id"] = group_id
    extra: dict[str, Any] = {"kafka": kafka}
    if metrics_port is not None:
        extra["service"] = {"metrics_port": metrics_port}
    receiver: dict[str, Any] = {}
    if receiver_mode:
        receiver["mode"] = receiver_mode
    if grpc_port is not None:
        receiver["grpc_port"] = grpc_port
    if http_port is not None:
        receiver["http_port"] = http_port
    if listen:
        receiver["grpc_host"] = receiver["http_host"] = listen
    if receiver:
        extra["receiver"] = receiver
    settings = _settings(
        config_file,
        store_dsn=store_dsn,
        database=database,
        codeowners_file=codeowners_file,
        modules_file=modules_file,
        attribution_file=attribution_file,
        source_roots=source_roots,
        extra=extra,
    )
    sys.exit(run_service(settings, stop))


@main.command("config")
@store_options
def config_dump(config_file: Path | None, store_dsn: str | None, database: str | None) -> None:
    """Print the effective settings (secrets redacted)."""
    settings = _settings(config_file, store_dsn=store_dsn, database=database)
    click.echo(json.dumps(settings.redacted_dump(), indent=2, default=str))


# -- demo ------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--minutes",
    type=int,
    default=10,
    envvar="PRODLOOP_DEMO__MINUTES",
    show_envvar=True,
    help="Simulated minutes of traffic.",
)
@click.option(
    "--seed", type=int, default=7, envvar="PRODLOOP_DEMO__SEED", show_envvar=True, help="Random seed."
)
@click.option(
    "--store",
    "store_dsn",
    envvar="PRODLOOP_DEMO__STORE",
    show_envvar=True,
    default=None,
    help="Where the demo writes [default: chdb://./.prodloop/demo, recreated each run].",
)
def demo(minutes: int, seed: int, store_dsn: str | None) -> None:
    """Run the whole loop on a bundled demo shop, on the embedded store."""
    from collector.demo.run import run_demo

    run_demo(minutes=minutes, seed=seed, store_dsn=store_dsn, echo=click.echo)


# -- alerts ------------------------------------------------------------------------------------


@main.group()
def alerts() -> None:
    """Alert rules that open refactor tickets (rules.yaml; see docs/rules.md)."""


@alerts.command("evaluate")
@store_options
@attribution_options
@click.option(
    "--rules",
    "rules_file",
    envvar="PRODLOOP_ALERTS__RULES",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="rules.yaml [default: alerts.rules of the config].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="PRODLOOP_ALERTS__DRY_RUN",
    show_envvar=True,
    help="Print what would fire and why; create, comment and record nothing.",
)
@click.option(
    "--now",
    "now_text",
    envvar="PRODLOOP_ALERTS__NOW",
    show_envvar=True,
    default=None,
    help="Evaluate as of this time (RFC 3339, unix s, or -2h) [default: now].",
)
@click.option(
    "--settle-seconds",
    type=int,
    envvar="PRODLOOP_ALERTS__SETTLE_SECONDS",
    show_envvar=True,
    default=None,
    help="Ignore the newest data for this long (windows still being written) [default: 120].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    envvar="PRODLOOP_FORMAT",
    show_envvar=True,
)
def alerts_evaluate(
    config_file: Path | None,
    store_dsn: str | None,
    database: str | None,
    codeowners_file: Path | None,
    modules_file: Path | None,
    attribution_file: Path | None,
    source_roots: tuple[str, ...],
    rules_file: Path | None,
    dry_run: bool,
    now_text: str | None,
    settle_seconds: int | None,
    fmt: str,
) -> None:
    """Evaluate the alert rules once: print what fires and why, and (unless --dry-run) file tickets."""
    from collector.pipelines.alerts import build_alert_engine

    extra: dict[str, Any] = {"alerts": {}}
    if rules_file is not None:
        extra["alerts"]["rules"] = rules_file
    if settle_seconds is not None:
        extra["alerts"]["settle_seconds"] = settle_seconds
    settings = _settings(
        config_file,
        store_dsn=store_dsn,
        database=database,
        codeowners_file=codeowners_file,
        modules_file=modules_file,
        attribution_file=attribution_file,
        source_roots=source_roots,
        extra=extra,
    )
    if settings.alerts.rules is None:
        _fail("no rules file: give --rules FILE (or alerts.rules in the config)")
    a = settings.attribution
    repositories = _load_attribution(settings).repositories if (a.config or a.modules) else []
    now = _now_ns()
    at = parse_time(now_text, now) if now_text else now
    store = _open_store(settings)
    try:
        engine = build_alert_engine(settings, store, repositories=repositories)
        assert engine is not None
        try:
            report = engine.evaluate_once(at if at is not None else now, dry_run=dry_run)
        finally:
            for sink in engine.sinks.values():
                sink.close()
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(render_alerts(report))
    if not report.leader:
        click.echo("prodloop: another replica holds the evaluation lease; nothing was evaluated", err=True)
    for e in report.errors:
        click.echo(f"prodloop: error: {e}", err=True)
    if report.errors:
        sys.exit(1)


def render_alerts(report: Any) -> str:
    from attribution.events import format_rfc3339

    lines = [
        f"evaluated at {format_rfc3339(report.evaluated_at_unix_nano)}"
        + (" (dry run)" if report.dry_run else "")
    ]
    if not report.findings:
        lines.append("(nothing breaching)")
    else:
        body = []
        for f in report.findings:
            status = f.status
            if f.firing or f.recovered or f.status == "breach":
                status = "FIRING" if f.firing else "RECOVERED" if f.recovered else "pending"
            since = format_rfc3339(f.breach_since_unix_nano)[:19] if f.breach_since_unix_nano else "-"
            body.append(
                [
                    status,
                    f.rule.name,
                    f.key.service or "-",
                    f.key.environment or "-",
                    f.key.module or "-",
                    since,
                    f.observation.summary,
                ]
            )
        lines.append(
            render_table(["STATUS", "RULE", "SERVICE", "ENV", "MODULE", "SINCE", "WHY"], body, right=set())
        )
    if report.actions:
        lines.append("")
        for act in report.actions:
            verb = act.action if act.done else f"would {act.action}" if report.dry_run else act.action
            where = f" on {act.sink}" if act.sink else ""
            ticket = f" {act.ticket}" if act.ticket else ""
            lines.append(f"  {verb}{where}{ticket}: {act.rule} {act.module or act.service}: {act.reason}")
    return "\n".join(lines)


def _password(settings: Any) -> str | None:
    pw = settings.store.password
    return pw.get_secret_value() if pw is not None else None
