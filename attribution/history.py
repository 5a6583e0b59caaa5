"""Git history as data: commits, their file changes, and the commit graph.  Pure.

The git adapter (:mod:`collector.receivers.git`) reads a repository into :class:`Commit`
values; everything that analyses history (change coupling, lead time, DORA, suspects,
hotspots, dead code, incident links) works on these types and never runs git.

* Every commit reachable from the scanned head is recorded, merges included, each with its
  diff against its **first parent** (renames detected), so a merge carries the whole change
  its branch brought in.  ``on_first_parent`` marks the commits of the head's first-parent
  chain: changesets (change frequency, churn, coupling) count those only, so a branch's
  commits and the merge that brought them in are not counted twice.
* The commit graph answers reachability ("does the deploy's SHA contain this commit") over
  all parents, which is what lead time and a deploy's range need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file touched by a commit, against its first parent."""

    path: str  # repo-relative POSIX path after the commit ("" never)
    added: int = 0  # lines; binary files count 0
    removed: int = 0
    old_path: str = ""  # the path before, when the commit renamed the file
    module: str = ""  # mapped with the same rules as spans (attribution.attribute.Attributor.explain)
    owners: tuple[str, ...] = ()

    @property
    def churn(self) -> int:
        return self.added + self.removed


@dataclass(frozen=True, slots=True)
class Commit:
    repository: str
    sha: str  # full 40-hex SHA
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at_unix_nano: int
    committed_at_unix_nano: int
    message: str  # the full message; the first line is the subject
    files: tuple[FileChange, ...] = ()
    on_first_parent: bool = True

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1

    @property
    def churn(self) -> int:
        return sum(f.churn for f in self.files)

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules this commit changed, sorted."""
        return tuple(sorted({f.module for f in self.files if f.module}))

    def churn_in(self, module: str) -> int:
        return sum(f.churn for f in self.files if f.module == module)


@dataclass(frozen=True, slots=True)
class HeadFile:
    """A file that exists at the scanned head (dead-code candidates are drawn from these)."""

    path: str
    lines: int
    bytes: int
    module: str = ""
    owners: tuple[str, ...] = ()
    repository: str = ""


_REVERT = re.compile(r"This reverts commit ([0-9a-f]{7,40})")
_PULL = re.compile(r"(?:\(#(\d+)\)|Merge pull request #(\d+))")


def reverted_shas(message: str) -> tuple[str, ...]:
    """The commits a revert names (``git revert``'s "This reverts commit X.")."""
    return tuple(_REVERT.findall(message))


def pull_requests(message: str) -> tuple[int, ...]:
    """Pull request numbers a message names: ``(#123)`` (squash merges) or
    ``Merge pull request #123`` (merge commits)."""
    return tuple(sorted({int(a or b) for a, b in _PULL.findall(message)}))


class CommitGraph:
    """Reachability over the commits of one repository (all parents)."""

    def __init__(self, commits: Iterable[Commit]) -> None:
        self.commits: dict[str, Commit] = {c.sha: c for c in commits}

    def __len__(self) -> int:
        return len(self.commits)

    def __contains__(self, sha: object) -> bool:
        return sha in self.commits

    def resolve(self, sha: str) -> str | None:
        """The full SHA of ``sha`` (a full SHA or an unambiguous prefix of 7+ characters)."""
        if sha in self.commits:
            return sha
        if len(sha) < 7:
            return None
        hits = [s for s in self.commits if s.startswith(sha)]
        return hits[0] if len(hits) == 1 else None

    def ancestors(self, sha: str) -> set[str]:
        """``sha`` and every commit it contains (that the graph holds)."""
        full = self.resolve(sha)
        if full is None:
            return set()
        seen = {full}
        stack = [full]
        while stack:
            c = self.commits.get(stack.pop())
            if c is None:
                continue
            for p in c.parents:
                if p not in seen and p in self.commits:
                    seen.add(p)
                    stack.append(p)
        return seen

    def range(self, previous_sha: str, sha: str) -> list[Commit]:
        """The commits in ``previous_sha..sha`` (``git rev-list previous..sha``), newest first
        by committer time, then SHA.  An empty or unknown ``previous_sha`` means every
        ancestor of ``sha``."""
        inside = self.ancestors(sha)
        if previous_sha:
            inside -= self.ancestors(previous_sha)
        return sorted(
            (self.commits[s] for s in inside),
            key=lambda c: (-c.committed_at_unix_nano, c.sha),
        )

    def first_parent_chain(self, head: str) -> Iterator[Commit]:
        full = self.resolve(head)
        while full is not None and full in self.commits:
            c = self.commits[full]
            yield c
            full = c.parents[0] if c.parents else None


def changesets(commits: Sequence[Commit]) -> list[Commit]:
    """The commits that count as changes (change frequency, churn, coupling): those on the
    first-parent chain, sorted by committer time then SHA."""
    return sorted(
        (c for c in commits if c.on_first_parent),
        key=lambda c: (c.committed_at_unix_nano, c.sha),
    )
