"""A component's docstring names every child it declares, so a newcomer learns from it what `pulumi preview`
will show under the component."""

from __future__ import annotations

import ast
from pathlib import Path

COMPONENTS = Path(__file__).parent.parent / "components"


def declared_children(module: ast.Module) -> set[str]:
    """Classes constructed with resource options (`Kind(..., opts=...)`): the children the module declares."""
    kinds = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and any(k.arg == "opts" for k in node.keywords):
            func = node.func
            kind = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if kind and not kind.startswith(("_", "get_")):  # not a step of the component, nor a lookup
                kinds.add(kind)
    return kinds


def test_the_model_deployment_docstring_names_every_child_it_declares():
    module = ast.parse((COMPONENTS / "model_deployment.py").read_text())
    docstring = ast.get_docstring(module) or ""
    children = declared_children(module)
    # Independently listed: what a ModelDeployment declares (README's resource tree shows the same).
    assert children >= {
        "Secret",
        "RandomPassword",
        "GpuNodePool",
        "ConfigMap",
        "SharedWeightCache",
        "SglangServer",
        "Autoscaler",
        "Router",
        "Endpoint",
        "DaemonSet",
        "Observability",
        "NetworkPolicy",
        "PodDisruptionBudget",
    }
    assert [kind for kind in sorted(children) if kind not in docstring] == []


def test_a_child_missing_from_the_docstring_is_found():
    module = ast.parse(
        '"""Declares a Secret."""\n'
        'k8s.core.v1.Secret(f"{name}-a", opts=child)\n'
        'k8s.core.v1.ConfigMap(f"{name}-b", opts=child)\n'
        "self._step(name, opts=child)\n"
    )
    docstring = ast.get_docstring(module) or ""
    assert [kind for kind in sorted(declared_children(module)) if kind not in docstring] == ["ConfigMap"]
