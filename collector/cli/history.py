"""``prodloop history scan`` (git history into the store) and the queries over it:
``prodloop query history`` (change frequency, churn, lead time per module) and
``prodloop query coupling`` (modules that change together).  The method: docs/history.md."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from attribution.events import format_rfc3339
from collector.cli.options import (
    SettingsFlags,
    attribution_options,
    format_option,
    now_ns,
    range_options,
    store_options,
    time_range,
)
from collector.cli.render import fail, human_duration, render_table

if TYPE_CHECKING:
    from attribution.history import Commit
    from collector.app.settings import Settings
    from collector.exporters.clickhouse.store import ClickHouseStore

F = TypeVar("F", bound=Callable[..., Any])
_NS = 1_000_000_000


@click.group()
def history() -> None:
    """Git history: scan repositories; see `prodloop query history|coupling`."""


@history.command("scan")
@store_options
@attribution_options
@click.option(
    "--repo",
    "repo_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    envvar="PRODLOOP_HISTORY__REPO",
    show_envvar=True,
    help="A local git repository (a work tree or a bare clone) [default: every history.repositories entry].",
)
@click.option(
    "--repository",
    envvar="PRODLOOP_HISTORY__REPOSITORY",
    show_envvar=True,
    default=None,
    help="The repository's name, as the attribution file names it "
    "[default: the one configured repository, else the directory's name].",
)
@click.option(
    "--ref", default="HEAD", show_default=True, help="The branch or commit to scan up to (with --repo)."
)
@click.option("--full", is_flag=True, help="Read the whole history again (a new generation).")
@format_option(["text", "json"], "text")
def history_scan(
    flags: SettingsFlags, repo_path: Path | None, repository: str | None, ref: str, full: bool, fmt: str
) -> None:
    """Read a repository's commits (following the first parent through merges, and renames)
    with their files mapped to modules and owners by the attribution rules, and store them.

    Re-scans read only the commits after the last scanned head.  Without --repo, scans every
    configured repository (history.repositories: local paths, or clone URLs fetched first).
    """
    from attribution.attribute import Attributor  # noqa: PLC0415  lazy: the attribution core
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help
    from collector.app.attribution_files import load_attribution_from  # noqa: PLC0415  lazy: ruamel
    from collector.app.history import scan_configured, scan_path  # noqa: PLC0415  lazy: with the store
    from collector.errors import GitError  # noqa: PLC0415  lazy: with the store

    settings = flags.settings()
    if repo_path is None and not settings.history.repositories:
        fail("give --repo PATH, or configure history.repositories")
    attributor = Attributor(load_attribution_from(settings).repositories)
    store = build.open_store(settings)
    try:
        if repo_path is None:
            summaries = scan_configured(store, attributor, settings.history)
            if len(summaries) < len(settings.history.repositories):
                fail("some repositories could not be scanned (see the warnings above)", code=1)
        else:
            name = repository or _default_repository(attributor, repo_path)
            summaries = [scan_path(store, attributor, repo_path, name=name, ref=ref, full=full)]
    except GitError as exc:
        fail(str(exc))
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([_summary_json(s) for s in summaries], indent=2))
        return
    for s in summaries:
        kind = "incremental" if s.incremental else "full"
        click.echo(
            f"{s.repository}: {kind} scan to {s.head[:12]}: {s.new_commits} new commits "
            f"({s.state.commits} stored), {s.head_files} files at the head, {s.seconds:.1f} s"
        )


def _summary_json(s: Any) -> dict[str, Any]:
    return {
        "repository": s.repository,
        "head": s.head,
        "incremental": s.incremental,
        "new_commits": s.new_commits,
        "commits": s.state.commits,
        "head_files": s.head_files,
        "generation": s.state.generation,
        "seconds": round(s.seconds, 3),
    }


def _default_repository(attributor: Any, path: Path) -> str:
    repos = attributor.repositories
    return str(repos[0].name) if len(repos) == 1 else path.resolve().name


def _range_options(f: F) -> F:
    f = click.option(
        "--repository", envvar="PRODLOOP_QUERY__REPOSITORY", show_envvar=True, help="Only this repository."
    )(f)
    return range_options("-90d", "committer time")(f)


def _load(
    flags: SettingsFlags, since: str, until: str, repository: str | None
) -> tuple[Settings, ClickHouseStore, list[Commit], list[Commit]]:
    """The settings, the open store, the commits in range, and all commits (for the graph)."""
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help

    now = now_ns()
    start, end = time_range(since, until, now)
    settings = flags.settings()
    store = build.open_store(settings, create=False)
    everything = store.load_commits(repository)
    if not everything:
        store.close()
        fail("no git history stored: run `prodloop history scan --repo PATH` first")
    inside = [c for c in everything if start <= c.committed_at_unix_nano < end]
    return settings, store, inside, everything


@click.command("history")
@store_options
@_range_options
@click.option("--limit", type=int, default=0, help="At most N rows (0: all).")
@format_option(["table", "json"], "table")
def query_history(
    flags: SettingsFlags, since: str, until: str, repository: str | None, limit: int, fmt: str
) -> None:
    """Per module: changes (first-parent commits), churn, authors, the last change, and the
    lead time for changes (commit to the first production deploy containing it, over every
    commit that touched the module, branch commits and merges included), p50."""
    from attribution.coupling import lead_times, module_changes  # noqa: PLC0415  lazy: with the store
    from attribution.history import CommitGraph  # noqa: PLC0415  lazy: with the store

    settings, store, inside, everything = _load(flags, since, until, repository)
    try:
        deploys = store.load_deploys()
    finally:
        store.close()
    env = settings.history.production_environment
    lead: dict[tuple[str, str], int] = {}
    for repo in sorted({c.repository for c in everything}):
        graph = CommitGraph(c for c in everything if c.repository == repo)
        for t in lead_times(graph, [d for d in deploys if d.repository in ("", repo)], environment=env):
            lead[(repo, t.sha)] = t.lead_time_ns
    per_module: dict[tuple[str, str], list[int]] = defaultdict(list)
    for c in inside:
        if (c.repository, c.sha) in lead:  # every commit, branch commits and merges too (as DORA)
            for m in c.modules:
                per_module[(c.repository, m)].append(lead[(c.repository, c.sha)])
    rows: list[dict[str, Any]] = [
        {
            "repository": r.repository,
            "module": r.module,
            "changes": r.changes,
            "churn": r.churn,
            "added": r.added,
            "removed": r.removed,
            "authors": r.authors,
            "first_changed": format_rfc3339(r.first_changed_unix_nano),
            "last_changed": format_rfc3339(r.last_changed_unix_nano),
            "deployed_changes": len(per_module.get((r.repository, r.module), [])),
            "lead_time_p50_s": _median_s(per_module.get((r.repository, r.module), [])),
        }
        for r in sorted(module_changes(inside), key=lambda r: (-r.changes, -r.churn, r.repository, r.module))
    ]
    rows = rows[:limit] if limit else rows
    if fmt == "json":
        click.echo(json.dumps({"environment": env, "modules": rows}, indent=2))
        return
    if not rows:
        click.echo("(no commits in this range)")
        return
    headers = ["MODULE", "CHANGES", "CHURN", "AUTHORS", "LAST CHANGE", "LEAD p50"]
    multi = len({r["repository"] for r in rows}) > 1
    table = [
        [
            f"{r['repository']}:{r['module']}" if multi else str(r["module"]),
            str(r["changes"]),
            str(r["churn"]),
            str(r["authors"]),
            str(r["last_changed"])[:10],
            human_duration(r["lead_time_p50_s"]),
        ]
        for r in rows
    ]
    click.echo(render_table(headers, table, {1, 2, 3, 5}))
    click.echo(
        f"\nlead time: commit to the first deploy to {env} containing it (history.production_environment)"
    )


def _median_s(values: Sequence[int]) -> float | None:
    return round(statistics.median(values) / _NS, 3) if values else None


@click.command("coupling")
@store_options
@_range_options
@click.option("--min-revisions", type=click.IntRange(min=1), default=None, help="[history.coupling]")
@click.option(
    "--min-shared", "min_shared", type=click.IntRange(min=1), default=None, help="[history.coupling]"
)
@click.option("--min-coupling", type=click.FloatRange(0, 1), default=None, help="0..1 [history.coupling]")
@click.option("--max-changeset", type=click.IntRange(min=1), default=None, help="Files [history.coupling]")
@click.option("--limit", type=int, default=0, help="At most N rows (0: all).")
@format_option(["table", "json"], "table")
def query_coupling(
    flags: SettingsFlags,
    since: str,
    until: str,
    repository: str | None,
    min_revisions: int | None,
    min_shared: int | None,
    min_coupling: float | None,
    max_changeset: int | None,
    limit: int,
    fmt: str,
) -> None:
    """Pairs of modules that change in the same commits (CodeScene's change coupling):
    shared commits / the mean of the two modules' commits, with minimum-support thresholds."""
    from attribution.coupling import change_coupling  # noqa: PLC0415  lazy: with the store

    settings, store, inside, _ = _load(flags, since, until, repository)
    store.close()
    given = {
        "min_revisions": min_revisions,
        "min_shared_commits": min_shared,
        "min_coupling": min_coupling,
        "max_changeset_files": max_changeset,
    }
    cfg = settings.history.coupling.model_copy(update={k: v for k, v in given.items() if v is not None})
    thresholds = cfg.model_dump()
    pairs = change_coupling(inside, **thresholds)
    pairs = pairs[:limit] if limit else pairs
    if fmt == "json":
        out = [
            {
                "repository": p.repository,
                "module_a": p.module_a,
                "module_b": p.module_b,
                "co_changes": p.co_changes,
                "coupling": round(p.coupling, 4),
                "changes_a": p.changes_a,
                "changes_b": p.changes_b,
            }
            for p in pairs
        ]
        click.echo(json.dumps({"thresholds": thresholds, "pairs": out}, indent=2))
        return
    if not pairs:
        click.echo(
            "(no pair of modules passes the thresholds: "
            + ", ".join(f"{k}={v}" for k, v in thresholds.items())
            + ")"
        )
        return
    table = [
        [p.module_a, p.module_b, str(p.co_changes), f"{p.coupling:.0%}", str(p.changes_a), str(p.changes_b)]
        for p in pairs
    ]
    click.echo(render_table(["MODULE A", "MODULE B", "SHARED", "COUPLING", "A", "B"], table, {2, 3, 4, 5}))
