"""Metrics scrape, alerts and dashboard: valid against the Prometheus operator CRDs, PromQL that parses, and
metric names SGLang 0.5.23 and kube-state-metrics really export. What the queries do on real series is
tests/test_promtool.py's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import promql_parser
import pytest

from sgldeploy.builders import observability
from sgldeploy.spec import DeploymentSpec

from . import k8s_schemas
from .conftest import deployment, render_stack, resources_of, write_stack
from .test_sglang_args import SGLANG_PYTHON, sglang_source
from .variants import rendered_variants

MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm"}
KSM_DOCUMENTED = {
    # kubernetes/kube-state-metrics docs/metrics/workload/deployment-metrics.md @06d1481 (all STABLE)
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    # docs/metrics/workload/statefulset-metrics.md @098e785 (STABLE)
    "kube_statefulset_replicas",
    "kube_statefulset_status_replicas_ready",
    # docs/metrics/workload/pod-metrics.md @04ee634 (STABLE)
    "kube_pod_owner",
    "kube_pod_status_phase",
    "kube_pod_status_ready",
}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return render_stack(
        write_stack(
            tmp_path_factory.mktemp("obs"),
            platform=PLATFORM,
            deployments=[
                deployment(
                    scaling={"max_replicas": 3},
                    observability={
                        "alerts": {"p99_latency_seconds": 20, "error_rate_percent": 2, "queue_depth": 16}
                    },
                )
            ],
        )
    )


def exprs(plan) -> list[str]:
    """Every query the plan declares: alerts, dashboard panels, KEDA's Prometheus triggers."""
    out = []
    for r in plan.recording.resources:
        if r.type == RULE:
            out += [rule["expr"] for g in r.inputs["spec"]["groups"] for rule in g["rules"]]
        if r.type == "kubernetes:core/v1:ConfigMap" and r.inputs["metadata"]["name"].endswith("-dashboard"):
            board = json.loads(next(iter(r.inputs["data"].values())))
            out += [t["expr"] for p in board["panels"] for t in p["targets"]]
        if r.type == "kubernetes:keda.sh/v1alpha1:ScaledObject":
            out += [t["metadata"]["query"] for t in r.inputs["spec"]["triggers"] if t["type"] == "prometheus"]
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names of every selector in the query, from its syntax tree."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        for attr in ("lhs", "rhs", "expr", "args", "vector_selector", "param"):
            child = getattr(node, attr, None)
            for c in child if isinstance(child, list) else [child] if child is not None else []:
                walk(c)

    walk(promql_parser.parse(expr))
    return names


def every_query() -> list[str]:
    return [e for plan in rendered_variants().values() for e in exprs(plan)]


def test_scrape_alerts_and_dashboard_validate(plan):
    for type_ in (MONITOR, RULE, "kubernetes:core/v1:ConfigMap"):
        [r] = resources_of(plan, type_)
        assert k8s_schemas.validate(r.inputs, "1.33")
    monitor = resources_of(plan, MONITOR)[0].inputs["spec"]
    service = resources_of(plan, "kubernetes:core/v1:Service")[0].inputs
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert service["spec"]["ports"][0]["name"] == "http"
    dashboard = resources_of(plan, "kubernetes:core/v1:ConfigMap")[0].inputs
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_alerts_follow_the_spec_thresholds(plan):
    rules = {r["alert"]: r for r in resources_of(plan, RULE)[0].inputs["spec"]["groups"][0]["rules"]}
    assert set(rules) == {
        "SglangHighLatency",
        "SglangErrorRate",
        "SglangQueueDepth",
        "SglangAtMaxReplicas",
        "SglangPodsNotReady",
    }
    assert rules["SglangHighLatency"]["expr"].endswith("> 20")
    assert (
        rules["SglangErrorRate"]["expr"].endswith("> 2")
        and rules["SglangErrorRate"]["labels"]["severity"] == "critical"
    )
    assert rules["SglangQueueDepth"]["expr"].endswith("> 16")
    assert rules["SglangAtMaxReplicas"]["expr"].endswith(">= 3")
    sizing = plan.loaded.deployments[0].sizing
    dep = DeploymentSpec.model_validate(
        deployment(observability={"alerts": {"p99_latency_seconds": None, "queue_depth": None}})
    )
    w = observability.workloads(dep, "llm", multi_node=False)
    names = {r["alert"] for r in observability.prometheus_rule_spec(dep, w, sizing)["groups"][0]["rules"]}
    assert "SglangHighLatency" not in names and "SglangQueueDepth" not in names
    # min = max: always at max, nothing to raise
    fixed = DeploymentSpec.model_validate(deployment(scaling={"min_replicas": 2, "max_replicas": 2}))
    names = {r["alert"] for r in observability.prometheus_rule_spec(fixed, w, sizing)["groups"][0]["rules"]}
    assert "SglangAtMaxReplicas" not in names


