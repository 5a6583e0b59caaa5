"""GitHub CODEOWNERS semantics: who owns a repo-relative file path.

What GitHub documents ("About code owners"), and how this module follows it:

* Each line is a pattern followed by zero or more owners, separated by spaces or tabs
  (``\\ `` puts a space in a pattern).  Lines starting with ``#`` are comments; blank
  lines are skipped.  A field after the pattern that starts with ``#`` starts an inline
  comment (``*.js @js-owner # the JS team``); a ``#`` inside a pattern is a literal.
* Patterns follow gitignore (see :mod:`attribution.globs`, dialect ``"codeowners"``) with
  GitHub's exceptions: ``!`` negation, ``[ ]`` character ranges and escaping a leading
  ``#`` as ``\\#`` do not work.  Lines using them are skipped and reported as errors.
  ``dir/*`` matches only the files directly in ``dir``, not nested ones.
* The last matching line wins.  A line with a pattern and no owners makes the paths it
  matches unowned (``match`` returns that rule, with ``owners == ()``).
* Owners are ``@user``, ``@org/team`` or an email address.  A line with an owner of any
  other shape is skipped and reported, as GitHub skips invalid lines.  Whether the users
  and teams exist (and have write access) is not checked: that needs the GitHub API.
* Paths are case-sensitive, repo-relative and without a leading ``/``.
* A file of 3 MB or more is not loaded by GitHub; it yields no rules and one error.

Problems are data (:class:`CodeOwnersProblem`), never exceptions: ``parse`` does not raise.
Warnings mark lines that load but are likely mistakes, such as a rule that never takes
effect because a later rule matches every path it matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from attribution.globs import GlobMatcher, GlobSyntaxError, compile_glob
from attribution.globset import GlobSet

__all__ = [
    "MAX_CODEOWNERS_BYTES",
    "CodeOwners",
    "CodeOwnersProblem",
    "CodeOwnersRule",
    "owner_kind",
]

# "CODEOWNERS files must be under 3 MB in size."
MAX_CODEOWNERS_BYTES: Final = 3 * 1024 * 1024

_USER: Final = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9_-]*)")
_TEAM: Final = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9_-]*)/[A-Za-z0-9_](?:[A-Za-z0-9._-]*)")
_EMAIL: Final = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)
_FIELD_SEP: Final = " \t\f\v"


def owner_kind(owner: str) -> Literal["user", "team", "email"] | None:
    """``"user"``, ``"team"`` or ``"email"`` for a well-formed owner, else ``None``."""
    if _USER.fullmatch(owner):
        return "user"
    if _TEAM.fullmatch(owner):
        return "team"
    if _EMAIL.fullmatch(owner):
        return "email"
    return None


@dataclass(frozen=True, slots=True)
class CodeOwnersRule:
    """One loaded CODEOWNERS line."""

    line: int  # 1-based
    pattern: str  # as written (escapes kept)
    owners: tuple[str, ...]  # as written, in order; () makes matching paths unowned
    text: str  # the whole line, without its line break


@dataclass(frozen=True, slots=True)
class CodeOwnersProblem:
    """Why a line was skipped (``error``) or looks wrong (``warning``)."""

    source: str
    line: int  # 1-based; 0 for the file as a whole
    text: str
    message: str
    severity: Literal["error", "warning"]

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.severity}: {self.message}"


def _split_pattern(line: str) -> tuple[str, str]:
    """Split off the pattern field; ``\\`` escapes the next character, whitespace too."""
    i = 0
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in _FIELD_SEP:
            break
        i += 1
    return line[:i], line[i:]


def _unsupported(pattern: str) -> str | None:
    """GitHub's documented exceptions to gitignore syntax, as a message, or ``None``."""
    if pattern.startswith("!"):
        return "negation ('!') is not supported in CODEOWNERS; line skipped"
    if pattern.startswith("\\#"):
        return "escaping a leading '#' with '\\' is not supported in CODEOWNERS; line skipped"
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "[":
            return "character ranges ('[ ]') are not supported in CODEOWNERS; line skipped"
        i += 1
    return None


