"""A rendered plan as text for people: the resource tree `pulumi preview` prints, a summary per deployment
(placement, memory fit, scaling, cost) and the policy report."""

from __future__ import annotations

from typing import Any

from sgldeploy import cost
from sgldeploy.models.sizing import Candidate, Sizing
from sgldeploy.offline.engine import Registration
from sgldeploy.offline.plan_json import deployment_json
from sgldeploy.offline.render import PROJECT, Plan
from sgldeploy.policy import pack


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
        why = c.problem or (
            f"needs {c.memory.required_gib_per_gpu:g} of {c.memory.gpu_memory_gib:g} GiB"
            if not c.memory.fits or c.host is None
            else f"needs {c.host.required_gib_per_node:g} GiB of host memory, its pods get {c.pod_memory_gib:g}"
        )
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


def _parallel_split(p: dict[str, Any]) -> str:
    groups, experts = p["attention_data_parallel"], p["expert_parallel"]
    out = f" (attention in {groups} data-parallel groups)" if groups > 1 else ""
    if experts > 1:
        out += f" · EP {experts}" + (" over DeepEP" if p["all_to_all"] == "deepep" else "")
    return out


def _adapters_line(adapters: list[dict[str, Any]], sizing: Sizing) -> list[str]:
    if not adapters or sizing.lora is None:
        return []
    each = ", ".join(f"{a['model']} ({a['repo']}@{a['sha'][:8]}, rank {a['rank']})" for a in adapters)
    return [
        f"  adapters   {each}; {sizing.lora.slots} per batch at rank ≤ {sizing.lora.rank}, cached and verified "
        "beside the model"
    ]


def _host_cache_line(h: dict[str, Any] | None, pod_memory_gib: float) -> list[str]:
    if h is None:
        return []
    size = f"ratio {h['ratio']:g} of the KV pool" if h["ratio"] is not None else f"{h['size_gb']} GB"
    disk = f"; a file tier of {h['storage_gib']} GiB on the node's disk" if h["storage"] == "file" else ""
    return [
        f"  host cache {h['pool_gib_per_gpu']:g} GiB pinned host memory per GPU ({size}), "
        f"{h['pools_gib_per_node']:g} GiB per node; pods need {h['required_gib_per_node']:g} of the "
        f"{pod_memory_gib:g} GiB they request{disk}"
    ]


def _throughput_line(t: dict[str, Any] | None, requests_per_second: float | None) -> list[str]:
    if t is None:
        return []
    r = t["requests"]
    price = t["usd_per_million_output_tokens"]
    line = (
        f"  throughput {t['output_tokens_per_second_per_replica']:,.0f} output tokens/s per replica, "
        f"{t['output_tokens_per_second_per_request']:g} per request ({r['running']} running of "
        f"{r['input_tokens']:,} + {r['output_tokens']:,} tokens) · TTFT {t['ttft_seconds']:g} s · "
        f"ITL {t['itl_seconds'] * 1000:.1f} ms · "
        + (f"{_money(price)} per 1M output tokens" if price is not None else "no price per token")
    )
    if requests_per_second:
        line += f" · {t['replicas_for_workload']} replica(s) for {requests_per_second:g} requests/s"
    return [line]


def _disaggregation_lines(pd: dict[str, Any] | None) -> list[str]:
    """A role's part in its disaggregated deployment, and whether disaggregating pays."""
    if pd is None:
        return []
    line = f"  role       {pd['role']} of {pd['deployment']}, KV caches to and from {pd['peer']} by {pd['transfer_backend']} over EFA"
    e = pd["estimate"]
    if e is None:
        return [line]
    if pd["role"] == "prefill":
        figure = (
            f"{e['prefill_seconds']:g} s a prompt; {e['prefill_replicas_per_decode_replica']:g} prefill replica(s) "
            "keep one decode replica fed"
        )
    else:
        figure = f"ITL {e['itl_seconds'] * 1000:.1f} ms with {e['running_per_decode_replica']} running and no prefill in its steps"
    verdict = [f"  pd         {e['why']}"] if pd["role"] == "decode" else []  # the pair's, said once
    return [f"{line} · {figure}", *verdict]


