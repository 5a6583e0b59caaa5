"""Stack traces -> root cause -> throw site (attribution/stacktrace.py) and its attribution
(``Attributor.throw_site``).

The fixtures under tests/data/stacktraces/ were recorded by each runtime's OpenTelemetry SDK
from small programs committed beside them (.NET: written by hand from the documented
``Exception.ToString`` shape); each ``*.truth.json`` is what the program knew about where it
raised, never prodloop's output.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from attribution.attribute import Attributor
from attribution.codeowners import CodeOwners
from attribution.model import Attribution, ExceptionInfo, Resource, Unattributed
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from attribution.stacktrace import (
    MAX_CHARS,
    REASONS,
    Frame,
    ParsedStack,
    Unparseable,
    parse_stacktrace,
    throw_site,
)

if TYPE_CHECKING:
    from conftest import Otel

DATA = Path(__file__).resolve().parent.parent / "data" / "stacktraces"
RUNTIME_OF_DIR = {"python": "python", "jvm": "jvm", "go": "go", "node": "node", "dotnet": "dotnet"}
# the programs' root namespaces, for frames that carry no path (JVM, .NET without pdbs)
ROOT_NAMESPACE = {"jvm": "com.shop.", "dotnet": "Shop."}

FIXTURES = sorted(DATA.glob("*/*.exception.json"))


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    record: dict[str, Any] = json.loads(path.read_text())
    truth: dict[str, Any] = json.loads(
        path.with_name(path.name.replace(".exception.", ".truth.")).read_text()
    )
    return record, truth


def fixture(runtime_dir: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return load(DATA / runtime_dir / f"{name}.exception.json")


def rel_to(root: str, file: str) -> str | None:
    """``file`` relative to the program's directory ``root`` (either slash), or None."""
    f, r = file.replace("\\", "/"), root.replace("\\", "/").rstrip("/")
    return f[len(r) + 1 :] if r and f.startswith(r + "/") else None


def in_program(runtime: str, truth: dict[str, Any]) -> Any:
    def in_root(frame: Frame) -> bool:
        if truth["source_root"]:
            return rel_to(truth["source_root"], frame.file) is not None
        return frame.qualified.startswith(ROOT_NAMESPACE[runtime])

    return in_root


def test_every_runtime_has_fixtures() -> None:
    dirs = {p.parent.name for p in FIXTURES}
    assert dirs == set(RUNTIME_OF_DIR)
    assert len(FIXTURES) >= 14


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
@pytest.mark.parametrize("hinted", [True, False], ids=["hinted", "sniffed"])
def test_fixture_throw_site_is_the_truth(path: Path, hinted: bool) -> None:
    record, truth = load(path)
    runtime = RUNTIME_OF_DIR[path.parent.name]
    parsed = parse_stacktrace(record["stacktrace"], record["language"] if hinted else "")
    assert isinstance(parsed, ParsedStack), parsed
    assert parsed.runtime == runtime
    site = throw_site(parsed, in_program(runtime, truth))
    assert site is not None
    assert site.line == truth["line"]
    if truth["file"]:
        assert rel_to(truth["source_root"], site.file) == truth["file"]
    if truth["qualified"]:
        assert site.qualified == truth["qualified"]
    if runtime != "go":  # Go prints no exception types
        assert parsed.exception_type.rpartition(".")[2] == truth["root_cause_type"]
    # every frame inside the throw site is library code or outside the program
    inner = parsed.frames[: parsed.frames.index(site)]
    assert all(f.library or not in_program(runtime, truth)(f) for f in inner)


# ------------------------------------------------------------------ library frames, root causes


@pytest.mark.parametrize(
    ("runtime_dir", "name", "innermost"),
    [
        ("python", "direct_cause", "raw_decode"),  # json/decoder.py
        ("jvm", "caused_by", "forInputString"),  # java.lang.NumberFormatException
        ("go", "recovered_panic", "MustCompile"),  # regexp
        ("node", "json_parse", "JSON.parse"),  # <anonymous>
        ("dotnet", "inner_exceptions", "ThrowFormatException"),  # System.Number
    ],
)
def test_library_frames_inside_the_throw_site_are_skipped(
    runtime_dir: str, name: str, innermost: str
) -> None:
    record, truth = fixture(runtime_dir, name)
    parsed = parse_stacktrace(record["stacktrace"], record["language"])
    assert isinstance(parsed, ParsedStack)
    first = parsed.frames[0]
    assert (first.function, first.library) == (innermost, True)
    site = throw_site(parsed, lambda f: True)  # everything "in root": library alone decides
    assert site is not None and site.line == truth["line"]


