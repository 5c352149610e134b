"""What Prometheus holds about one sgldeploy deployment, written as the systems that produce it would write it,
for the promtool unit tests of tests/test_promtool.py.

Nothing here calls sgldeploy's query code: the world is built from the rendered Kubernetes objects (the
Deployments or LeaderWorkerSet, their pod templates, the Services, the ServiceMonitor) and from how upstream
names pods and labels series:

- Pods: a Deployment's ReplicaSet is `<deployment>-<pod-template-hash>` and its pods `<replicaset>-<5 chars>`
  (kubernetes pkg/controller/deployment/sync.go; apimachinery util/rand: the hash is a decimal uint32 through
  SafeEncodeString, the suffix 5 characters of "bcdfghjklmnpqrstvwxz2456789"). A LeaderWorkerSet's leaders are
  `<lws>-<group>` in the StatefulSet `<lws>`, the workers of a group `<lws>-<group>-<index>` in the StatefulSet
  `<lws>-<group>` (kubernetes-sigs/lws pod_controller.go). A DaemonSet's and a Job's pods are `<owner>-<5 chars>`.
- kube-state-metrics (docs/metrics/workload/pod-metrics.md, deployment-metrics.md, statefulset-metrics.md):
  kube_pod_status_phase{namespace,pod,uid,phase} one series per phase, 1 for the current one;
  kube_pod_status_ready{namespace,pod,uid,condition} only once the pod has a Ready condition (a pod waiting for
  a node has none); kube_pod_owner{namespace,pod,uid,owner_kind,owner_name,owner_is_controller};
  kube_deployment_spec_replicas / _status_replicas_available{namespace,deployment};
  kube_statefulset_replicas / _status_replicas_ready{namespace,statefulset}. kube-prometheus-stack scrapes it
  with honorLabels: its `namespace` and `pod` win, and the target's `pod` (the exporter's own) stays on series
  that have none.
- SGLang 0.5.23 (srt/observability/metrics_collector.py, http_request_metrics.py): scheduler gauges labelled
  model_name, engine_type, tp_rank, pp_rank, moe_ep_rank; tokenizer counters and histograms model_name,
  engine_type (and is_streaming); HTTP responses endpoint, status_code, method. The ServiceMonitor's target adds
  namespace, service, pod, container, endpoint (the port's name), job (the Service's name) and instance; the
  scraped `endpoint` clashes with the target's and Prometheus renames it `exported_endpoint`.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.utils import floatToGoString

# Default buckets of SGLang 0.5.23's TokenizerMetricsCollector (srt/observability/metrics_collector.py).
E2E_BUCKETS = (
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1,
    2,
    4,
    6,
    8,
    10,
    20,
    40,
    60,
    80,
    100,
    200,
    400,
    600,
    1200,
    1800,
    2400,
)
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
ITL_BUCKETS = (
    *(0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4),
    *(0.6, 0.8, 1, 2, 4, 6, 8),
)
BUCKET_FLAGS = {"--bucket-time-to-first-token": "ttft", "--bucket-inter-token-latency": "itl"}
"""SGLang's flags that replace a histogram's default bounds (srt/arg_groups/fields/observability.py)."""
ENGINE_TYPE = "unified"  # DisaggregationMode.to_engine_type without disaggregation
KSM_TARGET = {
    "job": "kube-state-metrics",
    "service": "kube-prometheus-stack-kube-state-metrics",
    "endpoint": "http",
    "container": "kube-state-metrics",
    "instance": "10.0.200.7:8080",
}
KSM_POD = "kube-prometheus-stack-kube-state-metrics-6d9b8c4f7-q2x7z"  # the exporter's own pod, on series without one
HASHES = ("5f9c7d84b6", "7bd5cf9486", "6c8f4d597", "9d5b7c6f48", "84f6b9d5c7", "b7c5d9f64")
SUFFIXES = ("x7k2q", "m4n9p", "z2w5t", "r8v6s", "h5j4l", "q9d2b")
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
PODS_PER_WORKLOAD = 2  # pods of each Deployment, groups of the LeaderWorkerSet

Series = tuple[str, list[float | None]]  # promtool's series notation, a value per minute (None: no sample)


@dataclass(frozen=True)
class Pod:
    name: str
    owner_kind: str
    owner_name: str
    labels: dict[str, str]
    workload: str  # the Deployment or LeaderWorkerSet it belongs to; "" for pods that do not serve
    ip: str


@dataclass(frozen=True)
class World:
    """One deployment's objects, as the cluster would run them."""

    namespace: str
    name: str
    lws: bool
    workloads: tuple[str, ...]  # its Deployments, or its LeaderWorkerSet
    group_size: int  # pods per LeaderWorkerSet group
    pods: tuple[Pod, ...]
    scraped: tuple[tuple[str, Pod], ...]  # (Service, pod) pairs the ServiceMonitor scrapes
    container: str
    port: int
    model_name: str
    ttft_buckets: tuple[float, ...] = (
        TTFT_BUCKETS  # the bounds the server's arguments give, else SGLang's own
    )
    itl_buckets: tuple[float, ...] = ITL_BUCKETS

    @property
    def serving_pods(self) -> list[Pod]:
        return [p for p in self.pods if p.workload]

    def renamed(self, name: str, namespace: str | None = None) -> World:
        """The same shape under another name (every object of a deployment is named `<name>…`)."""

        def r(value: str) -> str:
            return name + value[len(self.name) :] if value.startswith(self.name) else value

        pods = tuple(
            dataclasses.replace(
                p,
                name=r(p.name),
                owner_name=r(p.owner_name),
                workload=r(p.workload),
                labels={k: r(v) for k, v in p.labels.items()},
            )
            for p in self.pods
        )
        by_name = {p.name: p for p in pods}
        return dataclasses.replace(
            self,
            namespace=namespace or self.namespace,
            name=name,
            workloads=tuple(r(w) for w in self.workloads),
            pods=pods,
            scraped=tuple((r(s), by_name[r(p.name)]) for s, p in self.scraped),
        )


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _container(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["spec"]["containers"][0])


