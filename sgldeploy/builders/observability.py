"""Metrics, alerts and a dashboard per deployment, on SGLang 0.5.23's own metric names
(../shared/reference/sglang.md §3) and kube-state-metrics' series. Pure: the ServiceMonitor and
PrometheusRule specs, the dashboard JSON.

What each query selects, and why, from the systems that produce the series:

- SGLang's series carry the target labels the Prometheus operator adds to a ServiceMonitor's targets
  (`namespace`, `service`, `pod`, `container`, `endpoint` = the port's name, `job` = the Service's name,
  `instance`; prometheus-operator pkg/prometheus/promcfg.go @0022663, generateServiceMonitorConfig), so
  `namespace` and `service` pick one deployment's Services (its own, and the canary's while one runs). SGLang's
  HTTP counters have a label `endpoint` of their own (the route); with `honorLabels` false (the ServiceMonitor's
  default) Prometheus keeps the target's and renames the scraped one `exported_endpoint`.
- kube-state-metrics (scraped with `honorLabels: true` by kube-prometheus-stack 88.5.3, values.yaml
  `kube-state-metrics.prometheus.monitor.http.honorLabels`) names Deployments and StatefulSets by `deployment`
  and `statefulset`, and pods by `namespace`/`pod` only (kube-state-metrics docs/metrics/workload/*.md).
  A deployment's serving pods are found by their owner (`kube_pod_owner`), never by a name prefix: the router
  (`<name>-router-…`), the image pre-puller (`<name>-image-prepull-…`), the prefetch Job's pods and a neighbour
  called `<name>-big` all start with `<name>-`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sgldeploy.builders import rollout
from sgldeploy.builders.rollout import Track
from sgldeploy.builders.sglang_args import histogram_bound
from sgldeploy.builders.sglang_server import labels, selector
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec

SCRAPE_INTERVAL = "15s"
METRICS = {  # SGLang's names the queries use; a test checks each against SGLang 0.5.23's observability source
    "queue": "sglang:num_queue_reqs",
    "running": "sglang:num_running_reqs",
    "token_usage": "sglang:token_usage",
    "ttft": "sglang:time_to_first_token_seconds",
    # One observation per generated token: a chunk's interval over its tokens (metrics_collector.py
    # observe_inter_token_latency).
    "itl": "sglang:inter_token_latency_seconds",
    "e2e": "sglang:e2e_request_latency_seconds",
    "requests": "sglang:num_requests_total",
    "aborted": "sglang:num_aborted_requests_total",
    "generation_tokens": "sglang:generation_tokens_total",
    # Every HTTP response by route, method and status (srt/observability/http_request_metrics.py): the one
    # place SGLang 0.5.23 counts server errors. `num_aborted_requests_total` counts aborts, mostly clients
    # that hung up (tokenizer_manager.py abort_request).
    "responses": "sglang:http_responses_total",
    # A decode replica of a disaggregated deployment holds a request here until it has KV memory to receive
    # its cache into (srt/disaggregation/decode.py): requests waiting, as much as those in the waiting queue.
    "decode_prealloc": "sglang:num_decode_prealloc_queue_reqs",
}
# kube-state-metrics' names: docs/metrics/workload/deployment-metrics.md @06d1481, statefulset-metrics.md @098e785,
# pod-metrics.md @04ee634 (all STABLE).
KSM_METRICS = {
    "deployment_available": "kube_deployment_status_replicas_available",
    "deployment_desired": "kube_deployment_spec_replicas",
    "statefulset_ready": "kube_statefulset_status_replicas_ready",
    "statefulset_desired": "kube_statefulset_replicas",
    "pod_phase": "kube_pod_status_phase",
    "pod_ready": "kube_pod_status_ready",
    "pod_owner": "kube_pod_owner",
}
REQUEST_ROUTES = "/generate|/v1/.+"
"""The routes that serve requests (SGLang 0.5.23 srt/entrypoints/http_server.py): probes (/health, /ready, which
answers 503 while a replica loads) and /metrics are not requests and must not count."""
SERVER_ERRORS = "5.."
POD_TEMPLATE_HASH = "[4-9bcdf]{1,10}"
"""A ReplicaSet is `<deployment>-<pod-template-hash>` (kubernetes pkg/controller/deployment/sync.go getNewReplicaSet);
the hash is a decimal uint32 (1 to 10 digits) through SafeEncodeString (staging/src/k8s.io/apimachinery/pkg/util/
rand/rand.go @15816b3), which maps each digit to "bcdfghjklmnpqrstvwxz2456789"[ord(digit) % 27]: 0-5 → 4-9,
6-9 → b, c, d, f. So no other Deployment's ReplicaSet (`<name>-big-…`, `<name>-router-…`) matches."""
LWS_GROUP_INDEX = "[0-9]+"
"""A LeaderWorkerSet runs its leaders in a StatefulSet named after it and the workers of group i in a StatefulSet
named after that leader pod, `<name>-<i>` (kubernetes-sigs/lws pkg/controllers/pod_controller.go @004be7e)."""
MIN_NOT_READY_MINUTES = 15
SLO_HISTOGRAMS = {"ttft_p95_seconds": "ttft", "itl_p95_seconds": "itl"}
"""Each `slo` target's histogram (by METRICS key)."""
SLO_OBJECTIVE = 0.95
"""The targets are 95th percentiles: 95% of requests (of tokens, for ITL) within the target, 5% the budget."""
SLO_SCALING_WINDOW = "2m"
"""The autoscaler's p95 window: eight 15 s scrapes, short enough to follow a burst."""
BURN_ALERTS = (
    # (name, burn rate, long window, short window, for, severity): the multiwindow, multi-burn-rate alerts of
    # Google's SRE workbook (ch. 5, "Alerting on SLOs"): 2% of a 30-day budget spent in an hour, 5% in six.
    ("FastBurn", 14.4, "1h", "5m", 2, "critical"),
    ("SlowBurn", 6.0, "6h", "30m", 15, "warning"),
)
SLO_NAMES = {  # the alert's name part, and what it counts
    "ttft_p95_seconds": ("Ttft", "requests' times to first token"),
    "itl_p95_seconds": ("Itl", "inter-token latencies"),
}
DASHBOARD_LABEL = {"grafana_dashboard": "1"}
"""What kube-prometheus-stack's Grafana sidecar loads (values.yaml `grafana.sidecar.dashboards.label`/`labelValue`,
`searchNamespace: ALL`)."""