def test_python_chains_pick_the_first_printed_exception() -> None:
    for name in ("direct_cause", "during_handling"):
        record, _ = fixture("python", name)
        assert "RetriesExhausted" in record["type"] or record["type"] == "KeyError"  # the outermost
        parsed = parse_stacktrace(record["stacktrace"], "python")
        assert isinstance(parsed, ParsedStack)
        assert parsed.exception_type == "json.decoder.JSONDecodeError"
        # outermost frame of the root cause: api.charge/api.refund's call of parse_reply
        assert parsed.frames[-1].function in ("charge", "refund")


def test_jvm_root_cause_is_the_last_caused_by_with_elided_frames_filled_in() -> None:
    record, _ = fixture("jvm", "caused_by")
    parsed = parse_stacktrace(record["stacktrace"], "java")
    assert isinstance(parsed, ParsedStack)
    assert parsed.exception_type == "java.lang.NumberFormatException"
    # 5 frames printed, "... 7 more": the enclosing trace's bottom 7 (its own 2 + "... 6 more"
    # of the top-level trace)
    assert len(parsed.frames) == 12
    assert [f.qualified for f in parsed.frames[4:7]] == [
        "com.shop.payments.Api.charge",
        "com.shop.payments.Retry.charge",
        "com.shop.fixtures.WriteFixtures.lambda$main$0",
    ]
    assert (parsed.frames[-1].qualified, parsed.frames[-1].library) == ("java.lang.Thread.run", True)


def test_jvm_suppressed_blocks_are_not_the_root_cause() -> None:
    text = "\n".join(
        [
            "java.io.IOException: write failed",
            "\tat com.shop.io.Out.write(Out.java:10)",
            "\tSuppressed: java.lang.IllegalStateException: close failed",
            "\t\tat com.shop.io.Out.close(Out.java:20)",
            "\t\t... 1 more",
            "Caused by: java.net.SocketException: reset",
            "\tat java.base/sun.nio.ch.NioSocketImpl.write(NioSocketImpl.java:420)",
            "\tat app//com.shop.io.Sock.send(Sock.java:7) ~[shop.jar:1.0]",
            "\t... 1 more",
        ]
    )
    parsed = parse_stacktrace(text)
    assert isinstance(parsed, ParsedStack)
    assert (parsed.runtime, parsed.exception_type) == ("jvm", "java.net.SocketException")
    assert [f.qualified for f in parsed.frames] == [
        "sun.nio.ch.NioSocketImpl.write",
        "com.shop.io.Sock.send",
        "com.shop.io.Out.write",
    ]
    assert [f.library for f in parsed.frames] == [True, False, False]


def test_dotnet_innermost_exception_frames_come_first() -> None:
    record, _ = fixture("dotnet", "inner_exceptions")
    parsed = parse_stacktrace(record["stacktrace"], "dotnet")
    assert isinstance(parsed, ParsedStack)
    assert [f.qualified for f in parsed.frames] == [
        "System.Number.ThrowFormatException",
        "System.Int32.Parse",
        "Shop.Payments.Api.ParseAmount",
        "Shop.Payments.Api.Charge",
    ]


def test_go_frames_above_the_panic_are_dropped() -> None:
    record, _ = fixture("go", "recovered_panic")
    parsed = parse_stacktrace(record["stacktrace"], "go")
    assert isinstance(parsed, ParsedStack)
    names = [f.qualified for f in parsed.frames]
    assert "github.com/acme/shop/payments.(*Retry).Guard.func1" not in names  # the recorder
    assert names[:2] == ["regexp.MustCompile", "github.com/acme/shop/payments.CompilePattern"]


def test_go_panic_dump_reads_only_the_panicking_goroutine() -> None:
    record, _ = fixture("go", "panic_dump")
    assert "goroutine 1 [running]" in record["stacktrace"] and "[sleep]" in record["stacktrace"]
    parsed = parse_stacktrace(record["stacktrace"], "go")
    assert isinstance(parsed, ParsedStack)
    assert [f.function for f in parsed.frames] == ["Amounts", "child", "main"]


def test_node_cause_block_is_the_root_cause() -> None:
    record, _ = fixture("node", "cause_inspect")
    parsed = parse_stacktrace(record["stacktrace"], "nodejs")
    assert isinstance(parsed, ParsedStack)
    assert parsed.exception_type == "SyntaxError"
    assert parsed.frames[0].function == "JSON.parse"


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("text", "language", "reason"),
    [
        ("", "", "empty"),
        ("  \n\t\n", "python", "empty"),
        ("something went wrong", "", "unknown_format"),
        ("ValueError: bad amount", "python", "no_frames"),  # traceback.format_exception_only
        ("Traceback (most recent call last):\nValueError: x", "", "no_frames"),
        ("java.lang.IllegalStateException: boom", "java", "no_frames"),
        ("x" * (MAX_CHARS + 1), "", "too_long"),
        ("\tat a.b.C.d(C.java:1)\n" * 3000, "java", "too_long"),  # frames over the cap
        ("java.lang.X: y\n" + "Caused by: java.lang.X: y\n" * 2000, "", "too_long"),
    ],
)
def test_unparseable_inputs_say_why(text: str, language: str, reason: str) -> None:
    assert reason in REASONS
    assert parse_stacktrace(text, language) == Unparseable(reason)


