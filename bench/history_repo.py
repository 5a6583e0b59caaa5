"""A deterministic, large git repository for benchmarking a git history scanner.

The repository is written by one `git fast-import` process (the stream goes to its stdin), so
50,000 commits take seconds, not the hours `git commit` would.  No checkout is done: the
work tree stays empty and the scanner reads history with `git log` / `git ls-tree` only.

Shape:

* `refs/heads/main` holds the history; its root commit has no parent.  `spec.commits` is the
  total number of commits written (main, side and merge commits).
* Files are `mod{m:02d}/sub{k}/file{j}.py` over `spec.modules` top-level directories (the
  module is the top directory), 5 `sub` directories each, `spec.files` planned paths.  A path
  comes into being the first time a commit touches it, so early commits add files and later
  ones mostly modify them.
* Each commit changes `min_files_per_commit`..`max_files_per_commit` files (uniform).  A change
  rewrites a small Python-looking blob (a `# path rev N` header and 5-40 `def` lines): 1-3
  lines change, sometimes a line is added or dropped, so `--numstat` line counts are small and
  never zero (the header always changes).
* Merges (`merge_ratio` of the steps on main): 1-3 commits on `refs/heads/side`, forked from
  main's tip, then a commit on main with `from` main and `merge` side.  Main does not move
  while side is out, so the merge commit's tree is side's tip tree: it re-states side's files,
  and `git log --diff-merges=first-parent` shows side's changes on the merge.
* Renames (`rename_ratio` of the ordinary main commits): `R old new` of an existing file to a
  new path in the same module (`mod03/sub1/file17_r9123.py`), content unchanged (100%
  similar, so `-M` finds it), alongside the commit's other changes.
* Authors (committer = author) come from a fixed list of 20 people; commit i (counted over the
  whole repo) is dated `start_unix + i*60` in +0000.  Everything comes from
  `random.Random(seed)`, so the same spec gives the same commit ids.

`generate()` returns a `RepoTruth` counted as the stream was written; it is also kept in
`.git/history_repo_truth.json` so `append()` (n more commits on top of main, for incremental
re-scan benchmarks) can return the truth of the whole repo.

    .venv/bin/python bench/history_repo.py /tmp/x --commits 50000 [--append 100]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

SUBS = 5
MIN_LINES = 5
MAX_LINES = 40
TRUTH_FILE = "history_repo_truth.json"
MAIN = "refs/heads/main"
SIDE = "refs/heads/side"

PEOPLE: tuple[tuple[str, str], ...] = (
    ("Ada Lovelace", "ada@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Edsger Dijkstra", "edsger@example.com"),
    ("Barbara Liskov", "barbara@example.com"),
    ("Donald Knuth", "don@example.com"),
    ("Ken Thompson", "ken@example.com"),
    ("Dennis Ritchie", "dmr@example.com"),
    ("Margaret Hamilton", "margaret@example.com"),
    ("John McCarthy", "jmc@example.com"),
    ("Frances Allen", "fran@example.com"),
    ("Tony Hoare", "tony@example.com"),
    ("Leslie Lamport", "leslie@example.com"),
    ("Radia Perlman", "radia@example.com"),
    ("Niklaus Wirth", "niklaus@example.com"),
    ("Adele Goldberg", "adele@example.com"),
    ("Butler Lampson", "butler@example.com"),
    ("Shafi Goldwasser", "shafi@example.com"),
    ("Guido van Rossum", "guido@example.com"),
    ("Linus Torvalds", "linus@example.com"),
)


@dataclass(frozen=True)
class RepoSpec:
    commits: int = 50_000
    files: int = 2_000
    modules: int = 40
    min_files_per_commit: int = 1
    max_files_per_commit: int = 12
    merge_ratio: float = 0.05
    rename_ratio: float = 0.01
    seed: int = 7
    start_unix: int = 1_700_000_000  # fixed dates: commit i at start_unix + i*60 seconds


@dataclass(frozen=True)
class RepoTruth:
    """The generator's own knowledge, for checking a scanner."""

    commits: int  # total commits written (including merges)
    merges: int
    renames: int
    first_parent_commits: int
    head_files: int  # files at the head
    head: str  # ref name, "refs/heads/main"


def planned_path(f: int, modules: int) -> str:
    m = f % modules
    rest = f // modules
    return f"mod{m:02d}/sub{rest % SUBS}/file{rest // SUBS}.py"


