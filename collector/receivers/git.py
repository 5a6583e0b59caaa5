"""Reading git history: the ``git`` CLI in, :mod:`attribution.history` values out.

Why the CLI and not a library: ``git log`` already does what a scan needs - rename detection
(``-M``), diffs of merges against their first parent (``--diff-merges=first-parent``), line
counts (``--numstat``) - at C speed, on every repository layout git itself reads (worktrees,
packs, partial clones, submodules' gitdirs).  pygit2 needs libgit2 matching the wheel, and
GitPython and dulwich shell out or diff in Python.  Three commands do a scan:

1. ``git rev-list --first-parent`` - which commits are on the head's first-parent chain;
2. ``git log -z --numstat -M --diff-merges=first-parent`` - every commit reachable from the
   head (or only those after the last scanned head), with its files, streamed and parsed as
   it arrives (NUL-separated: paths with spaces, tabs or newlines are read exactly);
3. ``git ls-tree -r -l`` and ``git grep -c`` - the files at the head, their bytes and lines.

Re-scans are incremental when the last scanned head is on the new head's first-parent chain
(a fast-forward): only ``last..head`` is read.  Otherwise (a force push, a rewritten branch)
the whole history is read again, as a new *generation* that replaces the old one in the store.

Clone URLs are cloned bare under a directory and fetched before each scan.  A token goes to
git through ``GIT_CONFIG_*`` environment variables (an ``http.extraHeader``), never on a
command line (``ps`` shows those) and never in a message.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from attribution.history import Commit, FileChange, HeadFile
from collector.errors import GitError

FileMapper = Callable[[str], tuple[str, tuple[str, ...]]]
"""A repo-relative path -> (module, owners), with the same rules as spans."""

_RECORD = "\x1e"
_FIELD = "\x1f"
# one record per commit: \x1e SHA \x1f parents \x1f name \x1f email \x1f author time \x1f
# committer time \x1f message \x1f, then (with -z) NUL, newline and the NUL-ended numstat entries
_FORMAT = "%x1e%H%x1f%P%x1f%an%x1f%ae%x1f%at%x1f%ct%x1f%B%x1f"
_NS = 1_000_000_000
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class GitScan:
    """What one scan read."""

    repository: str
    head: str  # the full SHA scanned
    since: str  # the head of the previous scan when incremental, else ""
    commits: list[Commit]
    head_files: list[HeadFile]

    @property
    def incremental(self) -> bool:
        return bool(self.since)


class GitRepository:
    """One local repository (a work tree or a bare repository) read with the git CLI."""

    def __init__(self, path: Path, *, name: str, git: str = "git", env: dict[str, str] | None = None) -> None:
        self.path = path
        self.name = name
        self._git = git
        self._env = env

    def _command(self, *args: str) -> list[str]:
        return [self._git, "-C", str(self.path), "-c", "core.quotepath=off", *args]

    def _fail(self, args: tuple[str, ...], detail: str) -> GitError:
        shown = " ".join(args[:3])
        return GitError(f"repository {self.name!r} at {self.path}: git {shown}: {detail.strip()}")

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        """Run git in the repository; its standard output.  Fails with :class:`GitError` on an
        exit status not in ``ok``."""
        try:
            done = subprocess.run(
                self._command(*args), capture_output=True, text=True, env=self._env, check=False
            )
        except OSError as exc:
            raise self._fail(args, f"cannot run git: {exc}") from exc
        if done.returncode not in ok:
            raise self._fail(args, done.stderr or f"exit status {done.returncode}")
        return done.stdout

    def _stream(self, *args: str) -> Iterator[str]:
        """git's standard output in chunks, as it arrives."""
        try:
            proc = subprocess.Popen(
                self._command(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except OSError as exc:
            raise self._fail(args, f"cannot run git: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        with proc:
            while chunk := proc.stdout.read(_CHUNK):
                yield chunk
            err = proc.stderr.read()
            if proc.wait() != 0:
                raise self._fail(args, err or f"exit status {proc.returncode}")

    def resolve(self, ref: str = "HEAD") -> str:
        """The full SHA of ``ref``."""
        return self.run("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").strip()

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            done = subprocess.run(
                self._command("merge-base", "--is-ancestor", older, newer),
                capture_output=True,
                env=self._env,
                check=False,
            )
        except OSError as exc:
            raise self._fail(("merge-base",), f"cannot run git: {exc}") from exc
        return done.returncode == 0

    def first_parent_chain(self, head: str, since: str = "") -> list[str]:
        """The SHAs of ``head``'s first-parent chain, newest first (down to, not including,
        ``since``)."""
        spec = [head, f"^{since}"] if since else [head]
        return self.run("rev-list", "--first-parent", *spec).split()

    def commits(self, head: str, mapper: FileMapper, *, since: str = "") -> list[Commit]:
        """Every commit reachable from ``head`` (and not from ``since``), newest first, each
        with its files against its first parent, renames followed."""
        first_parent = set(self.first_parent_chain(head, since))
        spec = [head, f"^{since}"] if since else [head]
        args = ("log", "-z", f"--format={_FORMAT}", "--numstat", "-M", "--diff-merges=first-parent", *spec)
        cache: dict[str, tuple[str, tuple[str, ...]]] = {}

        def mapped(path: str) -> tuple[str, tuple[str, ...]]:
            hit = cache.get(path)
            if hit is None:
                hit = cache[path] = mapper(path)
            return hit

        out: list[Commit] = []
        for record in _records(self._stream(*args)):
            out.append(_commit(self.name, record, first_parent, mapped, self._fail))
        return out

    def head_files(self, head: str, mapper: FileMapper) -> list[HeadFile]:
        """The files at ``head`` (blobs; submodules and links left out), their bytes and lines
        (0 for binary files)."""
        lines: dict[str, int] = {}
        for entry in self.run("grep", "-c", "-z", "-I", "-e", "", head, ok=(0, 1)).splitlines():
            name, _, count = entry.partition("\0")
            lines[name.removeprefix(f"{head}:")] = int(count or 0)
        out: list[HeadFile] = []
        for entry in self.run("ls-tree", "-r", "-l", "-z", head).split("\0"):
            meta, tab, path = entry.partition("\t")
            parts = meta.split()
            if not tab or len(parts) != 4 or parts[1] != "blob":
                continue
            module, owners = mapper(path)
            size = int(parts[3]) if parts[3].isdigit() else 0
            out.append(HeadFile(path, lines.get(path, 0), size, module, owners, self.name))
        return out

    def scan(self, mapper: FileMapper, *, ref: str = "HEAD", last_head: str = "") -> GitScan:
        """Read the history up to ``ref``: only what came after ``last_head`` when it is on the
        new head's first-parent chain, else everything."""
        head = self.resolve(ref)
        since = ""
        if last_head and last_head != head and self.is_ancestor(last_head, head):
            chain = self.first_parent_chain(head, last_head)
            if chain and self._first_parent_of(chain[-1]) == last_head:
                since = last_head
        if last_head == head:
            commits: list[Commit] = []
            since = head
        else:
            commits = self.commits(head, mapper, since=since)
        return GitScan(self.name, head, since, commits, self.head_files(head, mapper))

    def _first_parent_of(self, sha: str) -> str:
        parents = self.run("rev-list", "--parents", "-n", "1", sha).split()
        return parents[1] if len(parents) > 1 else ""


def _records(chunks: Iterator[str]) -> Iterator[str]:
    """The commit records of a ``git log`` stream (split at the record separator)."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        parts = pending.split(_RECORD)
        pending = parts.pop()
        for part in parts:
            if part:
                yield part
    if pending:
        yield pending


def _count(text: str) -> int:
    return int(text) if text.isdigit() else 0  # "-" for a binary file


def _commit(
    repository: str,
    record: str,
    first_parent: set[str],
    mapped: FileMapper,
    fail: Callable[[tuple[str, ...], str], GitError],
) -> Commit:
    fields = record.split(_FIELD, 7)
    if len(fields) != 8:
        raise fail(("log",), f"unexpected output near {record[:60]!r}")
    sha, parents, name, email, authored, committed, message, rest = fields
    files: list[FileChange] = []
    tokens = iter(rest.lstrip("\0\n").split("\0"))
    for token in tokens:
        token = token.lstrip("\n")
        if not token:
            continue
        added, _, tail = token.partition("\t")
        removed, _, path = tail.partition("\t")
        old = ""
        if not path:  # a rename: "added\tremoved\t" NUL old NUL new
            old, path = next(tokens, ""), next(tokens, "")
        module, owners = mapped(path)
        files.append(FileChange(path, _count(added), _count(removed), old, module, owners))
    return Commit(
        repository=repository,
        sha=sha,
        parents=tuple(parents.split()),
        author_name=name,
        author_email=email,
        authored_at_unix_nano=int(authored) * _NS,
        committed_at_unix_nano=int(committed) * _NS,
        message=message.rstrip("\n"),
        files=tuple(files),
        on_first_parent=sha in first_parent,
    )


def token_env(token: str) -> dict[str, str]:
    """The environment that gives git an HTTP token without a command line: a basic
    ``Authorization`` header (GitHub, GitLab and Bitbucket take a token as the password)."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    env = dict(os.environ)
    env.update(
        {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    return env


def sync_clone(url: str, dest: Path, *, name: str, token: str = "", branch: str = "") -> GitRepository:
    """Clone ``url`` bare into ``dest`` the first time, else fetch its branches (only
    ``branch`` when given) into the clone's own; the repository to scan (its ``HEAD`` is the
    remote's default branch, or scan ``branch`` by name)."""
    env = token_env(token) if token else {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    repo = GitRepository(dest, name=name, env=env)
    if not (dest / "HEAD").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["git", "clone", "--bare", "--quiet", "--", url, str(dest)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
        except OSError as exc:
            raise GitError(f"repository {name!r}: cannot run git: {exc}") from exc
        if done.returncode != 0:
            detail = done.stderr.replace(token, "***") if token else done.stderr
            raise GitError(f"repository {name!r}: git clone {_safe_url(url)}: {detail.strip()}")
    else:
        ref = f"+refs/heads/{branch}:refs/heads/{branch}" if branch else "+refs/heads/*:refs/heads/*"
        try:
            repo.run("fetch", "--quiet", "--prune", "origin", ref)
        except GitError as exc:
            raise GitError(str(exc).replace(token, "***") if token else str(exc)) from None
    return repo


def _safe_url(url: str) -> str:
    """``url`` without a password or token in its user part."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
