"""Stack traces as runtimes print them -> the frames of the root cause, innermost first.  Pure.

``parse_stacktrace(text, language)`` reads what an OpenTelemetry SDK records as
``exception.stacktrace`` (Python ``traceback``, JVM ``printStackTrace``, Go ``debug.Stack`` or a
``panic:`` dump, V8 ``error.stack`` or ``util.inspect``, .NET ``Exception.ToString``) and
returns a :class:`ParsedStack` or an :class:`Unparseable` with a reason; it never raises.

The root cause is the exception that started it all:

- Python prints chained exceptions oldest first: the first block;
- JVM: the last top-level ``Caused by:`` block, its ``... N more`` filled in from the bottom of
  the enclosing trace; ``Suppressed:`` blocks are skipped;
- .NET: the innermost ``" ---> "`` exception, whose frames come before the first
  ``--- End of inner exception stack trace ---``;
- Node: the last ``[cause]:`` block when one is printed, else the error's own frames;
- Go: the first goroutine printed (the panicking one), below its last ``panic(...)`` frame
  when it has one (the frames above it are the deferred handler that recorded the stack).

Bounded on hostile input: at most :data:`MAX_CHARS` characters and :data:`MAX_FRAMES` frames
(else ``too_long``); lines longer than :data:`MAX_LINE` are not frames; every line is read with
string methods in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

MAX_CHARS: Final = 64 * 1024
MAX_FRAMES: Final = 500
MAX_LINE: Final = 2048
MAX_CHAIN: Final = 100  # exceptions in one chain

# Unparseable reasons
EMPTY: Final = "empty"  # nothing but whitespace
UNKNOWN_FORMAT: Final = "unknown_format"  # no known runtime's shape, and no language hint
NO_FRAMES: Final = "no_frames"  # the shape is known, but the root cause shows no frame
TOO_LONG: Final = "too_long"  # over MAX_CHARS, MAX_FRAMES or MAX_CHAIN
REASONS: Final = (EMPTY, UNKNOWN_FORMAT, NO_FRAMES, TOO_LONG)

RUNTIMES: Final = ("python", "jvm", "go", "node", "dotnet")
_LANGUAGE_RUNTIME: Final = {
    "python": "python",
    "java": "jvm",
    "kotlin": "jvm",
    "scala": "jvm",
    "jvm": "jvm",
    "go": "go",
    "nodejs": "node",
    "node": "node",
    "webjs": "node",
    "javascript": "node",
    "dotnet": "dotnet",
    "csharp": "dotnet",
}


class Frame(NamedTuple):
    file: str  # as printed; "" when none
    function: str
    qualified: str  # fully qualified name where the runtime prints one (JVM, .NET, Go), else ""
    line: int  # 0 if none
    library: bool  # runtime or library code, as far as the format tells


class ParsedStack(NamedTuple):
    runtime: str  # one of RUNTIMES
    frames: tuple[Frame, ...]  # the root cause's frames, innermost first
    exception_type: str = ""  # the root cause's type as printed, "" when not printed


class Unparseable(NamedTuple):
    reason: str  # one of REASONS


class _TooLong(Exception):
    pass


def parse_stacktrace(text: str, language: str = "") -> ParsedStack | Unparseable:
    """The root cause's frames of ``text``; ``language`` is ``telemetry.sdk.language`` if known."""
    if len(text) > MAX_CHARS:
        return Unparseable(TOO_LONG)
    if not text.strip():
        return Unparseable(EMPTY)
    lines = text.splitlines()
    hinted = _LANGUAGE_RUNTIME.get(language.strip().lower(), "")
    try:
        if hinted:
            got = _PARSERS[hinted](lines)
            if got is not None and got.frames:
                return got
        sniffed = _sniff(lines)
        if not sniffed:
            return Unparseable(NO_FRAMES if hinted else UNKNOWN_FORMAT)
        if sniffed == hinted:
            return Unparseable(NO_FRAMES)
        got = _PARSERS[sniffed](lines)
    except _TooLong:
        return Unparseable(TOO_LONG)
    if got is None or not got.frames:
        return Unparseable(NO_FRAMES)
    return got


def throw_site(stack: ParsedStack, in_root: Callable[[Frame], bool]) -> Frame | None:
    """The innermost frame of the root cause that is not library code and is ``in_root``."""
    for frame in stack.frames:
        if not frame.library and in_root(frame):
            return frame
    return None


# --------------------------------------------------------------------------- sniffing


