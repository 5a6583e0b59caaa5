"""The git history tables (migration 0011): scans, commits, their files, the files at the head.

A scan's rows are written first and its ``git_scans`` row last: that row is the scan's commit
point.  A scan cut off before it leaves rows that the next scan (from the same last head, so
with the same generation and the same keys) writes again, and ``FINAL`` keeps one of each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from attribution.history import Commit, FileChange, HeadFile
from collector.exporters.clickhouse.client import ClickHouseClient, utc_datetime
from collector.ports import ScanState

_CHUNK = 50_000

_COMMIT_COLUMNS = (
    "repository",
    "generation",
    "sha",
    "parents",
    "author_name",
    "author_email",
    "authored_at",
    "committed_at",
    "message",
    "on_first_parent",
    "files",
    "added",
    "removed",
    "modules",
)
_FILE_COLUMNS = (
    "repository",
    "generation",
    "sha",
    "committed_at",
    "on_first_parent",
    "path",
    "old_path",
    "added",
    "removed",
    "module",
    "owners",
)
_HEAD_COLUMNS = ("repository", "path", "head", "lines", "bytes", "module", "owners", "scanned_at")
_SCAN_COLUMNS = ("repository", "generation", "head", "since", "scanned_at", "commits", "head_files")


class HistoryTables(ClickHouseClient):
    """Writes and reads ``git_scans``, ``git_commits``, ``git_commit_files``, ``git_head_files``."""

    def last_scan(self, repository: str) -> ScanState | None:
        latest = self._latest_scans(repository).get(repository)
        if latest is None:
            return None
        generation, head, at = latest
        (count,) = self.query(
            "SELECT count() FROM git_commits FINAL WHERE repository = {r:String} AND generation = {g:UInt64}",
            {"r": repository, "g": generation},
        )[0]
        return ScanState(repository, generation, head, at, int(count))

    def history_repositories(self) -> list[str]:
        return [
            str(r[0]) for r in self.query("SELECT DISTINCT repository FROM git_scans ORDER BY repository")
        ]

    def write_history(
        self,
        repository: str,
        *,
        head: str,
        since: str,
        commits: Sequence[Commit],
        head_files: Sequence[HeadFile],
        scanned_at_unix_nano: int,
    ) -> ScanState:
        """Store one scan.  ``since`` (the previous scan's head) makes it incremental: its
        commits join the current generation; without it the scan starts a new generation."""
        last = self.last_scan(repository)
        generation = 1 if last is None else last.generation + (0 if since else 1)
        stem = f"git:{repository}:{generation}:{head}:{since}"
        commit_rows = [
            [
                repository,
                generation,
                c.sha,
                list(c.parents),
                c.author_name,
                c.author_email,
                c.authored_at_unix_nano,
                c.committed_at_unix_nano,
                c.message,
                int(c.on_first_parent),
                len(c.files),
                sum(f.added for f in c.files),
                sum(f.removed for f in c.files),
                list(c.modules),
            ]
            for c in commits
        ]
        file_rows = [
            [
                repository,
                generation,
                c.sha,
                c.committed_at_unix_nano,
                int(c.on_first_parent),
                f.path,
                f.old_path,
                f.added,
                f.removed,
                f.module,
                list(f.owners),
            ]
            for c in commits
            for f in c.files
        ]
        at = utc_datetime(scanned_at_unix_nano)
        head_rows = [
            [repository, f.path, head, f.lines, f.bytes, f.module, list(f.owners), at] for f in head_files
        ]
        for table, rows, columns in (
            ("git_commits", commit_rows, _COMMIT_COLUMNS),
            ("git_commit_files", file_rows, _FILE_COLUMNS),
            ("git_head_files", head_rows, _HEAD_COLUMNS),
        ):
            for i in range(0, len(rows), _CHUNK):
                self.insert_rows(table, rows[i : i + _CHUNK], columns, token=f"{stem}:{table}:{i}")
        self.insert_rows(
            "git_scans",
            [[repository, generation, head, since, at, len(commits), len(head_files)]],
            _SCAN_COLUMNS,
            token=f"{stem}:scan",
        )
        state = self.last_scan(repository)
        assert state is not None
        return state

    def load_commits(self, repository: str | None = None) -> list[Commit]:
        """The commits of the latest generation of ``repository`` (or of every repository),
        with their files, oldest first (committer time, then SHA)."""
        current = self._latest_scans(repository)
        if not current:
            return []
        params: dict[str, Any] = {"repos": list(current), "gens": [g for g, _, _ in current.values()]}
        where = "(repository, generation) IN (SELECT arrayJoin(arrayZip({repos:Array(String)}, {gens:Array(UInt64)})))"
        files: dict[tuple[str, str], list[FileChange]] = defaultdict(list)
        for repo, sha, path, old, added, removed, module, owners in self.query(
            f"""
            SELECT repository, sha, path, old_path, added, removed, module, owners
            FROM git_commit_files FINAL WHERE {where}
            ORDER BY repository, sha, path
            """,
            params,
        ):
            files[(repo, sha)].append(FileChange(path, added, removed, old, module, tuple(owners)))
        return [
            Commit(
                repository=repo,
                sha=sha,
                parents=tuple(parents),
                author_name=name,
                author_email=email,
                authored_at_unix_nano=int(authored),
                committed_at_unix_nano=int(committed),
                message=message,
                files=tuple(files.get((repo, sha), ())),
                on_first_parent=bool(fp),
            )
            for repo, sha, parents, name, email, authored, committed, message, fp in self.query(
                f"""
                SELECT repository, sha, parents, author_name, author_email,
                       toUnixTimestamp64Nano(authored_at), toUnixTimestamp64Nano(committed_at),
                       message, on_first_parent
                FROM git_commits FINAL WHERE {where}
                ORDER BY committed_at, sha
                """,
                params,
            )
        ]

    def load_head_files(self, repository: str | None = None) -> list[HeadFile]:
        """The files at the last scanned head of ``repository`` (or of each repository)."""
        heads = self._latest_scans(repository)
        if not heads:
            return []
        rows = self.query(
            """
            SELECT repository, path, lines, bytes, module, owners FROM git_head_files FINAL
            WHERE (repository, head) IN (SELECT arrayJoin(arrayZip({repos:Array(String)}, {heads:Array(String)})))
            ORDER BY repository, path
            """,
            {"repos": list(heads), "heads": [h for _, h, _ in heads.values()]},
        )
        return [HeadFile(p, int(n), int(b), m, tuple(o), r) for r, p, n, b, m, o in rows]

    def _latest_scans(self, repository: str | None) -> dict[str, tuple[int, str, int]]:
        """Per repository (``repository`` only, when given): the generation, head and time
        (Unix ns) of its latest scan."""
        rows = self.query(
            """
            SELECT repository, argMax(generation, scanned_at), argMax(head, scanned_at),
                   toUnixTimestamp64Nano(max(scanned_at))
            FROM git_scans
            WHERE {r:String} = '' OR repository = {r:String}
            GROUP BY repository ORDER BY repository
            """,
            {"r": repository or ""},
        )
        return {str(r): (int(g), str(h), int(t)) for r, g, h, t in rows}
