"""Suspect commits: which commits of a deploy most likely caused a regression.  Pure.

* :func:`rank_suspects` scores the commits of a deploy's range against the modules that
  regressed.  A commit *touched* the modules when one of its files maps to one of them; its
  *module churn* is the sum of :meth:`Commit.churn_in` over those modules (each counted
  once).  Commits that touched the modules come first, by module churn descending; the others
  follow by total churn descending.  Ties go to the most recent commit (higher committer
  time), then to the lower SHA.
* Merge commits (more than one parent) are skipped when the range holds any non-merge
  commit: a merge's diff against its first parent repeats what its branch's commits changed.
  A range of merges only keeps them.
* A deploy's commits are :func:`attribution.dora.deploy_range`.
* Tickets show them (``collector.pipelines.alert_documents.suspect_blocks``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from attribution.history import Commit, pull_requests

MAX_FILES = 10  # paths listed per suspect
SHORT_SHA = 12  # characters of a SHA shown in Markdown


@dataclass(frozen=True, slots=True)
class Suspect:
    """One ranked commit."""

    sha: str
    subject: str
    author_name: str
    author_email: str
    committed_at_unix_nano: int
    touched: bool  # a file of the commit maps to one of the modules
    module_churn: int  # added + removed lines in those modules (0 when not touched)
    churn: int  # added + removed lines over all the commit's files
    files: tuple[str, ...]  # paths in the modules first, then the others; at most MAX_FILES
    pull_requests: tuple[int, ...]  # the PR numbers its message names, ascending
    rank: int  # 1 for the first suspect


def _suspect(commit: Commit, modules: frozenset[str], rank: int) -> Suspect:
    inside = tuple(f.path for f in commit.files if f.module in modules)
    outside = tuple(f.path for f in commit.files if f.module not in modules)
    return Suspect(
        sha=commit.sha,
        subject=commit.subject,
        author_name=commit.author_name,
        author_email=commit.author_email,
        committed_at_unix_nano=commit.committed_at_unix_nano,
        touched=bool(inside),
        module_churn=sum(commit.churn_in(m) for m in sorted(modules)),
        churn=commit.churn,
        files=(inside + outside)[:MAX_FILES],
        pull_requests=pull_requests(commit.message),
        rank=rank,
    )


def rank_suspects(commits: Sequence[Commit], modules: Collection[str], *, top: int = 5) -> list[Suspect]:
    """The ``top`` most suspect of ``commits`` for a regression of ``modules`` (see the module
    docstring for the order), ranked from 1."""
    wanted = frozenset(modules)
    pool = [c for c in commits if not c.is_merge] or list(commits)
    scored = [_suspect(c, wanted, 0) for c in pool]
    scored.sort(
        key=lambda s: (
            not s.touched,
            -(s.module_churn if s.touched else s.churn),
            -s.committed_at_unix_nano,
            s.sha,
        )
    )
    return [replace(s, rank=rank) for rank, s in enumerate(scored[: max(top, 0)], start=1)]
