"""How clients outside the cluster reach a model: an ALB Ingress or an NLB Service for the AWS Load Balancer
Controller, from the spec's `endpoint`. Pure: the objects' specs and annotations.

A deployment that may sleep at zero is reached through the KEDA HTTP add-on's interceptor, which holds the
request while a replica starts and routes by Host: its ALB Ingress lives in the interceptor's namespace and
needs `endpoint.hostname`; an NLB cannot hold requests, so that combination is refused at validation.
"""

from __future__ import annotations

import json
from typing import Any

from sgldeploy.builders import rollout, router
from sgldeploy.builders.autoscaler import INTERCEPTOR_PORT
from sgldeploy.builders.sglang_server import (
    SERVICE_PORT,
    TERMINATION_GRACE_SECONDS,
    labels,
    service_selector,
)
from sgldeploy.spec import DeploymentSpec
from sgldeploy.spec.problems import Problem

INTERCEPTOR_SERVICE = "keda-add-ons-http-interceptor-proxy"
INTERCEPTOR_NAMESPACE = "keda"
# The ALB's health checks of the interceptor's pods. On the proxy port they are routed by Host, and a host no
# HTTPScaledObject names gets 404 (kedacore/http-add-on v0.15.0, interceptor/middleware/routing.go
# Routing.ServeHTTP: `ir == nil` → handler.NewStatic(http.StatusNotFound)); one carrying the deployment's host would
# pass the Counting middleware (interceptor/proxy.go BuildProxyHandler: NewCounting sits inside NewRouting),
# count as a pending request to the scaler and wake the model every interval. So the checks go to the
# interceptor's admin server: interceptor/admin.go BuildAdminHandler serves /readyz (handler.Probe: 200 once the
# routing table has synced, 503 while draining), /livez and /queue (a read of the counts) on a mux of its own
# (main.go runAdminServer on KEDA_HTTP_ADMIN_PORT), without the routing and counting middleware: it never reaches
# the workload and never adds to the pending-request metric. The chart (keda-add-ons-http 0.15.0, kedacore/charts
# c4b92e9e, http-add-on/templates/interceptor/deployment.yaml) sets KEDA_HTTP_ADMIN_PORT and the container port
# `admin` from values `interceptor.admin.port` (9090) and probes /readyz there itself; the Service
# keda-add-ons-http-interceptor-admin (service-admin.yaml) exposes it in the cluster, while the ALB's ip targets
# are the proxy Service's pods, checked on this port directly. A number, as the proxy Service has no port named
# admin: the AWS Load Balancer Controller takes a numeric healthcheck-port as is for ip targets (v3.5.0,
# pkg/ingress/model_build_target_group.go buildTargetGroupHealthCheckPort) and opens it on the targets' security
# group (buildTargetGroupBindingNetworking). No NetworkPolicy sgldeploy declares selects the interceptor's pods.
INTERCEPTOR_ADMIN_PORT = 9090
INTERCEPTOR_READINESS_PATH = "/readyz"
STOPPED_ACTION = "stopped"  # the Ingress backend naming the ALB's fixed 503 response for a stopped deployment
IDLE_TIMEOUT_SECONDS = (
    600  # an ALB drops a connection idle this long; non-streamed completions can take minutes
)
DEREGISTRATION_DELAY_SECONDS = TERMINATION_GRACE_SECONDS  # as long as a pod's: in-flight generations finish
ALB_ALGORITHMS = {
    "round-robin": "round_robin",
    "least-connections": "least_outstanding_requests",
    # The load balancer spreads over the router pods, which pick the replica with the cached prefix.
    "cache-aware": "round_robin",
    "ip-hash": "round_robin",
}


def _tags(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def alb_annotations(
    dep: DeploymentSpec, tags: dict[str, str], through_interceptor: bool = False
) -> dict[str, str]:
    ep = dep.endpoint
    group = [
        f"load_balancing.algorithm.type={ALB_ALGORITHMS[ep.algorithm]}",
        f"deregistration_delay.timeout_seconds={DEREGISTRATION_DELAY_SECONDS}",
    ]
    if ep.sticky_sessions or ep.algorithm == "ip-hash":
        group += [
            "stickiness.enabled=true",
            "stickiness.type=lb_cookie",
            "stickiness.lb_cookie.duration_seconds=3600",
        ]
    out = {
        "alb.ingress.kubernetes.io/scheme": "internet-facing" if ep.exposure == "public" else "internal",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/healthcheck-path": health_path(dep, through_interceptor),
        "alb.ingress.kubernetes.io/healthcheck-interval-seconds": str(ep.health_check.interval_seconds),
        "alb.ingress.kubernetes.io/load-balancer-attributes": f"idle_timeout.timeout_seconds={IDLE_TIMEOUT_SECONDS}",
        "alb.ingress.kubernetes.io/target-group-attributes": ",".join(group),
    }
    if through_interceptor:  # the admin port, not the traffic port: see INTERCEPTOR_ADMIN_PORT
        out["alb.ingress.kubernetes.io/healthcheck-port"] = str(INTERCEPTOR_ADMIN_PORT)
    if ep.tls_certificate_arn:
        out.update(
            {
                "alb.ingress.kubernetes.io/certificate-arn": ep.tls_certificate_arn,
                "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTP": 80}, {"HTTPS": 443}]),
                "alb.ingress.kubernetes.io/ssl-redirect": "443",
            }
        )
    else:
        out["alb.ingress.kubernetes.io/listen-ports"] = json.dumps([{"HTTP": 80}])
    if tags:
        out["alb.ingress.kubernetes.io/tags"] = _tags(tags)
    if rollout.split(dep):
        out[f"alb.ingress.kubernetes.io/actions.{rollout.ALB_ACTION}"] = json.dumps(
            rollout.weighted_action(dep, SERVICE_PORT)
        )
    if dep.state == "stopped":
        out[f"alb.ingress.kubernetes.io/actions.{STOPPED_ACTION}"] = json.dumps(stopped_response(dep))
    return out


