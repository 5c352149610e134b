"""Replicas that follow the load: a KEDA ScaledObject on SGLang's metrics, or, for deployments that may sleep at
zero, the KEDA HTTP add-on, whose interceptor holds each request while a replica starts. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgldeploy.builders import observability, router, sglang_server
from sgldeploy.models import cold_start
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import AddonsSpec, DeploymentSpec

DEFAULT_PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
"""The Prometheus that kube-prometheus-stack (the `prometheus` add-on) runs."""
INTERCEPTOR = "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local"
INTERCEPTOR_PORT = 8080
RESPONSE_HEADER_TIMEOUT = (
    "600s"  # a long completion sends its headers only when it is done (without streaming)
)
POLLING_SECONDS = 15


@dataclass(frozen=True)
class AutoscalerChoice:
    kind: str  # "metrics" (ScaledObject), "http" (HTTPScaledObject, scale from zero), or "none"
    why: str


def choose(dep: DeploymentSpec, keda: bool, keda_http: bool) -> AutoscalerChoice:
    if dep.state == "stopped":
        return AutoscalerChoice("none", "stopped: no replicas")
    if not keda:
        return AutoscalerChoice(
            "none", "platform.addons.keda is false: replicas stay at the Deployment's count"
        )
    if dep.min_replicas == 0:
        if not keda_http:
            return AutoscalerChoice(
                "none",
                "min_replicas 0 needs the KEDA HTTP add-on to hold requests while a replica "
                "starts; platform.addons.keda_http is false, so one replica stays up",
            )
        return AutoscalerChoice(
            "http",
            f"scale to zero after {dep.idle_timeout_seconds} s idle; the HTTP add-on holds "
            "requests while a replica starts",
        )
    if dep.min_replicas == dep.max_replicas:
        return AutoscalerChoice("none", f"min_replicas = max_replicas = {dep.max_replicas}: nothing to scale")
    if dep.scaling.metric == "slo":
        held = ", ".join(
            f"{k.removesuffix('_seconds').replace('_', ' ')} {v:g} s" for k, v in dep.slo_targets().items()
        )
        return AutoscalerChoice(
            "metrics",
            f"slo ({held}) while requests queue, and queue depth {dep.scaling.target:g} per replica",
        )
    return AutoscalerChoice("metrics", f"{dep.scaling.metric} with target {dep.scaling.target:g} per replica")


def target_ref(dep: DeploymentSpec, sizing: Sizing, workload: str | None = None) -> dict[str, str]:
    """The workload to scale: `workload` names the active track's Deployment (sgldeploy.builders.rollout)."""
    if sizing.placement.nodes_per_replica > 1:
        return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": dep.name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload or dep.name}


def triggers(dep: DeploymentSpec, namespace: str, prometheus: str) -> list[dict[str, Any]]:
    """The ScaledObject's triggers; the HPA follows whichever asks for the most replicas."""
    if dep.scaling.metric != "slo":
        return [trigger(dep, namespace, prometheus, dep.scaling.metric)]
    return [trigger(dep, namespace, prometheus, "queue-depth")] + [
        {
            "type": "prometheus",
            "name": key.removesuffix("_seconds").replace("_", "-"),
            # Value, not AverageValue: the HPA scales by p95 / target (twice the target, twice the replicas).
            "metricType": "Value",
            "metadata": {
                "serverAddress": prometheus,
                "query": observability.slo_query(dep, namespace, key),
                "threshold": f"{target:g}",
            },
        }
        for key, target in dep.slo_targets().items()
    ]


def trigger(dep: DeploymentSpec, namespace: str, prometheus: str, metric: str) -> dict[str, Any]:
    target = dep.scaling.target
    if metric in ("cpu-utilization", "memory-utilization"):
        return {
            "type": metric.split("-")[0],
            "metricType": "Utilization",
            "metadata": {"value": f"{target:g}"},
        }
    if metric == "gpu-utilization":  # DCGM exporter's gauge, averaged over the deployment's pods
        query = f'avg(DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}",pod=~"{dep.name}-.*"}})'
    else:
        query = observability.query(
            dep, namespace, "queue_depth" if metric == "queue-depth" else "running_requests"
        )
    return {
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {"serverAddress": prometheus, "query": query, "threshold": f"{target:g}"},
    }


def scaled_object_spec(
    dep: DeploymentSpec, sizing: Sizing, namespace: str, prometheus: str, workload: str | None = None
) -> dict[str, Any]:
    return {
        "scaleTargetRef": target_ref(dep, sizing, workload),
        "minReplicaCount": dep.min_replicas,
        "maxReplicaCount": dep.max_replicas,
        "pollingInterval": POLLING_SECONDS,
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    # Scale down one replica at a time, only after the lower count held for the spec's delay.
                    "scaleDown": {
                        "stabilizationWindowSeconds": dep.scaling.scale_down_delay_seconds,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                    },
                    "scaleUp": {"stabilizationWindowSeconds": 0},
                }
            }
        },
        "triggers": triggers(dep, namespace, prometheus),
    }


def proxy_host(dep: DeploymentSpec, namespace: str) -> str:
    """The name in-cluster clients call for a deployment that may be at zero: a Service pointing at the
    interceptor, which routes by this Host header."""
    return f"{dep.name}-proxy.{namespace}.svc.cluster.local"


def wait_seconds(dep: DeploymentSpec, sizing: Sizing) -> int:
    """How long the first request may wait: a cold start on a new node, with a third as margin."""
    start = cold_start.from_zero(dep, sizing, warm_node=False)
    return int(start.total_s * 4 / 3)


def http_scaled_object_spec(
    dep: DeploymentSpec,
    sizing: Sizing,
    namespace: str,
    hostname: str | None = None,
    workload: str | None = None,
) -> dict[str, Any]:
    short = f"{dep.name}-proxy.{namespace}.svc"
    return {
        "hosts": [short, proxy_host(dep, namespace), *([hostname] if hostname else [])],
        # With the router in front the interceptor forwards to it; it is ready once a replica is.
        "scaleTargetRef": {
            **target_ref(dep, sizing, workload),
            "service": router.name(dep) if router.enabled(dep) else dep.name,
            "port": sglang_server.SERVICE_PORT,  # the model's Service and the router's alike
        },
        "replicas": {"min": 0, "max": dep.max_replicas},
        "scaledownPeriod": dep.idle_timeout_seconds,
        # Requests in flight per replica (running plus queued) is what SGLang's batch can take.
        "scalingMetric": {"concurrency": {"targetValue": max(1, int(dep.scaling.target))}},
        "timeouts": {
            "conditionWait": f"{wait_seconds(dep, sizing)}s",
            "responseHeader": RESPONSE_HEADER_TIMEOUT,
        },
    }


def proxy_service_spec() -> dict[str, Any]:
    return {
        "type": "ExternalName",
        "externalName": INTERCEPTOR,
        "ports": [{"name": "http", "port": INTERCEPTOR_PORT, "targetPort": INTERCEPTOR_PORT}],
    }


def for_stack(dep: DeploymentSpec, addons: AddonsSpec) -> AutoscalerChoice:
    """The choice from the platform's add-ons (installed or existing both count)."""
    return choose(dep, bool(addons.keda), bool(addons.keda_http))


def replicas_when_idle(dep: DeploymentSpec, addons: AddonsSpec) -> int:
    """What runs, and is paid for, with no traffic: nothing when the HTTP add-on can wake the deployment,
    otherwise the Deployment's own count (at least one while running)."""
    return 0 if for_stack(dep, addons).kind == "http" else dep.initial_replicas
