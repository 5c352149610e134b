"""Compare two plan JSONs: the cost diff (Infracost style) and the resource diff (a dry run's + - ~ ±).

Pure: both sides are plan JSON (version 1) as `sgldeploy plan --json` writes it.
"""

from __future__ import annotations

import re
from typing import Any

from sgldeploy.spec.problems import InvalidInput, Problem, Verbatim

# Inputs a change of which replaces the resource rather than updating it: Kubernetes fields the API server
# rejects updates of, and AWS arguments the provider schema marks ForceNew.
REPLACE_ON_CHANGE: dict[str, tuple[str, ...]] = {
    "kubernetes:": ("metadata.name", "metadata.namespace"),
    "kubernetes:apps/v1:Deployment": ("spec.selector",),
    "kubernetes:apps/v1:DaemonSet": ("spec.selector",),
    "kubernetes:apps/v1:StatefulSet": ("spec.selector", "spec.volumeClaimTemplates", "spec.serviceName"),
    "kubernetes:batch/v1:Job": ("spec.template", "spec.selector", "spec.completionMode"),
    "kubernetes:core/v1:PersistentVolume": ("spec.csi", "spec.nfs", "spec.hostPath", "spec.storageClassName"),
    "kubernetes:core/v1:PersistentVolumeClaim": (
        "spec.accessModes",
        "spec.storageClassName",
        "spec.volumeName",
        "spec.selector",
        "spec.volumeMode",
    ),
    "kubernetes:core/v1:Service": ("spec.clusterIP",),
    "aws:efs/fileSystem:FileSystem": (
        "creationToken",
        "encrypted",
        "kmsKeyId",
        "performanceMode",
        "availabilityZoneName",
    ),
    "aws:efs/mountTarget:MountTarget": ("fileSystemId", "subnetId", "ipAddress"),
    "aws:fsx/lustreFileSystem:LustreFileSystem": (
        "subnetIds",
        "deploymentType",
        "storageType",
        "kmsKeyId",
        "perUnitStorageThroughput",
        "fileSystemTypeVersion",
    ),
    "aws:ec2/securityGroup:SecurityGroup": ("name", "namePrefix", "vpcId", "description"),
    "random:index/randomPassword:RandomPassword": (
        "length",
        "special",
        "upper",
        "lower",
        "numeric",
        "overrideSpecial",
        "keepers",
    ),
}

DEPLOYMENT_DRIVERS = (  # deployment fields whose change explains a cost change, as (label, path)
    ("model", ("model",)),
    ("revision", ("sha",)),
    ("instance_type", ("placement", "instance_type")),
    ("gpus_per_replica", ("placement", "gpus_per_replica")),
    ("nodes_per_replica", ("placement", "nodes_per_replica")),
    ("min_replicas", ("replicas", "min")),
    ("max_replicas", ("replicas", "max")),
    ("running_when_idle", ("replicas", "running_when_idle")),
    ("cache", ("cache", "storage")),
)


def check_plan(data: Any, where: str) -> dict[str, Any]:
    """A previous plan JSON, or one clear problem saying what in it is not one."""
    wrong = _not_a_plan(data)
    if wrong is None and isinstance(data, dict):
        return data
    what, got = wrong or ("", data)
    raise InvalidInput(
        [
            Problem(
                where,
                "is not a sgldeploy plan JSON of version 1" + (f": {what}" if what else ""),
                "write it with `sgldeploy plan --json FILE` from the base branch",
                got,
            )
        ]
    )


def _is_list_of_objects(value: Any, key: str) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and key in v for v in value)


def _not_a_plan(data: Any) -> tuple[str, Any] | None:
    """(what is wrong, the value found) for the parts of a plan JSON `diff` reads, or None when they hold."""
    if not isinstance(data, dict):
        return "its top level is not an object", data
    keys = Verbatim("keys " + (", ".join(map(str, data)) or "none"))
    if "version" not in data:
        return "it has no 'version'", keys
    if data["version"] != 1:
        return "", data["version"]
    missing = [key for key in ("cost", "deployments") if key not in data]
    if missing:
        return f"it has no {' and no '.join(repr(k) for k in missing)}", keys
    if not isinstance(data["cost"], dict):
        return "its 'cost' is not an object", data["cost"]
    if not _is_list_of_objects(data["cost"].get("items", []), "resource"):
        return "its 'cost.items' is not a list of cost items (each with a 'resource')", data["cost"]["items"]
    if not _is_list_of_objects(data["deployments"], "name"):
        return "its 'deployments' is not a list of deployments (each with a 'name')", data["deployments"]
    if not _is_list_of_objects(data.get("resources", []), "urn"):
        return "its 'resources' is not a list of resources (each with a 'urn')", data["resources"]
    return None


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = (d or {}).get(key)
    return d


