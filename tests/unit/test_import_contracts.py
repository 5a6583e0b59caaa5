"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and catch a bad import.

Each case copies the packages and pyproject.toml to a temporary directory, adds one module with
one import a contract forbids, and runs the real ``lint-imports`` there: it must fail and name
that contract.  The unchanged copy must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy(dest: Path) -> Path:
    for pkg in ("attribution", "collector"):
        shutil.copytree(ROOT / pkg, dest / pkg, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, not the checkout, is imported
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy(tmp_path_factory.mktemp("contracts"))


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "0 broken" in result.stdout


BAD = [
    ("attribution/_bad.py", "import threading", "attribution is the pure core"),
    ("attribution/_bad.py", "import collector.errors", "attribution is the pure core"),
    ("attribution/_bad.py", "from pathlib import Path", "attribution is the pure core"),
    (
        "collector/receivers/_bad.py",
        "import collector.exporters.kafka",
        "receivers and exporters are independent",
    ),
    (
        "collector/exporters/_bad.py",
        "import collector.pipelines",
        "receivers and exporters import no pipelines",
    ),
    ("collector/pipelines/_bad.py", "import collector.exporters.clickhouse", "pipelines work over ports"),
    ("collector/codec/_bad.py", "import collector.app", "codec and processing depend on no component"),
    ("collector/cli/_bad.py", "import collector.exporters.clickhouse", "only collector.app constructs"),
    ("collector/app/service.py", "import collector.exporters.kafka.gateway", "in collector.app, build"),
]


@pytest.mark.parametrize(("path", "statement", "contract"), BAD, ids=[f"{p}: {s}" for p, s, _ in BAD])
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, path: str, statement: str, contract: str
) -> None:
    tree = _copy(tmp_path)
    target = tree / path
    before = target.read_text() if target.exists() else '"""A deliberate bad import."""\n'
    target.write_text(f"{before}\n{statement}  # noqa: F401\n")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
    module = path.removesuffix(".py").replace("/", ".")
    assert module in result.stdout, result.stdout


def test_no_module_imports_itself_through_others() -> None:
    """No import circle, counting every import: function-local and TYPE_CHECKING ones too."""
    graph = grimp.build_graph("collector", "attribution", exclude_type_checking_imports=False, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert len(graph.modules) > 100
    assert circles == []
