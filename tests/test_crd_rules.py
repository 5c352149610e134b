"""The CRDs' own CEL rules (x-kubernetes-validations), evaluated by a real CEL engine after structural
defaulting, as the API server admits a custom resource on create (tests/k8s_schemas.py says how).

Every custom resource of every stack in tests/variants.py must be admitted; known-bad objects, each derived
from one rule of the upstream CRD (the expected messages are the CRD's), must be refused by exactly that rule.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest

from sgldeploy.offline.engine import UNKNOWN
from sgldeploy.offline.manifests import kubernetes_objects

from . import k8s_schemas
from .k8s_schemas import UnsupportedRule, check_rules, validate_custom_resource, with_defaults
from .variants import rendered_variants

# Kinds whose CRDs carry rules, and which sgldeploy renders.
RULED_KINDS = {"EC2NodeClass", "NodePool", "ScaledObject", "HTTPScaledObject"}


def custom_resources(variant: str) -> list[dict[str, Any]]:
    objects = kubernetes_objects(rendered_variants()[variant])
    return [o for o in objects if (o["apiVersion"], o["kind"]) in k8s_schemas.crd_schemas()]


def rendered(variant: str, kind: str) -> dict[str, Any]:
    """A deep copy of the first `kind` the variant renders, to break by hand."""
    return copy.deepcopy(next(o for o in custom_resources(variant) if o["kind"] == kind))


def violated(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v.path, v.message) for v in check_rules(obj).violations]


def test_every_rule_of_every_crd_compiles_with_the_kubernetes_libraries_provided():
    rules = list(k8s_schemas.every_rule())
    # As many as the CRD files' text holds: the walk over the schemas leaves none out.
    in_text = sum(
        len(re.findall(r"^\s*(?:- )?rule:", path.read_text(), re.MULTILINE))
        for path in k8s_schemas.crd_dir().glob("*.yaml")
    )
    assert len(rules) == in_text > 0
    failures = []
    for name, rule in rules:
        for expression in (rule["rule"], rule.get("messageExpression")):
            try:
                if expression is not None:
                    k8s_schemas.compiled(expression)
            except UnsupportedRule as err:  # a Kubernetes CEL function the engine lacks
                failures.append(f"{name}: {err}")
    assert not failures, "\n".join(failures)


def test_every_custom_resource_of_every_variant_is_admitted():
    failures, evaluated = [], {}
    for variant in rendered_variants():
        for obj in custom_resources(variant):
            try:
                report = validate_custom_resource(obj)
            except (jsonschema.ValidationError, k8s_schemas.RuleViolation) as err:
                failures.append(f"{variant} {obj['kind']}/{obj['metadata']['name']}: {err}")
                continue
            evaluated[obj["kind"]] = evaluated.get(obj["kind"], 0) + report.evaluated
    assert not failures, "\n".join(failures)
    assert RULED_KINDS <= evaluated.keys()  # every kind with rules was rendered somewhere
    assert all(evaluated[kind] > 0 for kind in RULED_KINDS), evaluated  # and its rules ran


# ---- known-bad objects, one rule each ----------------------------------------------------------------------


def test_a_security_group_term_with_no_selector_is_refused():
    node_class = rendered("dev", "EC2NodeClass")
    assert violated(node_class) == []
    node_class["spec"]["securityGroupSelectorTerms"] = [{}]
    assert violated(node_class) == [
        ("spec.securityGroupSelectorTerms", "expected at least one, got none, ['tags', 'id', 'name']")
    ]
    node_class["spec"]["securityGroupSelectorTerms"] = [{"id": "sg-0123", "tags": {"team": "ml"}}]
    assert violated(node_class) == [
        (
            "spec.securityGroupSelectorTerms",
            "'id' is mutually exclusive, cannot be set with a combination of other fields in a security "
            "group selector term",
        )
    ]


def test_a_security_group_id_known_only_after_apply_satisfies_the_rules_about_it():
    node_class = rendered("dev", "EC2NodeClass")
    node_class["spec"]["securityGroupSelectorTerms"] = [{"id": UNKNOWN}]
    assert check_rules(node_class).violations == []
    validate_custom_resource(node_class)


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda s: s.update(instanceProfile="my-profile"),
            ("spec", "must specify exactly one of ['role', 'instanceProfile']"),
        ),
        (
            lambda s: s.update(amiSelectorTerms=[{"alias": "al2023"}]),
            (
                "spec.amiSelectorTerms[0].alias",
                "'alias' is improperly formatted, must match the format 'family@version'",
            ),
        ),
        (
            lambda s: s["tags"].update({"karpenter.sh/nodepool": "x"}),
            ("spec.tags", "tag contains a restricted tag matching karpenter.sh/nodepool"),
        ),
    ],
)
def test_ec2_node_class_rules(change, expected):
    node_class = rendered("dev", "EC2NodeClass")
    change(node_class["spec"])
    assert expected in violated(node_class)


def requirement(**fields: Any) -> dict[str, Any]:
    return {"key": "example.com/tier", "operator": "In", "values": ["a"], **fields}


def with_requirements(*extra: dict[str, Any]) -> dict[str, Any]:
    pool = rendered("dev", "NodePool")
    pool["spec"]["template"]["spec"]["requirements"] += list(extra)
    return pool


REQUIREMENTS = "spec.template.spec.requirements"


@pytest.mark.parametrize(
    "bad, expected",
    [
        (
            requirement(key="karpenter.sh/nodepool"),
            (f"{REQUIREMENTS}[{{i}}].key", 'label "karpenter.sh/nodepool" is restricted'),
        ),
        (
            requirement(key="kubernetes.io/hostname"),
            (f"{REQUIREMENTS}[{{i}}].key", 'label "kubernetes.io/hostname" is restricted'),
        ),
        (
            requirement(key="foo.karpenter.sh/x"),
            (f"{REQUIREMENTS}[{{i}}].key", 'label domain "karpenter.sh" is restricted'),
        ),
        (requirement(values=[]), (REQUIREMENTS, "requirements with operator 'In' must have a value defined")),
        (
            requirement(operator="Gt", values=["-1"]),
            (
                REQUIREMENTS,
                "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
            ),
        ),
        (
            requirement(operator="Gt", values=["1", "2"]),
            (
                REQUIREMENTS,
                "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
            ),
        ),
        (
            requirement(values=["a", "b"], minValues=3),
            (
                REQUIREMENTS,
                "requirements with 'minValues' must have at least that many values specified in the 'values' "
                "field",
            ),
        ),
    ],
)
def test_node_pool_requirements_karpenter_forbids_are_refused(bad, expected):
    pool = with_requirements(bad)
    i = len(pool["spec"]["template"]["spec"]["requirements"]) - 1
    path, message = expected
    assert (path.format(i=i), message) in violated(pool)


@pytest.mark.parametrize(
    "good",
    [
        requirement(operator="Gt", values=["0"]),  # a single integer ≥ 0: the boundary
        requirement(values=["a", "b"], minValues=2),  # exactly minValues values
        requirement(key="karpenter.sh/capacity-type", values=["spot"]),  # the karpenter.sh labels allowed
    ],
)
def test_node_pool_requirements_at_the_boundary_are_admitted(good):
    assert violated(with_requirements(good)) == []


def test_a_disruption_budget_schedule_needs_a_duration():
    pool = rendered("dev", "NodePool")
    pool["spec"]["disruption"]["budgets"] = [{"nodes": "1", "schedule": "0 9 * * *"}]
    assert violated(pool) == [("spec.disruption.budgets", "'schedule' must be set with 'duration'")]
    pool["spec"]["disruption"]["budgets"][0]["duration"] = "8h"
    assert violated(pool) == []


@pytest.mark.parametrize(
    "replicas, ok",
    [
        ({"minReplicaCount": 3, "maxReplicaCount": 3}, True),
        ({"minReplicaCount": 4, "maxReplicaCount": 3}, False),
        ({"minReplicaCount": 100}, True),  # without a maximum the rule compares with 100
        ({"minReplicaCount": 101}, False),
    ],
)
def test_scaled_object_min_replicas_at_most_max(replicas, ok):
    scaled = rendered("staging", "ScaledObject")
    scaled["spec"].pop("maxReplicaCount", None)
    scaled["spec"].update(replicas)
    expected = [] if ok else [("spec", "minReplicaCount must be less than or equal to maxReplicaCount")]
    assert violated(scaled) == expected


@pytest.mark.parametrize(
    "ports, ok",
    [
        ({"port": 8080}, True),
        ({"portName": "http"}, True),
        ({}, False),
        ({"port": 1, "portName": "http"}, False),
    ],
)
def test_http_scaled_object_names_its_port_one_way(ports, ok):
    http = rendered("dev", "HTTPScaledObject")
    target = http["spec"]["scaleTargetRef"]
    target.pop("port", None), target.pop("portName", None)
    target.update(ports)
    expected = [] if ok else [("spec.scaleTargetRef", "must define either the 'portName' or the 'port'")]
    assert violated(http) == expected


# ---- how the rules are run ---------------------------------------------------------------------------------


def test_defaults_are_applied_where_the_parent_exists_before_the_rules_run():
    pool = rendered("dev", "NodePool")
    del pool["spec"]["disruption"]
    defaulted = with_defaults(pool, k8s_schemas.crd_schemas()[("karpenter.sh/v1", "NodePool")])
    # The CRD's defaults: disruption {consolidateAfter: 0s}, then inside it budgets [{nodes: 10%}] and
    # consolidationPolicy WhenEmptyOrUnderutilized; status (absent) gets nothing.
    assert defaulted["spec"]["disruption"] == {
        "consolidateAfter": "0s",
        "budgets": [{"nodes": "10%"}],
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
    }
    assert "status" not in defaulted
    pool["spec"]["disruption"] = {"budgets": [{"schedule": "0 9 * * *", "duration": "1h"}]}
    defaulted = with_defaults(pool, k8s_schemas.crd_schemas()[("karpenter.sh/v1", "NodePool")])
    assert defaulted["spec"]["disruption"]["budgets"] == [
        {"schedule": "0 9 * * *", "duration": "1h", "nodes": "10%"}
    ]
    assert violated(pool) == []


def test_transition_rules_are_not_run_on_create():
    report = check_rules(rendered("dev", "NodePool"))
    assert sorted(r.split(": ", 1)[1] for r in report.skipped) == [
        "has(self.replicas) == has(oldSelf.replicas)",
        "self.group == oldSelf.group",
        "self.kind == oldSelf.kind",
    ]


SCHEMA = {
    "type": "object",
    "properties": {
        "id": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self.startsWith('sg-')", "message": "an sg- id"}],
        },
        "name": {"type": "string"},
        "items": {"type": "array", "items": {"type": "integer"}},
    },
    "x-kubernetes-validations": [
        {"rule": "!has(self.name) || self.name == 'a'", "messageExpression": "'name is ' + self.name"},
        {"rule": "!has(self.items) || self.items.size() < 3"},
    ],
}


def test_messages_come_from_message_expression_then_message_then_the_rule():
    obj = {"id": "x", "name": "b", "items": [1.0, 2.0, 3.0]}
    assert [(v.path, v.message) for v in check_rules(obj, SCHEMA).violations] == [
        ("", "name is b"),
        ("", "failed rule: !has(self.items) || self.items.size() < 3"),
        ("id", "an sg- id"),
    ]


def test_an_unknown_value_satisfies_only_the_rules_about_its_own_field():
    report = check_rules({"id": UNKNOWN, "name": "b"}, SCHEMA)
    assert [v.message for v in report.violations] == ["name is b"]  # the unrelated rule still fails
    assert report.unknown == ["id: self.startsWith('sg-')"]


def test_a_rule_using_a_function_the_engine_lacks_fails_loudly():
    schema = {"type": "string", "x-kubernetes-validations": [{"rule": "isURL(self)"}]}
    with pytest.raises(UnsupportedRule, match="isURL"):
        check_rules("https://example.com", schema)
    optional = {
        "type": "string",
        "x-kubernetes-validations": [{"rule": "oldSelf.hasValue()", "optionalOldSelf": True}],
    }
    with pytest.raises(UnsupportedRule, match="optionalOldSelf"):
        check_rules("x", optional)


def test_reservation_terms_as_rendered_are_admitted_and_an_id_beside_tags_in_one_term_is_refused():
    """One term per id, one for the tags (node_pool.reservation_terms): Karpenter refuses an id beside
    anything else in the same term."""
    node_class = next(
        o
        for o in custom_resources("reserved")
        if o["kind"] == "EC2NodeClass" and len(o["spec"].get("capacityReservationSelectorTerms", [])) == 2
    )
    assert violated(node_class) == []
    merged = copy.deepcopy(node_class)
    terms = merged["spec"]["capacityReservationSelectorTerms"]
    merged["spec"]["capacityReservationSelectorTerms"] = [{**terms[0], **terms[1]}]
    assert violated(merged) == [
        (
            "spec.capacityReservationSelectorTerms",
            "'id' is mutually exclusive, cannot be set along with other fields in a capacity reservation "
            "selector term",
        )
    ]
