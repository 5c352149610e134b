"""Every rule that spans fields of a deployment, each line exactly as the user reads it: which field, what is
wrong, the value, and the fix. One bad field each, so a rule that fires for the wrong input (or not at all) and
a line that reads differently both fail here. The lines are the interface; they are written out, not built."""

from __future__ import annotations

from typing import Any

import pytest

from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.validate import parse_stack

from .conftest import deployment

D0 = "error: sgldeploy:deployments[0]"
LINES = {
    "name-not-dns": (
        {"name": "Qwen_7b"},
        f"{D0}.name: must be a DNS-1035 label of at most 40 characters (lower-case letters, digits, '-', "
        "starting with a letter) (got 'Qwen_7b'); rename it, e.g. qwen-7b",
    ),
    "name-41-characters": (
        {"name": "q" * 41},
        f"{D0}.name: must be a DNS-1035 label of at most 40 characters (lower-case letters, digits, '-', "
        f"starting with a letter) (got '{'q' * 41}'); rename it, e.g. qwen-7b",
    ),
    "min-above-max": (
        {"scaling": {"min_replicas": 3, "max_replicas": 2}},
        f"{D0}.scaling.max_replicas: must be ≥ min_replicas (got 2 < 3); raise max_replicas or lower min_replicas",
    ),
    "running-with-no-replicas": (
        {"readiness": "fast", "scaling": {"min_replicas": 0, "max_replicas": 0}},
        f"{D0}.scaling.max_replicas: must be ≥ 1 while state is running (got 0); raise max_replicas, or set "
        "state: stopped to run no replicas",
    ),
    "always-ready-at-zero": (
        {"readiness": "always-ready", "scaling": {"min_replicas": 0, "max_replicas": 2}},
        f"{D0}.scaling.min_replicas: must be ≥ 1 with readiness always-ready (got 0); raise min_replicas, or "
        "choose readiness fast to allow scale to zero",
    ),
    "canary-percent-without-canary": (
        {"rollout": {"strategy": "rolling", "canary_percent": 10}},
        f"{D0}.rollout.canary_percent: is only used with strategy canary (got 10); set rollout.strategy: "
        "canary, or remove canary_percent",
    ),
    "no-surge-no-unavailability": (
        {"rollout": {"max_surge": 0, "max_unavailable": 0}},
        f"{D0}.rollout.max_unavailable: and max_surge cannot both be 0 (got 0); allow max_surge: 1 (a spare GPU "
        "node) or max_unavailable: 1",
    ),
    "custom-code-not-allowed": (
        {"model__trust_remote_code": True},
        f"{D0}.model.trust_remote_code: runs code from the model repo, which the platform does not allow (got "
        "true); set sgldeploy:platform.allow_trust_remote_code: true after reviewing the repo's code, or choose "
        "a model without custom code",
    ),
    "hostname-on-a-cluster-endpoint": (
        {"endpoint": {"exposure": "cluster", "hostname": "llm.example.com"}},
        f"{D0}.endpoint.hostname: needs a load balancer, but exposure is cluster (got 'llm.example.com'); set "
        "endpoint.exposure to public or internal, or remove it",
    ),
    "certificate-on-a-cluster-endpoint": (
        {
            "endpoint": {
                "exposure": "cluster",
                "hostname": "llm.example.com",
                "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/abc",
            }
        },
        f"{D0}.endpoint.tls_certificate_arn: needs a load balancer, but exposure is cluster (got "
        "'arn:aws:acm:us-east-1:123456789012:certificate/abc'); set endpoint.exposure to public or internal, or "
        "remove it",
    ),
    "public-without-auth": (
        {"endpoint": {"exposure": "public", "auth": "none"}},
        f"{D0}.endpoint.auth: must not be none on a public endpoint (got 'none'); use auth: api-key, or "
        "exposure: internal",
    ),
    "awq-in-bfloat16": (
        {"serving__quantization": "awq", "serving__precision": "bfloat16"},
        f"{D0}.serving.precision: bfloat16 does not work with awq, which runs float16 activations only (got "
        "'bfloat16'); set precision: float16 or auto",
    ),
    "draft-model-missing": (
        {"serving__speculative": {"algorithm": "EAGLE"}},
        f"{D0}.serving.speculative.draft_repo: is required by EAGLE (got nothing); name the draft model repo "
        "(org/name), or use NGRAM",
    ),
    "generated-flag-with-its-field": (
        {"serving__extra_args": ["--enable-torch-compile", "--tp-size", "2"]},
        f"{D0}.serving.extra_args[1]: --tp-size is generated from the spec (got '--tp-size'); set "
        "resources.gpu_count in the spec instead",
    ),
    "generated-flag-without-a-field": (
        {"serving__extra_args": ["--port=8000"]},
        f"{D0}.serving.extra_args[0]: --port is generated from the spec (got '--port=8000'); remove it; "
        "sgldeploy sets it for the pod",
    ),
    "unpinned-image": (
        {"serving__image": "registry.example:5000/team/sglang"},
        f"{D0}.serving.image: has no tag or digest, so a restart may pull another version (got "
        "'registry.example:5000/team/sglang'); pin it, e.g. lmsysorg/sglang:v0.5.23",
    ),
    "env-name": (
        {"env": {"1ST": "x"}},
        f"{D0}.env.1ST: is not a valid environment variable name (got '1ST'); use letters, digits and '_', not "
        "starting with a digit",
    ),
    "secret-in-env": (
        {"env": {"hf_token": "hf_x"}},
        f"{D0}.env.hf_token: would put a secret in plain text in the manifest (got 'hf_token'); remove it; set "
        "it with pulumi config set --secret sgldeploy:hfToken (or sgldeploy:apiKey)",
    ),
}