def world_of(resources: list[Any], name: str, namespace: str) -> World:
    """The world of deployment `name` from the rendered resources of its stack."""
    own = [r for r in resources if r.inputs.get("metadata", {}).get("namespace") == namespace]
    monitor = next(
        r for r in own if r.type.endswith("v1:ServiceMonitor") and r.inputs["metadata"]["name"] == name
    )
    wanted = monitor.inputs["spec"]["selector"]["matchLabels"]
    services = [
        r.inputs
        for r in own
        if r.type == "kubernetes:core/v1:Service" and _matches(wanted, r.inputs["metadata"].get("labels", {}))
    ]
    deployments = [
        r.inputs
        for r in own
        if r.type == "kubernetes:apps/v1:Deployment"
        and _matches(wanted, r.inputs["spec"]["template"]["metadata"]["labels"])
    ]
    lws = [
        r.inputs for r in own if r.type.endswith("LeaderWorkerSet") and r.inputs["metadata"]["name"] == name
    ]
    pods: list[Pod] = []
    ip = iter(f"10.0.{i // 200}.{i % 200 + 10}" for i in range(10_000))
    if lws:
        [set_] = lws
        workloads = (set_["metadata"]["name"],)
        template = set_["spec"]["leaderWorkerTemplate"]
        size = int(template["size"])
        for g in range(PODS_PER_WORKLOAD):
            leader = f"{workloads[0]}-{g}"
            lws_labels = {LWS_NAME: workloads[0], LWS_GROUP: str(g)}
            pods.append(
                Pod(
                    leader,
                    "StatefulSet",
                    workloads[0],
                    {**template["leaderTemplate"]["metadata"]["labels"], **lws_labels, LWS_WORKER: "0"},
                    workloads[0],
                    next(ip),
                )
            )
            for j in range(1, size):
                pods.append(
                    Pod(
                        f"{leader}-{j}",
                        "StatefulSet",
                        leader,
                        {
                            **template["workerTemplate"]["metadata"]["labels"],
                            **lws_labels,
                            LWS_WORKER: str(j),
                        },
                        workloads[0],
                        next(ip),
                    )
                )
        container = _container(template["leaderTemplate"])
    else:
        workloads = tuple(d["metadata"]["name"] for d in deployments)
        size = 1
        for k, d in enumerate(deployments):
            replica_set = f"{d['metadata']['name']}-{HASHES[k]}"
            for i in range(PODS_PER_WORKLOAD):
                labels = {**d["spec"]["template"]["metadata"]["labels"], "pod-template-hash": HASHES[k]}
                pods.append(
                    Pod(
                        f"{replica_set}-{SUFFIXES[i]}",
                        "ReplicaSet",
                        replica_set,
                        labels,
                        workloads[k],
                        next(ip),
                    )
                )
        container = _container(deployments[0]["spec"]["template"])
    # Pods of the deployment that serve nothing, named after it: the router, the image pre-puller, a prefetch.
    others = [
        Pod(
            f"{name}-router-{HASHES[5]}-{SUFFIXES[0]}", "ReplicaSet", f"{name}-router-{HASHES[5]}", {}, "", ""
        ),
        Pod(f"{name}-image-prepull-{SUFFIXES[1]}", "DaemonSet", f"{name}-image-prepull", {}, "", ""),
        Pod(
            f"{name}-cache-prefetch-a09a35458c70-3f2e1d0-{SUFFIXES[2]}",
            "Job",
            f"{name}-cache-prefetch-a09a35458c70-3f2e1d0",
            {},
            "",
            "",
        ),
    ]
    scraped = tuple(
        (s["metadata"]["name"], p)
        for s in services
        for p in pods
        if _matches(s["spec"]["selector"], p.labels)
    )
    args = [str(a) for a in container.get("args", [])]
    served = args[args.index("--served-model-name") + 1] if "--served-model-name" in args else "model"
    buckets = {}
    for flag, family in BUCKET_FLAGS.items():
        if flag in args:  # nargs="+": the values up to the next flag, as argparse reads them
            values = args[args.index(flag) + 1 :]
            end = next((i for i, v in enumerate(values) if v.startswith("--")), len(values))
            buckets[f"{family}_buckets"] = tuple(float(v) for v in values[:end])
    return World(
        namespace=namespace,
        name=name,
        lws=bool(lws),
        workloads=workloads,
        group_size=size,
        pods=tuple(pods + others),
        scraped=scraped,
        container=container["name"],
        port=int(container["ports"][0]["containerPort"]),
        model_name=served,
        **buckets,
    )


