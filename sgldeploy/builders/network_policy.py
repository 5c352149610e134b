"""NetworkPolicies for a deployment's pods: who may open connections to them.

Every pod of a deployment (server, multi-node workers, prefetch Jobs, image pre-pull) starts from
"no ingress"; the serving pods then accept, on the SGLang port only:

- the load balancer's targets path (public and internal endpoints): ALB and NLB send from their ENIs in
  the VPC, so the VPC's CIDR (the AWS LB controller registers pod IPs as targets);
- the KEDA HTTP add-on's interceptor, when the deployment scales from zero through it;
- Prometheus, which scrapes `/metrics` on the same port;
- pods of the same namespace, which is how `exposure: cluster` clients (and a router) reach it.

With the SGLang router in front (`algorithm: cache-aware`), the router's pods take the load balancer's and the
interceptor's traffic instead, and the serving pods only the namespace's (the router) and Prometheus's.

Pods of one multi-node replica also talk to each other on every port (NCCL picks ports at run time).

The two roles of a disaggregated deployment take requests from the deployment's PD router only (and Prometheus),
and each other's connections on every port: SGLang's per-rank ZMQ sockets bind at random in 49152–65535, the
prefill role's bootstrap server listens on 8998, and Mooncake's transfer engine opens a handshake port of its own
choosing. The KV cache itself moves over EFA, which is not IP traffic and which NetworkPolicies do not see.
Egress is left open: pods download weights from the Hub and S3. NetworkPolicies are additive, so a
platform team widens this with policies of its own. They are enforced only where the cluster's network
plugin does (the VPC CNI with `enableNetworkPolicy`, which sgldeploy turns on for clusters it creates).
"""

from __future__ import annotations

from typing import Any

from sgldeploy.builders import router
from sgldeploy.builders.addons import CHARTS
from sgldeploy.builders.sglang_args import SERVER_PORT
from sgldeploy.builders.sglang_server import selector, server_pods
from sgldeploy.spec import DeploymentSpec

NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace since 1.21


def addon_namespace(addon: str) -> str:
    return next(c.namespace for c in CHARTS if c.addon == addon)


def instance_selector(dep: DeploymentSpec) -> dict[str, str]:
    """Every pod sgldeploy runs for this deployment carries these two labels."""
    return {"app.kubernetes.io/instance": dep.name, "app.kubernetes.io/managed-by": "sgldeploy"}


def deny_all_spec(dep: DeploymentSpec) -> dict[str, Any]:
    """No ingress to any pod of the deployment unless another policy allows it."""
    return {"podSelector": {"matchLabels": instance_selector(dep)}, "policyTypes": ["Ingress"], "ingress": []}


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: name}}}


def _front(dep: DeploymentSpec, vpc_cidr: Any, through_interceptor: bool) -> list[dict[str, Any]]:
    """Where requests from outside the namespace come from: the HTTP add-on's interceptor when the deployment
    may be at zero, else the load balancer's ENIs in the VPC (none for `exposure: cluster`)."""
    if through_interceptor:
        return [_namespace(addon_namespace("keda_http"))]
    if dep.endpoint.exposure != "cluster":
        return [{"ipBlock": {"cidr": vpc_cidr}}]
    return []


def server_ingress_spec(
    dep: DeploymentSpec,
    *,
    vpc_cidr: Any,
    through_interceptor: bool,
    prometheus: bool,
    multi_node: bool,
) -> dict[str, Any]:
    """Who may reach the serving pods; `vpc_cidr` is a CIDR string, or an output that resolves to one. With
    the router in front, requests come only from it (in the namespace), so the load balancer's path is closed."""
    peers: list[dict[str, Any]] = [{"podSelector": {}}]  # the same namespace
    if not router.enabled(dep):
        peers += _front(dep, vpc_cidr, through_interceptor)
    if prometheus and dep.observability.metrics:
        peers.append(_namespace(addon_namespace("prometheus")))
    rules: list[dict[str, Any]] = [{"from": peers, "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}]
    if multi_node:
        rules.append({"from": [{"podSelector": {"matchLabels": selector(dep)}}]})
    return {"podSelector": {"matchLabels": selector(dep)}, "policyTypes": ["Ingress"], "ingress": rules}


def role_ingress_spec(dep: DeploymentSpec, *, prometheus: bool, multi_node: bool) -> dict[str, Any]:
    """Who may reach the pods of one role of a disaggregated deployment: its PD router and Prometheus on the
    SGLang port, the other role's pods (and the pods of its own multi-node replicas) on any port."""
    role = dep.serving_role
    assert role is not None
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": router.pods_of(role.deployment)}}]
    if prometheus and dep.observability.metrics:
        peers.append(_namespace(addon_namespace("prometheus")))
    servers = [server_pods(role.peer)]
    if multi_node:
        servers.append(selector(dep))
    rules: list[dict[str, Any]] = [
        {"from": peers, "ports": [{"protocol": "TCP", "port": SERVER_PORT}]},
        {"from": [{"podSelector": {"matchLabels": labels}} for labels in servers]},
    ]
    return {"podSelector": {"matchLabels": selector(dep)}, "policyTypes": ["Ingress"], "ingress": rules}


def router_ingress_spec(
    dep: DeploymentSpec, *, vpc_cidr: Any, through_interceptor: bool, prometheus: bool
) -> dict[str, Any]:
    """The router takes the requests the serving pods would otherwise take; Prometheus scrapes its metrics."""
    rules: list[dict[str, Any]] = [
        {
            "from": [{"podSelector": {}}, *_front(dep, vpc_cidr, through_interceptor)],
            "ports": [{"protocol": "TCP", "port": router.ROUTER_PORT}],
        }
    ]
    if prometheus:
        rules.append(
            {
                "from": [_namespace(addon_namespace("prometheus"))],
                "ports": [{"protocol": "TCP", "port": router.METRICS_PORT}],
            }
        )
    return {
        "podSelector": {"matchLabels": router.pod_selector(dep)},
        "policyTypes": ["Ingress"],
        "ingress": rules,
    }
