"""Semantics of attribution.globs: gitignore-style globs on repo-relative paths."""

from __future__ import annotations

import random
import re

import pytest

from attribution.globs import (
    GlobDialect,
    GlobMatcher,
    GlobSyntaxError,
    compile_glob,
    glob_covers,
)
from attribution.globset import GlobSet

# (pattern, path, expected).  A trailing "/" on a path marks a directory.
CASES: list[tuple[str, str, bool]] = [
    # No slash: matches a name at any depth, and everything under a matching directory.
    ("logs", "logs", True),
    ("logs", "a/b/logs", True),
    ("logs", "logs/x.txt", True),
    ("logs", "a/logs/b/c", True),
    ("logs", "logs.txt", False),
    ("logs", "mylogs", False),
    ("logs", "a/logs.d/x", False),
    # A leading slash anchors to the root.
    ("/logs", "logs", True),
    ("/logs", "logs/x", True),
    ("/logs", "a/logs", False),
    ("/logs", "a/logs/x", False),
    # A slash in the middle anchors too.
    ("a/b", "a/b", True),
    ("a/b", "a/b/c", True),
    ("a/b", "x/a/b", False),
    ("a/b", "a/bc", False),
    # A trailing slash: directories only; a file matches through a parent directory.
    ("logs/", "logs", False),
    ("logs/", "logs/", True),
    ("logs/", "a/logs/", True),
    ("logs/", "logs/x", True),
    ("logs/", "a/logs/x/y", True),
    ("logs/", "a/logs", False),
    ("/build/logs/", "build/logs/x", True),
    ("/build/logs/", "build/logs", False),
    ("/build/logs/", "build/logs/", True),
    ("/build/logs/", "x/build/logs/y", False),
    # "*": anything but "/", possibly nothing.
    ("*.py", "a.py", True),
    ("*.py", "src/deep/a.py", True),
    ("*.py", ".py", True),
    ("*.py", "a.pyc", False),
    ("*.py", "a.py/inner", True),  # a directory named a.py
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/x/a.py", False),
    ("src/*.py", "x/src/a.py", False),
    ("src/*", "src/a", True),
    ("src/*", "src/a/b", True),  # src/a matches, so everything under it does
    ("src/*", "src", False),
    ("src/*", "src/", False),
    ("*", "anything", True),
    ("*", "a/b/c", True),
    ("*", ".hidden", True),
    ("/*", "a/b", True),
    ("*/", "a", False),
    ("*/", "a/b", True),
    ("a*b", "ab", True),
    ("a*b", "axxb", True),
    ("a*b", "ax/b", False),
    # "?": exactly one character but "/".
    ("l?gs", "logs", True),
    ("l?gs", "lgs", False),
    ("l?gs", "loogs", False),
    ("a?c", "a/c", False),
    ("?", "a", True),
    ("?", "ab", False),
    ("?", "x/y", True),
    # "**".
    ("**/logs", "logs", True),
    ("**/logs", "a/b/logs", True),
    ("**/logs", "a/logs/x", True),
    ("**/logs", "a/xlogs", False),
    ("a/**", "a/b", True),
    ("a/**", "a/b/c/d", True),
    ("a/**", "a", False),
    ("a/**", "a/", False),
    ("a/**", "x/a/b", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/b/c", True),
    ("a/**/b", "a/xb", False),
    ("a/**/b", "x/a/b", False),
    ("a/**/", "a/b", False),
    ("a/**/", "a/b/", True),
    ("a/**/", "a/b/c", True),
    ("**/a/**", "a/b", True),
    ("**/a/**", "x/y/a/b", True),
    ("**/a/**", "x/a", False),
    ("**", "a/b/c", True),
    ("***", "a/b/c", True),
    ("a/***/b", "a/x/y/b", True),
    # Stars not between slashes are plain "*".
    ("a**b", "axb", True),
    ("a**b", "ax/yb", False),
    ("**.py", "x/a.py", True),
    ("**x", "a/bx", True),
    ("a/**b", "a/xb", True),
    ("a/**b", "a/x/yb", False),
    # Escapes.
    ("f\\*o", "f*o", True),
    ("f\\*o", "foo", False),
    ("f\\?o", "f?o", True),
    ("f\\?o", "fxo", False),
    ("\\!important", "!important", True),
    ("a\\ b", "a b", True),
    ("\\#notes", "#notes", True),
    ("#notes", "#notes", True),  # no comments in a single glob
    # Bracket expressions.
    ("[ab].py", "a.py", True),
    ("[ab].py", "c.py", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[!a]y", "by", True),
    ("[!a]y", "ay", False),
    ("[^a]y", "by", True),
    ("[^a]y", "ay", False),
    ("a[!x]c", "a/c", False),
    ("a[^x]c", "a/c", False),
    ("a[/]c", "a/c", False),
    ("[]a]", "]", True),
    ("[]a]", "a", True),
    ("[a-]", "-", True),
    ("[-a]", "-", True),
    ("[z-a]x", "mx", False),
    ("[!z-a]x", "mx", True),
    ("[[:digit:]]*", "9lives", True),
    ("[[:digit:]]*", "nine", False),
    ("[[:upper:][:digit:]]", "Q", True),
    ("[[:upper:][:digit:]]", "q", False),
    ("[[:punct:]]", "-", True),
    ("[[:space:]]", " ", True),
    ("[[:alpha]", "[", True),  # no ":]": a plain "[" in the set
    ("[[:alpha]", ":", True),
    ("[[:alpha]", "b", False),
    ("[\\]]", "]", True),
    ("[a\\-z]", "-", True),
    ("[a\\-z]", "m", False),
    # Case-sensitive.
    ("Logs", "logs", False),
    ("*.JS", "a.js", False),
    ("/Docs/", "docs/a", False),
    ("/Docs/", "Docs/a", True),
    # Odd characters in paths.
    ("*.py", "we\nird.py", True),
    ("a b/", "a b/c", True),
    ("ünï/*", "ünï/x", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), CASES)
def test_gitignore_semantics(pattern: str, path: str, expected: bool) -> None:
    assert compile_glob(pattern).match(path) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("logs/", "a/logs", True),
        ("logs/", "logs", True),
        ("a/**", "a", False),
        ("src/*", "src", False),
        ("src/*", "src/a", True),
    ],
)
def test_is_dir_flag_matches_like_a_trailing_slash(pattern: str, path: str, expected: bool) -> None:
    m = compile_glob(pattern)
    assert m.match(path, is_dir=True) is expected
    assert m.match(path + "/") is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        # GitHub: "docs/*" matches docs/getting-started.md, not nested files.
        ("docs/*", "docs/getting-started.md", True),
        ("docs/*", "docs/build-app/troubleshooting.md", False),
        ("/*", "README.md", True),
        ("/*", "src/a.py", False),
        ("*", "src/a.py", True),
        ("a/*/c/*", "a/b/c/d", True),
        ("a/*/c/*", "a/b/c/d/e", False),
        ("**/*", "a/b/c", True),
        ("docs/**", "docs/a/b", True),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/x/a.md", False),
        # Everything else is as in gitignore.
        ("docs/", "x/docs/a/b", True),
        ("/docs/", "docs/a/b", True),
        ("docs/*/", "docs/a/b/c", True),
        ("f*", "x/foo/bar", True),
    ],
)
def test_codeowners_dialect(pattern: str, path: str, expected: bool) -> None:
    assert compile_glob(pattern, "codeowners").match(path) is expected


