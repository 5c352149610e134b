"""The plan JSON (version 1, DESIGN.md): what a rendered plan declares, places and costs, for machines."""

from __future__ import annotations

from typing import Any

from sgldeploy import cost
from sgldeploy.builders import autoscaler, rollout, router, weight_cache
from sgldeploy.builders.autoscaler import replicas_when_idle
from sgldeploy.catalog import HOURS_PER_MONTH, instance_types
from sgldeploy.models import cold_start, weight_path
from sgldeploy.models.host_cache import HostCache
from sgldeploy.models.sizing import Candidate
from sgldeploy.offline.engine import normalize
from sgldeploy.offline.render import Plan
from sgldeploy.policy import pack
from sgldeploy.spec import AddonsSpec
from sgldeploy.stack import LoadedDeployment
from sgldeploy.verify import plan_figures

PLAN_VERSION = 1


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
            "attention_data_parallel": spec.serving.parallelism.data_parallel_attention,
            "expert_parallel": spec.serving.parallelism.expert,
            "all_to_all": "deepep" if spec.serving.parallelism.all_to_all == "deepep" else "none",
            "alternatives": list(p.alternatives),
            "why": item.sizing.choice,
        },
        "adapters": _adapters(item),
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
            "lora_gib_per_gpu": m.lora_gib_per_gpu,
            "pod_memory_gib": item.sizing.memory_request_gib,
            "host_cache": _host_cache(item.sizing.host_cache),
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
            "router": router.enabled(spec) or spec.serving_role is not None,
            "max_in_flight": router.admitted(spec),
            "why": router.describe(spec),
        },
        "readiness": spec.readiness,
        "cache": {"storage": spec.cache_storage, "why": weight_cache.explain(spec, item.cache_reason)},
        "cold_start_seconds": _cold_start(item),
        "startup_budget_seconds": item.sizing.startup_budget_seconds,
        "cost": spend,
        "throughput": None if spec.serving_role else _throughput(item, estimate),
        "disaggregation": _disaggregation(item),
        "verify": _verify(item),
    }


def _verify(item: LoadedDeployment) -> dict[str, Any] | None:
    """The in-cluster verification (`verify.job`), on the deployment whose replicas answer (a pair's decode
    role); None without one."""
    dep, role = item.spec, item.spec.serving_role
    if not dep.verify.job or dep.state != "running" or (role is not None and role.role != "decode"):
        return None
    concurrency, requests = plan_figures.load_shape(dep)
    return {
        "deployment": role.deployment if role else dep.name,
        "concurrency": concurrency,
        "requests": requests,
        "ttft_p95_seconds": dep.slo.ttft_p95_seconds,
        "itl_p95_seconds": dep.slo.itl_p95_seconds,
        "canary_margin_percent": dep.verify.canary_margin_percent,
    }


def _disaggregation(item: LoadedDeployment) -> dict[str, Any] | None:
    """A role's place in its disaggregated deployment, and the throughput model's figures of the two together
    (a role's own `throughput` is null: alone, neither prefills and decodes a request)."""
    role, pd = item.spec.serving_role, item.disaggregation
    if role is None:
        return None
    figures = None
    if pd is not None:
        c = pd.colocated
        figures = {
            "prefill_seconds": round(pd.prefill_seconds, 3),
            "kv_transfer_seconds": round(pd.kv_transfer_seconds, 4),
            "ttft_seconds": round(pd.ttft_seconds, 3),
            "itl_seconds": round(pd.itl_seconds, 4),
            "running_per_decode_replica": pd.batch,
            "prefill_replicas_per_decode_replica": round(pd.prefill_replicas_per_decode_replica, 2),
            "usd_per_million_output_tokens": _usd(pd.usd_per_million_output_tokens),
            "colocated": {
                "ttft_seconds": round(c.ttft_seconds, 3),
                "itl_seconds": round(c.itl_seconds, 4),
                "usd_per_million_output_tokens": _usd(c.usd_per_million_output_tokens),
            },
            "pays": pd.pays,
            "why": pd.verdict(),
        }
    return {
        "deployment": role.deployment,
        "role": role.role,
        "peer": role.peer,
        "transfer_backend": role.transfer_backend,
        "estimate": figures,
    }