class CodeOwners:
    """A parsed CODEOWNERS file.  Build it with :meth:`parse`."""

    __slots__ = ("_globs", "problems", "rules", "source")

    source: str
    rules: tuple[CodeOwnersRule, ...]
    problems: tuple[CodeOwnersProblem, ...]

    def __init__(
        self,
        rules: Iterable[CodeOwnersRule] = (),
        problems: Iterable[CodeOwnersProblem] = (),
        *,
        source: str = "CODEOWNERS",
    ) -> None:
        """Raises :class:`~attribution.globs.GlobSyntaxError` for a rule with a bad pattern."""
        rules = tuple(rules)
        self._setup(source, rules, (compile_glob(r.pattern, "codeowners") for r in rules))
        self.problems = tuple(problems)

    @classmethod
    def parse(cls, text: str, source: str = "CODEOWNERS") -> CodeOwners:
        """Parse CODEOWNERS text.  Never raises for bad lines: they become ``problems``."""
        if len(text) * 4 >= MAX_CODEOWNERS_BYTES and len(text.encode("utf-8")) >= MAX_CODEOWNERS_BYTES:
            too_big = CodeOwnersProblem(
                source, 0, "", "file is 3 MB or larger: GitHub does not load it; no rules used", "error"
            )
            return cls((), (too_big,), source=source)
        text = text.removeprefix("\ufeff")
        rules: list[CodeOwnersRule] = []
        matchers: list[GlobMatcher] = []
        problems: list[CodeOwnersProblem] = []

        def problem(lineno: int, raw: str, message: str, severity: Literal["error", "warning"]) -> None:
            problems.append(CodeOwnersProblem(source, lineno, raw, message, severity))

        for lineno, raw in enumerate(text.split("\n"), start=1):
            raw = raw.removesuffix("\r")
            line = raw.lstrip(_FIELD_SEP)
            if not line.strip() or line.startswith("#"):
                continue
            pattern, rest = _split_pattern(line)
            unsupported = _unsupported(pattern)
            if unsupported is not None:
                problem(lineno, raw, unsupported, "error")
                continue
            try:
                matcher = compile_glob(pattern, "codeowners")
            except GlobSyntaxError as exc:
                problem(lineno, raw, f"{exc.message}; line skipped", "error")
                continue
            owners: list[str] = []
            for field in rest.split():
                if field.startswith("#"):
                    break  # an inline comment runs to the end of the line
                owners.append(field)
            bad = [o for o in owners if owner_kind(o) is None]
            if bad:
                shown = ", ".join(repr(o) for o in bad)
                problem(
                    lineno,
                    raw,
                    f"invalid owner {shown}: expected @user, @org/team or an email address; line skipped",
                    "error",
                )
                continue
            dupes = sorted({o for o in owners if owners.count(o) > 1})
            if dupes:
                problem(lineno, raw, f"owner listed more than once: {', '.join(dupes)}", "warning")
            if not owners and owner_kind(pattern) is not None:
                problem(
                    lineno,
                    raw,
                    f"pattern {pattern!r} looks like an owner and the line has no owners: "
                    "is the path missing? (as written it makes matching paths unowned)",
                    "warning",
                )
            rules.append(CodeOwnersRule(lineno, pattern, tuple(owners), raw))
            matchers.append(matcher)

        owners_file = cls.__new__(cls)
        owners_file._setup(source, rules, matchers)
        problems.extend(owners_file._overridden())
        problems.sort(key=lambda p: p.line)
        owners_file.problems = tuple(problems)
        return owners_file

    def _setup(self, source: str, rules: Iterable[CodeOwnersRule], matchers: Iterable[GlobMatcher]) -> None:
        self.source = source
        self.rules = tuple(rules)
        self.problems = ()
        self._globs = GlobSet(matchers, "codeowners")

    def match(self, path: str) -> CodeOwnersRule | None:
        """The rule that decides ``path`` (the last matching line), or ``None``.

        ``path`` is repo-relative without a leading ``/``.  A returned rule with
        ``owners == ()`` means the path is explicitly unowned.
        """
        i = self._globs.last(path)
        return None if i is None else self.rules[i]

    def owners(self, path: str) -> tuple[str, ...]:
        """The owners of ``path``: sorted, deduplicated; ``()`` when unowned or unmatched."""
        rule = self.match(path)
        if rule is None or not rule.owners:
            return ()
        return tuple(sorted(set(rule.owners)))

    def _overridden(self) -> list[CodeOwnersProblem]:
        """Warnings for rules that never decide a path: a later rule matches all they match."""
        out: list[CodeOwnersProblem] = []
        for i, rule in enumerate(self.rules):
            j = self._globs.shadowing(i, wins="last")
            if j is not None:
                later = self.rules[j]
                message = (
                    f"never takes effect: line {later.line} ({later.pattern!r}) comes later "
                    "and matches every path this pattern matches"
                )
                out.append(CodeOwnersProblem(self.source, rule.line, rule.text, message, "warning"))
        return out

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<CodeOwners {self.source}: {len(self.rules)} rules, {len(self.problems)} problems>"