def summary(plan: Plan) -> str:
    lines = []
    for d in plan.loaded.deployments:
        j = deployment_json(d, plan.estimate, plan.loaded.spec.platform.addons)
        p, m, c = j["placement"], j["memory"], j["cost"]
        gpu_mem = m["gpu_memory_gib"]
        lines += [
            f"{d.spec.name}: {d.spec.model.repo}@{d.model.sha[:12]} ({d.model.source})",
            f"  placement  {p['instance_type']} · {p['gpus_per_replica']}× {p['gpu_model']} ({gpu_mem:g} GiB) · "
            f"TP {p['tensor_parallel']}{_parallel_split(p)} · {p['nodes_per_replica']} node(s) per replica",
            *([f"  chosen     {p['why']}"] if p["why"] else []),
            f"  memory     per GPU {m['weights_gib_per_gpu']:g} weights + "
            + (f"{m['lora_gib_per_gpu']:g} LoRA buffers + " if m["lora_gib_per_gpu"] else "")
            + f"{m['kv_cache_gib_per_gpu']:g} KV "
            f"({m['context_length']:,} tokens × {d.spec.serving.max_concurrency} requests) + "
            f"{m['reserve_gib_per_gpu']:g} reserve = {m['required_gib_per_gpu']:g} of {gpu_mem:g} GiB "
            f"({m['dtype']}, mem_fraction_static {m['mem_fraction_static']:g}; KV pool ≈ "
            f"{m['kv_capacity_tokens']:,} tokens)",
            *_host_cache_line(m["host_cache"], m["pod_memory_gib"]),
            *_adapters_line(j["adapters"], d.sizing),
            *_alternatives(d.sizing),
            *_throughput_line(j["throughput"], d.spec.workload.requests_per_second),
            *_disaggregation_lines(j["disaggregation"]),
            f"  replicas   {j['replicas']['min']}–{j['replicas']['max']}, {j['replicas']['running_when_idle']} "
            f"running when idle (readiness {j['readiness']}, cold-start budget {j['startup_budget_seconds']} s)",
            f"  scaling    {j['replicas']['autoscaling']}"
            + (
                f"; from zero the first request waits up to {j['replicas']['first_request_wait_seconds']} s"
                if j["replicas"]["first_request_wait_seconds"]
                else ""
            ),
            f"  routing    {j['routing']['why']}",
            *_verify_line(j["verify"]),
            *_rollout_line(j["rollout"]),
            f"  cache      {j['cache']['why']}",
            *_cold_start_lines(j["cold_start_seconds"]),
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


def _cold_start_lines(c: dict[str, Any]) -> list[str]:
    """The deployment's own start from zero, then what every other weight path would take."""
    new, warm = c["new_node"], c["warm_node"]
    lines = [
        f"  cold start {new['total']} s on a new node ({new['assumes']}), {warm['total']} s on a warm one",
        f"  loader     {c['loader']}"
        + (f" ({c['why']})" if c["why"] else "")
        + f"; new node {new['node']} + image {new['image']} + fetch {new['fetch']} + load {new['load']} + "
        f"engine {new['engine'] - new['graphs']} + CUDA graphs {new['graphs']} s",
    ]
    others = [
        f"{p['loader']} from {p['storage']} {p['new_node']}/{p['warm_node']} s"
        + (f" (refused: {p['refused']})" if p["refused"] else "")
        for p in c["paths"]
        if not p["chosen"]
    ]
    if others:
        lines.append("  paths      new/warm node: " + "; ".join(others))
    z = c["from_zero"]
    if z:
        lines.append(
            f"  from zero  TTFT p95 target {z['ttft_p95_seconds']:g} s: "
            + ", ".join(f"{level} {s:g} s" for level, s in z["ttft_seconds"].items())
            + f"; met by {', '.join(z['meets']) or 'no readiness level'}"
        )
    return lines


def _verify_line(v: dict[str, Any] | None) -> list[str]:
    if v is None:
        return []
    targets = [
        f"{name} p95 {v[key]:g} s"
        for name, key in (("TTFT", "ttft_p95_seconds"), ("ITL", "itl_p95_seconds"))
        if v[key]
    ]
    against = f"against {' and '.join(targets)}" if targets else "against its contract only (no slo set)"
    return [
        f"  verify     after each update, a Job sends {v['requests']} requests, {v['concurrency']} at a time, to "
        f"{v['deployment']}, {against}; `pulumi up` fails when it misses"
    ]


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
