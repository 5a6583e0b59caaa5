"""Many globs at once: which of them match a file path, testing only the candidates an index finds.

:class:`GlobSet` tells which of many globs matches a path first or last, testing only the
globs a path could match; :meth:`GlobSet.shadowing` uses
:meth:`attribution.globs.GlobMatcher.covers` to find rules that can never take effect.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from attribution.globs import (
    KEY_COMPONENT,
    KEY_PREFIX,
    KEY_SUFFIX,
    GlobDialect,
    GlobMatcher,
    PathTest,
    compile_glob,
)


class GlobSet:
    """Many globs, asked which of them match a file path.

    :meth:`first` and :meth:`last` return the index of the first or last glob (in the
    order given) that matches a file path, or ``None``.  Directory matching is not
    offered: both CODEOWNERS and module rules look up files.

    Globs are indexed by what a path must contain for them to match: anchored globs by
    their literal leading segments (``/services/pay/*.py`` needs ``services/pay/`` first),
    literal names by path component (``logs/``, ``**/Makefile``), ``*.ext`` by component
    suffix.  Only the candidates found that way and the unindexable globs are tested, so
    the cost grows with the number of unindexable globs, not with the whole set.
    """

    __slots__ = (
        "_by_component",
        "_by_prefix",
        "_by_regex",
        "_by_suffix",
        "_everything",
        "_tests",
        "_unindexed",
        "matchers",
    )

    def __reduce__(self) -> tuple[Any, ...]:
        return (GlobSet, (self.matchers,))

    def __init__(self, patterns: Iterable[str | GlobMatcher], dialect: GlobDialect = "gitignore") -> None:
        self.matchers: tuple[GlobMatcher, ...] = tuple(
            p if isinstance(p, GlobMatcher) else compile_glob(p, dialect) for p in patterns
        )
        self._tests: tuple[PathTest, ...] = tuple(m.file_test for m in self.matchers)
        unindexed: list[int] = []
        by: tuple[dict[str, list[int]], dict[str, list[int]], dict[str, list[int]]] = ({}, {}, {})
        by_regex: dict[str, list[int]] = {}
        for i, m in enumerate(self.matchers):
            if m.index_key is None:
                unindexed.append(i)
            else:
                kind, text = m.index_key
                by[kind].setdefault(text, []).append(i)
            by_regex.setdefault(m.regex, []).append(i)
        self._unindexed = tuple(unindexed)
        self._by_prefix = {k: tuple(v) for k, v in by[KEY_PREFIX].items()}
        self._by_component = {k: tuple(v) for k, v in by[KEY_COMPONENT].items()}
        self._by_suffix = tuple((k, tuple(v)) for k, v in by[KEY_SUFFIX].items())
        self._by_regex = {k: tuple(v) for k, v in by_regex.items()}
        self._everything = tuple(i for i, m in enumerate(self.matchers) if m.matches_everything)

    def __len__(self) -> int:
        return len(self.matchers)

    def _candidates(self, path: str) -> list[int]:
        """Indexes of the globs that may match ``path`` (unsorted, maybe repeated)."""
        found = list(self._unindexed)
        if self._by_prefix:
            by_prefix = self._by_prefix
            start = 0
            while True:
                end = path.find("/", start)
                hit = by_prefix.get(path if end < 0 else path[:end])
                if hit:
                    found.extend(hit)
                if end < 0:
                    break
                start = end + 1
        if self._by_component or self._by_suffix:
            parts = path.split("/")
            if self._by_component:
                by_component = self._by_component
                for part in set(parts) if len(parts) > 2 else parts:
                    hit = by_component.get(part)
                    if hit:
                        found.extend(hit)
            for suffix, hit in self._by_suffix:
                for part in parts:
                    if part.endswith(suffix):
                        found.extend(hit)
                        break
        return found

    def first(self, path: str) -> int | None:
        """The index of the first glob that matches the file ``path``, or ``None``."""
        tests = self._tests
        for i in sorted(self._candidates(path)):
            if tests[i](path):
                return i
        return None

    def last(self, path: str) -> int | None:
        """The index of the last glob that matches the file ``path``, or ``None``."""
        tests = self._tests
        for i in sorted(self._candidates(path), reverse=True):
            if tests[i](path):
                return i
        return None

    def all(self, path: str) -> list[int]:
        """The indexes, in order, of every glob that matches the file ``path``."""
        tests = self._tests
        return [i for i in sorted(set(self._candidates(path))) if tests[i](path)]

    def shadowing(self, i: int, *, wins: Literal["first", "last"]) -> int | None:
        """A glob that keeps glob ``i`` from ever deciding a path, or ``None``.

        With ``wins="last"`` (CODEOWNERS), that is the nearest later glob that matches
        every path glob ``i`` matches; with ``wins="first"`` (rules tried in order), the
        nearest earlier one.  Sound but incomplete, like :meth:`GlobMatcher.covers`.
        """
        target = self.matchers[i]
        later = wins == "last"

        def nearest(sorted_indexes: Sequence[int]) -> list[int]:
            k = bisect_right(sorted_indexes, i) if later else bisect_left(sorted_indexes, i) - 1
            return [sorted_indexes[k]] if 0 <= k < len(sorted_indexes) else []

        found = {*nearest(self._everything), *nearest(self._by_regex[target.regex])}
        if target.literal_dirs:
            found.update(self._candidates("/".join(target.literal_dirs)))
        order = (
            sorted((j for j in found if j > i), reverse=False)
            if later
            else sorted((j for j in found if j < i), reverse=True)
        )
        for j in order:
            if self.matchers[j].covers(target):
                return j
        return None