def _usd(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def _throughput(item: LoadedDeployment, estimate: cost.Estimate) -> dict[str, Any] | None:
    t = item.sizing.throughput
    if t is None:
        return None
    e = t.estimate
    priced = cost.node_price(item, estimate.region) is not None  # the stack's region has a price
    return {
        "output_tokens_per_second_per_replica": round(e.output_tokens_per_second_per_replica, 1),
        "output_tokens_per_second_per_request": round(e.output_tokens_per_second_per_request, 2),
        "ttft_seconds": round(e.ttft_seconds, 3),
        "itl_seconds": round(e.itl_seconds, 4),
        "usd_per_million_output_tokens": round(t.usd_per_million_output_tokens, 2)
        if priced and t.usd_per_million_output_tokens is not None
        else None,
        "replicas_for_workload": t.replicas_for_workload,
        "requests": {"input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "running": e.batch},
        "kv_batch_limit": e.kv_batch_limit,
        "compute_bound_batch": e.compute_bound_batch,
        "basis": t.basis,
    }


def _cold_start(item: LoadedDeployment) -> dict[str, Any]:
    """The deployment's own weight path from zero, term by term, then every path it could take (what each buys,
    and why one is refused), and which readiness levels meet its TTFT target from zero."""
    spec, sizing = item.spec, item.sizing
    out: dict[str, Any] = {
        case: _start_terms(cold_start.from_zero(spec, sizing, warm_node=warm))
        for case, warm in (("new_node", False), ("warm_node", True))
    }
    out["loader"] = spec.cache.loader
    out["why"] = item.loader_reason
    out["paths"] = [_path(item, loader, storage) for loader, storage in weight_path.paths(spec)]
    out["from_zero"] = _from_zero(item, out)
    return out


def _start_terms(c: cold_start.ColdStart) -> dict[str, Any]:
    return {
        "node": c.node_s,
        "image": c.image_s,
        "fetch": c.fetch_s,
        "load": c.load_s,
        "weights": c.weights_s,
        "engine": c.engine_s + c.graphs_s,
        "graphs": c.graphs_s,
        "total": c.total_s,
        "assumes": c.note,
    }


def _path(item: LoadedDeployment, loader: str, storage: str) -> dict[str, Any]:
    """One weight path for this deployment: its starts on a new and a warm node, and what refuses it."""
    spec = item.spec.model_copy(
        update={"cache": item.spec.cache.model_copy(update={"loader": loader, "storage": storage})}
    )
    p = item.sizing.placement
    refused = weight_path.problems(
        spec, instance_types()[p.instance_type], p.gpus_per_replica, p.nodes_per_replica
    )
    return {
        "loader": loader,
        "storage": storage,
        "chosen": (loader, storage) == (item.spec.cache.loader, item.spec.cache_storage),
        "new_node": cold_start.of(spec, item.sizing, warm_node=False).total_s,
        "warm_node": cold_start.of(spec, item.sizing, warm_node=True).total_s,
        "refused": "; ".join(x.what for x in refused) or None,
    }


def _from_zero(item: LoadedDeployment, starts: dict[str, Any]) -> dict[str, Any] | None:
    """TTFT from zero at each readiness level: always-ready never starts from zero; fast wakes on a warm node
    (its image pre-pulled, its cache kept); cold-start waits for a new node. None without a TTFT target."""
    target, t = item.spec.slo.ttft_p95_seconds, item.sizing.throughput
    if target is None or t is None:
        return None
    ttft = t.estimate.ttft_seconds
    seconds = {
        "always-ready": ttft,
        "fast": starts["warm_node"]["total"] + ttft,
        "cold-start": starts["new_node"]["total"] + ttft,
    }
    return {
        "ttft_p95_seconds": target,
        "ttft_seconds": {level: round(s, 1) for level, s in seconds.items()},
        "meets": [level for level, s in seconds.items() if s <= target],
    }


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
            for r in plan.resources_in_urn_order
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


def _host_cache(host: HostCache | None) -> dict[str, Any] | None:
    """The hierarchical cache's host tier on each node, and what the pod's memory must hold for it."""
    if host is None:
        return None
    return {
        "ratio": host.ratio,
        "size_gb": host.size_gb,
        "pool_gib_per_gpu": round(host.pool_gib_per_gpu, 2),
        "pools_gib_per_node": round(host.pools_gib_per_node, 2),
        "required_gib_per_node": round(host.required_gib_per_node, 2),
        "storage": host.storage,
        "storage_gib": host.storage_gib if host.storage == "file" else 0,
    }


def _adapters(item: LoadedDeployment) -> list[dict[str, Any]]:
    """Each LoRA adapter as clients select it: `model: "<served name>:<name>"`."""
    return [
        {
            "name": ref.name,
            "repo": a.repo,
            "revision": a.revision,
            "sha": a.sha,
            "rank": a.rank,
            "target_modules": list(a.target_modules),
            "model": f"{item.spec.served_name}:{ref.name}",
        }
        for ref, a in zip(item.spec.model.adapters, item.sizing.adapters, strict=True)
    ]
