"""Every code path and dotted name that README.md and docs/ cite still exists.

A path is a backquoted or linked repository path (``collector/app/build.py``, ``schemas/``,
``bench/ingest.py``); a dotted name is a backquoted ``collector.…`` or ``attribution.…`` name:
a module, or an attribute reached from the longest importable module prefix.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = (
    "collector",
    "attribution",
    "schemas",
    "tests",
    "bench",
    "scripts",
    "helm",
    "grafana",
    "docs",
    "compose",
)
PATH = re.compile(r"(?:(?<=\.\./)|(?<![\w./-]))((?:" + "|".join(TOP) + r")/[\w./-]*)")
DOTTED = re.compile(r"`((?:collector|attribution)(?:\.\w+)+)(?:\(\))?`")


def _citations() -> list[tuple[str, str, str]]:
    out = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            where = f"{doc.relative_to(ROOT)}:{n}"
            out += [(where, "path", m.rstrip(".")) for m in PATH.findall(line)]
            out += [(where, "name", m) for m in DOTTED.findall(line)]
    return out


CITATIONS = _citations()


def test_the_docs_cite_code() -> None:
    kinds = {kind for _, kind, _ in CITATIONS}
    assert kinds == {"path", "name"}, kinds
    assert len(CITATIONS) > 20


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize(("where", "kind", "cited"), CITATIONS, ids=[f"{w} {c}" for w, _, c in CITATIONS])
def test_citation_exists(where: str, kind: str, cited: str) -> None:
    if kind == "path":
        if "NNNN" in cited.rsplit("/", 1)[-1]:  # a pattern such as schemas/clickhouse/NNNN_*.sql
            cited = cited.rsplit("/", 1)[0]
        assert (ROOT / cited).exists(), f"{where} cites {cited}, which does not exist"
    else:
        assert _resolves(cited), f"{where} cites {cited}, which does not resolve"
