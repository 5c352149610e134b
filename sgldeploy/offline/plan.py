"""The offline plan: render a stack file with the real program and describe what it declares.

Produces the plan JSON (version 1, DESIGN.md), the resource tree `pulumi preview` would show, a summary per
deployment, and one YAML manifest per Kubernetes object exactly as the provider would receive it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sgldeploy import cost
from sgldeploy.builders import autoscaler, rollout, router, weight_cache
from sgldeploy.builders.autoscaler import replicas_when_idle
from sgldeploy.catalog import HOURS_PER_MONTH
from sgldeploy.files import write_atomic
from sgldeploy.models.lock import lock_path_for
from sgldeploy.models.sizing import Candidate, Sizing
from sgldeploy.offline.engine import Recording, Registration, run_program
from sgldeploy.policy import pack
from sgldeploy.policy.rules import Resource
from sgldeploy.policy.values import from_engine
from sgldeploy.spec import AddonsSpec
from sgldeploy.spec.problems import ConfigWarning
from sgldeploy.spec.stackfile import OPAQUE_SECRET, StackFile
from sgldeploy.stack import LoadedDeployment, LoadedStack, load, secrets_of

PLAN_VERSION = 1
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROGRAM = PROJECT_ROOT / "__main__.py"
PROJECT = "sgldeploy"


@dataclass
class Plan:
    stack: StackFile
    loaded: LoadedStack
    recording: Recording
    estimate: cost.Estimate
    violations: list[pack.Violation] = field(default_factory=list)
    usage_file: Path | None = None  # the usage assumptions priced with; None: the defaults
    warnings: list[ConfigWarning] = field(default_factory=list)  # valid, but worth saying (CLI: stderr)

    @property
    def region(self) -> str:
        return self.estimate.region

    @property
    def mandatory_violations(self) -> list[pack.Violation]:
        """The violations that fail `pulumi preview` (mandatory, and remediate, which Pulumi enforces)."""
        return [v for v in self.violations if v.blocking]


def render(
    stack: StackFile,
    usage_file: Path | None = None,
    policy_settings: dict[str, pack.Settings] | None = None,
) -> Plan:
    """Validate (raising InvalidInput), run the program under the mock engine (raising pulumi.RunError), then
    price it and run the policy pack over what it declared."""
    lock_file = lock_path_for(stack.path)
    secrets, plaintext = secrets_of(stack)
    loaded = load(
        stack.object(f"{PROJECT}:platform"),
        stack.object(f"{PROJECT}:deployments"),
        lock_file,
        secrets,
        plaintext_secrets=plaintext,
        offline=True,
    )
    usage_path, usage = cost.stack_usage(stack.config.get(cost.USAGE_FILE_KEY), stack.path.parent, usage_file)
    estimate = cost.estimate(loaded, cost.region_of(stack.config.get("aws:region")), usage)
    config = {**stack.config, f"{PROJECT}:lockFile": str(lock_file)}
    if usage_path is not None:  # the program prices with the very file priced here, whichever gave it
        config[cost.USAGE_FILE_KEY] = str(usage_path.absolute())
    config, secret_keys = with_stand_ins(config, stack.secret_keys, loaded.stand_in_secrets)
    recording = run_program(PROGRAM, PROJECT, stack.stack, config, secret_keys)
    plan = Plan(
        stack=stack,
        loaded=loaded,
        recording=recording,
        estimate=estimate,
        usage_file=usage_path,
        warnings=_usage_warnings(stack, usage_file),
    )
    plan.violations = policy_violations(recording, policy_settings)
    return plan


def _usage_warnings(stack: StackFile, override: Path | None) -> list[ConfigWarning]:
    """`--usage FILE` wins over the stack's `sgldeploy:usageFile`; `pulumi preview` reads only the latter."""
    setting = stack.config.get(cost.USAGE_FILE_KEY)
    if override is None or not setting:
        return []
    return [
        ConfigWarning(
            cost.USAGE_FILE_KEY,
            f"{setting!r} is not used by this plan: --usage {override} wins, but `pulumi preview` prices with "
            f"{setting!r}",
            "drop one of them, or set sgldeploy:usageFile to the file passed with --usage",
        )
    ]


