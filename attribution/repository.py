"""Repositories: what one holds (services, CODEOWNERS, module rules), and which one a resource belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from attribution.codeowners import CodeOwners
from attribution.model import Resource
from attribution.modules import ModuleConfig


@dataclass(frozen=True)
class Repository:
    """One repository: its services, CODEOWNERS and module rules."""

    name: str
    url: str = ""
    services: frozenset[str] = frozenset()
    codeowners: CodeOwners = field(default_factory=lambda: CodeOwners.parse("", "(no CODEOWNERS)"))
    modules: ModuleConfig = field(default_factory=ModuleConfig)


def normalize_repo_url(url: str) -> str:
    u = url.strip().rstrip("/")
    if u.endswith(".git"):
        u = u[:-4]
    if u.startswith("git@") and ":" in u:
        host, _, path = u[4:].partition(":")
        u = f"https://{host}/{path}"
    return u.lower()


class RepositoryIndex:
    """The repository of a resource: by service, else by repository URL, else the default.

    The default is the repository that lists no services, else the only one.  Lookups are
    cached per resource; not thread-safe (one per attributor).
    """

    def __init__(self, repositories: Sequence[Repository]) -> None:
        self.repositories = tuple(repositories)
        self._by_service: dict[str, Repository] = {}
        self._by_url: dict[str, Repository] = {}
        for r in self.repositories:
            for s in r.services:
                self._by_service.setdefault(s, r)
            if r.url:
                self._by_url.setdefault(normalize_repo_url(r.url), r)
        unscoped = [r for r in self.repositories if not r.services]
        self.default: Repository | None = (
            unscoped[0] if unscoped else (self.repositories[0] if len(self.repositories) == 1 else None)
        )
        self._by_resource: dict[Resource, Repository | None] = {}

    def repository_for(self, resource: Resource) -> Repository | None:
        try:
            return self._by_resource[resource]
        except KeyError:
            pass
        repo = self._by_service.get(resource.service)
        if repo is None and resource.repository:
            repo = self._by_url.get(normalize_repo_url(resource.repository))
        if repo is None:
            repo = self.default
        self._by_resource[resource] = repo
        return repo
