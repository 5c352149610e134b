"""Autoscaling as rendered: KEDA ScaledObjects on SGLang's metrics, scale from zero through the KEDA HTTP add-on,
validated against the upstream CRDs; the workload's replica count left to the autoscaler."""

from __future__ import annotations

import promql_parser
import pytest

from sgldeploy import autoscaling

from . import k8s_schemas
from .conftest import deployment, multi_node, render_stack, resources_of, write_stack

SCALED = "kubernetes:keda.sh/v1alpha1:ScaledObject"
HTTP_SCALED = "kubernetes:http.keda.sh/v1alpha1:HTTPScaledObject"
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm"}


def render(tmp_path, platform=None, **fields):
    return render_stack(
        write_stack(tmp_path, platform=platform or PLATFORM, deployments=[deployment(**fields)])
    )


def workload(plan):
    return resources_of(plan, "kubernetes:apps/v1:Deployment")[0]


@pytest.mark.parametrize(
    "metric,query",
    [
        ("queue-depth", "sglang:num_queue_reqs"),
        ("running-requests", "sglang:num_running_reqs"),
        ("gpu-utilization", "DCGM_FI_DEV_GPU_UTIL"),
    ],
)
def test_prometheus_triggers_follow_the_metric(tmp_path, metric, query):
    plan = render(
        tmp_path,
        scaling={
            "min_replicas": 1,
            "max_replicas": 4,
            "metric": metric,
            "target": 6,
            "scale_down_delay_seconds": 420,
        },
    )
    [scaled] = resources_of(plan, SCALED)
    assert k8s_schemas.validate(scaled.inputs, "1.33").startswith("crd ")
    spec = scaled.inputs["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 420
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "6"
    assert trigger["metadata"]["serverAddress"] == autoscaling.DEFAULT_PROMETHEUS
    assert query in trigger["metadata"]["query"] and 'namespace="llm"' in trigger["metadata"]["query"]
    promql_parser.parse(trigger["metadata"]["query"])
    assert resources_of(plan, HTTP_SCALED) == []
    assert workload(plan).ignore_changes == ["spec.replicas"]


@pytest.mark.parametrize("metric", ["cpu-utilization", "memory-utilization"])
def test_resource_triggers_for_utilisation(tmp_path, metric):
    plan = render(tmp_path, scaling={"min_replicas": 1, "max_replicas": 2, "metric": metric, "target": 70})
    [trigger] = resources_of(plan, SCALED)[0].inputs["spec"]["triggers"]
    assert trigger == {"type": metric.split("-")[0], "metricType": "Utilization", "metadata": {"value": "70"}}


def test_scale_from_zero_goes_through_the_http_add_on(tmp_path):
    plan = render(
        tmp_path,
        readiness="fast",
        cache={"storage": "none"},
        scaling={"min_replicas": 0, "max_replicas": 3, "target": 8, "idle_timeout_seconds": 600},
    )
    assert resources_of(plan, SCALED) == []
    [http] = resources_of(plan, HTTP_SCALED)
    assert k8s_schemas.validate(http.inputs, "1.33").startswith("crd ")
    spec = http.inputs["spec"]
    assert spec["replicas"] == {"min": 0, "max": 3} and spec["scaledownPeriod"] == 600
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "qwen",
        "service": "qwen",
        "port": 80,
    }
    assert spec["scalingMetric"] == {"concurrency": {"targetValue": 8}}
    assert "qwen-proxy.llm.svc.cluster.local" in spec["hosts"]
    wait = int(spec["timeouts"]["conditionWait"].rstrip("s"))
    assert wait == autoscaling.wait_seconds(
        plan.resolved.deployments[0].spec, plan.resolved.deployments[0].sizing
    )
    assert wait > 300  # a new GPU node, the image and the weights: minutes, not the add-on's 20 s default
    proxy = next(
        r.inputs for r in resources_of(plan, "kubernetes:core/v1:Service") if r.name.endswith("-proxy")
    )
    assert k8s_schemas.validate(proxy, "1.33")
    assert proxy["spec"] == {
        "type": "ExternalName",
        "externalName": autoscaling.INTERCEPTOR,
        "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
    }
    assert plan.recording.outputs["deployments"]["qwen"]["estimatedMonthlyCostMin"] == 0


def test_without_keda_or_its_http_add_on_replicas_stay_fixed(tmp_path):
    no_keda = render(
        tmp_path,
        platform={**PLATFORM, "addons": {"keda": False}},
        scaling={"min_replicas": 1, "max_replicas": 3},
    )
    assert resources_of(no_keda, SCALED) == [] and workload(no_keda).ignore_changes == []
    (tmp_path / "b").mkdir()
    no_http = render(
        tmp_path / "b",
        platform={**PLATFORM, "addons": {"keda_http": False}},
        scaling={"min_replicas": 0, "max_replicas": 3},
    )
    assert resources_of(no_http, HTTP_SCALED) == [] and resources_of(no_http, SCALED) == []
    assert workload(no_http).inputs["spec"]["replicas"] == 1
    from sgldeploy.plan import summary

    assert "min_replicas 0 needs the KEDA HTTP add-on" in summary(no_http)


def test_a_replica_spanning_nodes_scales_its_leader_worker_set(tmp_path):
    big = multi_node(scaling={"min_replicas": 1, "max_replicas": 2})
    plan = render_stack(
        write_stack(
            tmp_path,
            platform={**PLATFORM, "addons": {"leader_worker_set": True}},
            deployments=[big],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )
    [scaled] = resources_of(plan, SCALED)
    assert scaled.inputs["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
    lws = resources_of(plan, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")[0]
    assert lws.ignore_changes == ["spec.replicas"]


def test_autoscalers_wait_for_keda_and_the_workload(tmp_path):
    plan = render(tmp_path, scaling={"min_replicas": 0, "max_replicas": 2})
    by_name = {r.name: r for r in plan.recording.resources}
    http = resources_of(plan, HTTP_SCALED)[0]
    assert by_name["platform-addons-keda"].urn in http.dependencies
    assert by_name["platform-addons-keda-add-ons-http"].urn in http.dependencies
    assert (
        by_name["qwen-server-deployment"].urn in by_name["qwen-autoscaler"].dependencies
    )  # the workload first


def test_the_plan_says_what_the_first_request_waits(tmp_path):
    from sgldeploy.plan import plan_json, summary

    plan = render(tmp_path, scaling={"min_replicas": 0, "max_replicas": 2})
    replicas = plan_json(plan)["deployments"][0]["replicas"]
    assert replicas["running_when_idle"] == 0 and replicas["first_request_wait_seconds"] > 0
    assert f"the first request waits up to {replicas['first_request_wait_seconds']} s" in summary(plan)


def test_stopped_runs_nothing_and_its_pool_launches_nothing(tmp_path):
    plan = render(tmp_path, state="stopped", scaling={"min_replicas": 1, "max_replicas": 3})
    assert resources_of(plan, SCALED) == [] and resources_of(plan, HTTP_SCALED) == []
    assert workload(plan).inputs["spec"]["replicas"] == 0
    pool = resources_of(plan, "kubernetes:karpenter.sh/v1:NodePool")[0].inputs
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "0"}
    assert resources_of(plan, "kubernetes:core/v1:Service")  # clients' address stays