class _Writer:
    """Writes one fast-import session; counts what it writes."""

    def __init__(
        self,
        out: IO[bytes],
        spec: RepoSpec,
        rng: random.Random,
        universe: list[str],
        live: set[str],
        first_index: int,
        tip: str | None,
    ) -> None:
        self.out = out
        self.spec = spec
        self.rng = rng
        self.universe = universe  # paths a change may pick (created on first touch)
        self.live = live  # paths in main's tree
        self.lines: dict[str, list[int]] = {}  # known content of a path (values of its def lines)
        self.last: dict[str, bytes] = {}  # the blob last written for a path
        self.index = first_index  # global commit number, for the date
        self.tip = tip  # `from` operand for main's next commit; None: root commit
        self.mark = 0
        self.commits = self.merges = self.renames = self.first_parent = 0

    # -- content --

    def _content(self, path: str) -> bytes:
        rng = self.rng
        vals = self.lines.get(path)
        if vals is None:
            vals = [rng.randrange(1000) for _ in range(rng.randint(MIN_LINES, MAX_LINES))]
        else:
            for _ in range(rng.randint(1, 3)):
                vals[rng.randrange(len(vals))] = rng.randrange(1000)
            r = rng.random()
            if r < 0.3 and len(vals) < MAX_LINES:
                vals.insert(rng.randrange(len(vals) + 1), rng.randrange(1000))
            elif r > 0.8 and len(vals) > MIN_LINES:
                del vals[rng.randrange(len(vals))]
        self.lines[path] = vals
        data = self._render(path, vals)
        self.last[path] = data
        return data

    def _render(self, path: str, vals: list[int]) -> bytes:
        body = "".join([f"def f{n}(x):\n    return x * {v}\n" for n, v in enumerate(vals)])
        return f"# {path} rev {self.index}\n{body}".encode()

    # -- stream --

    def _commit(self, ref: str, frm: str | None, merge: str | None, ops: list[bytes], msg: str) -> str:
        self.mark += 1
        name, email = PEOPLE[self.rng.randrange(len(PEOPLE))]
        when = self.spec.start_unix + self.index * 60
        ident = f"{name} <{email}> {when} +0000"
        m = msg.encode()
        head = [f"commit {ref}\nmark :{self.mark}\nauthor {ident}\ncommitter {ident}\n".encode()]
        head.append(b"data %d\n%s\n" % (len(m), m))
        if frm is not None:
            head.append(f"from {frm}\n".encode())
        if merge is not None:
            head.append(f"merge {merge}\n".encode())
        self.out.write(b"".join(head + ops) + b"\n")
        self.index += 1
        self.commits += 1
        return f":{self.mark}"

    @staticmethod
    def _modify(path: str, data: bytes) -> bytes:
        return b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data)

    def _pick(self, exclude: str | None = None) -> list[str]:
        spec = self.spec
        k = min(self.rng.randint(spec.min_files_per_commit, spec.max_files_per_commit), len(self.universe))
        return [p for p in self.rng.sample(self.universe, k) if p != exclude]

    def _msg(self, paths: list[str], what: str) -> str:
        mods = sorted({p.split("/", 1)[0] for p in paths})
        return f"{', '.join(mods)}: {what} {self.index}"

    def main_commit(self) -> None:
        ops: list[bytes] = []
        new: str | None = None
        if self.live and self.rng.random() < self.spec.rename_ratio:
            old = self.rng.choice(sorted(self.live))
            mod, sub_file = old.split("/", 1)
            stem = re.match(r"sub\d+/(file\d+)", sub_file)
            base = stem.group(1) if stem else "file"
            new = f"{mod}/sub{self.rng.randrange(SUBS)}/{base}_r{self.index}.py"
            ops.append(f"R {old} {new}\n".encode())
            self.universe[self.universe.index(old)] = new
            self.live.discard(old)
            self.live.add(new)
            if old in self.lines:
                self.lines[new] = self.lines.pop(old)
            self.renames += 1
        paths = self._pick(exclude=new)
        ops.extend(self._modify(p, self._content(p)) for p in paths)
        self.live.update(paths)
        what = "rename and change" if new else "change"
        self.tip = self._commit(MAIN, self.tip, None, ops, self._msg(paths + ([new] if new else []), what))
        self.first_parent += 1

    def merge_sequence(self, side_commits: int) -> None:
        assert self.tip is not None
        touched: dict[str, None] = {}
        side = self.tip
        for _ in range(side_commits):
            paths = self._pick()
            ops = [self._modify(p, self._content(p)) for p in paths]
            side = self._commit(SIDE, side, None, ops, self._msg(paths, "side change"))
            touched.update(dict.fromkeys(paths))
        # main has not moved: the merge's tree is side's tip, so it re-states side's files
        ops = [self._modify(p, self.last[p]) for p in touched]
        self.live.update(touched)
        self.tip = self._commit(MAIN, self.tip, side, ops, f"Merge side into main ({len(touched)} files)")
        self.merges += 1
        self.first_parent += 1

    def run(self, n: int) -> None:
        written = 0
        while written < n:
            left = n - written
            if self.tip is not None and left >= 2 and self.rng.random() < self.spec.merge_ratio:
                side = min(self.rng.randint(1, 3), left - 1)
                self.merge_sequence(side)
                written += side + 1
            else:
                self.main_commit()
                written += 1
        self.out.write(b"done\n")


