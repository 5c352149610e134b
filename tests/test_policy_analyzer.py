"""The CrossGuard pack under the real CLI protocol (tests/analyzer.py): started as `pulumi preview
--policy-pack policies` starts it, asked ConfigureStack, GetAnalyzerInfo, Configure, Remediate and Analyze per
resource, AnalyzeStack, over every stack of tests/variants.py, as a first preview (values the engine does not
know yet sent as unknowns) and as applied (every value known). Its verdicts must be `sgldeploy plan`'s."""

from __future__ import annotations

import copy
import json

import pytest

from sgldeploy.offline.engine import Registration
from sgldeploy.offline.render import Plan, policy_violations
from sgldeploy.offline.sdk_internals import WIRE_UNKNOWN
from sgldeploy.policy import pack
from sgldeploy.policy.facts import DEPLOYMENT_TYPE

from .analyzer import Analyzer, Verdict, running_pack
from .conftest import deployment, render_stack, write_stack
from .test_cli import run_cli
from .variants import CREATED, rendered_variants

# A policy config under which every variant violates something, at every kind of level and setting: a
# resource policy everywhere (no CPU limits), one at `remediate` (which Pulumi enforces as mandatory), stack
# policies (budget, GPU caps), policy properties of every JSON type.
STRICT = {
    "model-revision-pinned": "mandatory",
    "container-resources": {"require_cpu_limit": True},
    "allowed-instances-and-regions": {"enforcementLevel": "remediate", "allowed_instance_families": ["p5"]},
    "gpu-caps": {"max_gpus_per_deployment": 0, "max_gpus_total": 1},
    "stack-budget": {"budget_usd_per_month": 100},
    "no-privileged-containers": {"allowed_host_paths": []},
}
CONFIGS = {"defaults": {}, "strict": STRICT}


@pytest.fixture(scope="module")
def previewing():
    with running_pack(dry_run=True) as analyzer:
        analyzer.handshake()
        yield analyzer


@pytest.fixture(scope="module")
def applying():
    with running_pack(dry_run=False) as analyzer:
        analyzer.handshake()
        yield analyzer


def offline(plan: Plan, config: dict) -> list[Verdict]:
    """`sgldeploy plan`'s verdicts on the same stack under the same policy config."""
    return sorted(
        (v.policy, v.level, v.resource, v.message)
        for v in policy_violations(plan.recording, pack.settings(config))
    )


def unknown_in(plan: Plan, resource_type: str) -> bool:
    return any(
        WIRE_UNKNOWN in json.dumps(r.wire_inputs) for r in plan.recording.resources if r.type == resource_type
    )


def mismatches(analyzer: Analyzer, known: bool) -> dict[str, tuple[list[Verdict], list[Verdict]]]:
    out = {}
    for name, plan in rendered_variants().items():
        for config_name, config in CONFIGS.items():
            got, want = analyzer.preview(plan, config, known=known), offline(plan, config)
            if got != want:
                out[f"{name} ({config_name})"] = (
                    [v for v in got if v not in want],
                    [v for v in want if v not in got],
                )
    return out


def test_a_first_preview_judges_as_the_offline_plan(previewing):
    """Every stack, values unknown as on a first preview: same policy, level, resource and message."""
    plans = rendered_variants().values()
    # what a first preview does not know yet: a created cluster's kubeconfig, a generated API key
    created = [p for p in plans if any(r.type == "aws:eks/cluster:Cluster" for r in p.recording.resources)]
    assert created and all(unknown_in(p, "pulumi:providers:kubernetes") for p in created)
    assert any(unknown_in(p, "kubernetes:core/v1:Secret") for p in plans)
    assert mismatches(previewing, known=False) == {}


def test_an_applied_stack_is_judged_as_the_offline_plan(applying):
    assert mismatches(applying, known=True) == {}


def test_stack_policies_judge_a_first_preview_of_every_stack(previewing):
    """Unknowns elsewhere (the generated API key, a created cluster's kubeconfig, subnet ids) never turn a
    policy into a "can't run" advisory: budget and GPU caps block on the first preview."""
    for name, plan in rendered_variants().items():
        verdicts = previewing.preview(plan, STRICT)
        blocking = {policy for policy, level, _, _ in verdicts if level == "mandatory"}
        assert {"stack-budget", "gpu-caps", "container-resources"} <= blocking, name
        assert not [v for v in verdicts if v[0] in ("stack-budget", "gpu-caps") and v[1] == "advisory"], name


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Plan:
    """A production stack with its own cluster, a generated API key, and a rollout that may drop a replica."""
    return render_stack(
        write_stack(
            tmp_path_factory.mktemp("production"),
            platform={**CREATED, "environment": "production"},
            deployments=[
                deployment(
                    name="prod-qwen",
                    readiness="always-ready",
                    scaling={"min_replicas": 1, "max_replicas": 2},
                    rollout={"max_surge": 1, "max_unavailable": 1},
                )
            ],
        )
    )