@dataclass(frozen=True)
class Workloads:
    """The Kubernetes objects one deployment's series are known by."""

    namespace: str
    name: str
    multi_node: bool  # a LeaderWorkerSet named `name`; else the Deployments below
    deployments: tuple[str, ...]  # every Deployment declared, a kept previous commit's too
    serving: tuple[str, ...]  # those that take traffic: the active commit, and the canary while one runs
    scaled: str  # what the autoscaler scales: the active commit's Deployment, or the LeaderWorkerSet
    services: tuple[str, ...]  # the Services the ServiceMonitor scrapes


def workloads(
    dep: DeploymentSpec, namespace: str, multi_node: bool, tracks: Sequence[Track] = ()
) -> Workloads:
    """From the rollout's tracks (sgldeploy.builders.rollout; empty: one Deployment named after the deployment)."""
    names = tuple(t.name for t in tracks) or (dep.name,)
    serving = tuple(t.name for t in tracks if t.role in ("active", "canary")) or names[:1]
    canary = (f"{dep.name}{rollout.CANARY_SERVICE_SUFFIX}",) if rollout.split(dep) and not multi_node else ()
    return Workloads(
        namespace=namespace,
        name=dep.name,
        multi_node=multi_node,
        deployments=() if multi_node else names,
        serving=() if multi_node else serving,
        scaled=dep.name if multi_node else names[0],
        services=(dep.name, *canary),
    )