def _sniff(lines: Sequence[str]) -> str:
    """The runtime whose shape the first frame-like line has, or ""."""
    for raw in lines:
        if len(raw) > MAX_LINE:
            continue
        s = raw.strip()
        if s.startswith("Traceback (most recent call last)") or (s.startswith('File "') and '", line ' in s):
            return "python"
        if s.startswith("goroutine ") and s.endswith("]:"):
            return "go"
        if s.startswith("--- End of inner exception stack trace") or s.startswith("---> "):
            return "dotnet"
        if s.startswith("Caused by: "):
            return "jvm"
        if s.startswith("at "):
            body = _strip_jar_note(s[3:])
            if body.endswith(")") and "(" in body:
                head, _, inner = body[:-1].partition("(")
                if " " in head:  # V8: "at fn (file:1:2)"
                    return "node"
                if inner in ("Native Method", "Unknown Source") or _JVM_WHERE.fullmatch(inner):
                    return "jvm"  # "at pkg.C.m(C.java:3)"
                return "dotnet"  # "at Ns.T.M(String s) in f.cs:line 3", "at Ns.T.M()"
            if " in " in body and ":line " in body:
                return "dotnet"
            return "node"  # "at file:1:2"
    return ""


# ----------------------------------------------------------------------------- Python

_JVM_WHERE = re.compile(r"[^\s:()]+(?::\d+)?")


def _strip_jar_note(body: str) -> str:
    """Logback's ``at a.B.c(B.java:3) ~[app.jar:1.0]``: drop the jar note."""
    if body.endswith("]") and ") " in body:
        return body[: body.rfind(")") + 1]
    return body


_PY_CHAIN = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_PY_LIB = re.compile(r"[/\\](?:site-packages|dist-packages)[/\\]|[/\\]lib[/\\]python\d+(?:\.\d+)?[/\\]", re.I)


def _parse_python(lines: Sequence[str]) -> ParsedStack | None:
    frames: list[Frame] = []
    exc_type = ""
    seen_traceback = False
    for raw in lines:
        if len(raw) > MAX_LINE:
            continue
        s = raw.strip()
        if s in _PY_CHAIN:
            break  # the root cause is the first block
        if s.startswith("Traceback (most recent call last)"):
            seen_traceback = True
            continue
        if raw.startswith((" ", "\t")):
            if s.startswith('File "'):
                frame = _python_frame(s)
                if frame is not None:
                    if len(frames) >= MAX_FRAMES:
                        raise _TooLong
                    frames.append(frame)
            continue
        if (frames or seen_traceback) and s and not exc_type:
            head = s.partition(":")[0]
            if head and " " not in head:
                exc_type = head
    if not frames:
        return None
    frames.reverse()
    return ParsedStack("python", tuple(frames), exc_type)


def _python_frame(s: str) -> Frame | None:
    # File "/srv/app/x.py", line 12, in handler
    end = s.find('", line ', 6)
    if end < 0:
        return None
    file = s[6:end]
    rest = s[end + len('", line ') :]
    num, sep, func = rest.partition(", in ")
    if not sep or not num.isdigit():
        return None
    library = file.startswith("<") or _PY_LIB.search(file) is not None or "\\Lib\\" in file
    return Frame(file, func.strip(), "", int(num), library)


# -------------------------------------------------------------------------------- JVM

_JVM_LIB_PREFIXES: Final = (
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "io.opentelemetry.",
    "org.springframework.",
    "io.netty.",
    "reactor.core.",
    "org.eclipse.jetty.",
    "org.hibernate.",
    "com.fasterxml.jackson.",
    "org.junit.",
    "org.gradle.",
    "org.apache.maven.",
    "org.codehaus.",
)