def _change(old: Any, new: Any) -> str | None:
    return None if old == new else f"{_show(old)} → {_show(new)}"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _list_change(old: Any, new: Any) -> str:
    """A list of plain values as what left and what came, e.g. instance types."""
    old, new = old if isinstance(old, list) else [], new if isinstance(new, list) else []
    gone = [_show(v) for v in old if v not in new]
    came = [_show(v) for v in new if v not in old]
    if not gone and not came:
        return "reordered"
    return " ".join([*(f"-{v}" for v in gone), *(f"+{v}" for v in came)])


_FLAG = re.compile(r"--?[A-Za-z][\w.-]*")  # `--tp-size`, `-m`; never a negative number such as `-1`
_POSITIONAL = "(arguments)"  # what comes before the first flag, e.g. a command's program and its module


def _is_flag(token: Any) -> bool:
    return isinstance(token, str) and _FLAG.fullmatch(token.split("=", 1)[0]) is not None


def _flags(tokens: list[Any]) -> dict[tuple[str, int], str | None]:
    """A command line as (flag, occurrence) → its value (the tokens up to the next flag, joined; None for a
    bare switch); `--flag=value` reads as `--flag value`, and a flag given twice keeps both."""
    out: dict[tuple[str, int], str | None] = {}
    key: tuple[str, int] = (_POSITIONAL, 0)
    values: list[str] = []
    seen: dict[str, int] = {}

    def close() -> None:
        if key[0] != _POSITIONAL or values:
            out[key] = " ".join(values) if values else None

    for token in tokens:
        if _is_flag(token):
            close()
            flag, _, value = str(token).partition("=")
            seen[flag] = seen.get(flag, -1) + 1
            key, values = (flag, seen[flag]), ([value] if "=" in str(token) else [])
        else:
            values.append(_show(token))
    close()
    return out


def _flag_changes(old: Any, new: Any) -> list[str] | None:
    """Each changed flag of a command line with its old and new value (`--tp-size 1 → 4`), each added or
    removed one as such; None when neither list is a command line (then `_list_change` describes it)."""
    old, new = old if isinstance(old, list) else [], new if isinstance(new, list) else []
    if not any(_is_flag(t) for t in (*old, *new)):
        return None
    before, after = _flags(old), _flags(new)

    def shown(flag: str, value: str | None) -> str:
        return flag if value is None else f"{flag} {value}"

    changes = []
    for key in [*before, *(k for k in after if k not in before)]:
        flag = key[0]
        if key not in after:
            changes.append(f"removed {shown(flag, before[key])}")
        elif key not in before:
            changes.append(f"added {shown(flag, after[key])}")
        elif before[key] != after[key]:
            changes.append(f"{flag} {before[key] or '(no value)'} → {after[key] or '(no value)'}")
    return changes or ["reordered"]


def _input_changes(path: str, old: Any, new: Any) -> list[str]:
    """One line per change of an input: a command line flag by flag, another list as values gone and
    come, anything else as old → new."""
    if isinstance(old, list) or isinstance(new, list):
        flags = _flag_changes(old, new)
        if flags is not None:
            return [f"{path}: {c}" for c in flags]
        return [f"{path}: {_list_change(old, new)}"]
    return [f"{path}: {_show(old)} → {_show(new)}"]


def _delta(old: float | None, new: float | None) -> dict[str, Any]:
    if old is None or new is None:
        return {"old": old, "new": new, "diff": None, "percent": None}
    diff = round(new - old, 2)
    percent = None if old == 0 else round(100 * diff / old, 1)
    return {"old": old, "new": new, "diff": diff, "percent": percent}


def _costs(entry: dict[str, Any] | None) -> dict[str, Any]:
    c = (entry or {}).get("cost") or {}
    return {
        "monthly_usd_min": c.get("monthly_usd_min", 0 if entry is None else None),
        "monthly_usd_max": c.get("monthly_usd_max", 0 if entry is None else None),
    }


def _per_token(entry: dict[str, Any] | None) -> float | None:
    """The deployment's $ per 1M output tokens (None: removed, unpriced, or a plan from before throughput); a
    disaggregated deployment's, both roles together, on its decode role (whose replicas produce the tokens)."""
    pd = (entry or {}).get("disaggregation")
    if pd is not None:
        figures = pd["estimate"] if pd["role"] == "decode" else None
        return (figures or {}).get("usd_per_million_output_tokens")
    return ((entry or {}).get("throughput") or {}).get("usd_per_million_output_tokens")


def _status(old: Any, new: Any, changed: bool) -> str:
    return "added" if old is None else "removed" if new is None else "changed" if changed else "unchanged"


