"""The facts policies judge that no Kubernetes or AWS resource carries: the model, its fit, its cost.

The program passes them as the inputs (and outputs) of the `ModelDeployment` and `Platform` components, so
a CrossGuard policy pack under `pulumi preview` and the offline plan read the very same values. Plain JSON
values only, never a secret.
"""

from __future__ import annotations

from typing import Any

from sgldeploy.cost import Estimate
from sgldeploy.spec import PlatformSpec, is_commit
from sgldeploy.stack import LoadedDeployment

DEPLOYMENT_TYPE = "sgldeploy:serving:ModelDeployment"
PLATFORM_TYPE = "sgldeploy:platform:Platform"


def weights_format(item: LoadedDeployment) -> str:
    """`safetensors` when the lock read safetensors headers (the lock refuses pickle-only repos)."""
    model = item.model
    return "safetensors" if model.safetensors_bytes is not None or model.parameters_by_dtype else "unknown"


def deployment_facts(
    item: LoadedDeployment, platform: PlatformSpec, region: str, estimate: Estimate
) -> dict[str, Any]:
    spec, p, m = item.spec, item.sizing.placement, item.sizing.memory
    totals = estimate.deployment_totals(spec.name)
    return {
        "name": spec.name,
        "environment": platform.environment,
        "region": region,
        "model": {
            "repo": spec.model.repo,
            "revision": spec.model.revision,
            "sha": item.model.sha,
            "revisionIsCommit": is_commit(spec.model.revision),
            "weightsFormat": weights_format(item),
            "customCode": item.model.custom_code,
            "trustRemoteCode": spec.model.trust_remote_code,
        },
        "serving": {
            "dtype": item.sizing.dtype,
            "quantization": spec.serving.quantization
            if spec.serving.quantization != "none"
            else (item.model.quantization_method or "none"),
            "kvCacheDtype": spec.serving.kv_cache_dtype,
        },
        "placement": {
            "instanceType": p.instance_type,
            "alternatives": list(p.alternatives),
            "gpuModel": p.gpu_model,
            "gpusPerReplica": p.gpus_per_replica,
            "nodesPerReplica": p.nodes_per_replica,
        },
        "memory": {"requiredGibPerGpu": m.required_gib_per_gpu, "gpuMemoryGib": m.gpu_memory_gib},
        "readiness": spec.readiness,
        "replicas": {"min": spec.min_replicas, "max": spec.max_replicas},
        "endpoint": {
            "exposure": spec.endpoint.exposure,
            "auth": spec.endpoint.auth,
            "tls": spec.endpoint.tls_certificate_arn is not None,
        },
        "rollout": {"maxUnavailable": spec.rollout.max_unavailable},
        "cost": _cost(totals),
    }


def platform_facts(platform: PlatformSpec, region: str, estimate: Estimate) -> dict[str, Any]:
    return {
        "environment": platform.environment,
        "region": region,
        "clusterCreate": platform.cluster.create,
        "budgetUsdPerMonth": platform.budget_usd_per_month,
        "cost": _cost(estimate.deployment_totals(None)),
    }


def _cost(totals: dict[str, Any]) -> dict[str, Any]:
    return {
        "monthlyUsdMin": totals["monthly_usd_min"],
        "monthlyUsdMax": totals["monthly_usd_max"],
        "unpriced": totals["unpriced"],
    }
