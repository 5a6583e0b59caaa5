"""Code location -> module rules (``modules.yaml``).  Pure: the adapter parses YAML and passes a mapping.

Matching order, for one span:

1. **path rules**, in file order: the first rule with a ``paths`` glob (gitignore semantics)
   that matches the repo-relative file path wins;
2. **namespace, route and span-name rules**, in file order: the first rule any of whose
   ``namespaces`` (prefix of ``code.namespace`` or ``code.function.name``), ``routes`` (glob
   on ``http.route`` or ``rpc.service/rpc.method``) or ``span_names`` (regex, searched in
   the span name) matches wins;
3. the **directory fallback**: the file's directory truncated to ``module_depth`` parts;
4. otherwise the span is unattributed.

A rule with ``services`` applies only to spans of those services.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attribution.globs import GlobSyntaxError, compile_glob
from attribution.globset import GlobSet

ROOT_MODULE = "(root)"
_NAMESPACE_SEPARATORS = frozenset(".:/#\\$")


class ModuleConfigError(ValueError):
    """A bad ``modules.yaml``.  The message names the file and the key."""


@dataclass(frozen=True, slots=True)
class ModuleProblem:
    source: str
    line: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        loc = f"{self.source}:{self.line}" if self.line else self.source
        return f"{loc}: {self.severity}: {self.message}"


def _route_regex(glob: str) -> re.Pattern[str]:
    """Route globs: ``**`` any characters, ``*`` any except ``/``, ``?`` one except ``/``."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class ModuleRule:
    name: str
    index: int
    line: int = 0
    paths: tuple[str, ...] = ()
    services: frozenset[str] = frozenset()
    namespaces: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    span_names: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    _path_matchers: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    _route_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _name_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    @property
    def describe(self) -> str:
        parts = []
        if self.paths:
            parts.append("paths=" + ",".join(self.paths))
        if self.namespaces:
            parts.append("namespaces=" + ",".join(self.namespaces))
        if self.routes:
            parts.append("routes=" + ",".join(self.routes))
        if self.span_names:
            parts.append("span_names=" + ",".join(self.span_names))
        where = f" (line {self.line})" if self.line else ""
        return f"modules[{self.index}] {self.name}{where}: " + " ".join(parts)

    def applies_to(self, service: str) -> bool:
        return not self.services or service in self.services

    def match_path(self, path: str) -> bool:
        return any(m.match(path) for m in self._path_matchers)

    @property
    def has_other(self) -> bool:
        return bool(self.namespaces or self.routes or self.span_names)

    def match_other(self, namespace: str, function: str, route: str, rpc: str, span_name: str) -> bool:
        for prefix in self.namespaces:
            for value in (namespace, function):
                if value and value.startswith(prefix):
                    if len(value) == len(prefix) or prefix[-1] in _NAMESPACE_SEPARATORS:
                        return True
                    if value[len(prefix)] in _NAMESPACE_SEPARATORS:
                        return True
        for rx in self._route_res:
            if (route and rx.match(route)) or (rpc and rx.match(rpc)):
                return True
        return any(rx.search(span_name) for rx in self._name_res)


def _unknown_key(key: Any, known: set[str]) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1)
    tail = f"did you mean {close[0]!r}?" if close else f"expected one of {sorted(known)}"
    return f"unknown key {key!r}; {tail}"


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ModuleConfigError(f"{where}: must be a list of non-empty strings")
    return tuple(value)


