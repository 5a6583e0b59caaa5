"""Vendor the Atlassian Document Format JSON schema from npm ``@atlaskit/adf-schema``.

Jira Cloud REST v3 takes issue descriptions and comments as ADF; the Jira sink tests
validate every body prodloop sends against the published schema
(``json-schema/v1/full.json``, draft-04), written compactly to
``tests/data/adf-schema-v1-full.json`` with the package version recorded in ``$comment``.

Regenerate (needs npm and network)::

    .venv/bin/python tests/data/extract_adf_schema.py [VERSION]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@atlaskit/adf-schema"
VERSION = "57.7.22"
MEMBER = "package/json-schema/v1/full.json"
OUT = Path(__file__).resolve().parent / "adf-schema-v1-full.json"


def main(argv: list[str]) -> int:
    version = argv[1] if len(argv) > 1 else VERSION
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"{PACKAGE}@{version}", "--silent"], cwd=tmp, check=True)
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(MEMBER)
            if member is None:
                raise SystemExit(f"{tgz.name} has no {MEMBER}")
            schema = json.load(member)
    schema["$comment"] = f"npm {PACKAGE}@{version}, {MEMBER.removeprefix('package/')}"
    OUT.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) from {PACKAGE}@{version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
