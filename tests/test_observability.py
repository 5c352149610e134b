"""Metrics scrape, alerts and dashboard: valid against the Prometheus operator CRDs, PromQL that parses, and
metric names SGLang 0.5.23 really exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import promql_parser
import pytest

from sgldeploy import observability
from sgldeploy.spec import DeploymentSpec

from . import k8s_schemas
from .conftest import deployment, render_stack, resources_of, write_stack
from .test_sglang_args import SGLANG_PYTHON

MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm"}


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
    rule = resources_of(plan, RULE)[0].inputs
    dash = json.loads(
        next(iter(resources_of(plan, "kubernetes:core/v1:ConfigMap")[0].inputs["data"].values()))
    )
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]] + [
        t["expr"] for p in dash["panels"] for t in p["targets"]
    ]


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
    dep = DeploymentSpec.model_validate(
        deployment(observability={"alerts": {"p99_latency_seconds": None, "queue_depth": None}})
    )
    names = {r["alert"] for r in observability.prometheus_rule_spec(dep, "llm")["groups"][0]["rules"]}
    assert "SglangHighLatency" not in names and "SglangQueueDepth" not in names


def test_every_query_is_valid_promql_for_this_deployment_only(plan):
    for expr in exprs(plan):
        promql_parser.parse(expr)  # raises ValueError on invalid PromQL
        assert 'namespace="llm"' in expr
    with pytest.raises(ValueError):
        promql_parser.parse("sum(sglang:num_queue_reqs{")


def test_metric_names_exist_in_sglang_0_5_23(plan):
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"SGLang is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    where = subprocess.run(
        [
            SGLANG_PYTHON,
            "-c",
            "import importlib.util; print(importlib.util.find_spec('sglang').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    source = "".join(
        p.read_text() for p in (Path(where.stdout.strip()) / "srt" / "observability").glob("*.py")
    )
    used = {m.removesuffix("_bucket") for expr in exprs(plan) for m in re.findall(r"sglang:[a-z0-9_]+", expr)}
    assert used == set(observability.METRICS.values())
    for name in used:
        assert f'"{name}"' in source, f"{name} is not a metric SGLang 0.5.23 exports"


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
