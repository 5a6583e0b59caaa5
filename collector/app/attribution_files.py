"""Reading attribution config files: CODEOWNERS, modules.yaml and the multi-repository file.

The core (``attribution/``) never touches files; this adapter reads them, keeps line
numbers for messages, and hands parsed values in.

Multi-repository file (``--attribution repos.yaml``)::

    repositories:
      - name: shop
        url: https://github.com/acme/shop
        services: [frontend, checkout, payments]
        codeowners: shop/CODEOWNERS        # relative to this file
        modules: shop/modules.yaml
        source_roots: ["/srv/shop"]        # added to the modules file's own
      - name: billing
        url: https://github.com/acme/billing
        services: [invoicing]
        codeowners: billing/.github/CODEOWNERS

A span's repository comes from its service, else from its ``vcs.repository.url.full``
resource attribute; a repository that lists no services is the default for the rest.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from attribution.codeowners import CodeOwners, CodeOwnersProblem
from attribution.modules import ModuleConfig, ModuleConfigError, ModuleMatcher, ModuleProblem
from attribution.repository import Repository
from collector.app.yaml_files import load_yaml, read_config_text, yaml_position
from collector.errors import ConfigError

if TYPE_CHECKING:
    from collector.app.settings import Settings


@dataclass
class LoadedAttribution:
    repositories: list[Repository]
    codeowners_problems: list[CodeOwnersProblem] = field(default_factory=list)
    module_problems: list[ModuleProblem] = field(default_factory=list)


def load_codeowners(path: Path | None) -> CodeOwners:
    if path is None:
        return CodeOwners.parse("", "(no CODEOWNERS)")
    return CodeOwners.parse(read_config_text(path, "CODEOWNERS"), str(path))


_NO_MODULES_FILE = "(no modules file)"


def load_modules(path: Path | None, extra_source_roots: Sequence[str] = ()) -> ModuleConfig:
    if path is None:
        return ModuleConfig.from_mapping({}, _NO_MODULES_FILE, extra_source_roots=extra_source_roots)
    data = load_yaml(path, "modules file")
    lines: dict[int, int] = {}
    if isinstance(data, CommentedMap):
        seq = data.get("modules")
        if isinstance(seq, CommentedSeq):
            for i in range(len(seq)):
                with contextlib.suppress(KeyError, AttributeError, TypeError):
                    lines[i] = seq.lc.item(i)[0] + 1
    try:
        return ModuleConfig.from_mapping(
            _plain(data), str(path), lines=lines, extra_source_roots=extra_source_roots
        )
    except ModuleConfigError as exc:
        raise ConfigError(_located(path, data, str(exc))) from None


_MODULE_INDEX = re.compile(r"\bmodules\[(\d+)\]")
_TOP_KEY = re.compile(r"^(source_roots|module_depth|modules):|^unknown key '([^']*)'")


def _located(path: Path, data: Any, message: str) -> str:
    """A modules file error as ``file:line:column: error: ...``."""
    rest = re.sub(rf"^{re.escape(str(path))}(:\d+)?: ", "", message)
    index = _MODULE_INDEX.match(rest)
    top = _TOP_KEY.match(rest)
    loc: list[str | int] = ["modules", int(index.group(1))] if index else []
    if top:
        loc = [top.group(1) or top.group(2)]
    line, col = yaml_position(data, loc, key=top is not None and top.group(2) is not None) or (1, 1)
    return f"{path}:{line}:{col}: error: {rest}"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def load_attribution(
    *,
    config: Path | None = None,
    codeowners: Path | None = None,
    modules: Path | None = None,
    source_roots: Sequence[str] = (),
    repository_url: str = "",
) -> LoadedAttribution:
    """Build repositories from a multi-repository file or the single-file shorthand."""
    if config is not None and (codeowners is not None or modules is not None):
        raise ConfigError(
            "give either --attribution (a multi-repository file) or --codeowners/--modules, not both"
        )
    out = LoadedAttribution(repositories=[])
    if config is None:
        co = load_codeowners(codeowners)
        mc = load_modules(modules, source_roots)
        out.repositories.append(Repository(name="default", url=repository_url, codeowners=co, modules=mc))
    else:
        data = _plain(load_yaml(config, "attribution file"))
        if not isinstance(data, dict) or not isinstance(data.get("repositories"), list):
            raise ConfigError(f"{config}: expected a mapping with a 'repositories' list")
        names: set[str] = set()
        for i, raw in enumerate(data["repositories"]):
            where = f"{config}: repositories[{i}]"
            if not isinstance(raw, dict):
                raise ConfigError(f"{where}: must be a mapping")
            allowed = {"name", "url", "services", "codeowners", "modules", "source_roots"}
            bad = sorted(set(raw) - allowed)
            if bad:
                raise ConfigError(f"{where}: unknown key {bad[0]!r} (expected one of {sorted(allowed)})")
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}.name: is required")
            if name in names:
                raise ConfigError(f"{where}.name: {name!r} is listed twice")
            names.add(name)
            services = raw.get("services") or []
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise ConfigError(f"{where}.services: must be a list of service names")
            roots = raw.get("source_roots") or []
            if not isinstance(roots, list) or not all(isinstance(s, str) for s in roots):
                raise ConfigError(f"{where}.source_roots: must be a list of absolute paths")
            base = config.parent

            def rel(
                key: str, where: str = where, raw: dict[str, Any] = raw, base: Path = base
            ) -> Path | None:
                v = raw.get(key)
                if v is None:
                    return None
                if not isinstance(v, str):
                    raise ConfigError(f"{where}.{key}: must be a file path")
                p = Path(v)
                return p if p.is_absolute() else base / p

            out.repositories.append(
                Repository(
                    name=name,
                    url=str(raw.get("url") or ""),
                    services=frozenset(services),
                    codeowners=load_codeowners(rel("codeowners")),
                    modules=load_modules(rel("modules"), [*roots, *source_roots]),
                )
            )
        if not out.repositories:
            raise ConfigError(f"{config}: 'repositories' is empty")
    for repo in out.repositories:
        out.codeowners_problems.extend(repo.codeowners.problems)
        if not repo.modules.rules and repo.modules.source != _NO_MODULES_FILE:
            out.module_problems.append(
                ModuleProblem(repo.modules.source, 1, "no module rules (is the file empty?)", "warning")
            )
        out.module_problems.extend(ModuleMatcher(repo.modules).problems())
    return out


def load_attribution_from(settings: Settings) -> LoadedAttribution:
    """:func:`load_attribution` from ``Settings.attribution``."""
    a = settings.attribution
    return load_attribution(
        config=a.config,
        codeowners=a.codeowners,
        modules=a.modules,
        source_roots=a.source_roots,
        repository_url=a.repository,
    )
