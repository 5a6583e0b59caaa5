"""Kubernetes JSON Schemas for kubeconform, built offline.

kubeconform normally downloads its schemas from GitHub.  This builds the same layout
(``{kind}-{group}-{version}.json``, strict: unknown fields are errors) from sources the Go
module proxy serves: the OpenAPI document in the ``k8s.io/kubernetes`` module
(``api/openapi-spec/swagger.json``) and CustomResourceDefinition manifests (e.g. the
prometheus-operator's ServiceMonitor).  Used by scripts/validate_deploy.sh.

    python scripts/k8s_json_schemas.py OUT_DIR --swagger swagger.json [--crd crd.yaml ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

INT_OR_STRING: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json``."""
    suffix = "-" + (group.split(".")[0].lower() + "-" + version.lower() if group else version.lower())
    return f"{kind.lower()}{suffix}.json"


_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")


def _strict(schema: Any) -> Any:
    """Unknown fields are errors (kubectl's validation); int-or-string accepts both.

    Walks schema keywords only, so that ``default``/``enum``/``example`` values and property
    *names* are left alone.
    """
    if not isinstance(schema, dict):
        return schema
    if schema.get("format") == "int-or-string" or schema.get("x-kubernetes-int-or-string"):
        out = dict(INT_OR_STRING)
        if "description" in schema:
            out["description"] = schema["description"]
        return out
    new = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(new.get(key), dict):
            new[key] = {name: _strict(s) for name, s in new[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(new.get(key), list):
            new[key] = [_strict(s) for s in new[key]]
    for key in _SCHEMA_VALUES:
        if isinstance(new.get(key), dict):
            new[key] = _strict(new[key])
    if (
        "properties" in new
        and "additionalProperties" not in new
        and not new.get("x-kubernetes-preserve-unknown-fields")
    ):
        new["additionalProperties"] = False
    return new


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            out.add(ref.removeprefix("#/definitions/"))
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def from_swagger(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One standalone schema per (group, version, kind) of the OpenAPI v2 document."""
    definitions: dict[str, Any] = dict(swagger["definitions"])
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = QUANTITY
    out: dict[str, dict[str, Any]] = {}
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            needed: set[str] = set()
            todo = [name]
            while todo:
                n = todo.pop()
                if n in needed:
                    continue
                needed.add(n)
                found: set[str] = set()
                _refs(definitions[n], found)
                todo.extend(found - needed)
            doc = _strict(copy.deepcopy(schema))
            doc["definitions"] = {n: _strict(copy.deepcopy(definitions[n])) for n in sorted(needed)}
            doc["$schema"] = "http://json-schema.org/draft-07/schema#"
            out[file_name(gvk["kind"], gvk.get("group", ""), gvk["version"])] = doc
    return out


def from_crd(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = crd["spec"]
    out: dict[str, dict[str, Any]] = {}
    for version in spec["versions"]:
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is None:
            continue
        doc = _strict(copy.deepcopy(schema))
        doc["$schema"] = "http://json-schema.org/draft-07/schema#"
        out[file_name(spec["names"]["kind"], spec["group"], version["name"])] = doc
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--swagger", type=Path, required=True, help="Kubernetes api/openapi-spec/swagger.json"
    )
    parser.add_argument("--crd", type=Path, action="append", default=[], help="CRD manifest (repeatable)")
    args = parser.parse_args(argv)
    schemas = from_swagger(json.loads(args.swagger.read_text()))
    yaml = YAML(typ="safe")
    for path in args.crd:
        for doc in yaml.load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                schemas.update(from_crd(doc))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, doc in schemas.items():
        (args.out / name).write_text(json.dumps(doc, separators=(",", ":")))
    print(f"{len(schemas)} schemas in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