def _is(label: str, values: Sequence[str]) -> str:
    """An exact matcher for one value, an anchored alternation for several (names are DNS labels: no regex
    metacharacters)."""
    return f'{label}="{values[0]}"' if len(values) == 1 else f'{label}=~"{"|".join(values)}"'


def series(w: Workloads) -> str:
    """The label matcher of the deployment's SGLang series."""
    return f'namespace="{w.namespace}",{_is("service", w.services)}'


def replicas(w: Workloads, names: Sequence[str], what: str = "available") -> str:
    """kube-state-metrics' count of `what` (available or desired) replicas of these Deployments, or of the
    LeaderWorkerSet's groups (its leader StatefulSet: ready leaders, or the groups asked for)."""
    if w.multi_node:
        metric = KSM_METRICS["statefulset_ready" if what == "available" else "statefulset_desired"]
        return f'{metric}{{namespace="{w.namespace}",statefulset="{w.name}"}}'
    metric = KSM_METRICS["deployment_available" if what == "available" else "deployment_desired"]
    return f'{metric}{{namespace="{w.namespace}",{_is("deployment", names)}}}'


def serving_pods(w: Workloads) -> str:
    """kube_pod_owner of the deployment's GPU pods: those of its ReplicaSets, or of its LeaderWorkerSet's
    StatefulSets. Owners, not name prefixes, so no other pod of the namespace is mistaken for one."""
    if w.multi_node:
        owner = f'owner_kind="StatefulSet",owner_name=~"{w.name}(-{LWS_GROUP_INDEX})?"'
    else:
        sets = "|".join(w.deployments)
        owner = f'owner_kind="ReplicaSet",owner_name=~"({sets})-{POD_TEMPLATE_HASH}"'
    return f'{KSM_METRICS["pod_owner"]}{{namespace="{w.namespace}",{owner}}}'


def not_ready_pods(w: Workloads) -> str:
    """One series per serving pod that is Pending (a pod waiting for a GPU node has no Ready condition at all)
    or whose Ready condition is false or unknown; `max by` keeps one series per pod across the change from
    Pending to Running, so the alert's `for` keeps counting."""
    ns = f'namespace="{w.namespace}"'
    pending = f'{KSM_METRICS["pod_phase"]}{{{ns},phase="Pending"}} == 1'
    unready = f'{KSM_METRICS["pod_ready"]}{{{ns},condition=~"false|unknown"}} == 1'
    return f"max by (namespace, pod) (({pending} or {unready}) and on (namespace, pod) {serving_pods(w)})"


def _quantile(q: float, metric: str, m: str, window: str = "5m") -> str:
    return f"histogram_quantile({q:g}, sum by (le) (rate({metric}_bucket{{{m}}}[{window}])))"


def _responses(m: str, status: str | None = None) -> str:
    code = f',status_code=~"{status}"' if status else ""
    return f'sum(rate({METRICS["responses"]}{{{m},exported_endpoint=~"{REQUEST_ROUTES}"{code}}}[5m]))'


def queries(w: Workloads) -> dict[str, str]:
    """The alerts' and the dashboard's PromQL for one deployment."""
    m = series(w)
    served = w.serving or (w.name,)
    return {
        "queue_depth": f"sum({METRICS['queue']}{{{m}}})",
        "running_requests": f"sum({METRICS['running']}{{{m}}})",
        "queue_per_replica": f"sum({METRICS['queue']}{{{m}}}) / clamp_min(sum({replicas(w, served)}), 1)",
        "p99_latency": _quantile(0.99, METRICS["e2e"], m),
        "p50_ttft": _quantile(0.5, METRICS["ttft"], m),
        "p99_ttft": _quantile(0.99, METRICS["ttft"], m),
        "server_error_percent": f"100 * {_responses(m, SERVER_ERRORS)} / {_responses(m)}",
        "request_rate": f"sum(rate({METRICS['requests']}{{{m}}}[5m]))",
        "aborted_rate": f"sum(rate({METRICS['aborted']}{{{m}}}[5m]))",
        "tokens_per_second": f"sum(rate({METRICS['generation_tokens']}{{{m}}}[5m]))",
        "kv_usage": f"max({METRICS['token_usage']}{{{m}}})",
        "replicas": f"sum by ({'statefulset' if w.multi_node else 'deployment'}) "
        f"({replicas(w, w.deployments)})",
        "desired_replicas": f"max({replicas(w, [w.scaled], 'desired')})",
        "not_ready_pods": not_ready_pods(w),
    }


