"""Dead-code candidates: files at the repository's head that received no spans.  Pure.

A file at the scanned head is a **candidate** when no span carrying its path (``code.file.path``,
attributed to that repository) started since ``now - days``.  Only repositories whose services
emit code locations at all are judged: a service without ``code.file.path`` says nothing about
its files.  Each candidate carries

* ``confidence``: the share of the repository's attributed spans that carried a code file path
  (a repository whose services put paths on 10% of their spans gives weak evidence that a file
  without spans is unused);
* ``weight``: ``lines * age / (age + 90 days)``, where ``age`` is the time since the file last
  changed: big files count more, and a file nobody touched for a year weighs almost its full
  size while one changed last week (perhaps not launched yet) weighs little.

Candidates are sorted by ``weight * confidence`` descending, then path.  A **dead module** is
one whose every file at the head is a candidate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from attribution.history import Commit, HeadFile

_DAY_NS = 86_400 * 1_000_000_000
_HALF_AGE_NS = 90 * _DAY_NS


@dataclass(frozen=True, slots=True)
class DeadFile:
    repository: str
    path: str
    module: str
    lines: int
    bytes: int
    last_changed_unix_nano: int  # 0: not in the scanned history
    last_seen_unix_nano: int  # 0: never seen
    confidence: float
    weight: float


@dataclass(frozen=True, slots=True)
class DeadModule:
    repository: str
    module: str
    files: int
    lines: int


def last_changed(commits: Iterable[Commit]) -> dict[tuple[str, str], int]:
    """The committer time of the last commit that changed each (repository, path)."""
    out: dict[tuple[str, str], int] = {}
    for c in commits:
        for f in c.files:
            key = (c.repository, f.path)
            if c.committed_at_unix_nano > out.get(key, -1):
                out[key] = c.committed_at_unix_nano
    return out


def dead_code(
    head_files: Sequence[HeadFile],
    *,
    changed: Mapping[tuple[str, str], int],
    seen: Mapping[tuple[str, str], int],
    path_share: Mapping[str, float],
    now_unix_nano: int,
    days: int,
) -> list[DeadFile]:
    """The candidates among ``head_files``.  ``seen``: the last span start per (repository,
    path); ``path_share``: per repository, the share of its attributed spans with a file path
    (a repository missing here, or at 0, is not judged)."""
    cutoff = now_unix_nano - days * _DAY_NS
    out: list[DeadFile] = []
    for f in head_files:
        confidence = path_share.get(f.repository, 0.0)
        if confidence <= 0:
            continue
        last_seen = seen.get((f.repository, f.path), 0)
        if last_seen >= cutoff:
            continue
        when = changed.get((f.repository, f.path), 0)
        age = max(0, now_unix_nano - when) if when else _HALF_AGE_NS * 1000
        weight = f.lines * age / (age + _HALF_AGE_NS)
        out.append(
            DeadFile(
                f.repository,
                f.path,
                f.module,
                f.lines,
                f.bytes,
                when,
                last_seen,
                confidence,
                round(weight, 3),
            )
        )
    out.sort(key=lambda d: (-d.weight * d.confidence, d.repository, d.path))
    return out


def dead_modules(head_files: Sequence[HeadFile], candidates: Sequence[DeadFile]) -> list[DeadModule]:
    """The modules whose every file at the head is a candidate."""
    dead = {(d.repository, d.path) for d in candidates}
    files: dict[tuple[str, str], list[HeadFile]] = defaultdict(list)
    for f in head_files:
        files[(f.repository, f.module)].append(f)
    return [
        DeadModule(repo, module, len(fs), sum(f.lines for f in fs))
        for (repo, module), fs in sorted(files.items())
        if all((f.repository, f.path) in dead for f in fs)
    ]