def plain_world(name: str, namespace: str) -> World:
    """A neighbour: one Deployment `name` behind a Service `name`."""
    replica_set = f"{name}-{HASHES[0]}"
    pods = tuple(
        Pod(
            f"{replica_set}-{SUFFIXES[i]}", "ReplicaSet", replica_set, {"app": name}, name, f"10.9.0.{i + 10}"
        )
        for i in range(PODS_PER_WORKLOAD)
    )
    return World(
        namespace, name, False, (name,), 1, pods, tuple((name, p) for p in pods), "sglang", 30000, name
    )


# ---- what each producer writes ---------------------------------------------------------------------------


def _series(metric: str, labels: dict[str, str]) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{metric}{{{body}}}"


def _uid(pod: Pod, namespace: str) -> str:
    return f"{zlib.crc32(f'{namespace}/{pod.name}'.encode()):012d}-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class PodState:
    """A pod's phase and Ready condition, minute by minute (None: no Ready condition yet)."""

    phase: Callable[[int], str] = lambda t: "Running"
    ready: Callable[[int], str | None] = lambda t: "true"


def pod_series(w: World, state: Callable[[Pod], PodState], minutes: int) -> list[Series]:
    out: list[Series] = []
    for pod in w.pods:
        s = state(pod)
        base = {**KSM_TARGET, "namespace": w.namespace, "pod": pod.name, "uid": _uid(pod, w.namespace)}
        for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            values = [1.0 if s.phase(t) == phase else 0.0 for t in range(minutes + 1)]
            out.append((_series("kube_pod_status_phase", {**base, "phase": phase}), values))
        readiness = [s.ready(t) for t in range(minutes + 1)]
        if any(r is not None for r in readiness):
            for condition in ("true", "false", "unknown"):
                ready_values = [None if r is None else 1.0 if r == condition else 0.0 for r in readiness]
                out.append((_series("kube_pod_status_ready", {**base, "condition": condition}), ready_values))
        owner = {
            **base,
            "owner_kind": pod.owner_kind,
            "owner_name": pod.owner_name,
            "owner_is_controller": "true",
        }
        out.append((_series("kube_pod_owner", owner), [1.0] * (minutes + 1)))
    return out


