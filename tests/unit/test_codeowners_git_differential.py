"""Differential test: our glob matcher against ``git check-ignore --no-index``.

Each pattern goes into the ``.gitignore`` of its own directory ``p<N>/`` of a fresh
repository, so one ``git check-ignore`` run answers for every (pattern, path) pair.
Paths are generated with a fixed seed.  ``git check-ignore`` walks a path's parents, so a
file under an ignored directory is reported as ignored; a trailing ``/`` on a path makes
git treat it as a directory, which is how directory-only patterns are checked.

Patterns compared:
* the gitignore dialect of :mod:`attribution.globs`, for every generated pattern
  (brackets included);
* CODEOWNERS (:class:`attribution.codeowners.CodeOwners`) on file paths, for the patterns
  whose features gitignore and CODEOWNERS share (no ``[ ]``); for ``dir/*`` patterns,
  which GitHub documents as not matching nested files, CODEOWNERS must match a subset of
  what git matches, and exactly git's matches among direct children.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

from attribution.codeowners import CodeOwners
from attribution.globs import compile_glob

SEED = 20240611
N_RANDOM_PATTERNS = 160
N_PATHS = 300  # file paths
N_DIR_PATHS = 25  # directory paths (created on disk under every pattern's directory)

NAMES = [
    "a", "b", "ab", "ba", "abc", "src", "lib", "logs", "Logs", "docs", "apps", "build",
    "x.py", "y.js", "a.py", "b.txt", ".hidden", "la", "lxgs", "a b", "1", "z9", "foo-bar", "A",
    "c", "l", "gs", "[", "]", "-", ":",
]  # fmt: skip
# Paths that put a "/" where "?" or a bracket expression would otherwise match a character.
FIXED_PATHS = ["a/c", "ab/c", "l/gs", "a/c/b.txt", "b/c", "x/a/c"]

LITERAL_SEGMENTS = ["a", "b", "ab", "src", "lib", "logs", "docs", "apps", "build", "x.py", "A", "a b"]
WILD_SEGMENTS = [
    "*", "**", "?", "*.py", "a*", "*b", "l?gs", "*a*", "?b", "***", "a**", "**b", "a?c",
    "[ab]", "[!a]*", "[^l]?", "[[:alpha:]]*", "[a-c]b", "[[:digit:]]", "*.[jp]y", "[]a]", "[a-]",
]  # fmt: skip

HAND_PICKED = [
    "*", "**", "/*", "*/", "/**", "**/", "*.py", "/*.py", "docs/*", "/docs/", "docs/", "apps/",
    "/build/logs/", "**/logs", "logs", "/logs", "logs/", "a/**", "a/**/b", "**/a/**", "a/*/b",
    "a/**/", "**/b/", "a?", "?", "*.js", "src/*.py", "src/**/*.py", "/a/b", "a/b/", "**/a b",
    "Logs", "a/*", "/a/*", "*/*", "*/b", "a**b", "**x.py", "x.py/", "[ab]/", "lib/[!x]*",
    "a?c", "l?gs", "a[!x]c", "b[^a]c", "a[[:punct:]]c", "l*gs", "a*c",
    "[[:alpha]", "[]a]", "[a-]", "[!]]", "[[:]x]", "[]-b]", "[\\]]", "[[:punct:]]", "\\[", "a\\*c",
]  # fmt: skip


CHECK_IGNORE = ["check-ignore", "--no-index", "--stdin", "-z", "-v", "-n"]


def _random_pattern(rng: random.Random) -> str:
    n = rng.choice([1, 1, 2, 2, 3])
    segs = [rng.choice(WILD_SEGMENTS if rng.random() < 0.45 else LITERAL_SEGMENTS) for _ in range(n)]
    pattern = "/".join(segs)
    if rng.random() < 0.3:
        pattern = "/" + pattern
    if rng.random() < 0.25:
        pattern += "/"
    return pattern


def _random_path(rng: random.Random, depths: tuple[int, ...] = (1, 2, 2, 3, 3, 4)) -> str:
    return "/".join(rng.choice(NAMES) for _ in range(rng.choice(depths)))


@pytest.fixture(scope="module")
def cases(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[str], list[str], dict[tuple[int, str], bool]]:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    rng = random.Random(SEED)
    patterns = list(dict.fromkeys(HAND_PICKED + [_random_pattern(rng) for _ in range(N_RANDOM_PATTERNS)]))
    # Directories exist on disk: git asks the file system whether a path is a directory
    # (a trailing "/" in check-ignore's input is matched as text, unlike a real directory).
    dirs: set[str] = set()
    for _ in range(N_DIR_PATHS):
        parts = _random_path(rng, (1, 2, 2, 3)).split("/")
        dirs.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
    generated = {_random_path(rng) for _ in range(N_PATHS)} | set(FIXED_PATHS)
    files = sorted(p for p in generated if p not in dirs)
    paths = files + sorted(d + "/" for d in dirs)
    repo = tmp_path_factory.mktemp("gitdiff")
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(repo),
    }
    subprocess.run([git, "init", "-q", str(repo)], check=True, env=env)
    for i, pattern in enumerate(patterns):
        d = repo / f"p{i}"
        d.mkdir()
        (d / ".gitignore").write_text(pattern + "\n", encoding="utf-8")
        for sub in dirs:
            (d / sub).mkdir(parents=True, exist_ok=True)
    queries = [f"p{i}/{path.rstrip('/')}" for i in range(len(patterns)) for path in paths]
    proc = subprocess.run(
        [git, "-c", "core.ignoreCase=false", "-c", f"core.excludesFile={os.devnull}", *CHECK_IGNORE],
        cwd=repo,
        env=env,
        input="\0".join(queries).encode() + b"\0",
        capture_output=True,
        check=False,  # exit status 1 means "nothing ignored"
    )
    assert proc.returncode in (0, 1), proc.stderr.decode()
    fields = proc.stdout.decode().split("\0")[:-1]
    assert len(fields) == 4 * len(queries)
    ignored: dict[tuple[int, str], bool] = {}
    for k in range(0, len(fields), 4):
        source, _line, _pattern, query = fields[k : k + 4]
        top, _, path = query.partition("/")
        ignored[int(top[1:]), path + "/" if path in dirs else path] = source != ""
    assert len(ignored) == len(queries)
    return patterns, paths, ignored


def test_git_reports_parents_and_directories(
    cases: tuple[list[str], list[str], dict[tuple[int, str], bool]],
) -> None:
    """The premises of this test: git sees parent directories and trailing-slash paths."""
    patterns, paths, ignored = cases
    logs_dir = patterns.index("logs/")
    parts = {p: p.rstrip("/").split("/") for p in paths}
    nested = [p for p in paths if "logs" in parts[p][:-1]]
    assert nested and all(ignored[logs_dir, p] for p in nested)
    leaf_only = [p for p in paths if parts[p][-1] == "logs" and "logs" not in parts[p][:-1]]
    as_file = [p for p in leaf_only if not p.endswith("/")]  # git takes these for files
    as_dir = [p for p in leaf_only if p.endswith("/")]
    assert as_file and not any(ignored[logs_dir, p] for p in as_file)
    assert all(ignored[logs_dir, p] for p in as_dir)


def test_gitignore_dialect_agrees_with_git(
    cases: tuple[list[str], list[str], dict[tuple[int, str], bool]],
) -> None:
    patterns, paths, ignored = cases
    mismatches = []
    positives = 0
    for i, pattern in enumerate(patterns):
        matcher = compile_glob(pattern)
        for path in paths:
            ours = matcher.match(path)
            positives += ours
            if ours != ignored[i, path]:
                mismatches.append((pattern, path, ours, ignored[i, path]))
    assert mismatches == []
    # The generated data must exercise both outcomes substantially.
    total = len(patterns) * len(paths)
    assert total / 20 < positives < total * 19 / 20


def test_codeowners_agrees_with_git_on_shared_features(
    cases: tuple[list[str], list[str], dict[tuple[int, str], bool]],
) -> None:
    patterns, paths, ignored = cases
    files = [p for p in paths if not p.endswith("/")]
    mismatches = []
    compared_shallow = 0
    for i, pattern in enumerate(patterns):
        if "[" in pattern:
            continue  # character ranges are not supported by CODEOWNERS
        escaped = pattern.replace(" ", "\\ ")  # a space ends the pattern field unless escaped
        owners = CodeOwners.parse(f"{escaped} @owner\n")
        assert [p for p in owners.problems if p.severity == "error"] == []
        shallow = pattern.endswith("/*")
        if shallow and "**" in pattern:
            continue  # the depth of a direct child is not fixed
        depth = pattern.strip("/").count("/") + 1
        for path in files:
            ours = owners.match(path) is not None
            theirs = ignored[i, path]
            if shallow:
                # GitHub: "docs/*" matches docs/a.md, not docs/build/a.md.
                compared_shallow += 1
                expected = theirs and path.count("/") + 1 == depth
            else:
                expected = theirs
            if ours != expected:
                mismatches.append((pattern, path, ours, theirs))
    assert mismatches == []
    assert compared_shallow > 0
