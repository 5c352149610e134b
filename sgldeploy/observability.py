"""Metrics, alerts and a dashboard per deployment, on SGLang 0.5.23's own metric names
(../shared/reference/sglang.md §3). Pure: the ServiceMonitor and PrometheusRule specs, the dashboard JSON.

Every query selects the deployment's series by the labels the ServiceMonitor attaches (`namespace`, and
`service` = the deployment's Service name), so two deployments never mix.
"""

from __future__ import annotations

import json
from typing import Any

from .serving import labels, selector
from .spec import DeploymentSpec

SCRAPE_INTERVAL = "15s"
METRICS = {  # the names the queries use; a test checks each against SGLang's metrics collector
    "queue": "sglang:num_queue_reqs",
    "running": "sglang:num_running_reqs",
    "token_usage": "sglang:token_usage",
    "ttft": "sglang:time_to_first_token_seconds",
    "e2e": "sglang:e2e_request_latency_seconds",
    "requests": "sglang:num_requests_total",
    "aborted": "sglang:num_aborted_requests_total",
    "generation_tokens": "sglang:generation_tokens_total",
}
DASHBOARD_LABEL = {"grafana_dashboard": "1"}  # what the Grafana sidecar of kube-prometheus-stack loads


def series(dep: DeploymentSpec, namespace: str) -> str:
    """The label matcher of one deployment's series."""
    return f'namespace="{namespace}",service="{dep.name}"'


def query(dep: DeploymentSpec, namespace: str, what: str) -> str:
    """Reusable PromQL for one deployment (also the autoscaler's triggers)."""
    m = series(dep, namespace)
    queries = {
        "queue_depth": f"sum({METRICS['queue']}{{{m}}})",
        "running_requests": f"sum({METRICS['running']}{{{m}}})",
        "p99_latency": f"histogram_quantile(0.99, sum by (le) (rate({METRICS['e2e']}_bucket{{{m}}}[5m])))",
        "p50_ttft": f"histogram_quantile(0.5, sum by (le) (rate({METRICS['ttft']}_bucket{{{m}}}[5m])))",
        "p99_ttft": f"histogram_quantile(0.99, sum by (le) (rate({METRICS['ttft']}_bucket{{{m}}}[5m])))",
        "error_rate_percent": f"100 * sum(rate({METRICS['aborted']}{{{m}}}[5m])) / "
        f"clamp_min(sum(rate({METRICS['requests']}{{{m}}}[5m])), 1e-9)",
        "request_rate": f"sum(rate({METRICS['requests']}{{{m}}}[5m]))",
        "tokens_per_second": f"sum(rate({METRICS['generation_tokens']}{{{m}}}[5m]))",
        "kv_usage": f"max({METRICS['token_usage']}{{{m}}})",
        "replicas": f'kube_deployment_status_replicas_available{{namespace="{namespace}",deployment="{dep.name}"}}',
        "not_ready": f'sum(kube_pod_status_ready{{namespace="{namespace}",pod=~"{dep.name}-.*",condition="false"}})',
    }
    return queries[what]


def service_monitor_spec(dep: DeploymentSpec) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": selector(dep)},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL}],
    }


def prometheus_rule_spec(dep: DeploymentSpec, namespace: str) -> dict[str, Any]:
    """An alert per threshold the spec sets (null disables it), plus replicas at max and pods not ready."""
    a = dep.observability.alerts
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
            f"{query(dep, namespace, 'p99_latency')} > {a.p99_latency_seconds:g}",
            10,
            "warning",
            f"{dep.name}: p99 end-to-end latency above {a.p99_latency_seconds:g} s",
        )
    if a.error_rate_percent is not None:
        alert(
            "SglangErrorRate",
            f"{query(dep, namespace, 'error_rate_percent')} > {a.error_rate_percent:g}",
            5,
            "critical",
            f"{dep.name}: more than {a.error_rate_percent:g}% of requests aborted",
        )
    if a.queue_depth is not None:
        replicas = f"clamp_min({query(dep, namespace, 'replicas')}, 1)"
        alert(
            "SglangQueueDepth",
            f"{query(dep, namespace, 'queue_depth')} / {replicas} > {a.queue_depth}",
            10,
            "warning",
            f"{dep.name}: more than {a.queue_depth} queued requests per replica",
        )
    if dep.max_replicas:
        alert(
            "SglangAtMaxReplicas",
            f"{query(dep, namespace, 'replicas')} >= {dep.max_replicas}",
            30,
            "info",
            f"{dep.name}: running at max_replicas ({dep.max_replicas}) for 30 minutes; raise it or add capacity",
        )
    alert(
        "SglangPodsNotReady",
        f"{query(dep, namespace, 'not_ready')} > 0",
        15,
        "warning",
        f"{dep.name}: pods not ready for 15 minutes (a stuck load or a crash loop)",
    )
    return {"groups": [{"name": f"sgldeploy-{dep.name}", "rules": rules}]}


def dashboard(dep: DeploymentSpec, namespace: str) -> dict[str, Any]:
    """A Grafana dashboard: requests, tokens/s, TTFT and latency, queue, KV usage, replicas."""
    panels = [
        ("Requests/s", "request_rate"),
        ("Generated tokens/s", "tokens_per_second"),
        ("TTFT p50", "p50_ttft"),
        ("TTFT p99", "p99_ttft"),
        ("End-to-end latency p99", "p99_latency"),
        ("Queued requests", "queue_depth"),
        ("Running requests", "running_requests"),
        ("KV cache usage", "kv_usage"),
        ("Available replicas", "replicas"),
        ("Aborted %", "error_rate_percent"),
    ]
    return {
        "title": f"sgldeploy / {namespace} / {dep.name}",
        "uid": f"sgldeploy-{namespace}-{dep.name}"[:40],
        "tags": ["sgldeploy", "sglang"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "targets": [{"refId": "A", "expr": query(dep, namespace, what)}],
            }
            for i, (title, what) in enumerate(panels)
        ],
    }


def dashboard_config_map_data(dep: DeploymentSpec, namespace: str) -> dict[str, str]:
    return {f"sgldeploy-{dep.name}.json": json.dumps(dashboard(dep, namespace), indent=1, sort_keys=True)}


def monitoring_labels(dep: DeploymentSpec) -> dict[str, str]:
    return labels(dep, component="monitoring")