@pytest.mark.parametrize(
    ("pattern", "dialect", "fragment"),
    [
        ("", "gitignore", "empty pattern"),
        ("/", "gitignore", "names no path"),
        ("!*.log", "gitignore", "negation"),
        ("a//b", "gitignore", "empty path segment"),
        ("//a", "gitignore", "empty path segment"),
        ("a//", "gitignore", "empty path segment"),
        ("abc\\", "gitignore", "trailing '\\'"),
        ("[abc", "gitignore", "unclosed '['"),
        ("a/[!x", "gitignore", "unclosed '['"),
        ("[[:nope:]]", "gitignore", "unknown character class"),
        ("[[:alpha:]", "gitignore", "unclosed '['"),
        ("*.[ch]", "codeowners", "character ranges"),
    ],
)
def test_syntax_errors(pattern: str, dialect: GlobDialect, fragment: str) -> None:
    with pytest.raises(GlobSyntaxError) as info:
        compile_glob(pattern, dialect)
    assert isinstance(info.value, ValueError)
    assert fragment in info.value.message
    assert info.value.pattern == pattern
    assert repr(pattern) in str(info.value)


def test_unknown_dialect_is_rejected() -> None:
    with pytest.raises(ValueError, match="dialect"):
        GlobMatcher("*.py", "glob")  # type: ignore[arg-type]


def test_compiled_globs_are_cached_and_describe_themselves() -> None:
    m = compile_glob("/build/logs/")
    assert compile_glob("/build/logs/") is m
    assert compile_glob("/build/logs/", "codeowners") is not m
    assert (m.pattern, m.dialect, m.anchored, m.dir_only) == ("/build/logs/", "gitignore", True, True)
    assert not compile_glob("*.py").anchored
    assert compile_glob("**/x").anchored
    assert "build/logs" in repr(m)


@pytest.mark.parametrize("pattern", [p for p, _, _ in CASES])
def test_regexes_have_no_capturing_groups(pattern: str) -> None:
    m = compile_glob(pattern)
    assert re.compile(m.regex).groups == 0
    assert re.compile(m.dir_regex).groups == 0