def lines_of(*deployments: Any, platform: dict | None = None) -> list[str]:
    try:
        parse_stack(platform or {}, list(deployments))
    except InvalidInput as invalid:
        return [p.line() for p in invalid.problems]
    return []


@pytest.mark.parametrize("case", sorted(LINES))
def test_a_rule_across_fields_is_its_one_line(case):
    fields, line = LINES[case]
    assert lines_of(deployment(**fields)) == [line]


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "q" * 40},  # at the limit
        {"name": "a-1"},
        {"scaling": {"min_replicas": 2, "max_replicas": 2}},
        {"state": "stopped", "readiness": "fast", "scaling": {"min_replicas": 0, "max_replicas": 0}},
        {"state": "stopped", "readiness": "always-ready", "scaling": {"min_replicas": 0, "max_replicas": 1}},
        {"rollout": {"strategy": "canary", "canary_revision": "b" * 40, "canary_percent": 1}},
        {"rollout": {"strategy": "canary", "canary_revision": "b" * 40, "canary_percent": 99}},
        {"rollout": {"max_surge": 0, "max_unavailable": 1}},
        {"endpoint": {"exposure": "internal", "auth": "none", "hostname": "llm.example.com"}},
        {"serving__quantization": "awq", "serving__precision": "float16"},
        {"serving__speculative": {"algorithm": "NGRAM"}},
        {"serving__extra_args": ["--enable-torch-compile", "--chunked-prefill-size", "4096"]},
        {"serving__image": "registry.example:5000/team/sglang@sha256:" + "a" * 64},
        {"serving__image": "registry.example:5000/team/sglang:1.2"},
        {"env": {"_OK_1": "x", "NCCL_DEBUG": "INFO"}},
    ],
    ids=lambda fields: ",".join(sorted(fields)),
)
def test_the_valid_side_of_each_rule_is_valid(fields):
    assert lines_of(deployment(**fields)) == []


def test_a_canary_share_outside_1_to_99_is_named():
    for percent in (0, 100):
        rollout = {"strategy": "canary", "canary_revision": "b" * 40, "canary_percent": percent}
        assert lines_of(deployment(rollout=rollout)) == [
            f"{D0}.rollout.canary_percent: must be 1–99 (got {percent}); pick the share of traffic the canary "
            "should get, e.g. 10"
        ]


def test_a_repeated_name_names_the_first_user_and_every_deployment_is_checked():
    lines = lines_of(
        deployment(),
        deployment(name="Bad!"),
        deployment(),
        deployment(endpoint={"exposure": "public", "auth": "none"}),
    )
    assert lines == [
        "error: sgldeploy:deployments[1].name: must be a DNS-1035 label of at most 40 characters (lower-case "
        "letters, digits, '-', starting with a letter) (got 'Bad!'); rename it, e.g. qwen-7b",
        "error: sgldeploy:deployments[2].name: is already used by deployments[0] (got 'qwen'); give every "
        "deployment its own name",
        "error: sgldeploy:deployments[3].name: is already used by deployments[0] (got 'qwen'); give every "
        "deployment its own name",
        "error: sgldeploy:deployments[3].endpoint.auth: must not be none on a public endpoint (got 'none'); use "
        "auth: api-key, or exposure: internal",
    ]