def _parse_jvm(lines: Sequence[str]) -> ParsedStack | None:
    # blocks of the top-level chain: [type, own frames, elided count]
    blocks: list[tuple[str, list[Frame], int]] = []
    frame_indent = -1
    total = 0
    for raw in lines:
        if len(raw) > MAX_LINE:
            continue
        s = raw.strip()
        if not s:
            continue
        indent = len(raw) - len(raw.lstrip())
        if s.startswith("at "):
            s = "at " + _strip_jar_note(s[3:])
        if s.startswith("at ") and s.endswith(")"):
            if frame_indent < 0:
                frame_indent = indent
            if indent != frame_indent or not blocks:
                if not blocks:
                    blocks.append(("", [], 0))
                else:
                    continue  # a Suppressed: block's frames, or deeper
            total += 1
            if total > MAX_FRAMES:
                raise _TooLong
            blocks[-1][1].append(_jvm_frame(s[3:]))
            continue
        if s.startswith("...") and s.endswith("more"):
            if blocks and indent == frame_indent:
                n = s[3:-4].strip()
                if n.isdigit():
                    t, own, _ = blocks[-1]
                    blocks[-1] = (t, own, int(n))
            continue
        if indent > 0 and frame_indent >= 0 and indent >= frame_indent:
            continue  # "Suppressed:" and what is nested in it
        if s.startswith("Caused by: "):
            if len(blocks) >= MAX_CHAIN:
                raise _TooLong
            blocks.append((_type_of(s[len("Caused by: ") :]), [], 0))
        elif not blocks:
            head = s
            if head.startswith("Exception in thread "):
                q = head.find('" ', len("Exception in thread "))
                head = head[q + 2 :] if q >= 0 else head
            blocks.append((_type_of(head), [], 0))
    if not blocks:
        return None
    # fill in "... N more": the bottom N frames of the enclosing (resolved) trace
    resolved: list[Frame] = []
    for _, own, elided in blocks:
        tail = resolved[len(resolved) - elided :] if 0 < elided <= len(resolved) else []
        resolved = own + tail
        if len(resolved) > MAX_FRAMES:
            raise _TooLong
    exc_type = blocks[-1][0]
    return ParsedStack("jvm", tuple(resolved), exc_type)


def _type_of(header: str) -> str:
    head = header.partition(": ")[0].strip()
    return head if head and " " not in head else ""


def _jvm_frame(body: str) -> Frame:
    # [classloader/][module[@version]/]pkg.Class.method(File.java:12)
    call, _, where = body[:-1].partition("(")
    prefix, _, qualified = call.rpartition("/")
    file, _, num = where.rpartition(":")
    line = int(num) if num.isdigit() else 0
    if not file:
        file = "" if where in ("Native Method", "Unknown Source") else where
    module = prefix.rpartition("/")[2].partition("@")[0]
    library = qualified.startswith(_JVM_LIB_PREFIXES) or module.startswith(("java.", "jdk."))
    function = qualified.rpartition(".")[2]
    return Frame(file, function, qualified, line, library)


# --------------------------------------------------------------------------------- Go


def _parse_go(lines: Sequence[str]) -> ParsedStack | None:
    frames: list[Frame] = []
    in_goroutine = False
    pending = ""  # a function line waiting for its file line
    panic_at = -1
    exc_type = ""
    for raw in lines:
        if len(raw) > MAX_LINE:
            continue
        s = raw.strip()
        if not in_goroutine:
            if s.startswith("goroutine ") and s.endswith("]:"):
                in_goroutine = True
            elif s.startswith("panic: ") and not exc_type:
                exc_type = "panic"
            continue
        if not s:
            if frames or pending:
                break  # the first goroutine only
            continue
        if s.startswith("goroutine "):
            break
        if raw.startswith("\t"):
            if pending:
                if len(frames) >= MAX_FRAMES:
                    raise _TooLong
                frame = _go_frame(pending, s)
                if frame.qualified == "panic" or frame.qualified == "runtime.gopanic":
                    panic_at = len(frames)
                frames.append(frame)
                pending = ""
            continue
        if s.startswith("created by "):
            pending = ""
            break
        pending = s
    if panic_at >= 0:
        frames = frames[panic_at + 1 :]
    if not frames:
        return None
    return ParsedStack("go", tuple(frames), exc_type)


_GOROOT_SRC = re.compile(r"/go(?:-?\d[\d.]*)?/src/|/libexec/src/")


def _go_frame(call: str, where: str) -> Frame:
    # github.com/acme/shop/payments.(*Retry).Charge(0xc000, {0x1, 0x2})
    # 	/src/shop/payments/retry.go:30 +0x29e
    qualified = call
    if call.endswith(")"):
        cut = call.rfind("(")
        if cut > 0:
            qualified = call[:cut]
    loc = where.partition(" +0x")[0].strip()
    file, _, num = loc.rpartition(":")
    if not num.isdigit():
        file, num = loc, ""
    pkg_path, _, _ = qualified.rpartition("/")
    last = qualified[len(pkg_path) + 1 :] if pkg_path else qualified
    package = last.partition(".")[0]
    first = (pkg_path or package).partition("/")[0]
    # a dotless import path is the standard library, or a module named like "shop": the file
    # tells them apart (GOROOT/src, or a -trimpath relative path)
    dotless = "." not in first and package != "main"
    library = (
        package == "runtime"
        or qualified.startswith("runtime/")
        or "/pkg/mod/" in file
        or "/vendor/" in file
        or (dotless and (not file.startswith("/") or _GOROOT_SRC.search(file) is not None))
    )
    function = qualified.rpartition(".")[2]
    return Frame(file, function, qualified, int(num) if num else 0, library)


