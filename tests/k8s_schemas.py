"""Validate rendered objects as the API server would: built-in kinds with kubernetes-validate (strict), custom
resources against the upstream CRDs (in the verified cache of tests/upstream.py): structural defaults applied,
the openAPIV3Schema, then every `x-kubernetes-validations` CEL rule, evaluated with a real CEL engine (cel-expr-python, the CEL C++
runtime) and the Kubernetes CEL libraries the CRDs' rules use.

How the API server runs a CRD's rules (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
custom-resource-definitions/#validation-rules), and what is done here:
- defaults first: each absent property with a `default` (or a non-nullable null) gets it, recursively, where
  its parent exists (k8s.io/apiextensions-apiserver pkg/apiserver/schema/defaulting/algorithm.go);
- each rule with `self` bound to the value at the rule's node, for every node present in the object;
- a rule that references `oldSelf` is a transition rule: not run on create (counted in `RuleReport.skipped`);
- the reported message is the rule's `messageExpression` result, else `message`, else "failed rule: <rule>";
- a rule that errors fails, as it does in the API server (e.g. reading an absent field);
- a value known only after `pulumi up` ("(known after apply)", or "[secret]") satisfies any rule about its own
  field, as an unknown does in a preview;
- a rule that uses a function the engine lacks fails loudly (UnsupportedRule): no rule is skipped silently.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from cel_expr_python import cel
from cel_expr_python.ext import ext_strings

from sgldeploy.offline.engine import SECRET, UNKNOWN

from .upstream import upstream

MARKERS = (SECRET, UNKNOWN)


def crd_dir() -> Path:
    return upstream("crds")


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) → openAPIV3Schema, from every CRD file."""
    found = {}
    for path in sorted(crd_dir().glob("*.yaml")):
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
    """Raise on an invalid object; return which schema checked it (a custom resource: its CRD's schema only;
    `validate_custom_resource` adds defaults and the CRD's CEL rules)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas():
        jsonschema.Draft202012Validator(crd_schemas()[key]).validate(obj)
        return f"crd {key[0]}"
    kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    return f"kubernetes {kubernetes_version}"


# ---- structural defaulting ---------------------------------------------------------------------------------


def _default_into(value: Any, schema: dict | None) -> None:
    """In place, as the API server defaults a custom resource before validating it."""
    if not schema:
        return
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            absent = key not in value or (value[key] is None and not prop.get("nullable", False))
            if absent and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            elif key in value and value[key] is None and not prop.get("nullable", False):
                del value[key]  # a non-nullable null without a default is pruned
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in schema.get("properties", {}):
                _default_into(item, schema["properties"][key])
            elif isinstance(extra, dict):
                _default_into(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        for i, item in enumerate(value):
            if item is None and "default" in items and not items.get("nullable", False):
                value[i] = copy.deepcopy(items["default"])
            _default_into(value[i], items)


def with_defaults(obj: dict, schema: dict) -> dict:
    defaulted = copy.deepcopy(obj)
    _default_into(defaulted, schema)
    return defaulted


# ---- CEL, with the Kubernetes libraries the CRDs' rules use -----------------------------------------------


class UnsupportedRule(Exception):
    """A rule this engine cannot compile: a Kubernetes CEL function not provided here. Never skipped."""


def _find(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    return match.group(0) if match else ""


def _find_all(text: str, pattern: str, limit: int = -1) -> list[str]:
    found = [m.group(0) for m in re.finditer(pattern, text)]
    return found if limit < 0 else found[:limit]


# Kubernetes' regex library (k8s.io/apiserver pkg/cel/library/regex.go): <string>.find(<regex>) is the first
# match ('' if none), <string>.findAll(<regex>[, <limit>]) every match. Go's RE2 and Python's re agree on the
# patterns the CRDs use (anchors, classes, groups).
KUBERNETES_REGEX = [
    cel.FunctionDecl(
        "find",
        [
            cel.Overload(
                "string_find_string",
                cel.Type.STRING,
                [cel.Type.STRING, cel.Type.STRING],
                is_member=True,
                impl=_find,
            )
        ],
    ),
    cel.FunctionDecl(
        "findAll",
        [
            cel.Overload(
                "string_find_all_string",
                cel.Type.List(cel.Type.STRING),
                [cel.Type.STRING, cel.Type.STRING],
                is_member=True,
                impl=_find_all,
            ),
            cel.Overload(
                "string_find_all_string_int",
                cel.Type.List(cel.Type.STRING),
                [cel.Type.STRING, cel.Type.STRING, cel.Type.INT],
                is_member=True,
                impl=_find_all,
            ),
        ],
    ),
]


@cache
def cel_env() -> Any:
    """`self` and `oldSelf` as dynamic values; CEL's standard library (has, all, exists, filter, size,
    matches, startsWith, endsWith, in, int(), …), cel-go's strings extension that Kubernetes enables (split,
    …) and Kubernetes' regex library. Its URL, IP/CIDR, quantity, lists, sets and format libraries are not
    provided: no CRD rule here uses them, and a rule that does fails to compile (UnsupportedRule)."""
    return cel.NewEnv(
        variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN},
        extensions=[ext_strings.ExtStrings()],
        functions=KUBERNETES_REGEX,
    )


@cache
def compiled(expression: str) -> Any:
    try:
        return cel_env().compile(expression)
    except Exception as err:  # the engine's compile error: an unknown function, overload or syntax
        raise UnsupportedRule(f"cannot compile {expression!r}: {err}") from None


_OLD_SELF = re.compile(r"\boldSelf\b")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _typed(value: Any, schema: dict | None) -> Any:
    """JSON numbers as the schema types them: the engine carries every number as a float (1.0 for 1)."""
    schema = schema or {}
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            k: _typed(v, props.get(k, extra if isinstance(extra, dict) else None)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_typed(v, schema.get("items")) for v in value]
    integer = schema.get("type") == "integer" or schema.get("x-kubernetes-int-or-string")
    if integer and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _marker_keys(value: Any) -> set[str]:
    """Keys on the way to each value not known before `pulumi up`."""
    if isinstance(value, dict):
        keys: set[str] = set()
        for k, v in value.items():
            below = _marker_keys(v)
            if below or v in MARKERS:
                keys |= {str(k), *below}
        return keys
    if isinstance(value, list):
        return set().union(*(_marker_keys(v) for v in value)) if value else set()
    return set()


def _has_marker(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_marker(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_marker(v) for v in value)
    return value in MARKERS


@dataclass(frozen=True)
class Violation:
    path: str  # where the rule sits (and its fieldPath), e.g. spec.securityGroupSelectorTerms
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message} (rule: {self.rule})"


@dataclass
class RuleReport:
    violations: list[Violation] = field(default_factory=list)
    evaluated: int = 0
    skipped: list[str] = field(default_factory=list)  # transition rules (oldSelf), not run on create
    unknown: list[str] = field(default_factory=list)  # failed only for a value known after apply


def _message(rule: dict, self_value: Any) -> str:
    if "messageExpression" in rule:
        result = compiled(rule["messageExpression"]).eval(data={"self": self_value})
        if result.type() == cel.Type.STRING and result.value():
            return str(result.value())
    return rule.get("message") or f"failed rule: {rule['rule']}"


def _check(rule: dict, value: Any, schema: dict, path: str, report: RuleReport) -> None:
    text = rule["rule"]
    if _OLD_SELF.search(text):
        if rule.get("optionalOldSelf"):
            raise UnsupportedRule(f"{path}: optionalOldSelf rules run on create; not provided: {text!r}")
        report.skipped.append(f"{path}: {text}")
        return
    self_value = _typed(value, schema)
    result = compiled(text).eval(data={"self": self_value})
    report.evaluated += 1
    if result.type() == cel.Type.BOOL and result.value() is True:
        return
    if set(_IDENTIFIER.findall(text)) & _marker_keys(value):
        report.unknown.append(f"{path}: {text}")
        return
    where = (path + (rule.get("fieldPath") or "")).lstrip(".")
    why = "" if result.type() == cel.Type.BOOL else f" [{result.value()}]"
    report.violations.append(Violation(where, text, _message(rule, self_value) + why))


def _walk(value: Any, schema: dict, path: str) -> Iterator[tuple[Any, dict, str]]:
    """Every node of the object present in the schema, with its schema and path."""
    yield value, schema, path
    if value in MARKERS:
        return
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            below = props.get(key, extra if isinstance(extra, dict) else None)
            if below is not None and item is not None:
                yield from _walk(item, below, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if item is not None:
                yield from _walk(item, schema["items"], f"{path}[{i}]")


def check_rules(obj: dict, schema: dict | None = None) -> RuleReport:
    """Every CEL rule of the object's CRD, over the object with its defaults, on create."""
    schema = schema or crd_schemas()[(obj["apiVersion"], obj["kind"])]
    report = RuleReport()
    for value, node, path in _walk(with_defaults(obj, schema), schema, ""):
        for rule in node.get("x-kubernetes-validations", []):
            if value in MARKERS:
                report.unknown.append(f"{path}: {rule['rule']}")  # satisfies any rule about its own field
            else:
                _check(rule, value, node, path, report)
    return report


class RuleViolation(AssertionError):
    pass


def validate_custom_resource(obj: dict) -> RuleReport:
    """As the API server admits a custom resource on create: defaults, schema, then rules. Values known only
    after apply are left out of the schema check (they have no type yet) and are unknowns for the rules."""
    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    defaulted = with_defaults(obj, schema)
    checked, _ = without_markers(defaulted)
    jsonschema.Draft202012Validator(schema).validate(_typed(checked, schema))
    report = check_rules(obj, schema)
    if report.violations:
        name = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
        raise RuleViolation("\n".join(f"{name}: {v}" for v in report.violations))
    return report


def every_rule() -> Iterator[tuple[str, dict]]:
    """(CRD file, rule) for every x-kubernetes-validations rule of every CRD file."""

    def walk(node: Any) -> Iterator[dict]:
        if isinstance(node, dict):
            yield from node.get("x-kubernetes-validations", []) or []
            for item in node.values():
                yield from walk(item)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for path in sorted(crd_dir().glob("*.yaml")):
        for rule in walk(yaml.safe_load(path.read_text())):
            yield path.name, rule
