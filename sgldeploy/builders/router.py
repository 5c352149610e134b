"""The SGLang router (SGLang Model Gateway) in front of a deployment's replicas, for `algorithm: cache-aware`.

It finds the replicas itself, by label, through the Kubernetes API (so it needs get/list/watch on pods), sends
each request to the replica whose radix cache holds the longest prefix of the prompt unless that replica is
much busier, retries on another replica, and opens a per-replica circuit breaker on repeated failures. It
also bounds admission: the gateway (0.3.2) limits with a token bucket of `max_concurrency × max_replicas` tokens,
refilled at that many per second, and with no queue a request finding it empty gets 429 at once instead of a
timeout much later (measured with the gateway itself in tests/test_router_runtime.py; it sends no Retry-After).

Pure: the container arguments (checked against sglang-router's own parser in the tests) and object specs.
"""

from __future__ import annotations

from typing import Any

from sgldeploy.builders import pod_security, sglang_server
from sgldeploy.builders.sglang_args import API_KEY_ENV, SERVER_PORT
from sgldeploy.builders.sglang_server import ROLE_LABEL, selector
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec
from sgldeploy.spec.problems import Problem

ROUTER_PORT = 8000
METRICS_PORT = 29000
REQUEST_TIMEOUT_SECONDS = 600  # as long as the ALB's idle timeout: non-streamed completions take minutes
POLICIES = {"cache-aware": "cache_aware", "round-robin": "round_robin", "least-connections": "power_of_two"}
"""endpoint.algorithm → the router's --policy; ip-hash has no router equivalent (the load balancer pins)."""
COMPONENT = "router"
HEALTH_PATH = "/readiness"  # 200 once a replica is healthy; /liveness always answers


def enabled(dep: DeploymentSpec) -> bool:
    """In front for cache-aware, or wherever `endpoint.router.enabled` asks for it (and a policy maps); always in
    front of a disaggregated deployment (in PD mode), never of one of its roles (the deployment's router is)."""
    if dep.serving_role is not None:
        return False
    if dep.disaggregation is not None:
        return dep.endpoint.algorithm in POLICIES and dep.state == "running"
    asked = dep.endpoint.router.enabled
    wanted = asked if asked is not None else dep.endpoint.algorithm == "cache-aware"
    return wanted and dep.endpoint.algorithm in POLICIES and dep.state == "running"


def problem(dep: DeploymentSpec) -> Problem | None:
    """The problem (its path inside the deployment) when the router is asked for but cannot do the algorithm."""
    if dep.endpoint.router.enabled and dep.endpoint.algorithm not in POLICIES:
        return Problem(
            "endpoint.router.enabled",
            f"has no router policy for algorithm {dep.endpoint.algorithm}",
            "use cache-aware, round-robin or least-connections with the router, or turn it off",
            True,
        )
    if dep.endpoint.router.enabled is False and dep.endpoint.algorithm == "cache-aware":
        return Problem(
            "endpoint.router.enabled",
            "cannot be false with cache-aware: only the router knows the replicas' caches",
            "leave it unset, or choose another algorithm",
            False,
        )
    return None


def name(dep: DeploymentSpec) -> str:
    return f"{dep.name}-router"


def labels(dep: DeploymentSpec) -> dict[str, str]:
    return {**sglang_server.labels(dep, COMPONENT), "app.kubernetes.io/name": "sgl-model-gateway"}


def pod_selector(dep: DeploymentSpec) -> dict[str, str]:
    return pods_of(dep.name)


def pods_of(deployment: str) -> dict[str, str]:
    """The router pods of the deployment named `deployment`."""
    return {"app.kubernetes.io/instance": deployment, "app.kubernetes.io/component": COMPONENT}


def capacity(dep: DeploymentSpec) -> int:
    """Requests the replicas can run at once at their most: the router's burst, and its refill per second."""
    return dep.serving.max_concurrency * max(1, dep.max_replicas)


def admitted(dep: DeploymentSpec) -> int | None:
    """The router's burst (and refill per second) in front of the deployment; for a disaggregated deployment's
    roles, on its decode role (whose replicas run every request); None without a router."""
    role = dep.serving_role
    if role is not None:
        return capacity(dep) if role.role == "decode" else None
    return capacity(dep) if enabled(dep) else None


def describe(dep: DeploymentSpec) -> str:
    """One line for the plan: how requests reach the replicas, and what happens past capacity."""
    ep, role = dep.endpoint, dep.serving_role
    if role is not None:
        burst = admitted(dep)
        bound = (
            f"it admits bursts of {burst} requests and {burst} more per second (what the decode replicas "
            "run); beyond that clients get 429 at once"
            if burst
            else "admission is bounded by the decode replicas"
        )
        return (
            f"through the PD router {role.deployment}-router ({ep.router.replicas} pod(s), {ep.router.image}), "
            f"which sends each request to a prefill and a decode replica; {bound}"
        )
    if not enabled(dep):
        how = (
            "spread by the ClusterIP Service (kube-proxy picks a pod per connection)"
            if ep.exposure == "cluster"
            else f"{ep.algorithm} by the {ep.load_balancer.upper()}"
        )
        return f"{how}; past capacity requests queue in SGLang"
    return (
        f"{dep.endpoint.algorithm} through the SGLang router ({ep.router.replicas} pod(s), {ep.router.image}): it "
        f"admits bursts of {capacity(dep)} requests and {capacity(dep)} more per second; beyond that clients get "
        "429 at once"
    )