def workload_series(
    w: World, desired: Callable[[str], int], available: Callable[[str], int], minutes: int
) -> list[Series]:
    """kube-state-metrics' Deployment series, or the LeaderWorkerSet's StatefulSets' (leaders and workers)."""
    out: list[Series] = []
    n = minutes + 1
    for name in w.workloads:
        labels = {**KSM_TARGET, "pod": KSM_POD, "namespace": w.namespace}
        if w.lws:
            sts = {**labels, "statefulset": name}
            out.append((_series("kube_statefulset_replicas", sts), [float(desired(name))] * n))
            out.append((_series("kube_statefulset_status_replicas_ready", sts), [float(available(name))] * n))
            for g in range(PODS_PER_WORKLOAD):  # each group's workers
                workers = {**labels, "statefulset": f"{name}-{g}"}
                out.append((_series("kube_statefulset_replicas", workers), [float(w.group_size - 1)] * n))
                out.append(
                    (
                        _series("kube_statefulset_status_replicas_ready", workers),
                        [float(w.group_size - 1)] * n,
                    )
                )
        else:
            dep = {**labels, "deployment": name}
            out.append((_series("kube_deployment_spec_replicas", dep), [float(desired(name))] * n))
            out.append(
                (_series("kube_deployment_status_replicas_available", dep), [float(available(name))] * n)
            )
    return out


@dataclass(frozen=True)
class Load:
    """What every scraped pod's SGLang reports: gauges, and counters' increase per minute."""

    queue: float = 1
    decode_prealloc: float = 3  # SGLang exports the gauge in every mode; only decode replicas of PD set it
    running: float = 2
    token_usage: float = 0.5
    requests: int = 600  # per minute, split evenly over is_streaming true/false
    generation_tokens: int = 6_000
    aborted: int = 60
    e2e: dict[float, int] = field(default_factory=lambda: {1: 600})  # observations per minute by bucket bound
    ttft: dict[float, int] = field(default_factory=lambda: {2: 600})
    itl: dict[float, int] = field(default_factory=lambda: {0.02: 60_000})  # one per generated token
    responses: dict[tuple[str, str], int] = field(
        default_factory=lambda: {
            ("/v1/chat/completions", "200"): 5_940,
            ("/v1/chat/completions", "500"): 60,
            ("/health", "200"): 2,
            ("/ready", "200"): 6,
            ("/metrics", "200"): 4,
        }
    )


def _le(bound: float) -> str:
    return floatToGoString(bound)  # how SGLang's prometheus_client labels a bucket


def _counter(per_minute: float, minutes: int) -> list[float | None]:
    return [float(per_minute * t) for t in range(minutes + 1)]


FAMILIES = frozenset({"gauges", "counters", "e2e", "ttft", "itl", "http"})


def target_labels(w: World, service: str, pod: Pod) -> dict[str, str]:
    """What the ServiceMonitor's scrape adds to each series of `pod` scraped through `service`."""
    return {
        "namespace": w.namespace,
        "service": service,
        "pod": pod.name,
        "job": service,
        "endpoint": "http",
        "container": w.container,
        "instance": f"{pod.ip}:{w.port}",
    }


def sglang_series(w: World, load: Load, minutes: int, families: frozenset[str] = FAMILIES) -> list[Series]:
    """Each scraped pod's SGLang series of the given families (fewer series, faster promtool runs)."""
    out: list[Series] = []
    n = minutes + 1
    for service, pod in w.scraped:
        target = target_labels(w, service, pod)
        scheduler = {
            **target,
            "model_name": w.model_name,
            "engine_type": ENGINE_TYPE,
            "tp_rank": "0",
            "pp_rank": "0",
            "moe_ep_rank": "0",
        }
        tokenizer = {**target, "model_name": w.model_name, "engine_type": ENGINE_TYPE}
        if "gauges" in families:
            out += [
                (_series("sglang:num_queue_reqs", scheduler), [float(load.queue)] * n),
                (
                    _series("sglang:num_decode_prealloc_queue_reqs", scheduler),
                    [float(load.decode_prealloc)] * n,
                ),
                (_series("sglang:num_running_reqs", scheduler), [float(load.running)] * n),
                (_series("sglang:token_usage", scheduler), [float(load.token_usage)] * n),
            ]
        if "counters" in families:
            out.append(
                (_series("sglang:num_aborted_requests_total", tokenizer), _counter(load.aborted, minutes))
            )
            for streaming in ("true", "false"):
                labels = {**tokenizer, "is_streaming": streaming}
                out.append(
                    (_series("sglang:num_requests_total", labels), _counter(load.requests / 2, minutes))
                )
                out.append(
                    (
                        _series("sglang:generation_tokens_total", labels),
                        _counter(load.generation_tokens / 2, minutes),
                    )
                )
        streamed = {**tokenizer, "is_streaming": "false"}
        for family, metric, buckets, observed, labels in (
            ("e2e", "sglang:e2e_request_latency_seconds", E2E_BUCKETS, load.e2e, streamed),
            ("ttft", "sglang:time_to_first_token_seconds", w.ttft_buckets, load.ttft, streamed),
            ("itl", "sglang:inter_token_latency_seconds", w.itl_buckets, load.itl, tokenizer),
        ):
            if family not in families:
                continue
            for bound in (*buckets, math.inf):
                cumulative = sum(c for b, c in observed.items() if b <= bound)
                out.append(
                    (_series(f"{metric}_bucket", {**labels, "le": _le(bound)}), _counter(cumulative, minutes))
                )
            total = sum(observed.values())
            out.append((_series(f"{metric}_count", labels), _counter(total, minutes)))
        for (route, status), count in load.responses.items() if "http" in families else ():
            method = "POST" if route.startswith("/v1/") or route == "/generate" else "GET"
            http = {**target, "exported_endpoint": route, "status_code": status, "method": method}
            out.append((_series("sglang:http_responses_total", http), _counter(count, minutes)))
    return out


