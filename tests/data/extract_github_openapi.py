"""Extract the GitHub REST operations prodloop's GitHub sink uses from ``@octokit/openapi``.

The published OpenAPI description (npm package ``@octokit/openapi``, file
``generated/api.github.com.deref.json``: every ``$ref`` resolved) is ~70 MB; the tests need six
operations.  This script keeps, for each: the parameters, the request body schema and the
success response schema, with prose (``description``, ``examples``...) stripped.  The output,
``tests/data/github-openapi-subset.json``, records the package version it came from.

Regenerate (needs npm and network)::

    .venv/bin/python tests/data/extract_github_openapi.py            # the pinned version
    .venv/bin/python tests/data/extract_github_openapi.py 23.0.2     # another version
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "@octokit/openapi"
VERSION = "23.0.2"
OUT = Path(__file__).resolve().parent / "github-openapi-subset.json"
MEMBER = "package/generated/api.github.com.deref.json"

OPERATIONS = [
    ("/repos/{owner}/{repo}/issues", "post"),
    ("/repos/{owner}/{repo}/issues", "get"),
    ("/repos/{owner}/{repo}/issues/{issue_number}", "get"),
    ("/repos/{owner}/{repo}/issues/{issue_number}", "patch"),
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "post"),
    ("/repos/{owner}/{repo}/issues/{issue_number}/labels", "post"),
]
_PROSE = {"description", "summary", "examples", "example", "externalDocs", "title", "x-github"}


def _strip(node: Any, *, names: bool = False) -> Any:
    """Drop prose keywords; ``names``: ``node`` maps property names (kept, even "title") to schemas."""
    if isinstance(node, dict):
        if names:
            return {k: _strip(v) for k, v in node.items()}
        return {
            k: _strip(v, names=k in ("properties", "patternProperties"))
            for k, v in node.items()
            if k not in _PROSE
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def extract(spec: dict[str, Any], version: str) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for path, method in OPERATIONS:
        op = spec["paths"][path][method]
        success = next(code for code in ("200", "201") if code in op["responses"])
        response = op["responses"][success].get("content", {}).get("application/json", {}).get("schema")
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        ops[op["operationId"]] = {
            "path": path,
            "method": method.upper(),
            "parameters": _strip(op.get("parameters", [])),
            "request_schema": _strip(body) if body is not None else None,
            "request_required": bool(op.get("requestBody", {}).get("required", False)),
            "success_status": int(success),
            "response_schema": _strip(response) if response is not None else None,
        }
    return {
        "source": f"npm {PACKAGE}@{version}, {MEMBER.removeprefix('package/')}",
        "openapi": spec["openapi"],
        "info_version": spec["info"]["version"],
        "operations": ops,
    }


def main(argv: list[str]) -> int:
    version = argv[1] if len(argv) > 1 else VERSION
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"{PACKAGE}@{version}", "--silent"], cwd=tmp, check=True)
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(MEMBER)
            if member is None:
                raise SystemExit(f"{tgz.name} has no {MEMBER}")
            spec = json.load(io.TextIOWrapper(member, encoding="utf-8"))
    OUT.write_text(json.dumps(extract(spec, version), sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) from {PACKAGE}@{version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