def test_a_wrong_hint_falls_back_to_sniffing() -> None:
    record, _ = fixture("python", "plain")
    parsed = parse_stacktrace(record["stacktrace"], "java")
    assert isinstance(parsed, ParsedStack) and parsed.runtime == "python"
    parsed = parse_stacktrace(record["stacktrace"], "ruby")  # a language no parser knows
    assert isinstance(parsed, ParsedStack) and parsed.runtime == "python"


def _hostile() -> list[str]:
    rng = random.Random(7)
    near = MAX_CHARS - 16
    return [
        "".join(chr(rng.randrange(0, 256)) for _ in range(near)),  # binary, decoded as latin-1
        "at " + "(" * (near - 4) + ")",  # one huge line
        ("\tat a.b(C.java:1) " + "(" * 100 + "\n") * (near // 120),
        '  File "' + "/lib/python3.11/" * (near // 16),
        ('  File "/x.py", line 1, in f\n' + " " * 40 + "\n") * (near // 80),
        "goroutine 1 [running]:\n" + "f(\n\t/x.go:1 +0x1\n" * (near // 20),
        "x ---> " * (near // 7),
        ("    at " + "a (" * 50 + "\n") * (near // 160),
        "\n" * near,
    ]


@pytest.mark.parametrize("language", ["", "python", "java", "go", "nodejs", "dotnet"])
def test_hostile_input_is_bounded(language: str) -> None:
    for text in _hostile():
        assert len(text) <= MAX_CHARS
        t0 = time.perf_counter()
        got = parse_stacktrace(text, language)
        elapsed = time.perf_counter() - t0
        assert isinstance(got, ParsedStack | Unparseable)
        if isinstance(got, ParsedStack):
            assert len(got.frames) <= 500
        assert elapsed < 0.5, (text[:40], elapsed)


# ----------------------------------------------------------------------- Attributor.throw_site

CODEOWNERS = CodeOwners.parse(
    "\n".join(
        [
            "*                          @acme/platform",  # line 1
            "shop/payments/retry.py     @acme/retry",  # line 2
            "shop/payments/api.py       @acme/gateway @alice",  # line 3
            "/payments/                 @acme/go-payments",  # line 4
        ]
    )
)


def python_repo(root: str) -> Repository:
    return Repository(
        name="shop",
        codeowners=CODEOWNERS,
        modules=ModuleConfig.from_mapping(
            {
                "source_roots": [root],
                "modules": [
                    {"name": "payments-retry", "paths": ["shop/payments/retry.py"]},
                    {"name": "payments-gateway", "paths": ["shop/payments/api.py"]},
                ],
            }
        ),
    )


def exception_of(record: dict[str, Any]) -> ExceptionInfo:
    return ExceptionInfo(record["type"], record["message"], record["stacktrace"])


def test_python_exception_is_attributed_to_the_throwing_module(otel: Otel) -> None:
    record, truth = fixture("python", "direct_cause")
    root = truth["source_root"]
    a = Attributor([python_repo(root)])
    # the span that failed is in retry.py; the root cause was raised in api.py
    (span,) = otel.core_spans(
        {"service.name": "checkout", "telemetry.sdk.language": "python"},
        [("charge", 1, 2, {"code.file.path": f"{root}/shop/payments/retry.py"})],
    )
    own = a.attribute(span)
    thrown = a.throw_site(span.resource, exception_of(record))
    assert isinstance(own, Attribution) and isinstance(thrown, Attribution)
    assert (own.module, own.owners) == ("payments-retry", ("@acme/retry",))
    assert (thrown.path, thrown.module, thrown.owners, thrown.codeowners_line) == (
        truth["file"],
        "payments-gateway",
        ("@acme/gateway", "@alice"),
        3,
    )


def test_jvm_frames_match_namespace_rules_by_qualified_name() -> None:
    record, _ = fixture("jvm", "caused_by")
    repo = Repository(
        name="shop",
        codeowners=CODEOWNERS,
        modules=ModuleConfig.from_mapping(
            {
                "source_roots": ["/srv/shop"],
                "modules": [
                    {"name": "fixtures", "namespaces": ["com.shop.fixtures"], "owners": ["@acme/tools"]},
                    {"name": "payments", "namespaces": ["com.shop.payments"], "owners": ["@acme/payments"]},
                ],
            }
        ),
    )
    res = Resource.from_attributes({"service.name": "shop-jvm", "telemetry.sdk.language": "java"})
    got = Attributor([repo]).throw_site(res, exception_of(record))
    assert isinstance(got, Attribution), got
    # "Api.java" is a file name, not a repo path: the qualified name decides, rule owners apply
    assert (got.path, got.module, got.owners) == ("", "payments", ("@acme/payments",))
    # without a rule for com.shop.payments, no frame is known to be the repository's
    only_fixtures = Repository(
        name="shop",
        modules=ModuleConfig.from_mapping(
            {"modules": [{"name": "fixtures", "namespaces": ["com.shop.fixtures"]}]}
        ),
    )
    got = Attributor([only_fixtures]).throw_site(res, exception_of(record))
    # the innermost com.shop.fixtures frame is below the payments ones
    assert isinstance(got, Attribution) and got.module == "fixtures"


def test_go_and_dotnet_throw_sites_use_paths_and_namespaces() -> None:
    record, truth = fixture("go", "recovered_panic")
    go_repo = Repository(
        name="shop-go",
        codeowners=CODEOWNERS,
        modules=ModuleConfig.from_mapping({"source_roots": [truth["source_root"]], "module_depth": 1}),
    )
    res = Resource.from_attributes({"service.name": "shop-go", "telemetry.sdk.language": "go"})
    got = Attributor([go_repo]).throw_site(res, exception_of(record))
    assert isinstance(got, Attribution), got
    # directory fallback, CODEOWNERS of the file
    assert (got.path, got.module, got.owners) == (truth["file"], "payments", ("@acme/go-payments",))

    record, _ = fixture("dotnet", "no_pdb_framework")
    net_repo = Repository(
        name="shop-net",
        modules=ModuleConfig.from_mapping(
            {
                "modules": [
                    {"name": "ledger", "namespaces": ["Shop.Payments.Ledger"], "owners": ["@acme/ledger"]}
                ]
            }
        ),
    )
    res = Resource.from_attributes({"service.name": "shop-net", "telemetry.sdk.language": "dotnet"})
    got = Attributor([net_repo]).throw_site(res, exception_of(record))
    assert isinstance(got, Attribution) and (got.module, got.owners) == ("ledger", ("@acme/ledger",))

    # Windows paths lie under no (POSIX) source root: the qualified name decides
    record, _ = fixture("dotnet", "async_windows")
    win_repo = Repository(
        name="shop-net",
        modules=ModuleConfig.from_mapping(
            {"source_roots": ["/"], "modules": [{"name": "gateway", "namespaces": ["Shop.Payments.Gateway"]}]}
        ),
    )
    got = Attributor([win_repo]).throw_site(res, exception_of(record))
    assert isinstance(got, Attribution) and (got.path, got.module) == ("", "gateway")


def test_unattributed_throw_sites_say_why() -> None:
    record, truth = fixture("python", "plain")
    res = Resource.from_attributes({"service.name": "checkout", "telemetry.sdk.language": "python"})
    a = Attributor([python_repo(truth["source_root"])])

    def reason(exc: ExceptionInfo, attributor: Attributor = a) -> str:
        got = attributor.throw_site(res, exc)
        assert isinstance(got, Unattributed), got
        return got.reason

    assert reason(ExceptionInfo("ValueError", "x", "")) == "no_stacktrace"
    assert reason(ExceptionInfo("ValueError", "x", "no frames here")) == "unparseable:no_frames"
    assert reason(ExceptionInfo("E", "x", "x" * (MAX_CHARS + 1))) == "unparseable:too_long"
    elsewhere = Attributor([python_repo("/srv/elsewhere")])
    assert reason(exception_of(record), elsewhere) == "no_frame_in_root"
    scoped = Attributor(
        [
            Repository(name="billing", services=frozenset({"invoicing"})),
            Repository(name="ledger", services=frozenset({"ledger"})),
        ]
    )
    assert reason(exception_of(record), scoped) == "no_repository"


def test_throw_sites_are_cached_and_the_cache_is_bounded() -> None:
    record, truth = fixture("python", "plain")
    res = Resource.from_attributes({"service.name": "checkout", "telemetry.sdk.language": "python"})
    a = Attributor([python_repo(truth["source_root"])], throw_cache_limit=2)
    exc = exception_of(record)
    first = a.throw_site(res, exc)
    assert isinstance(first, Attribution) and first.module == "payments-retry"
    assert a.throw_site(res, ExceptionInfo(exc.type, exc.message, exc.stacktrace)) is first
    for i in range(5):
        a.throw_site(res, ExceptionInfo("E", "", f"oops {i}"))
    assert len(a._throw_cache) <= 2
    assert a.throw_site(res, exc) == first