def test_budget_availability_and_gpu_caps_block_a_first_preview(previewing, production):
    config = {"stack-budget": {"budget_usd_per_month": 100}, "gpu-caps": {"max_gpus_total": 1}}
    verdicts = previewing.preview(production, config)
    assert verdicts == offline(production, config)
    by_policy = {policy: (level, message) for policy, level, _, message in verdicts}
    assert by_policy["production-availability"] == (
        "mandatory",
        "prod-qwen: rollout.max_unavailable 1 (allowed: 0); set rollout.max_unavailable: 0 and use max_surge",
    )
    assert (
        by_policy["stack-budget"][0] == "mandatory"
        and "exceeds the budget of $100.00" in by_policy["stack-budget"][1]
    )
    assert by_policy["gpu-caps"] == (
        "mandatory",
        "stack: 2 GPUs at max replicas exceeds max_gpus_total 1; lower max_replicas somewhere or raise the cap",
    )
    assert not any(".0 " in message or ".0)" in message for *_, message in verdicts)  # 2, not 2.0


def test_gpu_cap_and_budget_boundaries_on_a_first_preview(previewing, production):
    """2 GPUs at max replicas (2 × 1 L4); the budget is the stack's monthly cost at max replicas."""
    total = production.estimate.stack_totals()["monthly_usd_max"]
    for cap, blocks in ((1, True), (2, False), (3, False)):
        verdicts = previewing.preview(production, {"gpu-caps": {"max_gpus_per_deployment": cap}})
        assert any(v[0] == "gpu-caps" and v[1] == "mandatory" for v in verdicts) is blocks, cap
    for budget, blocks in ((total - 0.01, True), (total, False), (total + 0.01, False)):
        verdicts = previewing.preview(production, {"stack-budget": {"budget_usd_per_month": budget}})
        assert any(v[0] == "stack-budget" and v[1] == "mandatory" for v in verdicts) is blocks, budget


def with_unknown_image(plan: Plan) -> Plan:
    """The plan with its first Deployment's server image known only after apply (built in the same stack)."""
    changed = copy.deepcopy(plan)
    target = next(r for r in changed.recording.resources if r.wire_inputs.get("kind") == "Deployment")
    target.wire_inputs["spec"]["template"]["spec"]["containers"][0]["image"] = WIRE_UNKNOWN
    return changed


def test_an_unknown_value_a_policy_needs_is_an_advisory_naming_it(previewing, production):
    plan = with_unknown_image(production)
    target = next(r for r in plan.recording.resources if r.wire_inputs.get("kind") == "Deployment")
    verdicts = previewing.preview(plan, {})
    assert verdicts == offline(plan, {})
    [image] = [v for v in verdicts if v[0] == "images-pinned"]
    assert image == (
        "images-pinned",
        "advisory",
        target.urn,
        f"{target.name}: cannot check its image's tag before apply: spec.template.spec.containers[sglang].image "
        f"is known only after apply; `pulumi up` checks it once known, before it creates {target.name}",
    )
    # the same container's other values are known, and judged
    config = {"container-resources": {"require_cpu_limit": True}}
    verdicts = previewing.preview(plan, config)
    assert verdicts == offline(plan, config)
    assert ("container-resources", "mandatory", target.urn) in {v[:3] for v in verdicts}


def test_an_unknown_fact_a_stack_policy_needs_is_an_advisory_not_a_pass(previewing, production):
    plan = copy.deepcopy(production)
    facts: Registration = next(r for r in plan.recording.resources if r.type == DEPLOYMENT_TYPE)
    facts.wire_state["replicas"]["max"] = WIRE_UNKNOWN
    config = {"gpu-caps": {"max_gpus_total": 1}}
    verdicts = previewing.preview(plan, config)
    assert verdicts == offline(plan, config)
    assert [v for v in verdicts if v[0] == "gpu-caps"] == [
        (
            "gpu-caps",
            "advisory",
            "",
            "prod-qwen: cannot check its GPUs before apply: replicas.max is known only after apply; `pulumi up` "
            "checks it once known, before it creates prod-qwen; stack: cannot check max_gpus_total before apply "
            "(0 GPUs known)",
        )
    ]


def test_remediate_blocks_like_mandatory(previewing, tmp_path):
    """Pulumi enforces a `remediate` policy that remediates nothing as mandatory; so does the offline plan."""
    stack = write_stack(
        tmp_path,
        deployments=[
            deployment(
                serving={"context_length": 4096, "max_concurrency": 4, "image": "lmsysorg/sglang:latest"}
            )
        ],
    )
    config = {"images-pinned": "remediate"}
    verdicts = previewing.preview(render_stack(stack), config)
    assert {(v[0], v[1]) for v in verdicts} == {("images-pinned", "mandatory")}
    policy_config = tmp_path / "policy.json"
    policy_config.write_text(json.dumps(config))
    result = run_cli("plan", "--config", str(stack), "--policy-config", str(policy_config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[mandatory]  images-pinned" in result.stdout