def _git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True).stdout


def _fast_import(
    path: Path,
    spec: RepoSpec,
    n: int,
    rng: random.Random,
    universe: list[str],
    live: set[str],
    first_index: int,
    tip: str | None,
) -> _Writer:
    proc = subprocess.Popen(
        ["git", "-C", str(path), "fast-import", "--quiet", "--done"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    w = _Writer(proc.stdin, spec, rng, universe, live, first_index, tip)
    try:
        w.run(n)
    finally:
        proc.stdin.close()
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"git fast-import failed with exit code {rc}")
    return w


def _save(path: Path, truth: RepoTruth) -> RepoTruth:
    git_dir = Path(_git(path, "rev-parse", "--absolute-git-dir").strip())
    (git_dir / TRUTH_FILE).write_text(json.dumps(asdict(truth), indent=2) + "\n")
    return truth


def generate(path: Path, spec: RepoSpec) -> RepoTruth:
    """Create a repository of `spec.commits` commits at `path` (which must be new or empty)."""
    if spec.commits < 1:
        raise ValueError("spec.commits must be >= 1")
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    universe = [planned_path(f, spec.modules) for f in range(spec.files)]
    w = _fast_import(path, spec, spec.commits, random.Random(spec.seed), universe, set(), 0, None)
    truth = RepoTruth(
        commits=w.commits,
        merges=w.merges,
        renames=w.renames,
        first_parent_commits=w.first_parent,
        head_files=len(w.live),
        head=MAIN,
    )
    return _save(path, truth)


def append(path: Path, spec: RepoSpec, n: int, *, seed: int) -> RepoTruth:
    """Add n more commits (main, side and merge commits) on top of main; return the whole repo's truth.

    The files touched are main's current files (no new planned paths); a file's first change
    in this session writes fresh content.  Dates continue from the repo's commit count.
    """
    git_dir = Path(_git(path, "rev-parse", "--absolute-git-dir").strip())
    before = RepoTruth(**json.loads((git_dir / TRUTH_FILE).read_text()))
    live = _git(path, "ls-tree", "-r", "--name-only", MAIN).splitlines()
    first_index = int(_git(path, "rev-list", "--count", MAIN).strip())
    w = _fast_import(path, spec, n, random.Random(seed), sorted(live), set(live), first_index, f"{MAIN}^0")
    truth = RepoTruth(
        commits=before.commits + w.commits,
        merges=before.merges + w.merges,
        renames=before.renames + w.renames,
        first_parent_commits=before.first_parent_commits + w.first_parent,
        head_files=len(w.live),
        head=MAIN,
    )
    return _save(path, truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("path", type=Path)
    d = RepoSpec()
    ap.add_argument("--commits", type=int, default=d.commits)
    ap.add_argument("--files", type=int, default=d.files)
    ap.add_argument("--modules", type=int, default=d.modules)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--append", type=int, default=0, metavar="N", help="then append N commits")
    args = ap.parse_args(argv)
    spec = RepoSpec(commits=args.commits, files=args.files, modules=args.modules, seed=args.seed)
    t0 = time.perf_counter()
    truth = generate(args.path, spec)
    print(f"generated {args.path} in {time.perf_counter() - t0:.2f}s: {truth}")
    if args.append:
        t0 = time.perf_counter()
        truth = append(args.path, spec, args.append, seed=args.seed + 1)
        print(f"appended {args.append} in {time.perf_counter() - t0:.2f}s: {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