def test_custom_code_allowed_by_the_platform_is_valid():
    assert (
        lines_of(deployment(model__trust_remote_code=True), platform={"allow_trust_remote_code": True}) == []
    )


# ---- a field's own rules: pydantic's errors, as lines --------------------------------------------------

P0 = "error: sgldeploy:platform"
FIELD_LINES = {
    "unknown-key": (
        {},
        {"scaling": {"maxreplicas": 2}},
        f"{D0}.scaling.maxreplicas: is not a known key (got 'maxreplicas'); remove it or fix the spelling; "
        "known keys here: idle_timeout_seconds, max_replicas, metric, min_replicas, scale_down_delay_seconds, "
        "target",
    ),
    "not-one-of": (
        {},
        {"readiness": "warm"},
        f"{D0}.readiness: is not one of the allowed values (got 'warm'); use one of: always-ready | fast | "
        "cold-start",
    ),
    "below-a-minimum": (
        {},
        {"scaling": {"max_replicas": -1}},
        f"{D0}.scaling.max_replicas: must be ≥ 0 (got -1); use a value ≥ 0",
    ),
    "at-an-exclusive-minimum": (
        {},
        {"serving": {"context_length": 0, "max_concurrency": 4}},
        f"{D0}.serving.context_length: must be > 0 (got 0); use a value > 0",
    ),
    "above-a-maximum": (
        {},
        {"scaling": {"max_replicas": 1001}},
        f"{D0}.scaling.max_replicas: must be ≤ 1000 (got 1001); use a value ≤ 1000",
    ),
    "below-the-health-check-interval": (
        {},
        {"endpoint": {"health_check": {"interval_seconds": 4}}},
        f"{D0}.endpoint.health_check.interval_seconds: must be ≥ 5 (got 4); use a value ≥ 5",
    ),
    "not-finite": (
        {"budget_usd_per_month": float("inf")},
        {},
        f"{P0}.budget_usd_per_month: must be a finite number (got inf); write a number, not NaN or infinity",
    ),
    "not-a-number": (
        {"budget_usd_per_month": "lots"},
        {},
        f"{P0}.budget_usd_per_month: must be a number (got 'lots'); write a number here",
    ),
    "not-a-whole-number": (
        {},
        {"scaling": {"max_replicas": "two"}},
        f"{D0}.scaling.max_replicas: must be a whole number (got 'two'); write a whole number here",
    ),
    "not-a-boolean": (
        {},
        {"model__trust_remote_code": "maybe"},
        f"{D0}.model.trust_remote_code: must be true or false (got 'maybe'); write true or false here",
    ),
    "not-text": ({}, {"model__repo": 5}, f"{D0}.model.repo: must be text (got 5); write text here"),
    "not-a-list": (
        {},
        {"serving__extra_args": "--x"},
        f"{D0}.serving.extra_args: must be a list (got '--x'); write a list here",
    ),
    "not-a-mapping": (
        {},
        {"env": ["A"]},
        f"{D0}.env: must be an object (a YAML mapping) (got a list of 1); write an object (a YAML mapping) here",
    ),
    "a-block-not-a-mapping": (
        {},
        {"scaling": 3},
        f"{D0}.scaling: must be an object (a YAML mapping) (got 3); write an object (a YAML mapping) here",
    ),
    "too-long": (
        {"cluster": {"name": "c" * 101}},
        {},
        f"{P0}.cluster.name: string should have at most 100 characters (got '{'c' * 78}…); shorten or "
        "correct it",
    ),
    "not-the-pattern": (
        {"cluster": {"name": "-c"}},
        {},
        f"{P0}.cluster.name: string should match pattern '^[A-Za-z0-9][A-Za-z0-9_-]*$' (got '-c'); shorten or "
        "correct it",
    ),
}


@pytest.mark.parametrize("case", sorted(FIELD_LINES))
def test_a_fields_own_rule_is_its_one_line(case):
    platform, fields, line = FIELD_LINES[case]
    assert lines_of(deployment(**fields), platform=platform) == [line]


def test_a_missing_field_and_a_block_that_is_not_an_object():
    no_model = {k: v for k, v in deployment().items() if k != "model"}
    assert lines_of(no_model) == [f"{D0}.model: is required; add it"]
    assert lines_of("x") == [
        f"{D0}: must be an object (a YAML mapping) (got 'x'); write it as `key: value` lines"
    ]
    with pytest.raises(InvalidInput) as invalid:
        parse_stack("x", [])
    assert [p.line() for p in invalid.value.problems] == [
        f"{P0}: must be an object (a YAML mapping) (got 'x'); write it as `key: value` lines"
    ]