# ---- GlobSet ------------------------------------------------------------------------

SEGMENTS = ["a", "b", "src", "logs", "docs", "x.py", "*", "**", "?", "*.py", "a*", "l?gs", "[ab]"]
NAMES = ["a", "b", "ab", "src", "logs", "docs", "x.py", "y.js", "lgs", "Logs", "c"]


def _random_globs(rng: random.Random, n: int, *, brackets: bool) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        segs = [rng.choice(SEGMENTS) for _ in range(rng.choice([1, 1, 2, 3]))]
        pattern = ("/" if rng.random() < 0.3 else "") + "/".join(segs) + ("/" if rng.random() < 0.2 else "")
        if (brackets or "[" not in pattern) and not compile_glob(pattern).matches_everything:
            out.append(pattern)
    return out


def _random_paths(rng: random.Random, n: int) -> list[str]:
    return ["/".join(rng.choice(NAMES) for _ in range(rng.choice([1, 2, 3, 4]))) for _ in range(n)]


@pytest.mark.parametrize("dialect", ["gitignore", "codeowners"])
def test_globset_agrees_with_testing_every_glob(dialect: GlobDialect) -> None:
    rng = random.Random(7)
    patterns = _random_globs(rng, 300, brackets=dialect == "gitignore")
    globs = GlobSet(patterns, dialect)
    matchers = [compile_glob(p, dialect) for p in patterns]
    assert len(globs) == len(patterns)
    misses = 0
    for path in [*_random_paths(rng, 400), "nothing/matches/this", "zzz"]:
        expected = [i for i, m in enumerate(matchers) if m.match(path)]
        assert globs.all(path) == expected
        assert globs.first(path) == (expected[0] if expected else None)
        assert globs.last(path) == (expected[-1] if expected else None)
        misses += not expected
    assert 0 < misses < 100


def test_empty_globset_matches_nothing() -> None:
    globs = GlobSet([])
    assert (globs.first("a"), globs.last("a"), globs.all("a"), len(globs)) == (None, None, [], 0)


def test_globset_accepts_compiled_matchers() -> None:
    globs = GlobSet([compile_glob("*.py"), "src/"])
    assert globs.all("src/a.py") == [0, 1]
    assert globs.first("src/a.js") == 1


# ---- covers / shadowing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("general", "specific", "dialect", "expected"),
    [
        ("*", "src/**/*.py", "gitignore", True),
        ("**", "a", "gitignore", True),
        ("/*", "a/b/c", "gitignore", True),
        ("/*", "a/b/c", "codeowners", False),
        ("src/", "/src/payments/", "gitignore", True),
        ("src/", "/src/*.py", "gitignore", True),
        ("src/", "/src", "gitignore", False),  # /src may be a file
        ("src", "/src", "gitignore", True),
        ("/src/", "src/", "gitignore", False),  # src/ matches at any depth
        ("**/logs", "/build/logs/", "gitignore", True),
        ("/docs/", "docs/*", "codeowners", True),
        ("docs/*", "/docs/a/", "codeowners", False),
        ("docs/*", "/docs/a/", "gitignore", True),
        ("/apps/github", "/apps/github", "codeowners", True),
        ("*.py", "src/a.py", "gitignore", True),
        ("*.py", "src/*.py", "gitignore", False),  # true, but not shown
        ("/a/b", "/a", "gitignore", False),
        ("*.js", "*.py", "gitignore", False),
    ],
)
def test_glob_covers(general: str, specific: str, dialect: GlobDialect, expected: bool) -> None:
    assert glob_covers(general, specific, dialect) is expected


@pytest.mark.parametrize("dialect", ["gitignore", "codeowners"])
def test_glob_covers_is_sound(dialect: GlobDialect) -> None:
    rng = random.Random(11)
    patterns = _random_globs(rng, 120, brackets=False)
    paths = _random_paths(rng, 300)
    matchers = [compile_glob(p, dialect) for p in patterns]
    proven = 0
    for g in matchers:
        for s in matchers:
            if g.covers(s):
                proven += 1
                assert all(g.match(p) for p in paths if s.match(p)), (g.pattern, s.pattern)
    assert proven > len(matchers)  # more than the trivial g covers g


def test_shadowing() -> None:
    globs = GlobSet(["/src/payments/", "*.py", "src/", "/src/payments/retry.py", "*"], "codeowners")
    # Last match wins: a later glob matching everything an earlier one does overrides it.
    assert globs.shadowing(0, wins="last") == 2
    assert globs.shadowing(1, wins="last") == 4
    assert globs.shadowing(4, wins="last") is None
    # First match wins: an earlier glob that matches everything a later one does hides it.
    assert globs.shadowing(3, wins="first") == 2
    assert globs.shadowing(2, wins="first") is None
    assert globs.shadowing(0, wins="first") is None
