"""One gitignore-style glob on repo-relative POSIX paths: its syntax, compiled once to a test.

The semantics are git's (``gitignore(5)`` on top of ``wildmatch`` with ``WM_PATHNAME``),
and ``tests/unit/test_codeowners_git_differential.py`` checks them against
``git check-ignore``:

* Paths are repo-relative, ``/``-separated, without a leading ``/``.  A trailing ``/`` on
  a path (or ``is_dir=True``) says the path is a directory.  Matching is case-sensitive.
* A pattern with a ``/`` at its start or in its middle is anchored to the root (a leading
  ``/`` is dropped); one with no ``/`` other than a trailing one matches at any depth.
* A trailing ``/`` makes the pattern match directories only: a file path matches when one
  of its parent directories does.
* A pattern that matches a directory also matches everything under it.
* ``*`` matches any run of characters but ``/``; ``?`` one character but ``/``;
  ``[...]`` a bracket expression (ranges, ``!``/``^`` negation, ``[:alpha:]``-style ASCII
  classes), never ``/``; ``\\x`` is a literal ``x``.
* ``**`` between slashes (or at either end) crosses directories: ``**/x`` is ``x`` at
  any depth, ``a/**`` everything inside ``a``, ``a/**/b`` ``b`` under ``a`` at any depth
  including ``a/b``.  Any other run of stars is a plain ``*``.

The ``"codeowners"`` dialect differs in what GitHub documents for CODEOWNERS: a pattern
ending in ``/*`` matches only the entries directly in that directory, not nested ones
(``docs/*`` owns ``docs/a.md`` but not ``docs/build/a.md``), and bracket expressions are
rejected.

A glob is a single pattern, so there is no negation: a leading ``!`` is an error (write
``\\!`` for a literal one).  ``#`` has no special meaning here.

:func:`compile_glob` caches compiled matchers.  :meth:`GlobMatcher.covers` (and
:func:`glob_covers`) is a sound, incomplete check that one glob matches every path another
one does.  Many globs at once, indexed, are :class:`attribution.globset.GlobSet`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Final, Literal

__all__ = [
    "GlobDialect",
    "GlobMatcher",
    "GlobSyntaxError",
    "compile_glob",
    "glob_covers",
]

GlobDialect = Literal["gitignore", "codeowners"]

PathTest = Callable[[str], object]  # truthy when the path matches


class GlobSyntaxError(ValueError):
    """A glob pattern that cannot be compiled (or, in git, would never match)."""

    def __init__(self, pattern: str, message: str) -> None:
        super().__init__(f"invalid glob {pattern!r}: {message}")
        self.pattern = pattern
        self.message = message


# ASCII character classes, as git's sane_ctype defines them.
_CLASSES: Final[dict[str, str]] = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\v\\f\\r",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}

# Token kinds.
_LIT: Final = 0  # a literal character (value: the character)
_SEP: Final = 1  # "/"
_STAR: Final = 2  # a run of "*" (value: the run length)
_ANY: Final = 3  # "?"
_CLASS: Final = 4  # a bracket expression (value: its regex)

_Token = tuple[int, str | int]

# GlobSet index keys: what a path must contain for a glob to match it.
KEY_PREFIX: Final = 0  # these leading path segments ("a/b")
KEY_COMPONENT: Final = 1  # this path component, at any depth
KEY_SUFFIX: Final = 2  # a path component ending with this


def _class_char(ch: str) -> str:
    return re.escape(ch)


def _parse_class(pattern: str, start: int) -> tuple[str, int]:
    """Parse the bracket expression opening at ``pattern[start] == "["``, as wildmatch does.

    Returns the regex for one path character and the index just past the closing ``]``.
    """
    i = start + 1
    n = len(pattern)
    negated = False
    if i < n and pattern[i] in "!^":
        negated = True
        i += 1
    parts: list[str] = []
    prev: str | None = None  # the previous single character, which may start a range
    first = True
    while True:
        if i >= n:
            raise GlobSyntaxError(pattern, f"unclosed '[' at offset {start}")
        ch = pattern[i]
        if ch == "]" and not first:
            i += 1
            break
        first = False
        if ch == "\\":
            i += 1
            if i >= n:
                raise GlobSyntaxError(pattern, "trailing '\\' in a bracket expression")
            ch = pattern[i]
            parts.append(_class_char(ch))
            prev = ch
            i += 1
        elif ch == "-" and prev is not None and i + 1 < n and pattern[i + 1] != "]":
            i += 1
            hi = pattern[i]
            if hi == "\\":
                i += 1
                if i >= n:
                    raise GlobSyntaxError(pattern, "trailing '\\' in a bracket expression")
                hi = pattern[i]
            parts.pop()  # the range's low end was emitted as a single character
            if prev <= hi:
                parts.append(f"{_class_char(prev)}-{_class_char(hi)}")
            prev = None
            i += 1
        elif ch == "[" and i + 1 < n and pattern[i + 1] == ":":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise GlobSyntaxError(pattern, f"unclosed '[' at offset {start}")
            if end - 1 < i + 2 or pattern[end - 1] != ":":
                # No ":]": a plain "[" in the set.
                parts.append("\\[")
                prev = "["
                i += 1
                continue
            name = pattern[i + 2 : end - 1]
            cls = _CLASSES.get(name)
            if cls is None:
                raise GlobSyntaxError(pattern, f"unknown character class [:{name}:]")
            parts.append(cls)
            prev = None
            i = end + 1
        else:
            parts.append(_class_char(ch))
            prev = ch
            i += 1
    body = "".join(parts)
    if negated:
        return f"[^/{body}]", i
    if not body:
        return "(?!)", i
    return f"(?!/)[{body}]", i


def _tokenize(pattern: str, body: str, *, brackets: bool) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == "\\":
            i += 1
            if i >= n:
                raise GlobSyntaxError(pattern, "trailing '\\' (escape of nothing)")
            ch = body[i]
            tokens.append((_SEP, "/") if ch == "/" else (_LIT, ch))
            i += 1
        elif ch == "/":
            tokens.append((_SEP, "/"))
            i += 1
        elif ch == "*":
            j = i
            while j < n and body[j] == "*":
                j += 1
            tokens.append((_STAR, j - i))
            i = j
        elif ch == "?":
            tokens.append((_ANY, "?"))
            i += 1
        elif ch == "[":
            if not brackets:
                raise GlobSyntaxError(pattern, "character ranges ('[ ]') are not supported")
            regex, i = _parse_class(body, i)
            tokens.append((_CLASS, regex))
        else:
            tokens.append((_LIT, ch))
            i += 1
    return tokens


def _body_regex(tokens: Sequence[_Token]) -> str:
    out: list[str] = []
    last = len(tokens) - 1
    i = 0
    while i <= last:
        kind, value = tokens[i]
        if kind == _STAR:
            before = i == 0 or tokens[i - 1][0] == _SEP
            after = i == last or tokens[i + 1][0] == _SEP
            if isinstance(value, int) and value >= 2 and before and after:
                if i < last:  # "**/": zero or more directories
                    out.append("(?:.*/)?")
                    i += 2
                    continue
                out.append(".*")  # trailing "**": everything
            else:
                out.append("[^/]*")
        elif kind == _ANY:
            out.append("[^/]")
        elif kind == _SEP:
            out.append("/")
        elif kind == _CLASS:
            out.append(str(value))
        else:
            out.append(re.escape(str(value)))
        i += 1
    return "".join(out)


class GlobMatcher:
    """One compiled glob.  Build it with :func:`compile_glob`."""

    __slots__ = (
        "_dir",
        "anchored",
        "dialect",
        "dir_only",
        "dir_regex",
        "file_test",
        "index_key",
        "literal_dirs",
        "matches_everything",
        "pattern",
        "regex",
        "shallow",
        "strictly_below",
    )

    pattern: str
    dialect: GlobDialect
    anchored: bool
    dir_only: bool
    regex: str  # full-match regex for a file path; non-capturing groups only
    dir_regex: str  # full-match regex for a directory path
    literal_dirs: tuple[str, ...]  # anchored patterns: the leading literal path segments
    strictly_below: bool  # every match lies strictly below literal_dirs
    matches_everything: bool
    shallow: bool  # codeowners "dir/*": direct children only
    index_key: tuple[int, str] | None  # for GlobSet: what a matching path must contain

    def __init__(self, pattern: str, dialect: GlobDialect = "gitignore") -> None:
        if dialect not in ("gitignore", "codeowners"):
            raise ValueError(f"unknown glob dialect {dialect!r}")
        if not pattern:
            raise GlobSyntaxError(pattern, "empty pattern")
        if pattern[0] == "!":
            raise GlobSyntaxError(pattern, "negation ('!') is not supported; write '\\!' for a literal '!'")
        body = pattern
        dir_only = body.endswith("/") and not body.endswith("\\/")
        if dir_only:
            body = body[:-1]
        # git: a slash anywhere but at the end anchors the pattern; a leading one is dropped.
        anchored = "/" in body
        if body.startswith("/"):
            body = body[1:]
        if not body:
            raise GlobSyntaxError(pattern, "the pattern names no path")
        tokens = _tokenize(pattern, body, brackets=dialect == "gitignore")
        for a, b in zip([(_SEP, "/"), *tokens], [*tokens, (_SEP, "/")], strict=True):
            if a[0] == _SEP and b[0] == _SEP:
                raise GlobSyntaxError(pattern, "empty path segment ('//')")
        # CODEOWNERS: "docs/*" matches files directly in docs/, not nested ones.
        shallow = (
            dialect == "codeowners"
            and len(tokens) >= 2
            and tokens[-1] == (_STAR, 1)
            and tokens[-2][0] == _SEP
            and pattern.endswith("/*")
        ) or (dialect == "codeowners" and pattern == "/*")

        core = _body_regex(tokens)
        prefix = "" if anchored or core.startswith("(?:.*/)?") else "(?:.*/)?"
        if shallow:
            file_suffix = dir_suffix = ""
        elif core.endswith(".*") and not dir_only:  # only a trailing "**" ends in ".*"
            file_suffix = dir_suffix = ""  # a trailing "**" already takes in everything below
        elif dir_only:
            file_suffix, dir_suffix = "/.*", "(?:/.*)?"
        else:
            file_suffix = dir_suffix = "(?:/.*)?"

        # Leading literal segments of an anchored pattern, for covers() and GlobSet's index.
        segments: list[list[_Token]] = [[]]
        for tok in tokens:
            if tok[0] == _SEP:
                segments.append([])
            else:
                segments[-1].append(tok)
        literal: list[str] = []
        if anchored:
            for seg in segments:
                if not all(k == _LIT for k, _ in seg):
                    break
                literal.append("".join(str(v) for _, v in seg))
        fully_literal = len(literal) == len(segments)

        self.pattern = pattern
        self.dialect = dialect
        self.anchored = anchored
        self.dir_only = dir_only
        self.shallow = shallow
        self.regex = prefix + core + file_suffix
        self.dir_regex = prefix + core + dir_suffix
        self.literal_dirs = tuple(literal)
        self.strictly_below = bool(literal) and (not fully_literal or dir_only)
        self.matches_everything = (
            not dir_only and not shallow and all(k == _STAR for k, _ in tokens) and len(segments) == 1
        )
        self.index_key = _index_key(anchored, literal, segments)
        # Literal patterns (the bulk of most CODEOWNERS files) skip the regex engine.
        self.file_test: PathTest
        if anchored and fully_literal:
            self.file_test = _anchored_literal("/".join(literal), dir_only)
        elif self.index_key is not None and self.index_key[0] == KEY_COMPONENT:
            self.file_test = _any_depth_literal(self.index_key[1], dir_only)
        else:
            self.file_test = re.compile(self.regex, re.DOTALL).fullmatch
        self._dir: PathTest | None = None  # compiled on first use: directories are rarely asked

    def match(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether ``path`` (repo-relative; a trailing ``/`` means a directory) matches."""
        if is_dir or path.endswith("/"):
            if self._dir is None:
                self._dir = re.compile(self.dir_regex, re.DOTALL).fullmatch
            return bool(self._dir(path.rstrip("/")))
        return bool(self.file_test(path))

    def covers(self, other: GlobMatcher) -> bool:
        """Whether every file path ``other`` matches is also matched by this glob.

        Sound but incomplete: ``True`` is a proof, ``False`` means "not shown".  It holds
        when the two compile to the same regex, when this glob matches every path, or
        when ``other`` only matches paths at or under a literal directory that this glob
        matches as a whole (a glob that matches a directory matches everything in it;
        not so for a CODEOWNERS ``dir/*``).
        """
        if self.regex == other.regex or self.matches_everything:
            return True
        if self.shallow or not other.literal_dirs:
            return False
        below = "/".join(other.literal_dirs)
        if other.strictly_below:
            return self.match(below, is_dir=True)
        # ``other`` may match ``below`` itself (as a file or a directory) and what is under it.
        return self.match(below)

    def __repr__(self) -> str:
        return f"GlobMatcher({self.pattern!r}, dialect={self.dialect!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # the compiled tests are closures: pickle (for worker processes) the recipe instead
        return (compile_glob, (self.pattern, self.dialect))