def _scaled_service(dep: DeploymentSpec, namespace: str) -> Workloads:
    """The Service `<name>` alone: its pods are exactly those of the workload the autoscaler scales."""
    own = (dep.name,)
    return Workloads(namespace, dep.name, False, own, own, dep.name, own)


def query(dep: DeploymentSpec, namespace: str, what: str) -> str:
    """The autoscaler's trigger: the total over the Service `<name>`, whose pods are exactly those of the
    workload it scales (the active commit's; the canary has a Service of its own); KEDA's AverageValue divides
    it by that workload's replicas."""
    w = _scaled_service(dep, namespace)
    found = queries(w)[what]
    role = dep.serving_role
    if what == "queue_depth" and role is not None and role.role == "decode":
        # The decode role's waiting requests also sit in its prealloc queue (none reported reads as none).
        found += f" + (sum({METRICS['decode_prealloc']}{{{series(w)}}}) or vector(0))"
    return found


def slo_query(dep: DeploymentSpec, namespace: str, key: str) -> str:
    """The autoscaler's latency trigger: the p95 of `key`'s histogram over the scaling window, only while requests
    wait. With an empty queue it gives no result (KEDA reads none as 0): latency then comes from the requests
    themselves (their prompts, the batch SGLang admits), which more replicas do not shorten, so it holds none."""
    own = series(_scaled_service(dep, namespace))
    p95 = _quantile(SLO_OBJECTIVE, METRICS[SLO_HISTOGRAMS[key]], own, SLO_SCALING_WINDOW)
    return f"{p95} and on () (({query(dep, namespace, 'queue_depth')}) > 0)"


def over_target_share(w: Workloads, key: str, target: float, window: str) -> str:
    """The share of requests (tokens) over the target in the window, from the bucket the target bounds
    (sglang_args.slo_bucket_flags makes it one)."""
    metric, m = METRICS[SLO_HISTOGRAMS[key]], series(w)
    within = f'sum(rate({metric}_bucket{{{m},le="{histogram_bound(target)}"}}[{window}]))'
    return f"(1 - {within} / sum(rate({metric}_count{{{m}}}[{window}])))"


def burn_alerts(dep: DeploymentSpec, w: Workloads) -> list[dict[str, Any]]:
    """Per SLO target: the error budget burning fast (both windows over 14.4 times the budget) or slowly (6
    times). With no requests the share is 0/0, which no comparison passes: silence, not an alert."""
    budget = 1 - SLO_OBJECTIVE
    rules = []
    for key, target in dep.slo_targets().items():
        short_name, what = SLO_NAMES[key]
        for name, rate, long, short, minutes, severity in BURN_ALERTS:
            limit = f"{rate * budget:.4g}"
            rules.append(
                {
                    "alert": f"Sglang{short_name}Budget{name}",
                    "expr": f"{over_target_share(w, key, target, long)} > {limit} and "
                    f"{over_target_share(w, key, target, short)} > {limit}",
                    "for": f"{minutes}m",
                    "labels": {"severity": severity, "deployment": dep.name, "model": dep.model.repo},
                    "annotations": {
                        "summary": f"{dep.name}: more than {100 * rate * budget:.3g}% of {what} over "
                        f"{target:g} s for {long} (and {short}): the 5% budget of the p95 target burns "
                        f"{rate:g} times too fast",
                    },
                }
            )
    return rules


def not_ready_minutes(sizing: Sizing) -> int:
    """Longer than a normal cold start keeps a pod unready: a new node, the image, a first download and the
    startup probe's budget (the Deployment's progress deadline)."""
    return max(MIN_NOT_READY_MINUTES, math.ceil(sizing.rollout_deadline_seconds / 60))