def stopped_response(dep: DeploymentSpec) -> dict[str, Any]:
    """What a stopped deployment's ALB answers: 503 with an OpenAI-style error body saying why."""
    body = {
        "error": {
            "message": f"{dep.name} is stopped: its replicas and GPU nodes are scaled to zero. "
            "Set state: running in the stack and run pulumi up to serve it again.",
            "type": "service_unavailable",
            "code": "model_stopped",
        }
    }
    return {
        "type": "fixed-response",
        "fixedResponseConfig": {
            "contentType": "application/json",
            "statusCode": "503",
            "messageBody": json.dumps(body),
        },
    }


def health_path(dep: DeploymentSpec, through_interceptor: bool = False) -> str:
    """The spec's path on the SGLang pods; the router's own readiness when the router is in front; the
    interceptor's readiness when the load balancer's targets are the interceptor's pods."""
    if through_interceptor:
        return INTERCEPTOR_READINESS_PATH
    return router.HEALTH_PATH if router.enabled(dep) else dep.endpoint.health_check.path


def upstream_service(dep: DeploymentSpec) -> str:
    """The Service traffic enters: the router's when it is in front, else the model's."""
    return router.name(dep) if router.enabled(dep) else dep.name


def ingress_spec(dep: DeploymentSpec, through_interceptor: bool) -> dict[str, Any]:
    """Straight to the model's (or its router's) Service, or to the interceptor when it may be at zero."""
    if dep.state == "stopped":  # the ALB answers itself, with the fixed response in alb_annotations
        backend = {"service": {"name": STOPPED_ACTION, "port": {"name": "use-annotation"}}}
    elif through_interceptor:
        backend = {"service": {"name": INTERCEPTOR_SERVICE, "port": {"number": INTERCEPTOR_PORT}}}
    elif rollout.split(dep):  # the ALB's weighted action (alb_annotations) names the two Services
        backend = {"service": {"name": rollout.ALB_ACTION, "port": {"name": "use-annotation"}}}
    else:
        backend = {"service": {"name": upstream_service(dep), "port": {"number": SERVICE_PORT}}}
    rule: dict[str, Any] = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
    if dep.endpoint.hostname:
        rule["host"] = dep.endpoint.hostname
    return {"ingressClassName": "alb", "rules": [rule]}


def nlb_annotations(dep: DeploymentSpec, tags: dict[str, str]) -> dict[str, str]:
    ep = dep.endpoint
    out = {
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"
        if ep.exposure == "public"
        else "internal",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol": "HTTP",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path": health_path(dep),
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval": str(
            ep.health_check.interval_seconds
        ),
    }
    attributes = [f"deregistration_delay.timeout_seconds={DEREGISTRATION_DELAY_SECONDS}"]
    if ep.sticky_sessions or ep.algorithm == "ip-hash":  # an NLB pins a client by its source address
        attributes += ["stickiness.enabled=true", "stickiness.type=source_ip"]
    out["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"] = ",".join(attributes)
    if ep.tls_certificate_arn:
        out.update(
            {
                "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": ep.tls_certificate_arn,
                "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "443",
            }
        )
    if tags:
        out["service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags"] = _tags(tags)
    return out


def nlb_service_spec(dep: DeploymentSpec, multi_node: bool) -> dict[str, Any]:
    port = 443 if dep.endpoint.tls_certificate_arn else 80
    return {
        "type": "LoadBalancer",
        "loadBalancerClass": "service.k8s.aws/nlb",
        "selector": router.pod_selector(dep) if router.enabled(dep) else service_selector(dep, multi_node),
        "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
    }


def endpoint_labels(dep: DeploymentSpec) -> dict[str, str]:
    return labels(dep, component="endpoint")


def problem(dep: DeploymentSpec, scales_from_zero: bool) -> Problem | None:
    """The problem (its path inside the deployment) when the endpoint cannot serve a deployment that sleeps
    at zero."""
    if not scales_from_zero or dep.endpoint.exposure == "cluster":
        return None
    if dep.endpoint.load_balancer == "nlb":
        return Problem(
            "endpoint.load_balancer",
            "cannot hold requests while a replica starts from zero",
            "use load_balancer: alb (with a hostname), or set scaling.min_replicas: 1",
            "nlb",
        )
    if not dep.endpoint.hostname:
        return Problem(
            "endpoint.hostname",
            "is required to scale a load-balanced endpoint from zero: the HTTP add-on "
            "routes requests by Host",
            "set the DNS name clients use, or set scaling.min_replicas: 1",
            None,
        )
    return None