def test_pods_not_ready_waits_out_the_rollout_deadline_never_less_than_15_minutes(plan):
    rules = {r["alert"]: r for r in resources_of(plan, RULE)[0].inputs["spec"]["groups"][0]["rules"]}
    deadline = resources_of(plan, "kubernetes:apps/v1:Deployment")[0].inputs["spec"][
        "progressDeadlineSeconds"
    ]
    minutes = int(rules["SglangPodsNotReady"]["for"].removesuffix("m"))
    assert (minutes - 1) * 60 < max(deadline, 15 * 60) <= minutes * 60


def test_every_query_is_valid_promql_for_this_deployment_only(plan):
    for expr in exprs(plan):
        promql_parser.parse(expr)  # raises ValueError on invalid PromQL
        assert expr.count('namespace="llm"') == len(re.findall(r"[a-z_:]+\{", expr)), expr
    with pytest.raises(ValueError):
        promql_parser.parse("sum(sglang:num_queue_reqs{")


def test_metric_names_exist_in_sglang_0_5_23(plan):
    source = "".join(p.read_text() for p in (sglang_source() / "srt" / "observability").glob("*.py"))
    used = {name for expr in every_query() for name in metric_names(expr)}
    sglang = {n.removesuffix("_bucket").removesuffix("_count") for n in used if n.startswith("sglang:")}
    assert sglang == set(observability.METRICS.values())
    for name in sglang:
        assert f'"{name}"' in source, f"{name} is not a metric SGLang 0.5.23 exports"
    assert used - {n for n in used if n.startswith("sglang:")} <= KSM_DOCUMENTED


def test_http_responses_carry_the_labels_the_error_rate_reads(plan):
    """SGLang labels its HTTP counter by route, status and method; the ServiceMonitor's `endpoint` target label
    renames the route to `exported_endpoint`, which the error-rate query must read."""
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"SGLang is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    where = subprocess.run(
        [SGLANG_PYTHON, "-c", "import sglang.srt.observability.http_request_metrics as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    source = Path(where.stdout.strip()).read_text()
    assert 'labelnames=["endpoint", "status_code", "method"]' in source
    [error_rate] = [e for e in exprs(plan) if "status_code" in e and ">" in e]
    assert "exported_endpoint" in error_rate and 'status_code=~"5.."' in error_rate


def test_nothing_to_scrape_without_metrics_or_prometheus(tmp_path):
    off = render_stack(
        write_stack(tmp_path, platform=PLATFORM, deployments=[deployment(observability={"metrics": False})])
    )
    assert resources_of(off, MONITOR) == [] and resources_of(off, RULE) == []
    args = resources_of(off, "kubernetes:apps/v1:Deployment")[0].inputs["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--enable-metrics" not in args["args"]
    (tmp_path / "b").mkdir()
    no_prometheus = render_stack(
        write_stack(
            tmp_path / "b", platform={**PLATFORM, "addons": {"prometheus": False}}, deployments=[deployment()]
        )
    )
    assert resources_of(no_prometheus, MONITOR) == []


def test_monitoring_waits_for_the_prometheus_operator_it_installs(plan):
    release = next(r for r in plan.recording.resources if r.name == "platform-addons-kube-prometheus-stack")
    for type_ in (MONITOR, RULE):
        assert release.urn in resources_of(plan, type_)[0].dependencies