@dataclass(frozen=True)
class ModuleConfig:
    source: str = "(no modules file)"
    source_roots: tuple[str, ...] = ()
    module_depth: int = 2
    rules: tuple[ModuleRule, ...] = ()

    @staticmethod
    def from_mapping(
        data: Mapping[str, Any] | None,
        source: str = "modules.yaml",
        *,
        lines: Mapping[int, int] | None = None,
        extra_source_roots: Sequence[str] = (),
    ) -> ModuleConfig:
        """Validate a parsed ``modules.yaml``.  ``lines`` maps rule index -> line number."""
        data = data or {}
        if not isinstance(data, Mapping):
            raise ModuleConfigError(
                f"{source}: must be a mapping with source_roots, module_depth and modules"
            )
        known = {"source_roots", "module_depth", "modules"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModuleConfigError(f"{source}: {_unknown_key(unknown[0], known)}")
        roots = list(_str_list(data.get("source_roots"), f"{source}: source_roots"))
        roots.extend(extra_source_roots)
        for r in roots:
            if not r.startswith("/"):
                raise ModuleConfigError(f"{source}: source_roots: {r!r} must be an absolute path")
        depth = data.get("module_depth", 2)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ModuleConfigError(f"{source}: module_depth: must be a positive integer, got {depth!r}")
        raw_rules = data.get("modules") or []
        if not isinstance(raw_rules, list):
            raise ModuleConfigError(f"{source}: modules: must be a list of rules")
        rules = []
        rule_keys = {"name", "paths", "services", "namespaces", "routes", "span_names", "owners"}
        for i, raw in enumerate(raw_rules):
            line = (lines or {}).get(i, 0)
            where = f"{source}:{line}: modules[{i}]" if line else f"{source}: modules[{i}]"
            if not isinstance(raw, Mapping):
                raise ModuleConfigError(
                    f"{where}: must be a mapping with name and paths/namespaces/routes/span_names"
                )
            bad = sorted(set(raw) - rule_keys)
            if bad:
                raise ModuleConfigError(f"{where}: {_unknown_key(bad[0], rule_keys)}")
            name = raw.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ModuleConfigError(f"{where}.name: is required and must be a non-empty string")
            paths = _str_list(raw.get("paths"), f"{where}.paths")
            namespaces = _str_list(raw.get("namespaces"), f"{where}.namespaces")
            routes = _str_list(raw.get("routes"), f"{where}.routes")
            span_names = _str_list(raw.get("span_names"), f"{where}.span_names")
            if not (paths or namespaces or routes or span_names):
                raise ModuleConfigError(
                    f"{where} ({name}): needs at least one of paths, namespaces, routes, span_names"
                )
            matchers = []
            for j, p in enumerate(paths):
                try:
                    matchers.append(compile_glob(p))
                except GlobSyntaxError as exc:
                    raise ModuleConfigError(f"{where}.paths[{j}]: {p!r}: {exc}") from None
            name_res = []
            for j, rx in enumerate(span_names):
                try:
                    name_res.append(re.compile(rx))
                except re.error as exc:
                    raise ModuleConfigError(
                        f"{where}.span_names[{j}]: {rx!r} is not a valid regex: {exc}"
                    ) from None
            rules.append(
                ModuleRule(
                    name=name.strip(),
                    index=i,
                    line=line,
                    paths=paths,
                    services=frozenset(_str_list(raw.get("services"), f"{where}.services")),
                    namespaces=namespaces,
                    routes=routes,
                    span_names=span_names,
                    owners=tuple(sorted(set(_str_list(raw.get("owners"), f"{where}.owners")))),
                    _path_matchers=tuple(matchers),
                    _route_res=tuple(_route_regex(r) for r in routes),
                    _name_res=tuple(name_res),
                )
            )
        # longest root first, so nested roots strip the most specific prefix
        ordered_roots = tuple(sorted({r.rstrip("/") or "/" for r in roots}, key=len, reverse=True))
        return ModuleConfig(source=source, source_roots=ordered_roots, module_depth=depth, rules=tuple(rules))


class ModuleMatcher:
    """Applies a :class:`ModuleConfig`.  Stateless apart from compiled rules."""

    def __init__(self, config: ModuleConfig) -> None:
        self.config = config
        self._path_rules = tuple(r for r in config.rules if r.paths)
        self._other_rules = tuple(r for r in config.rules if r.has_other)
        # every path glob of every rule, in file order, indexed (see GlobSet): a lookup tests
        # only the globs a path can match, not every rule
        self._glob_owner: list[ModuleRule] = []
        globs = []
        for rule in self._path_rules:
            for m in rule._path_matchers:
                globs.append(m)
                self._glob_owner.append(rule)
        self._globs = GlobSet(globs)

    def normalize(self, path: str) -> str | None:
        """Repo-relative POSIX path, or None when the path lies outside every source root."""
        p = path.strip()
        if p.startswith("file://"):
            p = p[len("file://") :]
        if "\\" in p:
            p = p.replace("\\", "/")
        if p.startswith("/"):
            for root in self.config.source_roots:
                if root == "/":
                    p = p[1:]
                    break
                if p.startswith(root) and (len(p) == len(root) or p[len(root)] == "/"):
                    p = p[len(root) + 1 :]
                    break
            else:
                return None
        p = posixpath.normpath(p) if p else p
        if p in ("", ".") or p.startswith("../") or p == "..":
            return None
        return p

    def match_path(self, rel_path: str, service: str) -> ModuleRule | None:
        """The first rule (in file order) with a path glob matching ``rel_path``."""
        for i in sorted(self._globs.all(rel_path)):
            rule = self._glob_owner[i]
            if rule.applies_to(service):
                return rule
        return None

    def match_other(
        self, service: str, namespace: str, function: str, route: str, rpc: str, span_name: str
    ) -> ModuleRule | None:
        for rule in self._other_rules:
            if rule.applies_to(service) and rule.match_other(namespace, function, route, rpc, span_name):
                return rule
        return None

    def fallback(self, rel_path: str) -> str:
        directory = posixpath.dirname(rel_path)
        if not directory:
            return ROOT_MODULE
        return "/".join(directory.split("/")[: self.config.module_depth])

    def problems(self) -> list[ModuleProblem]:
        """Rules that can never match because an earlier rule shadows them."""
        out: list[ModuleProblem] = []
        seen_names: dict[str, int] = {}
        for rule in self.config.rules:
            if rule.name in seen_names:
                out.append(
                    ModuleProblem(
                        self.config.source,
                        rule.line,
                        f"module {rule.name!r} is also defined by modules[{seen_names[rule.name]}]; "
                        "both rules feed the same module (fine if intended)",
                        "warning",
                    )
                )
            seen_names.setdefault(rule.name, rule.index)
        for i, rule in enumerate(self.config.rules):
            if not rule.paths or rule.has_other:
                continue
            for earlier in self.config.rules[:i]:
                if not earlier.paths:
                    continue
                if earlier.services and (not rule.services or not rule.services <= earlier.services):
                    continue
                if all(_glob_covers(e, p) for p in rule.paths for e in [earlier.paths]):
                    out.append(
                        ModuleProblem(
                            self.config.source,
                            rule.line,
                            f"rule modules[{rule.index}] {rule.name!r} can never match: every path it matches is "
                            f"matched first by modules[{earlier.index}] {earlier.name!r} ({', '.join(earlier.paths)})",
                        )
                    )
                    break
        return out


def _glob_covers(earlier: tuple[str, ...], pattern: str) -> bool:
    """Conservative: does one of ``earlier`` match every path ``pattern`` can match?"""
    probe = _probe_paths(pattern)
    if not probe:
        return False
    matchers = [compile_glob(e) for e in earlier]
    if any(e == pattern for e in earlier):
        return True
    for e, m in zip(earlier, matchers, strict=True):
        if e.endswith("/**") and pattern.startswith(e[:-2]):
            return True
        if e in ("**", "*", "**/*") and m.match(probe[0]):
            return True
    return False


def _probe_paths(pattern: str) -> list[str]:
    sample = pattern.lstrip("/").replace("**", "x/y").replace("*", "x").replace("?", "x")
    return [sample] if sample else []