def test_a_workload_longer_than_the_context_is_named_and_one_that_fits_is_not():
    too_long = {"workload": {"input_tokens": 4000, "output_tokens": 97}}  # 4097 of the 4096 deployment()'s
    assert lines_of(deployment(**too_long)) == [
        f"{D0}.workload.input_tokens: and output_tokens make requests of 4097 tokens, longer than "
        "serving.context_length 4096 (got 4000); shorten the workload, or raise serving.context_length"
    ]
    assert lines_of(deployment(workload={"input_tokens": 4000, "output_tokens": 96})) == []
    # The defaults (1024 + 256) describe a typical request, not a limit: a shorter context takes them.
    assert lines_of(deployment(serving={"context_length": 1024, "max_concurrency": 4})) == []


# ---- capacity reservations ---------------------------------------------------------------------------------

RESERVED = {"gpu": "H100", "gpu_count": 1, "capacity": "reserved"}
MNG = {"node_provisioner": "managed-node-group"}


@pytest.mark.parametrize(
    "platform, resources, line",
    [
        (
            {},
            RESERVED,
            f"{D0}.resources.reservation: must name the reservations that capacity reserved launches into; set "
            "resources.reservation.ids: [cr-…], or resources.reservation.tags",
        ),
        (
            {},
            {**RESERVED, "capacity": "reserved-fallback", "reservation": {"capacity_block": True}},
            f"{D0}.resources.reservation: must name the reservations that capacity reserved-fallback launches "
            "into; set resources.reservation.ids: [cr-…], or resources.reservation.tags",
        ),
        (
            {},
            {"capacity": "spot", "reservation": {"ids": ["cr-0a"]}},
            f"{D0}.resources.reservation: is only used with capacity reserved or reserved-fallback, and capacity "
            "is spot; set resources.capacity: reserved, or remove the reservation",
        ),
        (
            MNG,
            {**RESERVED, "reservation": {"ids": ["cr-0a", "cr-0b"]}},
            f"{D0}.resources.reservation.ids: must be exactly one id with managed node groups: a launch template "
            "targets one reservation (got cr-0a, cr-0b); name one reservation id and no tags, or use "
            "node_provisioner: karpenter",
        ),
        (
            MNG,
            {**RESERVED, "reservation": {"tags": {"team": "llm"}}},
            f"{D0}.resources.reservation.ids: must be exactly one id with managed node groups: a launch template "
            "targets one reservation (got tags); name one reservation id and no tags, or use node_provisioner: "
            "karpenter",
        ),
        (
            MNG,
            {**RESERVED, "capacity": "reserved-fallback", "reservation": {"ids": ["cr-0a"]}},
            f"{D0}.resources.capacity: cannot fall back with a managed node group, which has one capacity type "
            "(got 'reserved-fallback'); use capacity: reserved, or node_provisioner: karpenter",
        ),
        (
            {},
            {**RESERVED, "reservation": {"ids": ["cr-0A"]}},
            f"{D0}.resources.reservation.ids: must hold reservation ids like cr-0123456789abcdef0 (got 'cr-0A'); "
            "correct it",
        ),
        (
            {},
            {**RESERVED, "reservation": {"ids": ["cr-0a"], "ends_at": "next week"}},
            f"{D0}.resources.reservation.ends_at: must be a date, YYYY-MM-DD (got 'next week'); write the day "
            "the reservation ends",
        ),
    ],
    ids=["none", "neither-ids-nor-tags", "not-reserved", "mng-two-ids", "mng-tags", "mng-fallback", "bad-id",
         "bad-date"],
)  # fmt: skip
def test_a_reservation_that_cannot_work_is_one_line(platform, resources, line):
    assert lines_of(deployment(resources=resources), platform=platform) == [line]


@pytest.mark.parametrize(
    "platform, resources",
    [
        ({}, {**RESERVED, "reservation": {"ids": ["cr-0a", "cr-0b"], "tags": {"team": "llm"}}}),
        ({}, {**RESERVED, "capacity": "reserved-fallback", "reservation": {"tags": {"team": "*"}}}),
        (
            MNG,
            {**RESERVED, "reservation": {"ids": ["cr-0a"], "capacity_block": True, "ends_at": "2027-01-31"}},
        ),
    ],
)
def test_a_reservation_that_can_work_is_valid(platform, resources):
    assert lines_of(deployment(resources=resources), platform=platform) == []
