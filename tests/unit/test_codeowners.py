"""CODEOWNERS semantics, checked against every example in GitHub's "About code owners".

Each example line of the documentation's example file is tested on its own (paths it must
and must not match, and the owners), then the example file as a whole (last match wins).
Then: unowned paths, inline comments, GitHub's unsupported gitignore features, bad owners,
line numbering, case sensitivity and the warnings.
"""

from __future__ import annotations

import pytest

from attribution.codeowners import (
    MAX_CODEOWNERS_BYTES,
    CodeOwners,
    CodeOwnersProblem,
    CodeOwnersRule,
    owner_kind,
)

# The example file from GitHub's documentation, rule lines as published (comments are ours).
DOCS_EXAMPLE = """\
# Default owners for everything in the repo.
*       @global-owner1 @global-owner2

# Order matters: the last matching pattern takes precedence.
*.js    @js-owner #This is an inline comment.

# An email address as an owner.
*.go docs@example.com

# A team as an owner.
*.txt @octo-org/octocats

# build/logs at the root, and its subdirectories.
/build/logs/ @doctocat

# Files directly in docs/, not nested ones.
docs/*  docs@example.com

# An apps directory anywhere.
apps/ @octocat

# docs at the root, and its subdirectories.
/docs/ @doctocat

# Two owners.
/scripts/ @doctocat @octocat

# A logs directory at any depth.
**/logs @octocat

# /apps at the root except /apps/github, which has no owners.
/apps/ @octocat
/apps/github

# /apps at the root except /apps/github, which has its own owner.
/apps/ @octocat
/apps/github @doctocat
"""

# One row per example line: the line on its own, paths it matches, paths it does not,
# and the owners of the matching paths.
EXAMPLES: list[tuple[str, list[str], list[str], tuple[str, ...]]] = [
    (
        "*       @global-owner1 @global-owner2",
        ["README.md", "src/main.c", ".github/workflows/ci.yml", "a/b/c/d/e"],
        [],
        ("@global-owner1", "@global-owner2"),
    ),
    (
        "*.js    @js-owner #This is an inline comment.",
        ["app.js", "src/web/app.js", ".eslintrc.js", "lib/app.js/index.html"],
        ["app.jsx", "app.JS", "js/app.ts", "app.js.map", "jsapp"],
        ("@js-owner",),
    ),
    (
        "*.go docs@example.com",
        ["main.go", "cmd/tool/main.go"],
        ["main.golang", "go/main.c", "main.Go"],
        ("docs@example.com",),
    ),
    (
        "*.txt @octo-org/octocats",
        ["notes.txt", "docs/a/b/requirements.txt"],
        ["notes.txt.bak", "txt", "notes.TXT"],
        ("@octo-org/octocats",),
    ),
    (
        "/build/logs/ @doctocat",
        ["build/logs/app.log", "build/logs/2024/01/app.log"],
        ["build/logs", "build/logs.txt", "src/build/logs/app.log", "build/log/app.log", "Build/logs/a"],
        ("@doctocat",),
    ),
    (
        "docs/*  docs@example.com",
        ["docs/getting-started.md", "docs/index.html"],
        ["docs/build-app/troubleshooting.md", "docs", "src/docs/getting-started.md", "docs.md"],
        ("docs@example.com",),
    ),
    (
        "apps/ @octocat",
        ["apps/main.py", "apps/web/index.js", "src/apps/x.py", "a/b/apps/c/d"],
        ["apps", "myapps/main.py", "apps.txt", "src/apps"],
        ("@octocat",),
    ),
    (
        "/docs/ @doctocat",
        ["docs/getting-started.md", "docs/build-app/troubleshooting.md"],
        ["src/docs/a.md", "docs", "documentation/a.md"],
        ("@doctocat",),
    ),
    (
        "/scripts/ @doctocat @octocat",
        ["scripts/deploy.sh", "scripts/ci/lint.sh"],
        ["tools/scripts/deploy.sh", "scripts", "script/deploy.sh"],
        ("@doctocat", "@octocat"),
    ),
    (
        "**/logs @octocat",
        ["build/logs/a.log", "scripts/logs/a.log", "deeply/nested/logs/a.log", "logs/a.log", "logs"],
        ["logs.txt", "build/logsx/a.log", "build/mylogs/a.log", "Logs/a.log"],
        ("@octocat",),
    ),
]