def args(
    dep: DeploymentSpec,
    sizing: Sizing,
    namespace: str,
    multi_node: bool,
    track_labels: dict[str, str] | None = None,
) -> list[str]:
    """`sgl-model-gateway` arguments: discovery of this deployment's serving pods (leaders only when a replica
    spans nodes; the active commit's only with blue-green), the policy, load bounds, retries, circuit breaker,
    health checks and metrics."""
    workers = {**selector(dep), **({ROLE_LABEL: "leader"} if multi_node else {}), **(track_labels or {})}
    return [
        *_listen(),
        "--policy",
        POLICIES[dep.endpoint.algorithm],
        "--service-discovery",
        "--selector",
        *_labels(workers),
        *_discovery_scope(namespace),
        *_bounds(capacity(dep), sizing.startup_budget_seconds),
        *_auth_and_extra(dep),
    ]


DECODE_POLICIES = {
    "cache-aware": "power_of_two",
    "round-robin": "round_robin",
    "least-connections": "power_of_two",
}
"""endpoint.algorithm → the PD router's --decode-policy. Decode replicas keep no radix cache (SGLang disables it
in decode mode), so cache-aware routing has nothing to aim at there: the less loaded of two replicas instead."""


def pd_args(
    dep: DeploymentSpec, roles: dict[str, tuple[DeploymentSpec, Sizing]], namespace: str
) -> list[str]:
    """The router in PD mode for a disaggregated deployment: each request goes to a prefill and a decode
    replica at once (with the prefill's bootstrap address), and the decode replica's answer streams back. It
    discovers each role by its labels; the prefill pods' annotation gives their bootstrap port. Admission is
    bounded by what the decode replicas can run, which hold every running request."""
    selectors = []
    for role in ("prefill", "decode"):
        spec, sizing = roles[role]
        leaders = {ROLE_LABEL: "leader"} if sizing.placement.nodes_per_replica > 1 else {}
        selectors += [f"--{role}-selector", *_labels({**selector(spec), **leaders})]
    decode_spec, _ = roles["decode"]
    return [
        *_listen(),
        "--pd-disaggregation",
        "--prefill-policy",
        POLICIES[dep.endpoint.algorithm],
        "--decode-policy",
        DECODE_POLICIES[dep.endpoint.algorithm],
        "--service-discovery",
        *selectors,
        *_discovery_scope(namespace),
        *_bounds(capacity(decode_spec), max(s.startup_budget_seconds for _, s in roles.values())),
        *_auth_and_extra(dep),
    ]


def _listen() -> list[str]:
    return ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]


def _labels(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(labels.items())]


def _discovery_scope(namespace: str) -> list[str]:
    return ["--service-discovery-namespace", namespace, "--service-discovery-port", str(SERVER_PORT)]


def _bounds(admitted: int, startup_seconds: int) -> list[str]:
    """Admission, timeouts, retries, circuit breaker, health checks and metrics."""
    return [
        "--max-concurrent-requests",
        str(admitted),
        # No queue: a request the bucket cannot admit gets 429 at once. (A queued one waits about one refill
        # interval and then gets 408, whatever --queue-timeout-secs says.)
        "--queue-size",
        "0",
        "--request-timeout-secs",
        str(REQUEST_TIMEOUT_SECONDS),
        # A replica still loading weights is not a failure: wait as long as its startup probe does.
        "--worker-startup-timeout-secs",
        str(startup_seconds),
        "--retry-max-retries",
        "3",
        "--cb-failure-threshold",
        "5",
        "--cb-timeout-duration-secs",
        "30",
        "--health-check-endpoint",
        "/health",
        "--health-check-interval-secs",
        "30",
        # A replica's /health runs a one-token generation and may take its full 20 s on a busy replica
        # (sglang_server.probes).
        "--health-check-timeout-secs",
        "30",
        "--prometheus-host",
        "0.0.0.0",
        "--prometheus-port",
        str(METRICS_PORT),
    ]


def _auth_and_extra(dep: DeploymentSpec) -> list[str]:
    # Clients present the same key to the router as to the replicas; the router passes it on.
    auth = ["--api-key", f"$({API_KEY_ENV})"] if dep.endpoint.auth == "api-key" else []
    return auth + list(dep.endpoint.router.extra_args)


def deployment_spec(
    dep: DeploymentSpec, container_args: list[str], api_key_secret: str | None
) -> dict[str, Any]:
    """The router's Deployment, running `container_args` (args or pd_args)."""
    env = [sglang_server.api_key_env(api_key_secret)] if api_key_secret else []
    container = {
        "name": "router",
        "image": dep.endpoint.router.image,
        "args": container_args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # Ready only with a healthy replica behind it: the load balancer and the HTTP add-on's interceptor
        # (which holds requests until the router has endpoints) never send to a router with nowhere to go.
        "readinessProbe": {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/liveness", "port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        # The gateway is one static binary that writes only to stdout.
        "securityContext": pod_security.read_only_container(),
    }
    return {
        "replicas": dep.endpoint.router.replicas,
        "selector": {"matchLabels": pod_selector(dep)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": labels(dep)},
            "spec": {
                "serviceAccountName": name(dep),
                # Worker discovery watches pods through the Kubernetes API.
                "automountServiceAccountToken": True,
                "securityContext": pod_security.non_root_pod(),
                "containers": [container],
                # Requests it proxies finish as the replicas' own do.
                "terminationGracePeriodSeconds": sglang_server.TERMINATION_GRACE_SECONDS,
            },
        },
    }


def service_spec(dep: DeploymentSpec) -> dict[str, Any]:
    return {
        "type": "ClusterIP",
        "selector": pod_selector(dep),
        "ports": [
            {"name": "http", "port": sglang_server.SERVICE_PORT, "targetPort": "http", "protocol": "TCP"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        ],
    }


def role_rules() -> list[dict[str, Any]]:
    """Read-only access to pods of its own namespace: all service discovery needs."""
    return [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def service_monitor_spec(dep: DeploymentSpec) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": pod_selector(dep)},
        "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
    }
