"""Validate rendered objects: built-in kinds with kubernetes-validate (strict), custom resources against the
upstream CRD schemas in ../shared/crds."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from sgldeploy.engine import SECRET, UNKNOWN

from .conftest import SHARED

CRD_DIR = SHARED / "crds"
MARKERS = (SECRET, UNKNOWN)


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) → openAPIV3Schema, from every CRD file."""
    found = {}
    for path in sorted(Path(CRD_DIR).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


def without_markers(obj):
    """Drop values the plan could not know (secrets, values known after apply): they have no type to check.

    Returns the object and the dotted paths dropped, so tests can assert which ones were expected."""
    dropped: list[str] = []

    def walk(value, path):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if v in MARKERS:
                    dropped.append(f"{path}.{k}".lstrip("."))
                else:
                    out[k] = walk(v, f"{path}.{k}")
            return out
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(obj, ""), dropped


def validate(obj: dict, kubernetes_version: str) -> str:
    """Raise on an invalid object; return which schema checked it."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas():
        jsonschema.Draft202012Validator(crd_schemas()[key]).validate(obj)
        return f"crd {key[0]}"
    kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    return f"kubernetes {kubernetes_version}"