@pytest.mark.parametrize(("line", "matching", "other", "owners"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_docs_example_lines(
    line: str, matching: list[str], other: list[str], owners: tuple[str, ...]
) -> None:
    co = CodeOwners.parse(line + "\n")
    assert co.problems == ()
    (rule,) = co.rules
    assert (rule.line, rule.text) == (1, line)
    for path in matching:
        assert co.match(path) is rule, path
        assert co.owners(path) == owners, path
    for path in other:
        assert co.match(path) is None, path
        assert co.owners(path) == (), path


def test_docs_example_unowned_subdirectory() -> None:
    co = CodeOwners.parse("/apps/ @octocat\n/apps/github\n")
    assert co.problems == ()
    assert co.owners("apps/web/index.js") == ("@octocat",)
    rule = co.match("apps/github/index.js")
    # Matched, by a rule without owners: explicitly unowned (not the same as unmatched).
    assert rule is not None and (rule.line, rule.pattern, rule.owners) == (2, "/apps/github", ())
    assert co.owners("apps/github/index.js") == ()
    assert co.owners("apps/github") == ()
    assert co.match("apps/githubber/x") is co.rules[0]
    assert co.match("src/apps/github/x") is None


def test_docs_example_subdirectory_with_its_own_owner() -> None:
    co = CodeOwners.parse("/apps/ @octocat\n/apps/github @doctocat\n")
    assert co.owners("apps/web/index.js") == ("@octocat",)
    assert co.owners("apps/github/index.js") == ("@doctocat",)
    assert co.owners("apps/github/deep/er/x.go") == ("@doctocat",)


# The example file as a whole: the last matching line decides.
WHOLE_FILE: list[tuple[str, int | None, tuple[str, ...]]] = [
    ("README.md", 2, ("@global-owner1", "@global-owner2")),
    ("src/app.js", 5, ("@js-owner",)),
    ("main.go", 8, ("docs@example.com",)),
    ("notes.txt", 11, ("@octo-org/octocats",)),
    # /build/logs/ (line 14) is overridden by **/logs (line 29) for every path.
    ("build/logs/app.log", 29, ("@octocat",)),
    ("build/logs/app.js", 29, ("@octocat",)),
    # docs/* (line 17) is overridden by /docs/ (line 23).
    ("docs/getting-started.md", 23, ("@doctocat",)),
    ("docs/build-app/troubleshooting.md", 23, ("@doctocat",)),
    ("docs/logs/x", 29, ("@octocat",)),
    ("src/docs/readme.txt", 11, ("@octo-org/octocats",)),
    ("src/apps/x.py", 20, ("@octocat",)),
    ("src/apps/x.js", 20, ("@octocat",)),
    ("scripts/deploy.sh", 26, ("@doctocat", "@octocat")),
    ("scripts/logs/run.log", 29, ("@octocat",)),
    ("apps/web/index.js", 36, ("@octocat",)),
    ("apps/github/index.js", 37, ("@doctocat",)),
    ("apps/githubber/index.js", 36, ("@octocat",)),
    ("tools/x.rb", 2, ("@global-owner1", "@global-owner2")),
]


@pytest.mark.parametrize(("path", "line", "owners"), WHOLE_FILE)
def test_docs_example_file_last_match_wins(path: str, line: int, owners: tuple[str, ...]) -> None:
    co = CodeOwners.parse(DOCS_EXAMPLE)
    rule = co.match(path)
    assert rule is not None
    assert rule.line == line
    assert rule.text == DOCS_EXAMPLE.splitlines()[line - 1]
    assert co.owners(path) == owners


def test_docs_example_file_loads_every_rule_and_flags_the_dead_ones() -> None:
    co = CodeOwners.parse(DOCS_EXAMPLE, source=".github/CODEOWNERS")
    assert [r.pattern for r in co.rules] == [
        "*", "*.js", "*.go", "*.txt", "/build/logs/", "docs/*", "apps/", "/docs/", "/scripts/",
        "**/logs", "/apps/", "/apps/github", "/apps/", "/apps/github",
    ]  # fmt: skip
    assert [r.owners for r in co.rules][:2] == [("@global-owner1", "@global-owner2"), ("@js-owner",)]
    assert all(p.severity == "warning" for p in co.problems)
    dead = {p.line: p.message for p in co.problems}
    # Rules the example itself makes unreachable: a later line matches all they match.
    assert set(dead) == {14, 17, 32, 33}
    assert "line 29" in dead[14] and "'**/logs'" in dead[14]
    assert "line 23" in dead[17]
    assert "line 36" in dead[32]
    assert "line 36" in dead[33]  # /apps/ again: the nearest later line that covers it
    assert str(co.problems[0]).startswith(".github/CODEOWNERS:14: warning: never takes effect")


# ---- owners and comments -------------------------------------------------------------


def test_owners_are_sorted_and_deduplicated_but_rules_keep_them_as_written() -> None:
    co = CodeOwners.parse("* @zed @org/team amy@example.com @zed\n")
    assert co.rules[0].owners == ("@zed", "@org/team", "amy@example.com", "@zed")
    assert co.owners("x") == ("@org/team", "@zed", "amy@example.com")
    (problem,) = co.problems
    assert problem.severity == "warning" and "@zed" in problem.message


@pytest.mark.parametrize(
    ("line", "owners"),
    [
        ("*.js @js-owner #This is an inline comment.", ("@js-owner",)),
        ("*.js @js-owner # spaced comment @not-an-owner", ("@js-owner",)),
        ("*.js\t@a\t@b\t# tabs", ("@a", "@b")),
        ("/apps/github # no owners here", ()),
        ("/apps/github #", ()),
        ("   *.js @indented", ("@indented",)),
        ("*.js @trailing-space   ", ("@trailing-space",)),
    ],
)
def test_inline_comments_and_whitespace(line: str, owners: tuple[str, ...]) -> None:
    co = CodeOwners.parse(line)
    assert [p for p in co.problems if p.severity == "error"] == []
    (rule,) = co.rules
    assert rule.owners == owners
    assert rule.text == line


@pytest.mark.parametrize(
    ("owner", "kind"),
    [
        ("@octocat", "user"),
        ("@octo-cat99", "user"),
        ("@user_emu", "user"),
        ("@octo-org/octocats", "team"),
        ("@octo-org/team_name.v2", "team"),
        ("docs@example.com", "email"),
        ("first.last+tag@mail.example.co.uk", "email"),
        ("octocat", None),
        ("@", None),
        ("@org/", None),
        ("@org/team/sub", None),
        ("@-leading", None),
        ("@user,", None),
        ("user@localhost", None),
        ("@user#x", None),
        ("@us er", None),
    ],
)
def test_owner_kind(owner: str, kind: str | None) -> None:
    assert owner_kind(owner) == kind


# ---- problems ---------------------------------------------------------------------------

PROBLEM_LINES: list[tuple[str, str]] = [
    ("!*.log @octocat", "negation ('!') is not supported"),
    ("!/docs/ @octocat", "negation ('!') is not supported"),
    ("*.[ch] @octocat", "character ranges ('[ ]') are not supported"),
    ("Python/ceval*.[ch] @markshannon", "character ranges ('[ ]') are not supported"),
    ("src/[abc]/ @octocat", "character ranges ('[ ]') are not supported"),
    ("\\#notes.md @octocat", "escaping a leading '#'"),
    ("*.js octocat", "invalid owner 'octocat'"),
    ("*.js @a, @b", "invalid owner '@a,'"),
    ("*.js @org/team/sub @ok", "invalid owner '@org/team/sub'"),
    ("*.js @good bad1 bad2", "invalid owner 'bad1', 'bad2'"),
    ("/ @octocat", "names no path"),
    ("a//b @octocat", "empty path segment"),
    ("foo\\", "trailing '\\'"),
]


@pytest.mark.parametrize(("line", "message"), PROBLEM_LINES, ids=[p[0] for p in PROBLEM_LINES])
def test_invalid_lines_are_skipped_and_reported(line: str, message: str) -> None:
    text = f"# header\n* @default\n{line}\n*.md @docs\n"
    co = CodeOwners.parse(text, source="docs/CODEOWNERS")
    assert [r.line for r in co.rules] == [2, 4]  # the bad line is skipped, the rest loads
    (problem,) = co.problems
    assert problem == CodeOwnersProblem("docs/CODEOWNERS", 3, line, problem.message, "error")
    assert message in problem.message
    assert "skipped" in problem.message
    assert str(problem).startswith("docs/CODEOWNERS:3: error: ")
    # The skipped line has no effect on matching.
    assert co.owners("x.log") == ("@default",)
    assert co.owners("a.c") == ("@default",)
    assert co.owners("README.md") == ("@docs",)


def test_escaped_bang_and_brackets_are_literal() -> None:
    co = CodeOwners.parse("\\!important.txt @a\nweird\\[name\\].txt @b\n")
    assert co.problems == ()
    assert co.owners("!important.txt") == ("@a",)
    assert co.owners("weird[name].txt") == ("@b",)
    assert co.owners("weirdn.txt") == ()


def test_escaped_spaces_in_a_pattern() -> None:
    co = CodeOwners.parse("path\\ with\\ spaces/ @space-owner\n")
    assert co.problems == ()
    assert co.rules[0].pattern == "path\\ with\\ spaces/"
    assert co.owners("path with spaces/a.md") == ("@space-owner",)
    assert co.owners("path/a.md") == ()


def test_hash_inside_a_pattern_is_literal() -> None:
    co = CodeOwners.parse("notes#1.md @a # comment\n")
    assert co.problems == ()
    assert co.rules[0].pattern == "notes#1.md"
    assert co.owners("docs/notes#1.md") == ("@a",)


def test_pattern_that_looks_like_an_owner_is_flagged() -> None:
    co = CodeOwners.parse("@octocat\n")
    (rule,) = co.rules
    assert rule.owners == ()
    (problem,) = co.problems
    assert problem.severity == "warning" and "looks like an owner" in problem.message


def test_file_of_3mb_or_more_is_not_loaded() -> None:
    rule = "*.py @octocat\n"
    padding = "#" * (MAX_CODEOWNERS_BYTES - len(rule)) + "\n"  # one byte too many
    co = CodeOwners.parse(rule + padding)
    assert co.rules == ()
    (problem,) = co.problems
    assert (problem.line, problem.severity) == (0, "error") and "3 MB" in problem.message
    assert co.match("a.py") is None
    small = CodeOwners.parse(rule + padding[2:])
    assert small.owners("a.py") == ("@octocat",)
    # The limit is on bytes, not characters.
    wide = CodeOwners.parse(rule + "# " + "é" * (MAX_CODEOWNERS_BYTES // 2))
    assert wide.rules == ()


# ---- parsing details -------------------------------------------------------------------


def test_comments_blank_lines_and_line_numbers() -> None:
    text = "\ufeff# comment\r\n\r\n   # indented comment\r\n\t\r\n*.py @py\r\n#*.js @js\r\n/docs/ @doc"
    co = CodeOwners.parse(text)
    assert co.problems == ()
    assert [(r.line, r.pattern, r.owners, r.text) for r in co.rules] == [
        (5, "*.py", ("@py",), "*.py @py"),
        (7, "/docs/", ("@doc",), "/docs/ @doc"),
    ]
    assert co.owners("a.js") == ()


def test_empty_file() -> None:
    co = CodeOwners.parse("")
    assert (co.rules, co.problems, len(co)) == ((), (), 0)
    assert co.match("anything") is None
    assert co.owners("anything") == ()


def test_last_match_wins_regardless_of_specificity() -> None:
    co = CodeOwners.parse("/src/payments/retry.py @specific\n/src/ @broad\n*.py @python\n")
    assert co.match("src/payments/retry.py") is co.rules[2]
    assert co.owners("src/payments/retry.rb") == ("@broad",)
    assert co.owners("other/retry.py") == ("@python",)
    # The first line never wins: /src/ comes later and covers it.
    assert [p.line for p in co.problems] == [1]


def test_paths_are_case_sensitive() -> None:
    co = CodeOwners.parse("/Docs/ @upper\n/docs/ @lower\n*.MD @md\n")
    assert co.owners("Docs/a.txt") == ("@upper",)
    assert co.owners("docs/a.txt") == ("@lower",)
    assert co.owners("DOCS/a.txt") == ()
    assert co.owners("docs/a.MD") == ("@md",)
    assert co.owners("docs/a.md") == ("@lower",)


def test_owner_strings_are_kept_as_written() -> None:
    # GitHub logins are case-insensitive, but owners are reported as written.
    co = CodeOwners.parse("* @OctoCat @octocat\n")
    assert co.owners("x") == ("@OctoCat", "@octocat")


def test_constructor_takes_rules_directly() -> None:
    rules = [
        CodeOwnersRule(1, "*", ("@a",), "* @a"),
        CodeOwnersRule(2, "docs/*", ("@b",), "docs/* @b"),
    ]
    co = CodeOwners(rules, source="mem")
    assert co.owners("docs/x.md") == ("@b",)
    assert co.owners("docs/x/y.md") == ("@a",)  # GitHub's docs/* is not recursive
    assert "mem" in repr(co) and "2 rules" in repr(co)


def test_many_rules() -> None:
    lines = ["* @org/everyone"]
    lines += [f"/services/svc{i}/ @org/team{i}" for i in range(400)]
    lines += [f"*.ext{i} @org/ext{i}" for i in range(50)]
    lines += [f"**/gen{i}/ @org/gen{i}" for i in range(50)]
    co = CodeOwners.parse("\n".join(lines))
    assert co.problems == ()
    assert co.owners("services/svc123/app/main.py") == ("@org/team123",)
    assert co.owners("services/svc123/a.ext7") == ("@org/ext7",)
    assert co.owners("services/svc123/gen9/a.ext7") == ("@org/gen9",)
    assert co.owners("services/svc400/x") == ("@org/everyone",)
    assert co.match("README") is co.rules[0]