def service_monitor_spec(dep: DeploymentSpec) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": selector(dep)},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL}],
    }


def prometheus_rule_spec(dep: DeploymentSpec, w: Workloads, sizing: Sizing) -> dict[str, Any]:
    """An alert per threshold the spec sets (null disables it), replicas at max, and pods not ready."""
    a = dep.observability.alerts
    q = queries(w)
    common = {"deployment": dep.name, "model": dep.model.repo}
    rules = []

    def alert(name: str, expr: str, minutes: int, severity: str, summary: str) -> None:
        rules.append(
            {
                "alert": name,
                "expr": expr,
                "for": f"{minutes}m",
                "labels": {"severity": severity, **common},
                "annotations": {"summary": summary},
            }
        )

    if a.p99_latency_seconds is not None:
        alert(
            "SglangHighLatency",
            f"{q['p99_latency']} > {a.p99_latency_seconds:g}",
            10,
            "warning",
            f"{dep.name}: p99 end-to-end latency above {a.p99_latency_seconds:g} s",
        )
    if a.error_rate_percent is not None:
        alert(
            "SglangErrorRate",
            f"{q['server_error_percent']} > {a.error_rate_percent:g}",
            5,
            "critical",
            f"{dep.name}: more than {a.error_rate_percent:g}% of requests failed with a server error (5xx)",
        )
    if a.queue_depth is not None:
        alert(
            "SglangQueueDepth",
            f"{q['queue_per_replica']} > {a.queue_depth}",
            10,
            "warning",
            f"{dep.name}: more than {a.queue_depth} queued requests per available replica",
        )
    if dep.max_replicas > dep.min_replicas:  # at min = max it is always at max: nothing to raise
        alert(
            "SglangAtMaxReplicas",
            f"{q['desired_replicas']} >= {dep.max_replicas}",
            30,
            "info",
            f"{dep.name}: the autoscaler has asked for max_replicas ({dep.max_replicas}) for 30 minutes; "
            "raise it or add capacity",
        )
    minutes = not_ready_minutes(sizing)
    alert(
        "SglangPodsNotReady",
        f"{q['not_ready_pods']} > 0",
        minutes,
        "warning",
        f"{dep.name}: a serving pod not ready for {minutes} minutes, longer than a cold start takes "
        "(no GPU capacity, a stuck load or a crash loop)",
    )
    rules += burn_alerts(dep, w)
    return {"groups": [{"name": f"sgldeploy-{dep.name}", "rules": rules}]}


PANELS = (
    ("Requests/s", "request_rate"),
    ("Generated tokens/s", "tokens_per_second"),
    ("TTFT p50", "p50_ttft"),
    ("TTFT p99", "p99_ttft"),
    ("End-to-end latency p99", "p99_latency"),
    ("Queued requests", "queue_depth"),
    ("Running requests", "running_requests"),
    ("KV cache usage", "kv_usage"),
    ("Available replicas", "replicas"),
    ("Server errors %", "server_error_percent"),
    ("Client aborts/s", "aborted_rate"),
)


def dashboard(dep: DeploymentSpec, w: Workloads) -> dict[str, Any]:
    """A Grafana dashboard: requests, tokens/s, TTFT and latency, queue, KV usage, replicas, errors."""
    q = queries(w)
    return {
        "title": f"sgldeploy / {w.namespace} / {dep.name}",
        "uid": f"sgldeploy-{w.namespace}-{dep.name}"[:40],
        "tags": ["sgldeploy", "sglang"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "targets": [{"refId": "A", "expr": q[what]}],
            }
            for i, (title, what) in enumerate(PANELS)
        ],
    }


def dashboard_config_map_data(dep: DeploymentSpec, w: Workloads) -> dict[str, str]:
    return {f"sgldeploy-{dep.name}.json": json.dumps(dashboard(dep, w), indent=1, sort_keys=True)}


def monitoring_labels(dep: DeploymentSpec) -> dict[str, str]:
    return labels(dep, component="monitoring")