def cost_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    olds = {d["name"]: d for d in old["deployments"]}
    news = {d["name"]: d for d in new["deployments"]}
    deployments = []
    for name in sorted(olds.keys() | news.keys(), key=lambda n: (n not in news, n)):
        o, n = olds.get(name), news.get(name)
        co, cn = _costs(o), _costs(n)
        changes = (
            []
            if o is None or n is None
            else [
                f"{label} {c}"
                for label, path in DEPLOYMENT_DRIVERS
                if (c := _change(_get(o, path), _get(n, path)))
            ]
        )
        deployments.append(
            {
                "name": name,
                "status": _status(o, n, bool(changes) or co != cn),
                "changes": changes,
                **{k: _delta(co[k], cn[k]) for k in co},
                "usd_per_million_output_tokens": _delta(_per_token(o), _per_token(n)),
            }
        )
    oi = {i["resource"]: i for i in old["cost"].get("items", [])}
    ni = {i["resource"]: i for i in new["cost"].get("items", [])}
    items = []
    for resource in sorted(oi.keys() | ni.keys()):
        o, n = oi.get(resource), ni.get(resource)
        drivers_o, drivers_n = (o or {}).get("drivers") or {}, (n or {}).get("drivers") or {}
        changes = (
            []
            if o is None or n is None
            else [
                f"{k} {c}"
                for k in sorted(drivers_o.keys() | drivers_n.keys())
                if (c := _change(drivers_o.get(k), drivers_n.get(k)))
            ]
        )
        mo = {k: (o or {}).get(k, 0) for k in ("monthly_usd_min", "monthly_usd_max")}  # absent: costs nothing
        mn = {k: (n or {}).get(k, 0) for k in ("monthly_usd_min", "monthly_usd_max")}
        status = _status(o, n, bool(changes) or mo != mn)
        either: dict[str, Any] = n or o or {}
        if status == "unchanged":
            continue
        items.append(
            {
                "resource": resource,
                "status": status,
                "changes": changes,
                "description": either["description"],
                "usage_based": either.get("usage_based", False),
                **{k: _delta(mo[k], mn[k]) for k in mo},
            }
        )
    keys = ("monthly_usd_min", "monthly_usd_max")
    total = {k: _delta(old["cost"].get(k), new["cost"].get(k)) for k in keys}
    old_platform, new_platform = old["cost"].get("platform") or {}, new["cost"].get("platform") or {}
    platform = None  # the cluster's own lines (created clusters only), when either side has any
    if old_platform.get("monthly_usd_max") or new_platform.get("monthly_usd_max"):
        platform = {k: _delta(old_platform.get(k, 0), new_platform.get(k, 0)) for k in keys}
    return {"total": total, "deployments": deployments, "platform": platform, "items": items}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(value, list) and value and all(not isinstance(v, (dict, list)) for v in value):
        return {prefix: value}  # a list of plain values is one input (args, instance types)
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _forces_replace(rtype: str, path: str) -> str | None:
    common = REPLACE_ON_CHANGE["kubernetes:"] if rtype.startswith("kubernetes:") else ()
    for prefix in (*common, *REPLACE_ON_CHANGE.get(rtype, ())):
        if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
            return prefix
    return None


def _key(urn: str) -> str:
    """A URN without its stack: the same resource in a plan of a copy of the stack compares equal."""
    return urn.split("::", 1)[-1]


def resource_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    olds = {_key(r["urn"]): r for r in old.get("resources", [])}
    news = {_key(r["urn"]): r for r in new.get("resources", [])}
    out: dict[str, list[Any]] = {"added": [], "removed": [], "changed": [], "replaced": [], "same": []}
    for urn in sorted(news.keys() - olds.keys()):
        out["added"].append({"urn": news[urn]["urn"], "type": news[urn]["type"], "name": news[urn]["name"]})
    for urn in sorted(olds.keys() - news.keys()):
        out["removed"].append({"urn": olds[urn]["urn"], "type": olds[urn]["type"], "name": olds[urn]["name"]})
    for urn in sorted(olds.keys() & news.keys()):
        o, n = _flatten(olds[urn]["inputs"]), _flatten(news[urn]["inputs"])
        paths = sorted(p for p in o.keys() | n.keys() if o.get(p) != n.get(p))
        entry = {"urn": news[urn]["urn"], "type": news[urn]["type"], "name": news[urn]["name"]}
        if not paths:
            out["same"].append(entry)
            continue
        entry["changes"] = [c for p in paths for c in _input_changes(p, o.get(p), n.get(p))]
        causes = sorted({c for p in paths if (c := _forces_replace(news[urn]["type"], p))})
        if causes:
            out["replaced"].append({**entry, "because": causes})
        else:
            out["changed"].append(entry)
    return out


EMPTY_PLAN: dict[str, Any] = {
    "version": 1,
    "stack": None,
    "resources": [],
    "deployments": [],
    "cost": {"monthly_usd_min": 0, "monthly_usd_max": 0, "items": []},
}
"""What a first plan is compared with: nothing existed before."""


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {"base_stack": old.get("stack"), "cost": cost_diff(old, new), "resources": resource_diff(old, new)}
