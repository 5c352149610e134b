"""Endpoints as rendered: ALB Ingresses and NLB Services for the AWS Load Balancer Controller."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sgldeploy.offline.render import policy_resources
from sgldeploy.spec.problems import InvalidInput

from . import k8s_schemas
from .conftest import deployment, render_stack, resources_of, write_stack
from .test_policy import run as run_policy
from .upstream import upstream
from .variants import rendered_variants

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/abc-123"
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm", "tags": {"team": "ml"}}
ALWAYS = {"min_replicas": 1, "max_replicas": 2}


def render(tmp_path, **fields):
    return render_stack(write_stack(tmp_path, platform=PLATFORM, deployments=[deployment(**fields)]))


def ingress(plan):
    [found] = resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress")
    return found


def test_public_alb_with_tls_and_least_outstanding_requests(tmp_path):
    plan = render(
        tmp_path,
        scaling=ALWAYS,
        endpoint={
            "exposure": "public",
            "load_balancer": "alb",
            "tls_certificate_arn": CERT,
            "algorithm": "least-connections",
            "hostname": "llm.example.com",
            "health_check": {"path": "/ready", "interval_seconds": 10},
        },
    )
    obj = ingress(plan).inputs
    assert k8s_schemas.validate(obj, "1.33")
    a = obj["metadata"]["annotations"]
    assert a["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert a["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert a["alb.ingress.kubernetes.io/certificate-arn"] == CERT
    assert json.loads(a["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert a["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert a["alb.ingress.kubernetes.io/healthcheck-path"] == "/ready"
    assert a["alb.ingress.kubernetes.io/healthcheck-interval-seconds"] == "10"
    assert (
        "load_balancing.algorithm.type=least_outstanding_requests"
        in a["alb.ingress.kubernetes.io/target-group-attributes"]
    )
    assert a["alb.ingress.kubernetes.io/load-balancer-attributes"] == "idle_timeout.timeout_seconds=600"
    assert a["alb.ingress.kubernetes.io/tags"] == "team=ml"
    assert obj["metadata"]["namespace"] == "llm" and obj["spec"]["ingressClassName"] == "alb"
    rule = obj["spec"]["rules"][0]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "qwen", "port": {"number": 80}}}
    assert run_policy(policy_resources(plan.recording), "public-endpoint-secured") == []


def test_internal_alb_without_tls_and_sticky_sessions(tmp_path):
    plan = render(tmp_path, scaling=ALWAYS, endpoint={"exposure": "internal", "sticky_sessions": True})
    a = ingress(plan).inputs["metadata"]["annotations"]
    assert a["alb.ingress.kubernetes.io/scheme"] == "internal"
    assert json.loads(a["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}]
    assert "certificate-arn" not in " ".join(a)
    assert "stickiness.enabled=true" in a["alb.ingress.kubernetes.io/target-group-attributes"]


def test_public_alb_without_tls_is_blocked_by_the_policy_pack(tmp_path):
    plan = render(tmp_path, scaling=ALWAYS, endpoint={"exposure": "public"})
    messages = [v.message for v in run_policy(policy_resources(plan.recording), "public-endpoint-secured")]
    assert any("without TLS" in m for m in messages)
    assert any(
        "internet-facing ALB Ingress without alb.ingress.kubernetes.io/certificate-arn" in m for m in messages
    )


def test_nlb_with_tls_and_source_ip_stickiness(tmp_path):
    plan = render(
        tmp_path,
        scaling=ALWAYS,
        endpoint={
            "exposure": "public",
            "load_balancer": "nlb",
            "tls_certificate_arn": CERT,
            "algorithm": "ip-hash",
        },
    )
    assert resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress") == []
    service = next(
        r.inputs for r in resources_of(plan, "kubernetes:core/v1:Service") if r.name.endswith("-nlb")
    )
    assert k8s_schemas.validate(service, "1.33")
    a = service["metadata"]["annotations"]
    assert a["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert a["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] == CERT
    # the platform's tags reach the NLB under the controller's annotation: comma-separated key=value pairs
    pairs = a["service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags"].split(",")
    assert dict(pair.split("=", 1) for pair in pairs)["team"] == "ml"
    assert (
        "stickiness.type=source_ip"
        in a["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
    )
    spec = service["spec"]
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert spec["ports"] == [{"name": "http", "port": 443, "targetPort": "http", "protocol": "TCP"}]
    assert spec["selector"] == {"app.kubernetes.io/instance": "qwen", "app.kubernetes.io/component": "server"}


def test_a_deployment_at_zero_is_reached_through_the_interceptor(tmp_path):
    plan = render(
        tmp_path,
        scaling={"min_replicas": 0, "max_replicas": 2},
        endpoint={"exposure": "internal", "hostname": "llm.internal.example.com"},
    )
    obj = ingress(plan).inputs
    assert obj["metadata"]["namespace"] == "keda"
    assert obj["spec"]["rules"][0]["http"]["paths"][0]["backend"] == {
        "service": {"name": "keda-add-ons-http-interceptor-proxy", "port": {"number": 8080}}
    }
    http = resources_of(plan, "kubernetes:http.keda.sh/v1alpha1:HTTPScaledObject")[0].inputs["spec"]
    assert "llm.internal.example.com" in http["hosts"]
    assert interceptor_health_check_problems(plan, "test") == []


@pytest.mark.parametrize(
    "endpoint,field,fragment",
    [
        (
            {"exposure": "public", "load_balancer": "nlb", "tls_certificate_arn": CERT},
            "endpoint.load_balancer",
            "cannot hold requests while a replica starts from zero (got 'nlb')",
        ),
        (
            {"exposure": "internal"},
            "endpoint.hostname",
            "is required to scale a load-balanced endpoint from zero",
        ),
    ],
)
def test_endpoints_that_cannot_wake_a_deployment_are_refused(tmp_path, endpoint, field, fragment):
    with pytest.raises(InvalidInput) as err:
        render(tmp_path, scaling={"min_replicas": 0, "max_replicas": 2}, endpoint=endpoint)
    [line] = [p.line() for p in err.value.problems]
    assert line.startswith(f"error: sgldeploy:deployments[0].{field}: {fragment}")


def test_cluster_endpoints_get_no_load_balancer_and_endpoints_wait_for_the_controller(tmp_path):
    plain = render(tmp_path, scaling=ALWAYS)
    assert resources_of(plain, "sgldeploy:traffic:Endpoint") == []
    (tmp_path / "b").mkdir()
    plan = render(tmp_path / "b", scaling=ALWAYS, endpoint={"exposure": "internal"})
    controller = next(
        r for r in plan.recording.resources if r.name == "platform-addons-aws-load-balancer-controller"
    )
    assert (
        controller.urn in ingress(plan).dependencies
        or controller.urn in resources_of(plan, "sgldeploy:traffic:Endpoint")[0].dependencies
    )


def test_a_stopped_deployment_keeps_its_alb_answering_503_with_a_clear_body(tmp_path):
    plan = render(tmp_path, state="stopped", scaling=ALWAYS, endpoint={"exposure": "public"})
    obj = ingress(plan).inputs
    assert k8s_schemas.validate(obj, "1.33")
    backend = obj["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "stopped", "port": {"name": "use-annotation"}}
    action = json.loads(obj["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.stopped"])
    assert action["type"] == "fixed-response"
    response = action["fixedResponseConfig"]
    assert response["statusCode"] == "503" and response["contentType"] == "application/json"
    assert len(response["messageBody"]) <= 1024  # the ALB's limit for a fixed response body
    error = json.loads(response["messageBody"])["error"]
    assert "qwen is stopped" in error["message"] and "state: running" in error["message"]
    # Running again, the same Ingress sends traffic to the model's Service.
    running = ingress(render(tmp_path / "running", scaling=ALWAYS, endpoint={"exposure": "public"})).inputs
    assert running["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "qwen"
    assert "alb.ingress.kubernetes.io/actions.stopped" not in running["metadata"]["annotations"]


# ---- the ALB's health checks of the HTTP add-on's interceptor -------------------------------------------
#
# The ALB's targets behind the interceptor are the interceptor's pods (ip targets of the proxy Service). Checked
# on the proxy port, a check is routed by Host: an unknown host gets 404 (kedacore/http-add-on v0.15.0,
# interceptor/middleware/routing.go, Routing.ServeHTTP: `ir == nil` → handler.NewStatic(http.StatusNotFound)),
# so every target is unhealthy; a check carrying the deployment's host would go through the Counting middleware
# (interceptor/proxy.go BuildProxyHandler: NewCounting inside NewRouting, queueCounter.Increase), count as a
# pending request and wake the model every interval. The admin server (interceptor/main.go runAdminServer on
# KEDA_HTTP_ADMIN_PORT; interceptor/admin.go BuildAdminHandler) is a mux of its own with /readyz (handler.Probe:
# 200 once the routing table synced, 503 while draining: interceptor/handler/probe.go), /livez and /queue (a read:
# pkg/queue/queue_rpc.go newSizeHandler): no routing, no counting middleware, so a check there neither reaches
# the workload nor adds to the metric the scaler reads. Its port is the chart's `interceptor.admin.port`
# (kedacore/charts c4b92e9e http-add-on/templates/interceptor/deployment.yaml: KEDA_HTTP_ADMIN_PORT and the
# container port `admin`, whose readinessProbe is /readyz). The AWS Load Balancer Controller (v3.5.0,
# pkg/ingress/model_build_target_group.go buildTargetGroupHealthCheckPort) takes a numeric healthcheck-port as is
# for ip targets; a named one must be a port of the backend Service, and the proxy Service has only `proxy`.
def keda_http_chart() -> Path:
    """The HTTP add-on chart's default values, in the upstream cache (read when a test runs, not at import)."""
    return upstream("data", "charts", "keda-add-ons-http-0.15.0", "values.yaml")


