"""The CLI's shared options, and how flags become :class:`Settings`.

Every option has an environment variable (shown in ``--help``); nested settings use
``PRODLOOP_SECTION__KEY`` like the YAML config and the Helm values.  Flags override the
environment, which overrides the config file (``collector/app/settings.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from attribution import timeparse
from collector.ports import parse_splits

if TYPE_CHECKING:
    from collector.app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

# what a command passes on to load_settings: section -> key -> value (None: not given)
Overrides = dict[str, dict[str, Any]]

_CONFIG_HELP = "YAML config file (prodloop.yaml); flags and env vars override it."


def config_option(help: str = _CONFIG_HELP) -> Callable[[F], F]:
    """``--config FILE`` (``PRODLOOP_CONFIG``)."""
    return _file_option("--config", "config_file", "PRODLOOP_CONFIG", help)


def rules_option(help: str) -> Callable[[F], F]:
    """``--rules FILE`` (``PRODLOOP_ALERTS__RULES``)."""
    return _file_option("--rules", "rules_file", "PRODLOOP_ALERTS__RULES", help)


def format_option(choices: Sequence[str], default: str) -> Callable[[F], F]:
    """``--format`` (``PRODLOOP_FORMAT``)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        envvar="PRODLOOP_FORMAT",
        show_envvar=True,
    )


def _file_option(flag: str, dest: str, envvar: str, help: str) -> Callable[[F], F]:
    return click.option(
        flag,
        dest,
        envvar=envvar,
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help,
    )


@dataclass(frozen=True)
class SettingsFlags:
    """The flags of :func:`store_options` and :func:`attribution_options`, as a command receives them
    (its ``flags`` argument); :meth:`settings` makes them :class:`Settings`."""

    config_file: Path | None = None
    store_dsn: str | None = None
    database: str | None = None
    codeowners_file: Path | None = None
    modules_file: Path | None = None
    attribution_file: Path | None = None
    source_roots: tuple[str, ...] = ()

    def settings(self, extra: Overrides | None = None) -> Settings:
        """The settings: the config file, the environment, then these flags (given ones only)."""
        from collector.app.settings import load_settings  # noqa: PLC0415  lazy: pydantic costs 0.3 s of --help

        overrides: Overrides = {"store": {}, "attribution": {}}
        if self.store_dsn:
            overrides["store"]["dsn"] = self.store_dsn
        if self.database:
            overrides["store"]["database"] = self.database
        if self.codeowners_file:
            overrides["attribution"]["codeowners"] = self.codeowners_file
        if self.modules_file:
            overrides["attribution"]["modules"] = self.modules_file
        if self.attribution_file:
            overrides["attribution"]["config"] = self.attribution_file
        roots = [r for chunk in self.source_roots for r in chunk.replace(",", " ").split()]
        if roots:
            overrides["attribution"]["source_roots"] = roots
        for k, v in (extra or {}).items():
            overrides.setdefault(k, {}).update(v)
        return load_settings(self.config_file, dict(overrides))


_FLAGS = tuple(f.name for f in dataclasses.fields(SettingsFlags))


def _as_flags(f: F) -> F:
    """Hand the command one ``flags`` argument instead of the settings flags one by one."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _FLAGS if name in kwargs}
        kwargs["flags"] = dataclasses.replace(kwargs.get("flags") or SettingsFlags(), **given)
        return f(*args, **kwargs)

    return cast(F, command)


def store_options(f: F) -> F:
    """``--config``, ``--store`` and ``--database`` (the command gets them as ``flags``)."""
    f = _as_flags(f)
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
    return config_option()(f)


def attribution_options(f: F) -> F:
    """``--codeowners``, ``--modules``, ``--attribution`` and ``--source-root`` (as ``flags``)."""
    f = _as_flags(f)
    f = click.option(
        "--source-root",
        "source_roots",
        multiple=True,
        envvar="PRODLOOP_ATTRIBUTION__SOURCE_ROOTS",
        show_envvar=True,
        help="Prefix stripped from absolute code.file.path values (repeatable).",
    )(f)
    f = _file_option(
        "--attribution",
        "attribution_file",
        "PRODLOOP_ATTRIBUTION__CONFIG",
        "Multi-repository attribution file (repositories: name, url, services, codeowners, modules).",
    )(f)
    f = _file_option(
        "--modules",
        "modules_file",
        "PRODLOOP_ATTRIBUTION__MODULES",
        "modules.yaml: code location -> module rules.",
    )(f)
    return _file_option(
        "--codeowners", "codeowners_file", "PRODLOOP_ATTRIBUTION__CODEOWNERS", "GitHub CODEOWNERS file."
    )(f)


def now_ns() -> int:
    return time.time_ns()


def parse_time(value: str | None, now: int) -> int | None:
    """:func:`attribution.timeparse.parse_time`, its error as click's."""
    try:
        return timeparse.parse_time(value, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def range_options(default_since: str, of: str = "") -> Callable[[F], F]:
    """``--since``/``--from`` and ``--until``/``--to`` (the command gets ``since`` and ``until``;
    :func:`time_range` turns them into nanoseconds).  ``of``: what the range selects."""
    suffix = f" ({of})" if of else ""

    def decorate(f: F) -> F:
        f = click.option(
            "--until",
            "--to",
            "until",
            envvar="PRODLOOP_QUERY__UNTIL",
            show_envvar=True,
            default="now",
            show_default=True,
            help=f"End, exclusive{suffix}.",
        )(f)
        return click.option(
            "--since",
            "--from",
            "since",
            envvar="PRODLOOP_QUERY__SINCE",
            show_envvar=True,
            default=default_since,
            show_default=True,
            help=f"Start{suffix}: RFC 3339, unix s, or {default_since}.",
        )(f)

    return decorate


def splits_option(value: str | None) -> tuple[str, ...]:
    """``--by``'s value as :func:`collector.ports.parse_splits`, its error as click's."""
    try:
        return parse_splits(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--by") from None


def time_range(since: str, until: str, now: int) -> tuple[int, int]:
    """``--since`` and ``--until`` as ``[start, end)`` in Unix nanoseconds; end after start."""
    start, end = parse_time(since, now), parse_time(until, now)
    assert start is not None and end is not None
    if end <= start:
        raise click.BadParameter(f"--until {until!r} is not after --since {since!r}")
    return start, end