# ------------------------------------------------------------------------------- Node


def _parse_node(lines: Sequence[str]) -> ParsedStack | None:
    own: list[Frame] = []
    cause: list[Frame] = []
    exc_type = ""
    cause_type = ""
    in_cause = False
    total = 0
    for raw in lines:
        if len(raw) > MAX_LINE:
            continue
        s = raw.strip()
        if s.startswith("at "):
            total += 1
            if total > MAX_FRAMES:
                raise _TooLong
            body = s[3:-2] if s.endswith(" {") else s[3:]  # util.inspect: "at f (x.js:1:2) {"
            (cause if in_cause else own).append(_node_frame(body))
            continue
        if s.startswith("[cause]: "):
            in_cause = True  # the last [cause]: printed is the deepest
            cause = []
            cause_type = _type_of(s[len("[cause]: ") :])
            continue
        if not exc_type and not own and s:
            exc_type = _type_of(s)
    if cause:
        return ParsedStack("node", tuple(cause), cause_type)
    if not own:
        return None
    return ParsedStack("node", tuple(own), exc_type)


def _node_frame(body: str) -> Frame:
    # "fn (loc)", "async fn (loc)", "new Foo (loc)", "loc"
    name, loc = "", body
    if body.endswith(")") and " (" in body:
        name, _, loc = body[:-1].partition(" (")
    if name.startswith("async "):
        name = name[len("async ") :]
    file, line = loc, 0
    head, _, col = loc.rpartition(":")
    if col.isdigit():
        h2, _, num = head.rpartition(":")
        if num.isdigit() and h2:
            file, line = h2, int(num)
        elif head:
            file, line = head, int(col)
    library = (
        line == 0
        or file.startswith(("node:", "internal/", "eval at ", "<"))
        or "/node_modules/" in file
        or "\\node_modules\\" in file
        or file in ("native", "<anonymous>")
    )
    return Frame(file, name, "", line, library)


# ------------------------------------------------------------------------------- .NET


def _parse_dotnet(lines: Sequence[str]) -> ParsedStack | None:
    frames: list[Frame] = []
    exc_type = ""
    for raw in lines:
        if len(raw) > MAX_LINE:
            continue
        s = raw.strip()
        if s.startswith("--- End of inner exception stack trace"):
            if frames:
                break  # the innermost exception's frames come first
            continue
        if s.startswith("at "):
            if len(frames) >= MAX_FRAMES:
                raise _TooLong
            frames.append(_dotnet_frame(s[3:]))
            continue
        if not frames and s and not s.startswith("--- "):
            # "Outer: msg", " ---> Inner: msg" (.NET Core) or "Outer: msg ---> Inner: msg"
            head = s.rpartition("---> ")[2] if "---> " in s else s
            if head.startswith("(Inner Exception #"):
                head = head.partition(") ")[2]
            t = _type_of(head)
            if t:
                exc_type = t
    if not frames:
        return None
    return ParsedStack("dotnet", tuple(frames), exc_type)


def _dotnet_frame(body: str) -> Frame:
    # Ns.Type.Method(String s) in /src/File.cs:line 42
    call, sep, where = body.partition(") in ")
    file, line = "", 0
    if sep:
        path, lsep, num = where.rpartition(":line ")
        if lsep and num.strip().isdigit():
            file, line = path, int(num)
        else:
            file = where
    qualified = call.partition("(")[0]
    if qualified.endswith("]") and "[" in qualified:
        qualified = qualified[: qualified.rfind("[")]  # generic arguments
    library = qualified.startswith(("System.", "Microsoft."))
    function = qualified.rpartition(".")[2]
    return Frame(file, function, qualified, line, library)


_PARSERS: Final[dict[str, Callable[[Sequence[str]], ParsedStack | None]]] = {
    "python": _parse_python,
    "jvm": _parse_jvm,
    "go": _parse_go,
    "node": _parse_node,
    "dotnet": _parse_dotnet,
}
