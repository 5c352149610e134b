"""The Kubernetes objects a rendered plan declares, one YAML manifest each, as the provider receives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sgldeploy.files import write_atomic
from sgldeploy.offline.engine import normalize
from sgldeploy.offline.render import Plan


def kubernetes_objects(plan: Plan) -> list[dict[str, Any]]:
    """Every Kubernetes object the program declares, as the provider receives it."""
    return [
        normalize(r.inputs)
        for r in plan.resources_in_urn_order
        if r.custom and r.type.startswith("kubernetes:") and "kind" in r.inputs
    ]


def manifest_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj['kind'].lower()}-{meta.get('namespace') or 'cluster'}-{meta.get('name', 'unnamed')}.yaml"


def write_manifests(plan: Plan, directory: Path) -> list[Path]:
    written = []
    for obj in kubernetes_objects(plan):
        path = directory / manifest_name(obj)
        write_atomic(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))
        written.append(path)
    return written
