"""Attribution of spans: span -> repository, module, owners, commit and deploy, and its group id.  Pure.

``Attributor.attribute(span)`` returns an :class:`Attribution` or an :class:`Unattributed`
(with a reason); it never raises for bad data.  Results are cached per distinct code
location, so the hot path is a couple of dict lookups per span.

``Attributor.throw_site(resource, exc)`` attributes a recorded exception to the code that threw
it: the innermost frame of its root cause inside the repository (see
:mod:`attribution.stacktrace`), attributed like a span at that code location.

``Attributor.group_of(span)`` is the hot-path entry used by the aggregator: it returns a
small int naming the span's full group (service, environment, repository, module, owners,
commit, deploy, unattributed reason).  ``Attributor.group(i)`` turns it back into a
:class:`GroupKey`.  Dictionary-encoding keeps per-span hashing to one int.

``Attributor.drain_files_seen()`` returns the code files attributed spans came from since the
last call (:class:`FileSeen`, for the ``file_last_seen`` table and dead-code candidates); with a
:class:`FileSightings`, a stream partition's, only the files that are news to it.

Commit, first source that applies:

1. the resource attribute ``vcs.ref.head.revision``;
2. ``service.version`` when it is a 7-40 character hex SHA;
3. the deploy timeline: the latest live deploy of (service, environment) at or before the
   span's start.

Otherwise the commit is "" (unknown), never a guess.  The deploy id is the timeline's deploy
at the span's start when its commit is the span's commit, else "".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeAlias

from attribution.deploys import DeployTimeline
from attribution.model import (
    CODE_FILE_PATH,
    CODE_FILEPATH_OLD,
    CODE_FUNCTION_NAME,
    CODE_FUNCTION_OLD,
    CODE_NAMESPACE,
    HTTP_ROUTE,
    OVERFLOW_MODULE,
    RPC_METHOD,
    RPC_SERVICE,
    TELEMETRY_SDK_LANGUAGE,
    UNATTRIBUTED_MODULE,
    Attribution,
    ExceptionInfo,
    Resource,
    Span,
    Unattributed,
)
from attribution.modules import ModuleMatcher
from attribution.repository import Repository, RepositoryIndex
from attribution.stacktrace import Frame, ParsedStack, parse_stacktrace
from attribution.stacktrace import throw_site as _throw_site

_HEX_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_NO_DEPLOY: tuple[int, int, str, str] = (0, -1, "", "")


class GroupKey(NamedTuple):
    service: str
    environment: str
    repository: str
    module: str
    owners: tuple[str, ...]
    commit_sha: str
    deploy_id: str
    unattributed_reason: str


class FileSeen(NamedTuple):
    """A code file of a repository that an attributed span of (service, environment) came
    from, and the latest span start of the batch that saw it (exact to within that batch, or
    floored to its window: see :meth:`Attributor.drain_files_seen`)."""

    service: str
    environment: str
    repository: str
    path: str
    last_seen_unix_nano: int


FileKey: TypeAlias = tuple[str, str, str, str]  # service, environment, repository, path


class FileSightings:
    """What one partition of the stream has reported to ``file_last_seen`` in this process:
    per file, the latest window start.  A batch sees most files of a busy service, so
    reporting each file per batch wrote thousands of rows a second that the table's max then
    merged away; reporting a file once per window loses nothing at that precision.

    A row held back is never missing: it repeats one that an earlier batch of the partition
    reported, and that batch is written, or its records are processed again wherever the
    partition goes (exactly once), and report the file again.  A new process, or a partition
    reset, knows nothing and reports everything: a superset, which max makes harmless, as it
    does the re-sent row of a replay."""

    def __init__(self, window_ns: int, max_files: int = 200_000) -> None:
        self.window_ns = window_ns
        self.max_files = max_files  # past it, it starts over (reports everything once more)
        self._reported: dict[FileKey, int] = {}

    def news(self, keys: Iterable[FileKey], latest_unix_nano: int) -> tuple[list[FileKey], int]:
        """The files of ``keys``, seen at ``latest_unix_nano``, not yet reported at its window
        start or later, and that window start; they count as reported from now on."""
        w = latest_unix_nano - latest_unix_nano % self.window_ns
        reported = self._reported
        new = [k for k in keys if reported.get(k, -1) < w]
        if len(reported) + len(new) > self.max_files:
            reported.clear()
        reported.update(dict.fromkeys(new, w))
        return new, w


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


# the span attributes a code location is made of, in the order the native group lookup takes them
LOCATION_KEYS: tuple[str, ...] = (
    CODE_FILE_PATH,
    CODE_FILEPATH_OLD,
    CODE_NAMESPACE,
    CODE_FUNCTION_NAME,
    CODE_FUNCTION_OLD,
    HTTP_ROUTE,
    RPC_SERVICE,
    RPC_METHOD,
)


class NativeGroupIds(Protocol):
    """The native twin of :meth:`Attributor.group_ids`'s loop (``prodloop_native.group_ids``,
    see ``collector.processing.native``): the same group ids over the attributor's own caches,
    calling it back on a miss; returns them and the latest span start (None: no spans)."""

    def __call__(
        self,
        spans: Sequence[Span],
        state: Callable[[Resource], tuple[Any, ...]],
        locate: Callable[..., int],
        resolve_dep: Callable[[Resource, int], list[int]],
        new_gid: Callable[[int, int, Resource], int],
        keys: tuple[str, ...],
        simple: bool,
        needs_name: bool,
    ) -> tuple[list[int], int | None]: ...


class Attributor:
    """Attributes spans.  Holds caches; not thread-safe (one per pipeline)."""

    def __init__(
        self,
        repositories: Sequence[Repository],
        timeline: DeployTimeline | None = None,
        *,
        cache_limit: int = 200_000,
        throw_cache_limit: int = 4096,
        native_group_ids: NativeGroupIds | None = None,
    ) -> None:
        """``native_group_ids``: the native twin of :meth:`group_ids`'s loop (see
        :class:`NativeGroupIds`), or None for the Python loop."""
        if not repositories:
            repositories = [Repository(name="default")]
        self.repositories = tuple(repositories)
        self.timeline = timeline if timeline is not None else DeployTimeline()
        self._matchers = {r.name: ModuleMatcher(r.modules) for r in self.repositories}
        self._repos = RepositoryIndex(self.repositories)
        self._cache_limit = cache_limit
        self._loc_cache: dict[tuple[str, str, str, str, str, str, str, str], Attribution | Unattributed] = {}
        self._path_only: dict[tuple[str, str, str], Attribution | Unattributed] = {}
        self._static_commit: dict[Resource, str] = {}
        self._deploy_cache: dict[tuple[str, str], tuple[int, int, str, str]] = {}
        self._deploy_cache_version = self.timeline.version
        self._groups: list[GroupKey] = []
        self._group_ids: dict[object, int] = {}
        self.unattributed: set[int] = set()  # the ids of groups with an unattributed reason
        # hot-path caches (see group_ids)
        self._needs_other = any(
            r.modules.rules and any(x.has_other for x in r.modules.rules) for r in self.repositories
        )
        self._needs_name = any(any(x.span_names for x in r.modules.rules) for r in self.repositories)
        self._path_caches: dict[Resource, dict[object, int]] = {}
        self._dep_by_res: dict[Resource, list[int]] = {}
        self._dep_version = self.timeline.version
        self._locs: list[Attribution | Unattributed] = []
        # per location slot: (repository, path) of its code file, None when not attributed to one
        self._loc_files: list[tuple[str, str] | None] = []
        self._loc_slots: dict[Attribution | Unattributed, int] = {}
        self._commits: list[tuple[str, str]] = []
        self._commit_slots: dict[tuple[str, str], int] = {}
        # per resource (service, environment, ...): (location slot, commit slot) -> group id
        self._gid_caches: dict[Resource, dict[int, int]] = {}
        # (service, repository, language, digest of the stack trace) -> throw-site attribution
        self._throw_cache: dict[tuple[str, str, str, bytes], Attribution | Unattributed] = {}
        self._throw_cache_limit = throw_cache_limit
        # per resource: the location slots its spans had since the last drain_files_seen, and
        # the latest span start over them all
        self._seen_locs: dict[Resource, set[int]] = {}
        self._seen_latest = 0
        self._native_group_ids = native_group_ids

    def repository_for(self, resource: Resource) -> Repository | None:
        """The repository of ``resource`` (see :class:`~attribution.repository.RepositoryIndex`)."""
        return self._repos.repository_for(resource)

    # -- module and owners ---------------------------------------------------------------

    def attribute(self, span: Span) -> Attribution | Unattributed:
        a = span.attributes
        res = span.resource
        file = str(a.get(CODE_FILE_PATH) or a.get(CODE_FILEPATH_OLD) or "")
        if file:
            # a path rule decides on the path alone: cache that first
            pkey = (res.service, res.repository, file)
            hit = self._path_only.get(pkey)
            if hit is not None:
                return hit
        ns = str(a.get(CODE_NAMESPACE) or "")
        fn = str(a.get(CODE_FUNCTION_NAME) or a.get(CODE_FUNCTION_OLD) or "")
        route = str(a.get(HTTP_ROUTE) or "")
        rpc_s = a.get(RPC_SERVICE) or ""
        rpc_m = a.get(RPC_METHOD) or ""
        rpc = f"{rpc_s}/{rpc_m}" if rpc_s or rpc_m else ""
        key = (res.service, res.repository, file, ns, fn, route, rpc, span.name if self._needs_name else "")
        try:
            return self._loc_cache[key]
        except KeyError:
            pass
        result, by_path = self._attribute_uncached(res, file, ns, fn, route, rpc, span.name)
        if len(self._loc_cache) >= self._cache_limit:
            self._loc_cache.clear()
            self._path_only.clear()
        if by_path:
            self._path_only[(res.service, res.repository, file)] = result
        else:
            self._loc_cache[key] = result
        return result

    def _attribute_uncached(
        self, res: Resource, file: str, ns: str, fn: str, route: str, rpc: str, name: str
    ) -> tuple[Attribution | Unattributed, bool]:
        """The attribution, and whether the path alone decided it (so it may be cached by path)."""
        repo = self.repository_for(res)
        if repo is None:
            return Unattributed(
                "no_repository", f"service {res.service!r} is not listed in any repository"
            ), True
        matcher = self._matchers[repo.name]
        rel: str | None = None
        if file:
            rel = matcher.normalize(file)
            if rel is not None:
                rule = matcher.match_path(rel, res.service)
                if rule is not None:
                    return self._make(repo, rel, rule.name, rule.describe, rule.owners), True
        rule = matcher.match_other(res.service, ns, fn, route, rpc, name)
        if rule is not None:
            return self._make(repo, rel or "", rule.name, rule.describe, rule.owners), False
        no_other = not self._needs_other
        if rel is not None:
            depth = matcher.config.module_depth
            return self._make(
                repo, rel, matcher.fallback(rel), f"directory fallback (module_depth={depth})", ()
            ), no_other
        if file:
            return Unattributed(
                "external", f"{file} is outside every source root of repository {repo.name!r}"
            ), no_other
        if ns or fn or route or rpc:
            return Unattributed(
                "no_rule", "no module rule matches this span's namespace, function or route"
            ), False
        return Unattributed(
            "no_location", "span has no code.* attributes and no rule matches its name or route"
        ), False

    # -- exceptions -----------------------------------------------------------------------

    def throw_site(self, resource: Resource, exc: ExceptionInfo) -> Attribution | Unattributed:
        """The module that threw ``exc``: its root cause's innermost frame in the repository,
        attributed as a span at that frame's code location would be.

        Reasons when none: ``no_stacktrace``, ``unparseable:<reason>`` (see
        :data:`attribution.stacktrace.REASONS`), ``no_frame_in_root``, ``no_repository``.
        Cached per (service, repository, language, stack trace); the cache is bounded.
        """
        text = exc.stacktrace
        if not text.strip():
            return Unattributed("no_stacktrace", f"{exc.type or 'the exception'} has no stack trace")
        lang = resource.attributes.get(TELEMETRY_SDK_LANGUAGE)
        language = lang if isinstance(lang, str) else ""
        # a digest, not the text: traces are up to 64 KiB and the cache outlives the spans
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        key = (resource.service, resource.repository, language, digest)
        hit = self._throw_cache.get(key)
        if hit is not None:
            return hit
        result = self._throw_site_uncached(resource, text, language)
        if len(self._throw_cache) >= self._throw_cache_limit:
            self._throw_cache.clear()
        self._throw_cache[key] = result
        return result

    def _throw_site_uncached(self, res: Resource, text: str, language: str) -> Attribution | Unattributed:
        repo = self.repository_for(res)
        if repo is None:
            return Unattributed("no_repository", f"service {res.service!r} is not listed in any repository")
        parsed = parse_stacktrace(text, language)
        if not isinstance(parsed, ParsedStack):
            return Unattributed(f"unparseable:{parsed.reason}", "the stack trace could not be read")
        matcher = self._matchers[repo.name]
        by_path = parsed.runtime != "jvm"  # JVM frames name a file, not a path

        def located(frame: Frame) -> tuple[str, str, str]:
            """(file, namespace, function) to attribute the frame by."""
            f = frame.file
            # a drive-letter path can lie under no source root (they are POSIX paths)
            usable = by_path and f and not _DRIVE.match(f) and matcher.normalize(f) is not None
            file = f if usable else ""
            q = frame.qualified
            return file, (_namespace_of(q) if q else ""), q

        def in_root(frame: Frame) -> bool:
            file, ns, fn = located(frame)
            return bool(file) or (
                bool(fn) and matcher.match_other(res.service, ns, fn, "", "", "") is not None
            )

        site = _throw_site(parsed, in_root)
        if site is None:
            return Unattributed(
                "no_frame_in_root",
                f"no {parsed.runtime} frame of the root cause is inside repository {repo.name!r}",
            )
        file, ns, fn = located(site)
        return self._attribute_uncached(res, file, ns, fn, "", "", "")[0]

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
        start, until, ev = self.timeline.interval_at(service, environment, t)
        if ev is None:
            return "", ""
        self._deploy_cache[key] = (start, until, ev.commit_sha, ev.deploy_id)
        return ev.commit_sha, ev.deploy_id

    def commit_of(self, span: Span) -> tuple[str, str]:
        res = span.resource
        commit = self.static_commit(res)
        dep_commit, dep_id = self.deploy_at(res.service, res.environment, span.start_unix_nano)
        if not commit:
            return dep_commit, dep_id
        return commit, (dep_id if dep_commit == commit else "")

    # -- groups (hot path) ---------------------------------------------------------------

    @property
    def wanted_attributes(self) -> tuple[str, ...]:
        """The span attributes attribution reads, given the configured rules."""
        return LOCATION_KEYS if self._needs_other else LOCATION_KEYS[:2]  # the file path alone

    def group_ids(self, spans: Sequence[Span]) -> list[int]:
        """The group id of each span (see :meth:`group`).  The hot path: per span, a few
        dict lookups on cached keys; attribution and the timeline are consulted only when a
        code location or a deploy interval is seen for the first time."""
        if self._dep_version != self.timeline.version:
            self._dep_by_res.clear()
            self._dep_version = self.timeline.version
        simple = not self._needs_other
        if self._native_group_ids is not None:
            gids_out, last = self._native_group_ids(
                spans,
                self._resource_state,
                self._locate,
                self._resolve_dep,
                self._new_gid,
                LOCATION_KEYS,
                simple,
                self._needs_name,
            )
            if last is not None and last > self._seen_latest:
                self._seen_latest = last
            return gids_out
        out: list[int] = []
        append = out.append
        last_res: Resource | None = None
        path_cache: dict[object, int] = {}
        dep: list[int] = [0, -1, 0]
        gids: dict[int, int] = {}
        seen_add: Callable[[int], None] = set[int]().add
        latest = self._seen_latest
        for span in spans:
            res = span.resource
            if res is not last_res:
                path_cache, dep_of, gids, seen = self._resource_state(res)
                dep = dep_of or [0, -1, 0]
                seen_add = seen.add
                last_res = res
            a = span.attributes
            f = a.get(CODE_FILE_PATH) or a.get(CODE_FILEPATH_OLD)
            loc = (
                path_cache.get(f, -1)
                if simple
                else path_cache.get(
                    (
                        f,
                        a.get(CODE_NAMESPACE),
                        a.get(CODE_FUNCTION_NAME) or a.get(CODE_FUNCTION_OLD),
                        a.get(HTTP_ROUTE),
                        a.get(RPC_SERVICE),
                        a.get(RPC_METHOD),
                        span.name if self._needs_name else None,
                    ),
                    -1,
                )
            )
            if loc < 0:
                loc = self._locate(span, path_cache, f, simple)
            seen_add(loc)
            t = span.start_unix_nano
            if t > latest:
                latest = t
            if not dep[0] <= t < dep[1]:
                dep = self._resolve_dep(res, t)
            k = (loc << 24) | dep[2]
            gid = gids.get(k)
            if gid is None:
                gid = gids[k] = self._new_gid(loc, dep[2], res)
            append(gid)
        self._seen_latest = latest
        return out

    def _resource_state(
        self, res: Resource
    ) -> tuple[dict[object, int], list[int] | None, dict[int, int], set[int]]:
        """``res``'s caches for :meth:`group_ids`: code location -> location slot, its deploy
        interval ``[lo, hi, commit slot]`` (None: none yet), (location, commit) -> group id, and
        the location slots seen."""
        path_cache = self._path_caches.get(res) or self._new_path_cache(res)
        dep = self._dep_by_res.get(res)
        gids = self._gid_caches.get(res) or self._gid_caches.setdefault(res, {})
        seen = self._seen_locs.get(res) or self._seen_locs.setdefault(res, set())
        return path_cache, dep, gids, seen

    def _new_path_cache(self, res: Resource) -> dict[object, int]:
        if len(self._path_caches) > 10_000:
            self._path_caches.clear()
            self._dep_by_res.clear()
            self._gid_caches.clear()
        cache: dict[object, int] = {}
        self._path_caches[res] = cache
        return cache

    def _locate(self, span: Span, cache: dict[object, int], f: object, simple: bool) -> int:
        a = span.attributes
        key: object = (
            f
            if simple
            else (
                f,
                a.get(CODE_NAMESPACE),
                a.get(CODE_FUNCTION_NAME) or a.get(CODE_FUNCTION_OLD),
                a.get(HTTP_ROUTE),
                a.get(RPC_SERVICE),
                a.get(RPC_METHOD),
                span.name if self._needs_name else None,
            )
        )
        attribution = self.attribute(span)
        slot = self._loc_slots.get(attribution, -1)
        if slot < 0:
            slot = len(self._locs)
            self._locs.append(attribution)
            self._loc_files.append(
                (attribution.repository, attribution.path)
                if isinstance(attribution, Attribution) and attribution.path
                else None
            )
            self._loc_slots[attribution] = slot
        if len(cache) >= self._cache_limit:
            cache.clear()
        cache[key] = slot
        return slot

    def drain_files_seen(self, sightings: FileSightings | None = None) -> list[FileSeen]:
        """The code files attributed spans came from since the last call, one row per
        (service, environment, repository, path), sorted.

        :meth:`group_ids` adds each span's location slot to its resource's set and keeps the
        latest span start (two cheap operations per span); the rows carry that latest start.
        So ``last_seen_unix_nano`` is exact to within the time the drained spans cover (one
        batch): enough for dead-code candidates, judged over days.  The rows are a function
        of the drained spans alone, so a replayed batch yields the same rows.

        With ``sightings`` (the stream's), the time is floored to its window start and only
        the files that are news to them are returned (see :class:`FileSightings`)."""
        seen, latest = self._seen_locs, self._seen_latest
        self._seen_locs, self._seen_latest = {}, 0
        files = self._loc_files
        keys = {
            (res.service, res.environment, *file)
            for res, slots in seen.items()
            for slot in slots
            if (file := files[slot]) is not None
        }
        if sightings is not None and keys:
            news, latest = sightings.news(keys, latest)
            return [FileSeen(*key, latest) for key in sorted(news)]
        return [FileSeen(*key, latest) for key in sorted(keys)]

    def _resolve_dep(self, res: Resource, t: int) -> list[int]:
        """The interval around ``t`` in which (commit, deploy) of ``res`` is constant."""
        if self._dep_version != self.timeline.version:
            self._dep_by_res.clear()
            self._dep_version = self.timeline.version
        static = self.static_commit(res)
        lo, hi, ev = self.timeline.interval_at(res.service, res.environment, t)
        commit, deploy_id = static, ""
        if ev is not None and (not static or ev.commit_sha == static):
            commit, deploy_id = ev.commit_sha, ev.deploy_id
        pair = (commit, deploy_id)
        slot = self._commit_slots.get(pair)
        if slot is None:
            slot = len(self._commits)
            self._commits.append(pair)
            self._commit_slots[pair] = slot
        entry = [lo, hi, slot]
        self._dep_by_res[res] = entry
        return entry

    def _new_gid(self, loc: int, commit_slot: int, res: Resource) -> int:
        attribution = self._locs[loc]
        commit, deploy_id = self._commits[commit_slot]
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
        gid = self._group_ids.get(key)
        return self._add_group(key) if gid is None else gid

    def _add_group(self, key: GroupKey) -> int:
        gid = self._group_ids[key] = len(self._groups)
        self._groups.append(key)
        if key.unattributed_reason:
            self.unattributed.add(gid)
        return gid

    def group_of(self, span: Span) -> int:
        """The group id of one span."""
        return self.group_ids((span,))[0]

    def group(self, gid: int) -> GroupKey:
        return self._groups[gid]

    def is_attributed(self, gid: int) -> bool:
        return not self._groups[gid].unattributed_reason

    def overflow_group(self, key: GroupKey) -> int:
        """The ``(overflow)`` group of the same service and environment."""

        gkey = GroupKey(key.service, key.environment, "", OVERFLOW_MODULE, (), "", "", "overflow")
        gid = self._group_ids.get(gkey)
        return self._add_group(gkey) if gid is None else gid

    # -- explain -------------------------------------------------------------------------

    def map_file(self, repository: str, path: str) -> tuple[str, tuple[str, ...]]:
        """The module and owners of ``path``, a file of ``repository`` (its name or URL) as git
        names it, with the rules spans use: a git scan maps every changed file with this.  Rules
        scoped to services do not apply (a file belongs to no one service).  An unknown
        repository falls back to the default one, as spans do."""
        repo = next((r for r in self.repositories if repository in (r.name, r.url)), None)
        repo = repo or self._repos.default or self.repositories[0]
        matcher = self._matchers[repo.name]
        rule = matcher.match_path(path, "")
        if rule is not None:
            att = self._make(repo, path, rule.name, rule.describe, rule.owners)
        else:
            att = self._make(repo, path, matcher.fallback(path), "directory fallback", ())
        return att.module, att.owners

    def explain(self, path: str, service: str = "") -> Explanation:
        """Why is this path attributed to that module and those owners?  Same rules as attribute()."""
        res = Resource(service=service or "")
        repo = self.repository_for(res) if service else (self._repos.default or self.repositories[0])
        if repo is None:
            return Explanation(path, None, "", UNATTRIBUTED_MODULE, "", (), 0, "", "no_repository")
        matcher = self._matchers[repo.name]
        rel = matcher.normalize(path)
        if rel is None:
            return Explanation(path, None, repo.name, UNATTRIBUTED_MODULE, "", (), 0, "", "external")
        rule = matcher.match_path(rel, res.service)
        if rule is not None:
            att = self._make(repo, rel, rule.name, rule.describe, rule.owners)
        else:
            depth = matcher.config.module_depth
            att = self._make(
                repo, rel, matcher.fallback(rel), f"directory fallback (module_depth={depth})", ()
            )
        matched = repo.codeowners.match(rel)
        return Explanation(
            path=path,
            normalized_path=rel,
            repository=att.repository,
            module=att.module,
            module_rule=att.module_rule,
            owners=att.owners,
            codeowners_line=att.codeowners_line,
            codeowners_text=matched.text if matched else "",
        )


def _namespace_of(qualified: str) -> str:
    """The class or package part of a qualified name: ``a.b.C.m`` -> ``a.b.C``,
    ``example.com/p.(*T).M`` -> ``example.com/p.(*T)``."""
    cut = qualified.rfind(".")
    return qualified[:cut] if cut > qualified.rfind("/") else qualified
