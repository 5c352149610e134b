"""The SGLang router for `algorithm: cache-aware`, as rendered: arguments accepted by sglang-router's own parser,
discovery that finds exactly the serving pods, read-only RBAC, and the endpoint, autoscaler and NetworkPolicies
pointing at it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from sgldeploy.builders import router
from sgldeploy.builders.sglang_args import SERVER_PORT
from sgldeploy.offline.engine import OFFLINE_VPC_CIDR
from sgldeploy.spec import ROUTER_IMAGE

from . import k8s_schemas
from .conftest import ROOT, deployment, multi_node, render_stack, resources_of, write_stack
from .test_sglang_args import SGLANG_PYTHON

PARSER = Path(__file__).parent / "contract" / "router_parse.py"
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm", "addons": {"leader_worker_set": True}}
CACHE_AWARE = {"exposure": "internal", "algorithm": "cache-aware"}
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def router_parse(args: list[str]) -> dict:
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"sglang-router is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    done = subprocess.run(
        [SGLANG_PYTHON, str(PARSER), json.dumps(args)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def render(tmp_path, *, extra=None, **fields):
    return render_stack(
        write_stack(tmp_path, platform=PLATFORM, deployments=[deployment(**fields)], extra=extra)
    )


def named(plan, type_: str, name: str) -> dict:
    [found] = [r.inputs for r in resources_of(plan, type_) if r.inputs["metadata"]["name"] == name]
    k8s_schemas.validate(found, "1.33")
    return found


@pytest.fixture(scope="module")
def cache_aware(tmp_path_factory):
    return render(
        tmp_path_factory.mktemp("router"),
        scaling={"min_replicas": 1, "max_replicas": 3},
        endpoint={**CACHE_AWARE, "router": {"replicas": 2, "extra_args": ["--cache-threshold", "0.5"]}},
    )


def test_router_image_matches_the_parser_the_tests_use():
    pinned = re.search(r"^SGLANG_ROUTER_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert ROUTER_IMAGE == f"lmsysorg/sgl-model-gateway:v{pinned}"


def test_arguments_parse_with_sglang_routers_own_parser(cache_aware):
    container = named(cache_aware, DEPLOYMENT, "qwen-router")["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace(f"$({router.API_KEY_ENV})", "key-from-the-secret") for a in container["args"]]
    parsed = router_parse(args)
    assert parsed["policy"] == "cache_aware"
    assert parsed["service_discovery"] is True
    assert parsed["selector"] == {
        "app.kubernetes.io/instance": "qwen",
        "app.kubernetes.io/component": "server",
    }
    assert parsed["service_discovery_namespace"] == "llm"
    assert parsed["service_discovery_port"] == SERVER_PORT
    assert (parsed["host"], parsed["port"]) == ("0.0.0.0", router.ROUTER_PORT)
    # A burst of what 3 replicas × 4 running requests take, no queue: past it, 429 at once.
    assert parsed["max_concurrent_requests"] == 12 and parsed["queue_size"] == 0
    assert parsed["api_key"] == "key-from-the-secret"
    assert parsed["cache_threshold"] == 0.5  # endpoint.router.extra_args, appended
    assert parsed["health_check_endpoint"] == "/health"
    assert parsed["prometheus_port"] == router.METRICS_PORT
    [key] = container["env"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "qwen-api-key", "key": "API_KEY"}
    assert container["image"] == ROUTER_IMAGE


def test_discovery_finds_the_serving_pods_and_nothing_else(cache_aware):
    parsed_selector = dict(
        a.split("=", 1)
        for a in named(cache_aware, DEPLOYMENT, "qwen-router")["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
        if "=" in a and not a.startswith("-")
    )
    server_pods = named(cache_aware, DEPLOYMENT, "qwen")["spec"]["template"]["metadata"]["labels"]
    router_pods = named(cache_aware, DEPLOYMENT, "qwen-router")["spec"]["template"]["metadata"]["labels"]
    assert all(server_pods.get(k) == v for k, v in parsed_selector.items())
    assert not all(router_pods.get(k) == v for k, v in parsed_selector.items())


def test_rbac_is_read_only_on_pods_and_bound_to_the_routers_account(cache_aware):
    role = named(cache_aware, "kubernetes:rbac.authorization.k8s.io/v1:Role", "qwen-router")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = named(cache_aware, "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "qwen-router")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "qwen-router",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qwen-router", "namespace": "llm"}]
    pod = named(cache_aware, DEPLOYMENT, "qwen-router")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "qwen-router" and pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    account = named(cache_aware, "kubernetes:core/v1:ServiceAccount", "qwen-router")
    assert account["automountServiceAccountToken"] is False


def test_the_load_balancer_and_monitoring_point_at_the_router(cache_aware):
    ingress = named(cache_aware, "kubernetes:networking.k8s.io/v1:Ingress", "qwen")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "qwen-router", "port": {"number": 80}}
    assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"] == "/readiness"
    service = named(cache_aware, "kubernetes:core/v1:Service", "qwen-router")
    router_pods = named(cache_aware, DEPLOYMENT, "qwen-router")["spec"]["template"]["metadata"]["labels"]
    assert all(router_pods[k] == v for k, v in service["spec"]["selector"].items())
    monitor = named(cache_aware, "kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "qwen-router")
    assert all(
        service["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    pdb = named(cache_aware, "kubernetes:policy/v1:PodDisruptionBudget", "qwen-router")
    assert pdb["spec"]["maxUnavailable"] == 1  # two router pods


def test_network_policies_move_the_load_balancers_path_to_the_router(cache_aware):
    server = named(cache_aware, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "qwen-server-ingress")
    assert not any("ipBlock" in peer for rule in server["spec"]["ingress"] for peer in rule["from"])
    front = named(cache_aware, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "qwen-router-ingress")
    traffic, metrics = front["spec"]["ingress"]
    assert {"ipBlock": {"cidr": OFFLINE_VPC_CIDR}} in traffic["from"]
    assert traffic["ports"] == [{"protocol": "TCP", "port": router.ROUTER_PORT}]
    assert metrics["ports"] == [{"protocol": "TCP", "port": router.METRICS_PORT}]


def test_scale_from_zero_wakes_through_the_router(tmp_path):
    plan = render(
        tmp_path,
        readiness="cold-start",
        scaling={"min_replicas": 0, "max_replicas": 2},
        endpoint={**CACHE_AWARE, "hostname": "llm.example.com"},
    )
    [scaled] = resources_of(plan, "kubernetes:http.keda.sh/v1alpha1:HTTPScaledObject")
    assert scaled.inputs["spec"]["scaleTargetRef"]["service"] == "qwen-router"
    assert scaled.inputs["spec"]["scaleTargetRef"]["name"] == "qwen"  # it still scales the replicas
    probe = named(plan, DEPLOYMENT, "qwen-router")["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"
    ]
    assert probe["httpGet"]["path"] == "/readiness"  # the interceptor holds requests until a replica is up


def test_multi_node_replicas_are_discovered_by_their_leaders(tmp_path):
    big = multi_node(scaling={"min_replicas": 1, "max_replicas": 1}, endpoint=CACHE_AWARE)
    plan = render_stack(
        write_stack(
            tmp_path, platform=PLATFORM, deployments=[big], extra={"sgldeploy:hfToken": {"secure": "v1:x"}}
        )
    )
    args = named(plan, DEPLOYMENT, "big-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert router_parse(args)["selector"]["sgldeploy.io/role"] == "leader"


@pytest.mark.parametrize(
    "endpoint, state",
    [({"exposure": "internal", "algorithm": "least-connections"}, "running"), (CACHE_AWARE, "stopped")],
    ids=["not cache-aware", "stopped"],
)
def test_no_router_unless_cache_aware_and_running(tmp_path, endpoint, state):
    plan = render(tmp_path, scaling={"min_replicas": 1, "max_replicas": 2}, endpoint=endpoint, state=state)
    assert not [r for r in resources_of(plan, DEPLOYMENT) if r.inputs["metadata"]["name"].endswith("-router")]
    assert not resources_of(plan, "kubernetes:rbac.authorization.k8s.io/v1:Role")


def test_the_router_can_front_other_algorithms_when_asked(tmp_path):
    plan = render(
        tmp_path,
        scaling={"min_replicas": 1, "max_replicas": 2},
        endpoint={"exposure": "internal", "algorithm": "least-connections", "router": {"enabled": True}},
    )
    args = named(plan, DEPLOYMENT, "qwen-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [a.replace(f"$({router.API_KEY_ENV})", "k") for a in args]
    assert router_parse(args)["policy"] == "power_of_two"


@pytest.mark.parametrize(
    "endpoint, what",
    [
        ({"algorithm": "ip-hash", "router": {"enabled": True}}, "no router policy for algorithm ip-hash"),
        ({"algorithm": "cache-aware", "router": {"enabled": False}}, "cannot be false with cache-aware"),
    ],
    ids=["ip-hash", "cache-aware without it"],
)
def test_router_settings_it_cannot_honour_are_refused(tmp_path, endpoint, what):
    from sgldeploy.spec.problems import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        render(tmp_path, endpoint={"exposure": "internal", **endpoint})
    lines = [p.line() for p in caught.value.problems]
    assert any(
        line.startswith("error: sgldeploy:deployments[0].endpoint.router.enabled") and what in line
        for line in lines
    ), lines
