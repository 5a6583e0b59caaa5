"""Attribution: span -> repository, module, owners, commit and deploy.  Pure.

``Attributor.attribute(span)`` returns an :class:`Attribution` or an :class:`Unattributed`
(with a reason); it never raises for bad data.  Results are cached per distinct code
location, so the hot path is a couple of dict lookups per span.

``Attributor.group_of(span)`` is the hot-path entry used by the aggregator: it returns a
small int naming the span's full group (service, environment, repository, module, owners,
commit, deploy, unattributed reason).  ``Attributor.group(i)`` turns it back into a
:class:`GroupKey`.  Dictionary-encoding keeps per-span hashing to one int.

Commit, first source that applies:

1. the resource attribute ``vcs.ref.head.revision``;
2. ``service.version`` when it is a 7-40 character hex SHA;
3. the deploy timeline: the latest live deploy of (service, environment) at or before the
   span's start.

Otherwise the commit is "" (unknown), never a guess.  The deploy id is the timeline's deploy
at the span's start when its commit is the span's commit, else "".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from attribution.codeowners import CodeOwners
from attribution.deploys import DeployTimeline
from attribution.model import (
    CODE_FILE_PATH,
    CODE_FILEPATH_OLD,
    CODE_FUNCTION_NAME,
    CODE_FUNCTION_OLD,
    CODE_NAMESPACE,
    HTTP_ROUTE,
    RPC_METHOD,
    RPC_SERVICE,
    UNATTRIBUTED_MODULE,
    Attribution,
    DeployEvent,
    Resource,
    Span,
    Unattributed,
)
from attribution.modules import ModuleConfig, ModuleMatcher

_HEX_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")
_NO_DEPLOY: tuple[int, int, str, str] = (0, -1, "", "")


@dataclass(frozen=True)
class Repository:
    """One repository: its services, CODEOWNERS and module rules."""

    name: str
    url: str = ""
    services: frozenset[str] = frozenset()
    codeowners: CodeOwners = field(default_factory=lambda: CodeOwners.parse("", "(no CODEOWNERS)"))
    modules: ModuleConfig = field(default_factory=ModuleConfig)


class GroupKey(NamedTuple):
    service: str
    environment: str
    repository: str
    module: str
    owners: tuple[str, ...]
    commit_sha: str
    deploy_id: str
    unattributed_reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    path: str
    normalized_path: str | None
    repository: str
    module: str
    module_rule: str
    owners: tuple[str, ...]
    codeowners_line: int
    codeowners_text: str
    reason: str = ""


def normalize_repo_url(url: str) -> str:
    u = url.strip().rstrip("/")
    if u.endswith(".git"):
        u = u[:-4]
    if u.startswith("git@") and ":" in u:
        host, _, path = u[4:].partition(":")
        u = f"https://{host}/{path}"
    return u.lower()


class Attributor:
    """Attributes spans.  Holds caches; not thread-safe (one per pipeline)."""

    def __init__(
        self,
        repositories: Sequence[Repository],
        timeline: DeployTimeline | None = None,
        *,
        cache_limit: int = 200_000,
    ) -> None:
        if not repositories:
            repositories = [Repository(name="default")]
        self.repositories = tuple(repositories)
        self.timeline = timeline if timeline is not None else DeployTimeline()
        self._matchers = {r.name: ModuleMatcher(r.modules) for r in self.repositories}
        self._by_service: dict[str, Repository] = {}
        self._by_url: dict[str, Repository] = {}
        for r in self.repositories:
            for s in r.services:
                self._by_service.setdefault(s, r)
            if r.url:
                self._by_url.setdefault(normalize_repo_url(r.url), r)
        # the default repository: the one that lists no services, else the only one
        unscoped = [r for r in self.repositories if not r.services]
        self._default: Repository | None = (
            unscoped[0] if unscoped else (self.repositories[0] if len(self.repositories) == 1 else None)
        )
        self._cache_limit = cache_limit
        self._loc_cache: dict[tuple[str, str, str, str, str, str, str, str], Attribution | Unattributed] = {}
        self._resource_repo: dict[Resource, Repository | None] = {}
        self._static_commit: dict[Resource, str] = {}
        self._deploy_cache: dict[tuple[str, str], tuple[int, int, str, str]] = {}
        self._deploy_cache_version = self.timeline.version
        self._groups: list[GroupKey] = []
        self._group_ids: dict[tuple[object, ...], int] = {}

    # -- repository --------------------------------------------------------------------

    def repository_for(self, resource: Resource) -> Repository | None:
        try:
            return self._resource_repo[resource]
        except KeyError:
            pass
        repo = self._by_service.get(resource.service)
        if repo is None and resource.repository:
            repo = self._by_url.get(normalize_repo_url(resource.repository))
        if repo is None:
            repo = self._default
        self._resource_repo[resource] = repo
        return repo

    # -- module and owners ---------------------------------------------------------------

    def attribute(self, span: Span) -> Attribution | Unattributed:
        a = span.attributes
        file = a.get(CODE_FILE_PATH) or a.get(CODE_FILEPATH_OLD) or ""
        ns = a.get(CODE_NAMESPACE) or ""
        fn = a.get(CODE_FUNCTION_NAME) or a.get(CODE_FUNCTION_OLD) or ""
        route = a.get(HTTP_ROUTE) or ""
        rpc_s = a.get(RPC_SERVICE) or ""
        rpc_m = a.get(RPC_METHOD) or ""
        rpc = f"{rpc_s}/{rpc_m}" if rpc_s or rpc_m else ""
        res = span.resource
        key = (res.service, res.repository, str(file), str(ns), str(fn), str(route), rpc, span.name)
        try:
            return self._loc_cache[key]
        except KeyError:
            pass
        result = self._attribute_uncached(res, str(file), str(ns), str(fn), str(route), rpc, span.name)
        if len(self._loc_cache) >= self._cache_limit:
            self._loc_cache.clear()
        self._loc_cache[key] = result
        return result

    def _attribute_uncached(
        self, res: Resource, file: str, ns: str, fn: str, route: str, rpc: str, name: str
    ) -> Attribution | Unattributed:
        repo = self.repository_for(res)
        if repo is None:
            return Unattributed("no_repository", f"service {res.service!r} is not listed in any repository")
        matcher = self._matchers[repo.name]
        rel: str | None = None
        if file:
            rel = matcher.normalize(file)
            if rel is not None:
                rule = matcher.match_path(rel, res.service)
                if rule is not None:
                    return self._make(repo, rel, rule.name, rule.describe, rule.owners)
        rule = matcher.match_other(res.service, ns, fn, route, rpc, name)
        if rule is not None:
            return self._make(repo, rel or "", rule.name, rule.describe, rule.owners)
        if rel is not None:
            return self._make(
                repo,
                rel,
                matcher.fallback(rel),
                f"directory fallback (module_depth={matcher.config.module_depth})",
                (),
            )
        if file:
            return Unattributed(
                "external", f"{file} is outside every source root of repository {repo.name!r}"
            )
        if ns or fn or route or rpc:
            return Unattributed("no_rule", "no module rule matches this span's namespace, function or route")
        return Unattributed(
            "no_location", "span has no code.* attributes and no rule matches its name or route"
        )

    @staticmethod
    def _make(
        repo: Repository, rel: str, module: str, rule: str, rule_owners: tuple[str, ...]
    ) -> Attribution:
        line = 0
        owners: tuple[str, ...] = ()
        if rel:
            matched = repo.codeowners.match(rel)
            if matched is not None:
                line = matched.line
                owners = tuple(sorted(set(matched.owners)))
        if not owners and not line and rule_owners:
            owners = rule_owners
        return Attribution(
            repository=repo.url or repo.name,
            path=rel,
            module=module,
            module_rule=rule,
            owners=owners,
            codeowners_line=line,
        )

    # -- commit and deploy -------------------------------------------------------------

    def static_commit(self, resource: Resource) -> str:
        try:
            return self._static_commit[resource]
        except KeyError:
            pass
        commit = ""
        if resource.vcs_revision and _HEX_SHA.match(resource.vcs_revision):
            commit = resource.vcs_revision.lower()
        elif resource.service_version and _HEX_SHA.match(resource.service_version):
            commit = resource.service_version.lower()
        self._static_commit[resource] = commit
        return commit

    def deploy_at(self, service: str, environment: str, t: int) -> tuple[str, str]:
        """(commit_sha, deploy_id) of the timeline at ``t``; ("", "") if none."""
        if self._deploy_cache_version != self.timeline.version:
            self._deploy_cache.clear()
            self._deploy_cache_version = self.timeline.version
        key = (service, environment)
        lo, hi, commit, deploy_id = self._deploy_cache.get(key, _NO_DEPLOY)
        if lo <= t < hi:
            return commit, deploy_id
        for start, until, ev in self.timeline.intervals(service, environment):
            if start <= t < until:
                self._deploy_cache[key] = (start, until, ev.commit_sha, ev.deploy_id)
                return ev.commit_sha, ev.deploy_id
        return "", ""

    def commit_of(self, span: Span) -> tuple[str, str]:
        res = span.resource
        commit = self.static_commit(res)
        dep_commit, dep_id = self.deploy_at(res.service, res.environment, span.start_unix_nano)
        if not commit:
            return dep_commit, dep_id
        return commit, (dep_id if dep_commit == commit else "")

    # -- groups (hot path) ---------------------------------------------------------------

    def group_of(self, span: Span) -> tuple[int, bool]:
        """(group id, attributed?) for the span."""
        attribution = self.attribute(span)
        commit, deploy_id = self.commit_of(span)
        res = span.resource
        gkey = (attribution, res.service, res.environment, commit, deploy_id)
        gid = self._group_ids.get(gkey)
        if gid is None:
            gid = self._new_group(gkey, attribution, res, commit, deploy_id)
        return gid, type(attribution) is Attribution

    def _new_group(
        self,
        gkey: tuple[object, ...],
        attribution: Attribution | Unattributed,
        res: Resource,
        commit: str,
        deploy_id: str,
    ) -> int:
        if isinstance(attribution, Attribution):
            key = GroupKey(
                res.service,
                res.environment,
                attribution.repository,
                attribution.module,
                attribution.owners,
                commit,
                deploy_id,
                "",
            )
        else:
            repo = self.repository_for(res)
            key = GroupKey(
                res.service,
                res.environment,
                (repo.url or repo.name) if repo else "",
                UNATTRIBUTED_MODULE,
                (),
                commit,
                deploy_id,
                attribution.reason,
            )
        gid = len(self._groups)
        self._groups.append(key)
        self._group_ids[gkey] = gid
        return gid

    def group(self, gid: int) -> GroupKey:
        return self._groups[gid]

    def overflow_group(self, key: GroupKey) -> int:
        """The ``(overflow)`` group of the same service and environment."""
        from attribution.model import OVERFLOW_MODULE

        gkey = ("overflow", key.service, key.environment)
        gid = self._group_ids.get(gkey)
        if gid is None:
            gid = len(self._groups)
            self._groups.append(
                GroupKey(key.service, key.environment, "", OVERFLOW_MODULE, (), "", "", "overflow")
            )
            self._group_ids[gkey] = gid
        return gid

    # -- explain -------------------------------------------------------------------------

    def explain(self, path: str, service: str = "") -> Explanation:
        """Why is this path attributed to that module and those owners?"""
        res = Resource(service=service or "")
        repo = self._by_service.get(service) if service else None
        repo = repo or self._default or self.repositories[0]
        matcher = self._matchers[repo.name]
        rel = matcher.normalize(path)
        if rel is None:
            return Explanation(path, None, repo.name, UNATTRIBUTED_MODULE, "", (), 0, "", "external")
        rule = matcher.match_path(rel, res.service)
        if rule is not None:
            module, rule_desc = rule.name, rule.describe
        else:
            module = matcher.fallback(rel)
            rule_desc = f"directory fallback (module_depth={matcher.config.module_depth})"
        matched = repo.codeowners.match(rel)
        owners = tuple(sorted(set(matched.owners))) if matched else ()
        return Explanation(
            path=path,
            normalized_path=rel,
            repository=repo.url or repo.name,
            module=module,
            module_rule=rule_desc,
            owners=owners,
            codeowners_line=matched.line if matched else 0,
            codeowners_text=matched.text if matched else "",
        )

    def live_deploys(self) -> list[DeployEvent]:
        return self.timeline.events()
