-- Git history (issue 13), written by `prodloop history scan` and `prodloop run`'s re-scans.
-- A full scan of a repository starts a new *generation*; incremental scans (a fast-forward
-- of the last scanned head) add their new commits to the current generation.  Readers take
-- the rows of the repository's latest generation in git_scans, so a force-pushed history
-- replaces the old one and its unreachable commits drop out.  ReplacingMergeTree(generation)
-- keeps one row per key; read with FINAL.
CREATE TABLE IF NOT EXISTS git_scans
(
    repository    LowCardinality(String),
    generation    UInt64,
    head          String,
    since         String,
    scanned_at    DateTime64(3, 'UTC'),
    commits       UInt32,
    head_files    UInt32
)
ENGINE = MergeTree
ORDER BY (repository, scanned_at);

-- One row per commit reachable from the head, merges included (their diff is against their
-- first parent).  on_first_parent marks the head's first-parent chain: change frequency,
-- churn and coupling count those commits only.
CREATE TABLE IF NOT EXISTS git_commits
(
    repository      LowCardinality(String),
    generation      UInt64,
    sha             String,
    parents         Array(String),
    author_name     String,
    author_email    String,
    authored_at     DateTime64(9, 'UTC'),
    committed_at    DateTime64(9, 'UTC'),
    message         String,
    on_first_parent UInt8,
    files           UInt32,
    added           UInt32,
    removed         UInt32,
    modules         Array(String)
)
ENGINE = ReplacingMergeTree(generation)
ORDER BY (repository, sha)
SETTINGS non_replicated_deduplication_window = 10000;

-- The files each commit changed, mapped to modules and owners with the rules spans use.
CREATE TABLE IF NOT EXISTS git_commit_files
(
    repository      LowCardinality(String),
    generation      UInt64,
    sha             String,
    committed_at    DateTime64(9, 'UTC'),
    on_first_parent UInt8,
    path            String,
    old_path        String,
    added           UInt32,
    removed         UInt32,
    module          LowCardinality(String),
    owners          Array(String)
)
ENGINE = ReplacingMergeTree(generation)
ORDER BY (repository, sha, path)
SETTINGS non_replicated_deduplication_window = 10000;

-- The files at the last scanned head (dead-code candidates are drawn from these).  Each scan
-- rewrites them with its head; a file deleted since keeps an older head and is not read.
CREATE TABLE IF NOT EXISTS git_head_files
(
    repository    LowCardinality(String),
    path          String,
    head          String,
    lines         UInt32,
    bytes         UInt64,
    module        LowCardinality(String),
    owners        Array(String),
    scanned_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(scanned_at)
ORDER BY (repository, path)
SETTINGS non_replicated_deduplication_window = 10000