def with_stand_ins(
    config: dict[str, str], secret_keys: list[str], stand_ins: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """The program's config with each secret the stack lacks set to the stand-in a `secure:` value gets, and
    marked secret: the program renders it as set (the plan shows `[secret]`). Only the offline plan does this;
    under `pulumi preview` the secret is absent and the program refuses to run."""
    missing = [key for key in stand_ins if key not in config]
    return {**config, **dict.fromkeys(missing, OPAQUE_SECRET)}, [*secret_keys, *missing]


def policy_violations(
    recording: Recording, policy_settings: dict[str, pack.Settings] | None = None
) -> list[pack.Violation]:
    """The pack's verdicts on what the program declared, as `pulumi preview --policy-pack` gives them."""
    return pack.evaluate(
        policy_resources(recording), policy_settings, stack_resources=policy_resources(recording, state=True)
    )


def policy_resources(recording: Recording, state: bool = False) -> list[Resource]:
    """The recorded resources as a policy sees them under `pulumi preview`: type, name, URN, parent, and the
    inputs (Analyze), or with `state` the outputs (AnalyzeStack), values unknown until apply as UNKNOWN."""
    return [
        Resource(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props=normalize(from_engine(r.wire_state if state else r.wire_inputs)),
            parent=r.parent,
        )
        for r in recording.resources
    ]


# ---- plan JSON -----------------------------------------------------------------------------------

_FIRST = {"apiVersion": 0, "kind": 1, "metadata": 2, "name": 3, "spec": 4}


def normalize(value: Any) -> Any:
    """Stable, readable values: the engine carries numbers as floats (3.0 → 3) and maps in no fixed order
    (keys sorted, with apiVersion, kind, metadata, name and spec first, as manifests are usually written)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize(value[k]) for k in sorted(value, key=lambda k: (_FIRST.get(k, 9), k))}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def _resources(plan: Plan) -> list[Registration]:
    return sorted(plan.recording.resources, key=lambda r: r.urn)


def deployment_json(item: LoadedDeployment, estimate: cost.Estimate, addons: AddonsSpec) -> dict[str, Any]:
    p, m, spec = item.sizing.placement, item.sizing.memory, item.spec
    spend = estimate.deployment_totals(spec.name)
    scaling = autoscaler.for_stack(spec, addons)
    return {
        "name": spec.name,
        "model": spec.model.repo,
        "revision": spec.model.revision,
        "sha": item.model.sha,
        "placement": {
            "instance_type": p.instance_type,
            "gpu_model": p.gpu_model,
            "gpus_per_replica": p.gpus_per_replica,
            "nodes_per_replica": p.nodes_per_replica,
            "tensor_parallel": p.tensor_parallel,
            "alternatives": list(p.alternatives),
        },
        "memory": {
            "weights_gib": m.weights_gib,
            "kv_cache_gib": m.kv_cache_gib,
            "required_gib_per_gpu": m.required_gib_per_gpu,
            "gpu_memory_gib": m.gpu_memory_gib,
            "weights_gib_per_gpu": m.weights_gib_per_gpu,
            "kv_cache_gib_per_gpu": m.kv_cache_gib_per_gpu,
            "reserve_gib_per_gpu": m.reserve_gib_per_gpu,
            "mem_fraction_static": m.mem_fraction_static,
            "context_length": item.sizing.context_length,
            "kv_tokens": m.kv_tokens,
            "kv_capacity_tokens": m.kv_capacity_tokens,
            "dtype": item.sizing.dtype,
        },
        "alternatives": {
            "cheaper_infeasible": [_candidate(c) for c in item.sizing.cheaper_infeasible],
            "dearer": [_candidate(c) for c in item.sizing.dearer],
        },
        "replicas": {
            "min": spec.min_replicas,
            "max": spec.max_replicas,
            "running_when_idle": replicas_when_idle(spec, addons),
            "autoscaling": scaling.why,
            "first_request_wait_seconds": autoscaler.wait_seconds(spec, item.sizing)
            if scaling.kind == "http"
            else None,
        },
        "rollout": {
            "strategy": spec.rollout.strategy,
            "tracks": [
                {"role": t.role, "commit": t.sha, "deployment": t.name, "replicas": t.replicas}
                for t in rollout.tracks(spec, item.model.sha, spec.initial_replicas)
            ]
            if p.nodes_per_replica == 1
            else [],
            "canary_percent": rollout.canary_percent(spec) if rollout.split(spec) else None,
        },
        "routing": {
            "algorithm": spec.endpoint.algorithm,
            "router": router.enabled(spec),
            "max_in_flight": router.capacity(spec) if router.enabled(spec) else None,
            "why": router.describe(spec),
        },
        "readiness": spec.readiness,
        "cache": {"storage": spec.cache_storage, "why": weight_cache.explain(spec, item.cache_reason)},
        "cold_start_seconds": _cold_start(item),
        "startup_budget_seconds": item.sizing.startup_budget_seconds,
        "cost": spend,
    }


def _cold_start(item: LoadedDeployment) -> dict[str, Any]:
    p, spec = item.sizing.placement, item.spec
    out: dict[str, Any] = {}
    for case, warm in (("new_node", False), ("warm_node", True)):
        c = weight_cache.cold_start(spec, item.sizing.memory.weights_gib, p.nodes_per_replica, warm_node=warm)
        out[case] = {
            "node": c.node_s,
            "image": c.image_s,
            "weights": c.weights_s,
            "engine": c.engine_s,
            "total": c.total_s,
            "assumes": c.note,
        }
    return out


def _candidate(c: Candidate) -> dict[str, Any]:
    return {
        "instance_type": c.instance.name,
        "gpu_model": c.instance.gpu,
        "gpus_per_replica": c.tp,
        "nodes_per_replica": c.nodes,
        "hourly_usd": None if c.hourly_usd is None else round(c.hourly_usd, 4),
        "required_gib_per_gpu": c.memory.required_gib_per_gpu,
        "gpu_memory_gib": c.memory.gpu_memory_gib,
        "problem": c.problem,
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "version": PLAN_VERSION,
        "stack": plan.stack.stack,
        "resources": [
            {"urn": r.urn, "type": r.type, "name": r.name, "parent": r.parent, "inputs": normalize(r.inputs)}
            for r in _resources(plan)
        ],
        "deployments": [
            deployment_json(d, plan.estimate, plan.loaded.spec.platform.addons)
            for d in plan.loaded.deployments
        ],
        "cost": {
            "currency": "USD",
            "region": plan.estimate.region,
            "hours_per_month": HOURS_PER_MONTH,
            **plan.estimate.stack_totals(),
            "platform": plan.estimate.deployment_totals(None),
            "usage": vars(plan.estimate.usage),
            "items": [i.as_json() for i in plan.estimate.items],
        },
        "policy": {"pack": pack.PACK_NAME, "violations": [v.as_json() for v in plan.violations]},
        "outputs": normalize(plan.recording.outputs),
    }


# ---- manifests -----------------------------------------------------------------------------------


def kubernetes_objects(plan: Plan) -> list[dict[str, Any]]:
    """Every Kubernetes object the program declares, as the provider receives it."""
    return [
        normalize(r.inputs)
        for r in _resources(plan)
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


# ---- text ----------------------------------------------------------------------------------------


def resource_tree(plan: Plan) -> str:
    """The tree `pulumi preview` prints: type and name, nested under their parents."""
    stack_urn = f"urn:pulumi:{plan.stack.stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{plan.stack.stack}"
    children: dict[str, list[Registration]] = {}
    for r in plan.recording.resources:
        children.setdefault(r.parent or stack_urn, []).append(r)
    rows = [("", "pulumi:pulumi:Stack", f"{PROJECT}-{plan.stack.stack}")]

    def walk(urn: str, prefix: str) -> None:
        kids = sorted(children.get(urn, []), key=lambda r: (r.custom, r.type, r.name))
        for i, r in enumerate(kids):
            last = i == len(kids) - 1
            rows.append((prefix + ("└─ " if last else "├─ "), r.type, r.name))
            walk(r.urn, prefix + ("   " if last else "│  "))

    walk(stack_urn, "")
    width = max(len(p) + len(t) for p, t, _ in rows) + 2
    lines = [f"     {'Type':<{width}}Name", *(f" +   {(p + t):<{width}}{n}" for p, t, n in rows)]
    lines.append(f"\nResources:\n    + {len(rows)} to create")
    return "\n".join(lines)


def _rollout_line(r: dict[str, Any]) -> list[str]:
    """Shown only when more than one commit runs, or commits are keyed (blue-green, canary)."""
    if r["strategy"] == "rolling":
        return []
    tracks = ", ".join(
        f"{'stable' if t['role'] == 'active' and r['strategy'] == 'canary' else t['role']} "
        f"{t['commit'][:8]} ({t['deployment']}"
        + (f", {t['replicas']} replica(s)" if t["replicas"] is not None else "")
        + ")"
        for t in r["tracks"]
    )
    split = f"; the ALB sends {r['canary_percent']}% to the canary" if r["canary_percent"] else ""
    return [f"  rollout    {r['strategy']}: {tracks}{split}"]


def _alternatives(sizing: Sizing) -> list[str]:
    def show(c: Candidate) -> str:
        why = c.problem or f"needs {c.memory.required_gib_per_gpu:g} of {c.memory.gpu_memory_gib:g} GiB"
        return f"{c.label} {_money(c.hourly_usd)}/h ({why})"

    lines = []
    if sizing.cheaper_infeasible:
        lines.append("  cheaper    " + "; ".join(show(c) for c in sizing.cheaper_infeasible) + ": do not fit")
    if sizing.dearer:
        lines.append(
            "  dearer     " + "; ".join(f"{c.label} {_money(c.hourly_usd)}/h" for c in sizing.dearer)
        )
    return lines


_money = cost.money


def summary(plan: Plan) -> str:
    lines = []
    for d in plan.loaded.deployments:
        j = deployment_json(d, plan.estimate, plan.loaded.spec.platform.addons)
        p, m, c = j["placement"], j["memory"], j["cost"]
        gpu_mem = m["gpu_memory_gib"]
        lines += [
            f"{d.spec.name}: {d.spec.model.repo}@{d.model.sha[:12]} ({d.model.source})",
            f"  placement  {p['instance_type']} · {p['gpus_per_replica']}× {p['gpu_model']} ({gpu_mem:g} GiB) · "
            f"TP {p['tensor_parallel']} · {p['nodes_per_replica']} node(s) per replica",
            f"  memory     per GPU {m['weights_gib_per_gpu']:g} weights + {m['kv_cache_gib_per_gpu']:g} KV "
            f"({m['context_length']:,} tokens × {d.spec.serving.max_concurrency} requests) + "
            f"{m['reserve_gib_per_gpu']:g} reserve = {m['required_gib_per_gpu']:g} of {gpu_mem:g} GiB "
            f"({m['dtype']}, mem_fraction_static {m['mem_fraction_static']:g}; KV pool ≈ "
            f"{m['kv_capacity_tokens']:,} tokens)",
            *_alternatives(d.sizing),
            f"  replicas   {j['replicas']['min']}–{j['replicas']['max']}, {j['replicas']['running_when_idle']} "
            f"running when idle (readiness {j['readiness']}, cold-start budget {j['startup_budget_seconds']} s)",
            f"  scaling    {j['replicas']['autoscaling']}"
            + (
                f"; from zero the first request waits up to {j['replicas']['first_request_wait_seconds']} s"
                if j["replicas"]["first_request_wait_seconds"]
                else ""
            ),
            f"  routing    {j['routing']['why']}",
            *_rollout_line(j["rollout"]),
            f"  cache      {j['cache']['why']}",
            f"  cold start {j['cold_start_seconds']['new_node']['total']} s on a new node "
            f"({j['cold_start_seconds']['new_node']['assumes']}), "
            f"{j['cold_start_seconds']['warm_node']['total']} s on a warm one",
            f"  cost       {cost.span(c['hourly_usd_min'], c['hourly_usd_max'])}/h · "
            f"{cost.span(c['monthly_usd_min'], c['monthly_usd_max'])}/month",
            *_cost_lines(plan.estimate.of(d.spec.name)),
        ]
    platform = plan.estimate.of(None)
    if platform:
        lines += ["platform", *_cost_lines(platform)]
    usage = f"usage file {plan.usage_file}" if plan.usage_file else "default usage assumptions"
    lines.append(
        f"stack cost {cost.one_line('stack', plan.estimate.stack_totals()).split(': ', 1)[1]}; "
        f"{plan.region} prices, {usage}"
    )
    return "\n".join(lines)


def _cost_lines(items: list[cost.CostItem]) -> list[str]:
    return [
        f"    {i.resource.split('/', 1)[1]:<24} "
        f"{cost.span(cost.monthly(i.hourly_usd_min), cost.monthly(i.hourly_usd_max)):>24}"
        f"/month{'  (usage-based)' if i.usage_based else ''}  {i.description}"
        for i in items
    ]


def policy_report(plan: Plan) -> str:
    """Violations as the Pulumi CLI lists them: pack, then each policy, level, resource and message."""
    if not plan.violations:
        return f"Policies: {len(pack.POLICIES)} policies of pack {pack.PACK_NAME} passed"
    lines = [f"Policies:\n    {pack.PACK_NAME}"]
    for v in plan.violations:
        mark = "❌" if v.blocking else "⚠️"
        lines.append(f"        - [{v.level}]  {v.policy}  ({v.resource.split('::')[-1] or 'stack'})")
        lines.append(f"          {mark} {v.message}")
    counts = (
        f"{len(plan.mandatory_violations)} mandatory, {len(plan.violations) - len(plan.mandatory_violations)} "
        "advisory"
    )
    return "\n".join(lines + [f"    {counts}"])
