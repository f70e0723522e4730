"""A CustomResourceDefinition's schema of one version as a JSON Schema file for check-jsonschema:
how deploy/k8s/schemas/ was made (README.md beside this file).

    python deploy/k8s/schemas/crd_to_jsonschema.py CRD.yaml VERSION > KIND_VERSION.json

The schema is the CRD's `openAPIV3Schema`, which is JSON Schema already but for Kubernetes'
extensions, with two changes. Strict, as the API server is with `kubectl apply` (its field
validation refuses unknown fields): every object that lists its properties gets
`additionalProperties: false`, unless it keeps unknown fields (x-kubernetes-preserve-unknown-fields),
as datreeio/CRDs-catalog's conversion does. And `apiVersion` and `kind` must be this CRD's, so a
document of another kind cannot pass. What JSON Schema cannot say (x-kubernetes-validations, CEL
rules) is left out; the x-kubernetes-* keys stay, and JSON Schema ignores them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DRAFT = "http://json-schema.org/draft-07/schema#"


def strict(node: Any) -> Any:
    """`node` with additionalProperties false on every object schema that lists properties."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: strict(value) for key, value in node.items()}
    converted.pop("x-kubernetes-validations", None)
    if (
        "properties" in converted
        and "additionalProperties" not in converted
        and not converted.get("x-kubernetes-preserve-unknown-fields")
    ):
        converted["additionalProperties"] = False
    return converted


def version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The JSON Schema of `version` of `crd`."""
    [found] = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    schema: dict[str, Any] = strict(found["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"]["enum"] = [f"{group}/{version}"]
    schema["properties"]["kind"]["enum"] = [kind]
    schema["required"] = sorted({"apiVersion", "kind", *schema.get("required", [])})
    return {"$schema": DRAFT, **schema}


def main() -> None:
    path, version = sys.argv[1:]
    crd = yaml.safe_load(Path(path).read_text())
    print(json.dumps(version_schema(crd, version), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
