"""Every Helm release sgldeploy declares, in every stack of tests/variants.py, against the published chart it
names: the chart, version and repository are the published ones (each chart's SOURCE), and every values key
set exists in that chart version's default values (or its values.schema.json) with a compatible type. Helm
ignores a key the chart does not know, silently; this is where a misspelt or misplaced key is caught.

The charts' templates are not available offline, so "read by a template" is checked only as "exists in the
chart's default values". A default that is an empty map (`resources: {}`, `affinity: {}`) is a map the chart
passes on whole (`toYaml`, e.g. karpenter's controller.resources in charts/karpenter/templates/deployment.yaml
@v1.14.1), as are the key paths a chart's FREEFORM file lists (the lock's `freeform`); lists replace the chart's
list whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sgldeploy.builders.addons import CHARTS
from sgldeploy.offline.engine import SECRET, UNKNOWN

from .upstream import chart_source, upstream
from .variants import rendered_variants

RELEASE = "kubernetes:helm.sh/v3:Release"
MARKERS = (SECRET, UNKNOWN)  # not known before `pulumi up`: any type


def chart_dir(chart: str, version: str) -> Path:
    return upstream("data", "charts", f"{chart.rsplit('/', 1)[-1]}-{version}")


def read_source(directory: Path) -> dict[str, list[str]]:
    """The chart's published identity as the upstream lock records it (each chart's SOURCE); `published` may
    list several locations."""
    source = chart_source(directory.name) or {}
    return {key: value if isinstance(value, list) else [value] for key, value in source.items()}


def read_freeform(directory: Path) -> set[tuple[str, ...]]:
    """The key paths the lock's `freeform` lists for the chart (a chart's FREEFORM file; none has one today)."""
    source = chart_source(directory.name) or {}
    return {tuple(path.split(".")) for path in source.get("freeform", [])}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", dict: "map", list: "list", type(None): "null"}[type(value)]


def compatible(ours: Any, default: Any) -> bool:
    """A value may replace the default when both are of one kind; a null default says nothing of its type."""
    return default is None or ours in MARKERS or _kind(ours) == _kind(default)


def schema_has(schema: dict[str, Any] | None, path: tuple[str, ...]) -> bool:
    node = schema
    for key in path:
        if not isinstance(node, dict) or key not in node.get("properties", {}):
            return False
        node = node["properties"][key]
    return True


def key_problems(
    ours: dict[str, Any],
    defaults: Any,
    schema: dict[str, Any] | None,
    freeform: set[tuple[str, ...]],
    at: tuple[str, ...] = (),
) -> list[str]:
    """Each values key path set that the chart's defaults (or schema) do not have, or with the wrong kind."""
    problems = []
    for key, value in ours.items():
        path = (*at, key)
        dotted = ".".join(path)
        if not isinstance(defaults, dict) or key not in defaults:
            if not schema_has(schema, path):
                problems.append(f"{dotted}: not a key of the chart's values")
            continue
        default = defaults[key]
        if not compatible(value, default):
            problems.append(f"{dotted}: a {_kind(value)} where the chart's default is a {_kind(default)}")
        elif isinstance(value, dict) and isinstance(default, dict) and default and path not in freeform:
            problems += key_problems(value, default, schema, freeform, path)
    return problems


def coalesce(defaults: Any, ours: Any) -> Any:
    """The values Helm renders with: maps merged key by key, anything else replaced by the user's value."""
    if isinstance(defaults, dict) and isinstance(ours, dict):
        return {**defaults, **{k: coalesce(defaults.get(k), v) for k, v in ours.items()}}
    return ours


def release_problems(inputs: dict[str, Any]) -> list[str]:
    chart, version = inputs["chart"], inputs["version"]
    directory = chart_dir(chart, version)
    if not (directory / "values.yaml").exists():
        return [f"{chart} {version}: no published chart data in {directory}"]
    source = read_source(directory)
    published = [p.rstrip("/") for p in source.get("published", [])]
    problems = []
    if source["chart"] != [chart.rsplit("/", 1)[-1]] or source["version"] != [version]:
        problems.append(f"{chart} {version}: SOURCE names {source['chart']} {source['version']}")
    location = chart if chart.startswith("oci://") else inputs.get("repositoryOpts", {}).get("repo", "")
    if location.rstrip("/") not in published:
        problems.append(f"{chart} {version}: from {location!r}, not where it is published: {published}")
    defaults = yaml.safe_load((directory / "values.yaml").read_text()) or {}
    schema_file = directory / "values.schema.json"
    schema = json.loads(schema_file.read_text()) if schema_file.exists() else None
    values = inputs.get("values") or {}
    problems += [
        f"{chart} {version}: {p}" for p in key_problems(values, defaults, schema, read_freeform(directory))
    ]
    if schema is not None:  # Helm validates the coalesced values against the chart's schema before rendering
        validator = jsonschema.validators.validator_for(schema)(schema)
        problems += [
            f"{chart} {version}: schema: {e.message}"
            for e in validator.iter_errors(coalesce(defaults, values))
        ]
    return problems


def test_every_release_of_every_variant_sets_only_values_its_chart_has():
    checked, problems = set(), []
    for variant, plan in rendered_variants().items():
        for release in (r for r in plan.recording.resources if r.type == RELEASE):
            checked.add(release.inputs["chart"])
            problems += [f"{variant} {release.name}: {p}" for p in release_problems(release.inputs)]
    assert not problems, "\n".join(problems)
    assert checked == {c.chart for c in CHARTS}  # every pinned chart is installed by some variant


def release(chart: str, version: str, values: dict[str, Any], repo: str | None = None) -> dict[str, Any]:
    return {
        "chart": chart,
        "version": version,
        "values": values,
        "repositoryOpts": {"repo": repo} if repo else {},
    }


EFS = ("aws-efs-csi-driver", "4.4.1", "https://kubernetes-sigs.github.io/aws-efs-csi-driver/")


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"node": {"tolerateAllTaints": True}}, "node.tolerateAllTaints: not a key of the chart's values"),
        ({"node": {"tolerations": True}}, "node.tolerations: a boolean where the chart's default is a list"),
        ({"nod": {"tolerations": []}}, "nod: not a key of the chart's values"),
        ({"node": {"tolerations": [{"operator": "Exists"}]}}, None),
        ({"node": {"resources": {"requests": {"cpu": "10m"}}}}, None),  # `resources: {}`: passed on whole
    ],
)
def test_the_check_catches_keys_and_kinds_the_chart_does_not_have(values, expected):
    chart, version, repo = EFS
    found = release_problems(release(chart, version, values, repo))
    assert found == ([f"{chart} {version}: {expected}"] if expected else [])


def test_the_check_catches_a_chart_from_the_wrong_place_and_a_schema_violation():
    wrong_repo = release("aws-efs-csi-driver", "4.4.1", {}, "https://aws.github.io/eks-charts")
    assert "not where it is published" in release_problems(wrong_repo)[0]
    unpinned = release("aws-efs-csi-driver", "9.9.9", {}, EFS[2])
    assert "no published chart data" in release_problems(unpinned)[0]
    bad_type = release(
        "external-secrets", "2.9.0", {"installCRDs": "yes"}, "https://charts.external-secrets.io"
    )
    assert any("schema: 'yes' is not of type 'boolean'" in p for p in release_problems(bad_type))