# ---- promtool's notation and Prometheus' own arithmetic ----------------------------------------------------


def _number(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def encode(values: Iterable[float | None]) -> str:
    """promtool's expanding notation: `a+bxn` is n+1 values from a by b, `_xn` n missing samples."""
    vs = list(values)
    if vs and None not in vs and len(vs) > 1:  # most series: constant, or a counter rising steadily
        step = vs[1] - vs[0]  # type: ignore[operator]
        if all(b - a == step for a, b in zip(vs, vs[1:], strict=False)):  # type: ignore[operator]
            sign = "+" if step >= 0 else "-"
            return f"{_number(vs[0])}{sign}{_number(abs(step))}x{len(vs) - 1}"  # type: ignore[arg-type]
    parts: list[str] = []
    i = 0
    while i < len(vs):
        if vs[i] is None:
            j = i
            while j < len(vs) and vs[j] is None:
                j += 1
            parts.append("_" if j - i == 1 else f"_x{j - i}")
            i = j
            continue
        j = i + 1
        if j < len(vs) and vs[j] is not None:
            step = vs[j] - vs[i]  # type: ignore[operator]
            while j + 1 < len(vs) and vs[j + 1] is not None and vs[j + 1] - vs[j] == step:  # type: ignore[operator]
                j += 1
            a = vs[i]
            assert a is not None
            sign = "+" if step >= 0 else "-"
            parts.append(f"{_number(a)}{sign}{_number(abs(step))}x{j - i}")
            i = j + 1
        else:
            parts.append(_number(vs[i]))  # type: ignore[arg-type]
            i += 1
    return " ".join(parts)


def input_series(series: Iterable[Series]) -> list[dict[str, str]]:
    return [{"series": s, "values": encode(v)} for s, v in series]


def bucket_quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile on (upper bound, cumulative rate) pairs, +Inf last
    (promql/quantile.go bucketQuantile, v2.42)."""
    rank = q * cumulative[-1][1]
    b = next(i for i, (_, count) in enumerate(cumulative) if count >= rank)
    if b == len(cumulative) - 1:
        return cumulative[-2][0]
    if b == 0 and cumulative[0][0] <= 0:
        return cumulative[0][0]
    start, end, count = 0.0, cumulative[b][0], cumulative[b][1]
    if b > 0:
        start = cumulative[b - 1][0]
        count -= cumulative[b - 1][1]
        rank -= cumulative[b - 1][1]
    return start + (end - start) * (rank / count)


def quantile_of(q: float, buckets: tuple[float, ...], observed: dict[float, int], pods: int) -> float:
    """The quantile Prometheus computes from `pods` pods each observing `observed` per minute, over full
    5-minute windows (rate = 5 × per-minute increase / 300 s)."""
    cumulative = [
        (bound, pods * (5 * sum(c for b, c in observed.items() if b <= bound) / 300))
        for bound in (*buckets, math.inf)
    ]
    return bucket_quantile(q, cumulative)