INTERCEPTOR_READINESS = "/readyz"  # interceptor/admin.go @v0.15.0: mux.Handle("/readyz", probeHandler)
HTTP_RELEASE_CHART = "keda-add-ons-http"


def interceptor_ports(plan) -> tuple[int, int]:
    """(proxy, admin) ports: the chart's defaults, or what the release sets."""
    interceptor = yaml.safe_load(keda_http_chart().read_text())["interceptor"]
    proxy, admin = interceptor["proxy"]["port"], interceptor["admin"]["port"]
    for release in resources_of(plan, "kubernetes:helm.sh/v3:Release"):
        if release.inputs["chart"] == HTTP_RELEASE_CHART:
            values = (release.inputs.get("values") or {}).get("interceptor") or {}
            proxy = (values.get("proxy") or {}).get("port", proxy)
            admin = (values.get("admin") or {}).get("port", admin)
    return int(proxy), int(admin)


def interceptor_health_check_problems(plan, variant: str) -> list[str]:
    proxy, admin = interceptor_ports(plan)
    assert proxy != admin
    problems = []
    for found in resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress"):
        backend = found.inputs["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        annotations = found.inputs["metadata"]["annotations"]
        port = annotations.get("alb.ingress.kubernetes.io/healthcheck-port", "traffic-port")
        path = annotations["alb.ingress.kubernetes.io/healthcheck-path"]
        if backend["name"] == "keda-add-ons-http-interceptor-proxy":
            assert backend["port"] == {"number": proxy}, f"{variant} {found.name}"
            if (port, path) != (str(admin), INTERCEPTOR_READINESS):
                problems.append(
                    f"{variant} {found.name}: the ALB checks the interceptor on {port} {path}, "
                    f"not its admin server's {admin} {INTERCEPTOR_READINESS}"
                )
        elif port != "traffic-port":  # the model's (or router's) Service: checked where traffic goes
            problems.append(f"{variant} {found.name}: health check port {port} is not the traffic port")
    return problems


def test_every_alb_in_front_of_the_interceptor_checks_its_admin_readiness_never_the_proxy():
    problems, through = [], 0
    for variant, plan in rendered_variants().items():
        problems += interceptor_health_check_problems(plan, variant)
        through += sum(
            r.inputs["metadata"]["namespace"] == "keda"
            for r in resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress")
        )
    assert through >= 1  # the scale-from-zero variant reaches this path
    assert not problems, "\n".join(problems)


def test_nothing_sgldeploy_declares_closes_the_interceptors_admin_port():
    """A NetworkPolicy selects pods of its own namespace only, so one blocking the ALB's checks of the
    interceptor would have to live in the add-on's namespace; the chart declares none (http-add-on/templates
    @c4b92e9e has no NetworkPolicy, and its values no switch for one)."""
    assert "networkpolic" not in keda_http_chart().read_text().lower()
    for variant, plan in rendered_variants().items():
        namespaces = {
            r.inputs["namespace"]
            for r in resources_of(plan, "kubernetes:helm.sh/v3:Release")
            if r.inputs["chart"] == HTTP_RELEASE_CHART
        } or {"keda"}
        for policy in resources_of(plan, "kubernetes:networking.k8s.io/v1:NetworkPolicy"):
            assert policy.inputs["metadata"]["namespace"] not in namespaces, f"{variant} {policy.name}"


def test_a_router_at_zero_is_checked_through_the_interceptor_too(tmp_path):
    plan = render(
        tmp_path,
        scaling={"min_replicas": 0, "max_replicas": 2},
        endpoint={"exposure": "internal", "hostname": "llm.internal.example.com", "algorithm": "cache-aware"},
    )
    assert ingress(plan).inputs["metadata"]["namespace"] == "keda"
    assert interceptor_health_check_problems(plan, "router at zero") == []


@pytest.mark.parametrize("min_replicas, refused", [(0, True), (1, False)])
def test_an_nlb_is_refused_exactly_when_the_deployment_may_sleep_at_zero(tmp_path, min_replicas, refused):
    """An NLB (layer 4) cannot hold a request while a replica starts, nor go through the interceptor."""
    fields = {
        "scaling": {"min_replicas": min_replicas, "max_replicas": 2},
        "endpoint": {"exposure": "internal", "load_balancer": "nlb", "hostname": "llm.internal.example.com"},
    }
    if refused:
        with pytest.raises(InvalidInput) as err:
            render(tmp_path, **fields)
        [line] = [p.line() for p in err.value.problems]
        assert line.startswith("error: sgldeploy:deployments[0].endpoint.load_balancer: cannot hold requests")
        return
    plan = render(tmp_path, **fields)
    [nlb] = [r for r in resources_of(plan, "kubernetes:core/v1:Service") if r.name.endswith("-nlb")]
    assert nlb.inputs["spec"]["type"] == "LoadBalancer"
    assert resources_of(plan, "kubernetes:http.keda.sh/v1alpha1:HTTPScaledObject") == []