def _anchored_literal(literal: str, dir_only: bool) -> PathTest:
    below = literal + "/"
    if dir_only:
        return lambda path: path.startswith(below)
    return lambda path: path == literal or path.startswith(below)


def _any_depth_literal(name: str, dir_only: bool) -> PathTest:
    needle = "/" + name + "/"
    if dir_only:
        return lambda path: needle in "/" + path
    return lambda path: needle in "/" + path + "/"


def _index_key(anchored: bool, literal: list[str], segments: list[list[_Token]]) -> tuple[int, str] | None:
    if anchored and literal:
        return (KEY_PREFIX, "/".join(literal))
    if anchored and len(segments) == 2 and len(segments[0]) == 1:
        kind, value = segments[0][0]
        if kind == _STAR and isinstance(value, int) and value >= 2:
            segments = segments[1:]  # "**/x" matches what "x" does
            anchored = False
    if anchored or len(segments) != 1:
        return None
    (segment,) = segments
    if segment and all(k == _LIT for k, _ in segment):
        return (KEY_COMPONENT, "".join(str(v) for _, v in segment))
    if len(segment) > 1 and segment[0][0] == _STAR and all(k == _LIT for k, _ in segment[1:]):
        return (KEY_SUFFIX, "".join(str(v) for _, v in segment[1:]))
    return None


@lru_cache(maxsize=4096)
def compile_glob(pattern: str, dialect: GlobDialect = "gitignore") -> GlobMatcher:
    """Compile (and cache) a glob.  Raises :class:`GlobSyntaxError` for a bad pattern."""
    return GlobMatcher(pattern, dialect)


def glob_covers(general: str, specific: str, dialect: GlobDialect = "gitignore") -> bool:
    """Whether every file path ``specific`` matches is also matched by ``general``.

    See :meth:`GlobMatcher.covers`.  Raises :class:`GlobSyntaxError` for a bad pattern.
    """
    return compile_glob(general, dialect).covers(compile_glob(specific, dialect))
