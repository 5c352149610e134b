"""Autoscaling as rendered: KEDA ScaledObjects on SGLang's metrics, scale from zero through the KEDA HTTP add-on,
validated against the upstream CRDs; the workload's replica count left to the autoscaler."""

from __future__ import annotations

import promql_parser
import pytest

from sgldeploy.builders import autoscaler

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
    assert behavior == {
        # README: the spec's delay is the scale-down stabilisation window, then one replica a minute at most.
        "scaleDown": {
            "stabilizationWindowSeconds": 420,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
        # A queue forming adds replicas at once: no window on the way up (the HPA's own default for scale-up).
        "scaleUp": {"stabilizationWindowSeconds": 0},
    }
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "6"
    assert trigger["metadata"]["serverAddress"] == autoscaler.DEFAULT_PROMETHEUS
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
    # README: clients call Host `<name>-proxy.<namespace>.svc`; the fully qualified name routes too.
    assert spec["hosts"] == ["qwen-proxy.llm.svc", "qwen-proxy.llm.svc.cluster.local"]
    wait = int(spec["timeouts"]["conditionWait"].rstrip("s"))
    # README: the cold start on a new node plus a third. By hand from the committed lock: Qwen 7B's
    # 7,615,616,512 bf16 parameters (2 bytes each), pulled from the Hub (no cache) at 250 MB/s, then copied into
    # GPU memory at 1,400 MB/s; after a new node (90 s) and the image pull (70 s); then imports (20 s), the
    # engine's start (15 s) and CUDA graph capture (30 s) (sgldeploy/data/cold-start.csv).
    mb = round(7_615_616_512 * 2 / 2**30, 2) * 2**30 / 1e6  # the plan's weights, 14.19 GiB, in MB
    cold_start = 90 + 70 + round(mb / 250) + round(mb / 1400) + 20 + 15 + 30
    assert cold_start == 297
    assert wait == 396 == cold_start * 4 // 3  # 297 + 99: a third more, rounded down
    assert wait > 300  # a new GPU node, the image and the weights: minutes, not the add-on's 20 s default
    proxy = next(
        r.inputs for r in resources_of(plan, "kubernetes:core/v1:Service") if r.name.endswith("-proxy")
    )
    assert k8s_schemas.validate(proxy, "1.33")
    assert proxy["spec"] == {
        "type": "ExternalName",
        "externalName": autoscaler.INTERCEPTOR,
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
    from sgldeploy.offline.plan_text import summary

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
    from sgldeploy.offline.plan_json import plan_json
    from sgldeploy.offline.plan_text import summary

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


def test_keda_polls_as_often_as_prometheus_scrapes_and_waits_for_headers_as_long_as_the_alb():
    """Polling sooner than the ServiceMonitor scrapes reads the same sample again, later reacts a scrape late;
    a non-streamed completion sends its headers only when done, so the interceptor waits for them as long as
    the ALB lets a silent connection stay open (its idle timeout, README: 600 s)."""
    from .variants import rendered_variants

    polled = waited = 0
    for variant, plan in rendered_variants().items():
        scrapes = {
            e["interval"] for r in resources_of(plan, "kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
            for e in r.inputs["spec"]["endpoints"]
        }  # fmt: skip
        for scaled in resources_of(plan, SCALED) if scrapes else []:
            assert scrapes == {f"{scaled.inputs['spec']['pollingInterval']:g}s"}, variant
            polled += 1
        idle = {
            attribute.split("=")[1]
            for r in resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress")
            for attribute in r.inputs["metadata"]["annotations"][
                "alb.ingress.kubernetes.io/load-balancer-attributes"
            ].split(",")
            if attribute.startswith("idle_timeout.timeout_seconds=")
        }
        for http in resources_of(plan, HTTP_SCALED):
            if idle:
                assert {http.inputs["spec"]["timeouts"]["responseHeader"]} == {f"{s}s" for s in idle}, variant
                waited += 1
    assert polled >= 4 and waited >= 1


@pytest.mark.parametrize(
    "target, concurrency",
    [
        (0.5, 1),  # below one request: still one, since zero in flight per replica would never be met
        (1, 1),  # at one
        (2.7, 2),  # above: whole requests, never more than the target per replica (rounded down)
    ],
)
def test_requests_in_flight_per_replica_are_whole_and_at_least_one(tmp_path, target, concurrency):
    plan = render(
        tmp_path,
        readiness="fast",
        cache={"storage": "none"},
        scaling={"min_replicas": 0, "max_replicas": 3, "target": target},
    )
    [http] = resources_of(plan, HTTP_SCALED)
    assert http.inputs["spec"]["scalingMetric"] == {"concurrency": {"targetValue": concurrency}}


@pytest.mark.parametrize(
    "low, high, autoscaled",
    [(2, 1 + 2, True), (2, 2, False)],  # one apart, then equal: nothing to scale, the count stays fixed
)
def test_equal_replica_bounds_leave_nothing_to_scale(tmp_path, low, high, autoscaled):
    plan = render(tmp_path, scaling={"min_replicas": low, "max_replicas": high})
    assert bool(resources_of(plan, SCALED)) is autoscaled and resources_of(plan, HTTP_SCALED) == []
    assert workload(plan).inputs["spec"]["replicas"] == low
    assert workload(plan).ignore_changes == (["spec.replicas"] if autoscaled else [])
