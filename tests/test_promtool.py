"""The rendered alerts, dashboard queries and KEDA triggers, run by Prometheus' own rule engine (promtool).

For every PrometheusRule of every committed stack and variant (tests/variants.py), promtool checks the rule file,
then runs unit tests generated here over series written as SGLang 0.5.23, kube-state-metrics and the
ServiceMonitor's scrape would write them (tests/prometheus_world.py): each alert fires once it has held for its
`for` and not a minute before, not just under its threshold, and never on a neighbour's series (a deployment
`<name>-big` and one `<name>-5` in the same namespace, the same name in another namespace, the deployment's own
router, image pre-puller and prefetch pods). The dashboard's and the triggers' queries must give the numbers
worked out here from the world, by hand.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgldeploy.spec import DeploymentSpec

from . import prometheus_world as pw
from .variants import rendered_variants

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Prometheus 2.42) is not installed; `make test` installs it"
)
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
ELSEWHERE = "elsewhere"
REQUESTS_PER_MINUTE = 10_000  # API responses per pod and minute in the error-rate scenarios


@dataclass(frozen=True)
class Target:
    """One deployment of one variant: its rendered rule, dashboard and autoscaler, and its world."""

    variant: str
    spec: DeploymentSpec
    rules: dict[str, dict[str, Any]]
    rule_file: dict[str, Any]
    dashboard: dict[str, Any]
    world: pw.World
    scaled: str  # the workload the rendered autoscaler scales
    max_replicas: int
    triggers: list[tuple[str, str]]  # the ScaledObject's Prometheus triggers: (name, or "" for none; query)
    cold_start_s: int  # what the rendered workload allows a pod to take before it is ready

    @property
    def minutes(self) -> int:
        return max(_minutes(r["for"]) for r in self.rules.values()) + 15


def _minutes(duration: str) -> int:
    assert duration.endswith("m"), duration
    return int(duration[:-1])


def _autoscaler(
    resources: list[Any], namespace: str, workloads: tuple[str, ...]
) -> tuple[str, int, list[tuple[str, str]]]:
    for r in resources:
        spec = r.inputs.get("spec", {})
        ref = spec.get("scaleTargetRef", {})
        if r.inputs.get("metadata", {}).get("namespace") != namespace or ref.get("name") not in workloads:
            continue
        if r.type.endswith("v1alpha1:ScaledObject"):
            queries = [
                (t.get("name", ""), t["metadata"]["query"])
                for t in spec["triggers"]
                if t["type"] == "prometheus"
            ]
            return ref["name"], int(spec["maxReplicaCount"]), queries
        if r.type.endswith("v1alpha1:HTTPScaledObject"):
            return ref["name"], int(spec["replicas"]["max"]), []
    raise AssertionError(f"no autoscaler targets {workloads}")


def _cold_start_s(resources: list[Any], namespace: str, world: pw.World) -> int:
    """The rendered allowance for a pod to become ready: the Deployments' progress deadline; a LeaderWorkerSet
    has none, so its leader's startup probe window."""
    for r in resources:
        meta = r.inputs.get("metadata", {})
        if meta.get("namespace") != namespace or meta.get("name") not in world.workloads:
            continue
        if r.type == "kubernetes:apps/v1:Deployment":
            return int(r.inputs["spec"]["progressDeadlineSeconds"])
        if r.type.endswith("LeaderWorkerSet"):
            leader = r.inputs["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
            probe = leader["startupProbe"]
            return int(probe["failureThreshold"] * probe["periodSeconds"])
    raise AssertionError(f"no workload {world.workloads}")


def targets() -> list[Target]:
    out = []
    for variant, plan in rendered_variants().items():
        resources = plan.recording.resources
        specs = {d.spec.name: d.spec for d in plan.loaded.deployments}
        for r in resources:
            if r.type != RULE:
                continue
            name, namespace = r.inputs["metadata"]["name"], r.inputs["metadata"]["namespace"]
            world = pw.world_of(resources, name, namespace)
            fixed = specs[name].min_replicas == specs[name].max_replicas  # stopped (0) or of a fixed size
            if fixed:  # no autoscaler: nothing scales it, its rules stay
                scaled, max_replicas, triggers = world.workloads[0], specs[name].max_replicas, []
            else:
                scaled, max_replicas, triggers = _autoscaler(resources, namespace, world.workloads)
            [board] = [
                json.loads(next(iter(c.inputs["data"].values())))
                for c in resources
                if c.type == "kubernetes:core/v1:ConfigMap"
                and c.inputs["metadata"]["name"] == f"{name}-dashboard"
            ]
            [group] = r.inputs["spec"]["groups"]
            out.append(
                Target(
                    variant=variant,
                    spec=specs[name],
                    rules={rule["alert"]: rule for rule in group["rules"]},
                    rule_file=r.inputs["spec"],
                    dashboard=board,
                    world=world,
                    scaled=scaled,
                    max_replicas=max_replicas,
                    triggers=triggers,
                    cold_start_s=_cold_start_s(resources, namespace, world),
                )
            )
    return out


@pytest.fixture(scope="module")
def all_targets() -> list[Target]:
    found = targets()
    assert {t.variant for t in found} >= {"dev", "staging", "prod", "multi-node", "blue-green", "canary"}
    return found


# ---- the world in each scenario ---------------------------------------------------------------------------

HEALTHY = pw.PodState()
PENDING = pw.PodState(phase=lambda t: "Pending", ready=lambda t: None)  # no GPU node: no Ready condition
# Crash-looping, then its node stops reporting (the node controller marks its pods' Ready unknown).
CRASHING = pw.PodState(ready=lambda t: "false" if t < 10 else "unknown")


@dataclass(frozen=True)
class Scenario:
    """What our deployment's series do, and whether the neighbours misbehave meanwhile."""

    load: pw.Load = pw.Load()
    pods: Callable[[pw.Pod], pw.PodState] = lambda p: HEALTHY
    desired: Callable[[str], int] | None = None  # replicas asked for, by workload
    neighbours_bad: bool = False
    neighbours: bool = True  # write the neighbours' series at all
    families: frozenset[str] = pw.FAMILIES  # the SGLang series to write (fewer: a faster run)


def _bad_load(t: Target) -> pw.Load:
    alerts = t.spec.observability.alerts
    above = [b for b in pw.E2E_BUCKETS if b > (alerts.p99_latency_seconds or 1)]
    slow = above[1] if len(above) > 1 else above[0]  # a whole bucket above the threshold's
    return pw.Load(
        queue=10 * (alerts.queue_depth or 10),
        e2e={slow: 600},
        responses={("/v1/chat/completions", "500"): 600},
        aborted=600,
    )


def _neighbours(t: Target) -> list[pw.World]:
    w = t.world
    return [
        w.renamed(f"{w.name}-big"),
        pw.plain_world(f"{w.name}-5", w.namespace),
        w.renamed(w.name, ELSEWHERE),
    ]


def series_of(t: Target, s: Scenario) -> list[pw.Series]:
    w, n = t.world, t.minutes

    def healthy_desired(workload: str) -> int:
        return t.max_replicas - 1 if workload == t.scaled else pw.PODS_PER_WORKLOAD

    desired = s.desired or healthy_desired
    out = pw.pod_series(w, lambda p: s.pods(p) if p.workload else PENDING, n)  # the router & co. never serve
    out += pw.workload_series(w, desired, lambda _: pw.PODS_PER_WORKLOAD, n)
    out += pw.sglang_series(w, s.load, n, s.families)
    bad = s.neighbours_bad
    for other in _neighbours(t) if s.neighbours else []:
        out += pw.pod_series(other, lambda p: PENDING if bad else HEALTHY, n)
        out += pw.workload_series(other, lambda _: t.max_replicas if bad else 1, lambda _: 0 if bad else 2, n)
        out += pw.sglang_series(other, _bad_load(t) if bad else pw.Load(), n, s.families)
    return out


def _alert(t: Target, name: str, at: int, firing: list[dict[str, str]] | None = None) -> dict[str, Any]:
    rule = t.rules[name]
    exp = [
        {"exp_labels": {**rule["labels"], **extra}, "exp_annotations": rule["annotations"]}
        for extra in firing or []
    ]
    return {"eval_time": f"{at}m", "alertname": name, "exp_alerts": exp}


def group(
    t: Target, s: Scenario, alerts: list[dict[str, Any]], exprs: list[dict[str, Any]] | None = None
) -> dict:
    return {
        "interval": "1m",
        "input_series": pw.input_series(series_of(t, s)),
        "alert_rule_test": alerts,
        **({"promql_expr_test": exprs} if exprs else {}),
    }


# ---- per alert: the boundary, the hold time, the neighbours ------------------------------------------------


def latency_loads(t: Target) -> tuple[pw.Load, pw.Load]:
    """Per-minute e2e observations whose p99 is just above, and just below, the threshold: requests in the
    bucket holding the threshold, the rest one bucket down, in the proportion that puts p99 nearest to it."""
    threshold = t.spec.observability.alerts.p99_latency_seconds
    assert threshold is not None and threshold < pw.E2E_BUCKETS[-1]
    hi = min(b for b in pw.E2E_BUCKETS if b > threshold)
    lo = max(b for b in pw.E2E_BUCKETS if b < hi)
    fast = max(b for b in pw.E2E_BUCKETS if b < lo) if lo > pw.E2E_BUCKETS[0] else lo
    total = 6000
    pods = len({p.name for _, p in t.world.scraped})

    def p99(slow: int) -> float:
        return pw.quantile_of(0.99, pw.E2E_BUCKETS, {fast: total - slow, hi: slow}, pods)

    low, high = 1, total  # p99 grows with the slow share: bisect for the first count that crosses
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if p99(mid) <= threshold else (low, mid)
    over, under = low, low - 1 if p99(low - 1) < threshold else low - 2
    assert p99(under) < threshold < p99(over)
    return pw.Load(e2e={fast: total - over, hi: over}), pw.Load(e2e={fast: total - under, hi: under})


def error_loads(t: Target) -> tuple[pw.Load, pw.Load]:
    """Server errors just above, and just below, the threshold's share of the API's responses; the same pods
    also answer 4xx (client errors), and 503 on /ready while loading, which are not server errors."""
    percent = t.spec.observability.alerts.error_rate_percent
    assert percent is not None
    limit = percent * REQUESTS_PER_MINUTE / 100

    def load(errors: int) -> pw.Load:
        assert 0 <= errors <= REQUESTS_PER_MINUTE - 300
        return pw.Load(
            responses={
                ("/v1/chat/completions", "200"): REQUESTS_PER_MINUTE - errors - 300,
                ("/v1/chat/completions", "400"): 200,
                ("/v1/completions", "429"): 100,
                ("/v1/chat/completions", "500"): errors // 2,
                ("/generate", "503"): errors - errors // 2,
                ("/ready", "503"): REQUESTS_PER_MINUTE,
                ("/health", "503"): 60,
                ("/metrics", "200"): 4,
            }
        )

    over, under = math.floor(limit) + 1, math.ceil(limit) - 1
    assert 100 * under / REQUESTS_PER_MINUTE < percent < 100 * over / REQUESTS_PER_MINUTE
    return load(over), load(under)


def stuck_pods(t: Target) -> dict[str, pw.PodState]:
    """The first pod of every workload waits for a GPU node; one more crash-loops, then loses its node (a
    LeaderWorkerSet's: a worker)."""
    serving = t.world.serving_pods
    stuck = {}
    for workload in t.world.workloads:
        first = next(p for p in serving if p.workload == workload)
        stuck[first.name] = PENDING
    crashing = next(p for p in reversed(serving) if p.name not in stuck)
    stuck[crashing.name] = CRASHING
    return stuck


def cold_start(t: Target) -> pw.PodState:
    """A normal cold start: no node for 2 minutes, the prefetch init container, then the server loading until
    just within what the rendered workload allows."""
    ready_at = t.cold_start_s // 60
    return pw.PodState(
        phase=lambda m: "Pending" if m < 4 else "Running",
        ready=lambda m: None if m < 2 else "false" if m < ready_at else "true",
    )


def alert_groups(t: Target) -> list[dict[str, Any]]:
    """Three runs: ours healthy among misbehaving neighbours; every signal just over its threshold with pods
    stuck; every signal just under it with pods through a normal cold start."""
    known = {
        "SglangHighLatency",
        "SglangErrorRate",
        "SglangQueueDepth",
        "SglangAtMaxReplicas",
        "SglangPodsNotReady",
    }
    # The SLO burn alerts read hours of latency histograms: tests/test_slo.py runs their scenarios on their own.
    burn = {a for a in t.rules if "Budget" in a and a.endswith("Burn")}
    assert set(t.rules) - burn <= known, f"no scenario for {set(t.rules) - burn - known}"
    end = t.minutes
    alerts = t.spec.observability.alerts
    # A steady scenario that fired would do so once its `for` held, and keep firing: the last minute tells.
    quiet = lambda names: [_alert(t, a, m) for a in names for m in (end - 1, end)]  # noqa: E731
    signals = [a for a in t.rules if a != "SglangPodsNotReady" and a not in burn]
    over: dict[str, Any] = {}
    under: dict[str, Any] = {}
    held: list[dict[str, Any]] = []

    def hold(name: str, active_from: int, labels: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
        fires = active_from + _minutes(t.rules[name]["for"])
        return [_alert(t, name, fires - 1), _alert(t, name, fires, labels or [{}])]

    if "SglangHighLatency" in t.rules:  # rates exist from the second sample: active from minute 1
        fast, slow = latency_loads(t)
        over["e2e"], under["e2e"] = fast.e2e, slow.e2e
        held += hold("SglangHighLatency", 1)
    if "SglangErrorRate" in t.rules:
        failing, fine = error_loads(t)
        over["responses"], under["responses"] = failing.responses, fine.responses
        held += hold("SglangErrorRate", 1)
    if "SglangQueueDepth" in t.rules:
        q = alerts.queue_depth
        assert q is not None
        serving = {p.workload for _, p in t.world.scraped}
        replicas = pw.PODS_PER_WORKLOAD * len(serving)  # available replicas of the workloads taking traffic
        pods = len({p.name for _, p in t.world.scraped})
        assert pods * (q + 1) / replicas > q and pods * q / replicas <= q
        over["queue"], under["queue"] = q + 1, q
        held += hold("SglangQueueDepth", 0)
    desired_over = desired_under = None
    if "SglangAtMaxReplicas" in t.rules:

        def at(n: int) -> Callable[[str], int]:
            return lambda workload: n if workload == t.scaled else pw.PODS_PER_WORKLOAD

        desired_over, desired_under = at(t.max_replicas), at(t.max_replicas - 1)
        held += hold("SglangAtMaxReplicas", 0)
    stuck = stuck_pods(t)
    labels = [{"namespace": t.world.namespace, "pod": pod} for pod in sorted(stuck)]
    normal = cold_start(t)
    ready_at = t.cold_start_s // 60
    alerting = frozenset({"gauges", "e2e", "http"})  # the SGLang series the alerts read
    return [
        # Ours healthy, every neighbour (and the deployment's own router, pre-puller, prefetch) misbehaving.
        group(t, Scenario(neighbours_bad=True, families=alerting), quiet(set(t.rules) - burn)),
        # Every signal just over its threshold, and some pods stuck.
        group(
            t,
            Scenario(
                load=pw.Load(**over),
                desired=desired_over,
                pods=lambda p: stuck.get(p.name, HEALTHY),
                families=alerting,
            ),
            held + hold("SglangPodsNotReady", 0, labels),
        ),
        # Every signal just under its threshold, and every pod through a normal cold start.
        group(
            t,
            Scenario(
                load=pw.Load(**under),
                desired=desired_under,
                pods=lambda p: normal,
                neighbours=False,
                families=alerting,
            ),
            quiet(signals) + [_alert(t, "SglangPodsNotReady", m) for m in [*range(ready_at + 2), end]],
        ),
    ]


# ---- the dashboard's and the triggers' numbers ------------------------------------------------------------


def expected_panels(t: Target) -> dict[str, list[dict[str, Any]]]:
    """Each panel's samples in the healthy world (pw.Load's defaults on every scraped pod), worked out by hand:
    counters rise by the per-minute increase, so a 5-minute rate is increase / 60 per second."""
    w, load = t.world, pw.Load()
    pods = len({p.name for _, p in w.scraped})
    one = lambda value: [{"labels": "{}", "value": value}]  # noqa: E731
    api = [c for (route, _), c in load.responses.items() if route.startswith("/v1/")]
    errors = [
        c
        for (route, status), c in load.responses.items()
        if route.startswith("/v1/") and status.startswith("5")
    ]
    by = "statefulset" if w.lws else "deployment"
    return {
        "Requests/s": one(pods * load.requests / 60),
        "Generated tokens/s": one(pods * load.generation_tokens / 60),
        "TTFT p50": one(pw.quantile_of(0.5, w.ttft_buckets, load.ttft, pods)),
        "TTFT p99": one(pw.quantile_of(0.99, w.ttft_buckets, load.ttft, pods)),
        "End-to-end latency p99": one(pw.quantile_of(0.99, pw.E2E_BUCKETS, load.e2e, pods)),
        "Queued requests": one(pods * load.queue),
        "Running requests": one(pods * load.running),
        "KV cache usage": one(load.token_usage),
        "Available replicas": [
            {"labels": f'{{{by}="{name}"}}', "value": pw.PODS_PER_WORKLOAD} for name in w.workloads
        ],
        "Server errors %": one(100 * (pods * sum(errors) / 60) / (pods * sum(api) / 60)),
        "Client aborts/s": one(pods * load.aborted / 60),
    }


def expected_trigger(t: Target, name: str) -> float:
    """KEDA divides an AverageValue trigger's value by the scaled workload's replicas: the query must add up the
    signal of exactly that workload's pods (the canary's, or a kept previous commit's, are not its). A latency
    trigger (`metric: slo`, queue depth alongside) is the p95 over those pods' histograms while requests queue
    (pw.Load queues some)."""
    load = pw.Load()
    pods = {p.name for _, p in t.world.scraped if p.workload == t.scaled}
    if name == "ttft-p95":
        return pw.quantile_of(0.95, t.world.ttft_buckets, load.ttft, len(pods))
    if name == "itl-p95":
        return pw.quantile_of(0.95, t.world.itl_buckets, load.itl, len(pods))
    metric = "queue-depth" if t.spec.scaling.metric == "slo" else t.spec.scaling.metric
    per_pod = {"queue-depth": load.queue, "running-requests": load.running}[metric]
    role = t.spec.serving_role
    if metric == "queue-depth" and role is not None and role.role == "decode":
        per_pod += load.decode_prealloc  # a decode replica's requests waiting for KV memory wait all the same
    return len(pods) * per_pod


def expr_group(t: Target) -> dict[str, Any]:
    panels = expected_panels(t)
    titles = [p["title"] for p in t.dashboard["panels"]]
    assert sorted(titles) == sorted(panels), f"{t.variant}/{t.world.name}: panels {titles}"
    exprs = [
        {"expr": p["targets"][0]["expr"], "eval_time": "10m", "exp_samples": panels[p["title"]]}
        for p in t.dashboard["panels"]
    ]
    exprs += [
        {"expr": q, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": expected_trigger(t, name)}]}
        for name, q in t.triggers
    ]
    return group(t, Scenario(neighbours_bad=True), [], exprs)


# ---- running promtool -------------------------------------------------------------------------------------


def run_promtool(tmp_path: Path, runs: list[tuple[Target, list[dict[str, Any]]]]) -> list[str]:
    """One promtool run over a test file per target; the report of each file that failed."""
    files = {}
    for i, (t, groups) in enumerate(runs):
        rules = tmp_path / f"{i}-{t.variant}-{t.world.name}.rules.yaml"
        rules.write_text(yaml.safe_dump(t.rule_file, sort_keys=False))
        tests = tmp_path / f"{i}-{t.variant}-{t.world.name}.test.yaml"  # JSON is YAML, and fast to write
        tests.write_text(
            json.dumps({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": groups})
        )
        files[tests.name] = t
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "test", "rules", *files], cwd=tmp_path, capture_output=True, text=True)
    if done.returncode == 0:
        return []
    # promtool names each file on stdout but writes the failures to stderr: ask again, one failed file at a time.
    reports = []
    for part in done.stdout.split("Unit Testing:")[1:]:
        name = part.split()[0]
        if "SUCCESS" not in part:
            again = subprocess.run(
                [PROMTOOL, "test", "rules", name], cwd=tmp_path, capture_output=True, text=True
            )
            t = files[name]
            reports.append(f"{t.variant}/{t.world.name} ({name}):\n{again.stderr[:8000]}")
    assert reports, done.stdout[-3000:] + done.stderr[-3000:]
    return reports


def test_promtool_checks_every_rendered_rule_file(all_targets, tmp_path):
    assert PROMTOOL is not None
    for t in all_targets:
        path = tmp_path / f"{t.variant}-{t.world.name}.yaml"
        path.write_text(yaml.safe_dump(t.rule_file))
        done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{t.variant}/{t.world.name}: {done.stdout}{done.stderr}"
        assert f"SUCCESS: {len(t.rules)} rules found" in done.stdout


def test_alerts_fire_after_their_for_only_over_threshold_and_only_for_their_deployment(all_targets, tmp_path):
    failures = run_promtool(tmp_path, [(t, alert_groups(t)) for t in all_targets])
    assert not failures, "\n".join(failures)


def test_dashboard_and_trigger_queries_give_the_expected_numbers(all_targets, tmp_path):
    failures = run_promtool(tmp_path, [(t, [expr_group(t)]) for t in all_targets])
    assert not failures, "\n".join(failures)


def test_pods_not_ready_waits_longer_than_the_workload_allows_a_cold_start(all_targets):
    """Never during a cold start the workload allows, and a stuck pod reported within 10 minutes after."""
    for t in all_targets:
        held = _minutes(t.rules["SglangPodsNotReady"]["for"]) * 60
        assert held >= t.cold_start_s, f"{t.variant}/{t.world.name}: for {held} s < {t.cold_start_s} s"
        assert held <= max(15 * 60, t.cold_start_s) + 10 * 60, f"{t.variant}/{t.world.name}: for {held} s"


def test_rollouts_watch_the_commit_deployments(all_targets):
    """Blue-green and canary run `<name>-<sha8>` Deployments: the replica alert, the queue's replicas and the
    replica panel must name those (the promtool tests above then prove they see them)."""
    for variant in ("blue-green", "canary"):
        [t] = [t for t in all_targets if t.variant == variant]
        assert len(t.world.workloads) == 2 and all(w.startswith(f"{variant}-") for w in t.world.workloads)
        assert t.scaled in t.world.workloads
        panel = next(p for p in t.dashboard["panels"] if p["title"] == "Available replicas")
        assert all(w in panel["targets"][0]["expr"] for w in t.world.workloads)
        assert t.scaled in t.rules["SglangAtMaxReplicas"]["expr"]
