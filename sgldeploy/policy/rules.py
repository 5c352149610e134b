"""The policy rules, as pure functions over resource inputs and the deployment facts (policy/facts.py).

A resource rule gets one `Resource` and its policy's config and returns violation messages; a stack rule gets
every resource and returns (urn, message) pairs. `policies/__main__.py` wraps them in CrossGuard policies for
`pulumi preview --policy-pack`, and `sgldeploy plan` runs them over the recorded resources: one logic, two
engines. Messages name the resource, the value, what is allowed and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..catalog import gpu_models
from ..sizing import FP8_KV_MIN_CAPABILITY, MIN_CAPABILITY
from .facts import DEPLOYMENT_TYPE, PLATFORM_TYPE


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: dict[str, Any]
    parent: str | None = None


def is_deployment(r: Resource) -> bool:
    return r.type == DEPLOYMENT_TYPE and "model" in r.props


def is_platform(r: Resource) -> bool:
    return r.type == PLATFORM_TYPE and "environment" in r.props


# ---- containers of any workload ------------------------------------------------------------------


def pod_specs(props: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod template a Kubernetes workload's inputs hold."""
    kind, spec = props.get("kind"), props.get("spec") or {}
    if kind == "Pod":
        yield "spec", spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield "spec.template.spec", (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield (
            "spec.jobTemplate.spec.template.spec",
            (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {},
        )
    elif kind == "LeaderWorkerSet":
        template = spec.get("leaderWorkerTemplate") or {}
        for role in ("leaderTemplate", "workerTemplate"):
            if role in template:
                yield f"spec.leaderWorkerTemplate.{role}.spec", (template[role] or {}).get("spec") or {}


def containers(props: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, container, pod spec) for every container and init container."""
    for where, pod in pod_specs(props):
        for group in ("initContainers", "containers"):
            for c in pod.get(group) or []:
                yield f"{where}.{group}[{c.get('name', '?')}]", c, pod


# ---- resource rules ------------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_tag(image: str) -> str | None:
    """The tag of an image reference, '' for none; None when it is pinned by digest."""
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def images_pinned(r: Resource, config: dict[str, Any]) -> list[str]:
    out = []
    for where, c, _ in containers(r.props):
        image = c.get("image") or ""
        tag = image_tag(image)
        if tag is not None and (tag in ("", "latest") or tag in config["forbidden_tags"]):
            shown = f"tag {tag!r}" if tag else "no tag"
            out.append(
                f"{r.name}: {where} image {image!r} has {shown} (allowed: a version tag or @sha256 digest); "
                "pin it, e.g. lmsysorg/sglang:v0.5.23"
            )
    return out


def container_resources(r: Resource, config: dict[str, Any]) -> list[str]:
    out = []
    for where, c, _ in containers(r.props):
        res = c.get("resources") or {}
        need = [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")]
        if config["require_cpu_limit"]:
            need.append(("limits", "cpu"))
        missing = [f"{group}.{what}" for group, what in need if what not in (res.get(group) or {})]
        if missing:
            out.append(
                f"{r.name}: {where} has no {', '.join(missing)} (required: cpu and memory requests, a "
                f"memory limit{', a cpu limit' if config['require_cpu_limit'] else ''}); set them in "
                "its resources"
            )
    return out


def no_privilege(r: Resource, config: dict[str, Any]) -> list[str]:
    out = []
    allowed = tuple(p.rstrip("/") for p in config["allowed_host_paths"])
    seen_pods = set()
    for where, c, pod in containers(r.props):
        ctx = c.get("securityContext") or {}
        if ctx.get("privileged"):
            out.append(
                f"{r.name}: {where} is privileged (allowed: false); drop privileged and grant only the "
                "capabilities it needs"
            )
        if ctx.get("allowPrivilegeEscalation", True) is not False:
            out.append(
                f"{r.name}: {where} may escalate privileges (allowPrivilegeEscalation "
                f"{ctx.get('allowPrivilegeEscalation', 'unset')}; allowed: false); set it to false"
            )
        if id(pod) in seen_pods:
            continue
        seen_pods.add(id(pod))
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            out.append(
                f"{r.name}: pod shares the host's network, PID or IPC namespace (allowed: none); remove it"
            )
        for v in pod.get("volumes") or []:
            path = ((v.get("hostPath") or {}).get("path") or "").rstrip("/")
            if "hostPath" in v and not any(path == a or path.startswith(a + "/") for a in allowed):
                out.append(
                    f"{r.name}: volume {v.get('name')!r} mounts host path {path or '/'!r} (allowed under: "
                    f"{', '.join(allowed) or 'none'}); use a PersistentVolumeClaim or the node cache"
                )
    return out


def public_endpoint_secured(r: Resource, config: dict[str, Any]) -> list[str]:
    """A load balancer on the internet needs TLS, and the model behind it an API key."""
    out = []
    if is_deployment(r) and r.props["endpoint"]["exposure"] == "public":
        ep = r.props["endpoint"]
        if ep["auth"] != "api-key":
            out.append(
                f"{r.name}: public endpoint with auth {ep['auth']!r} (allowed: 'api-key'); set "
                "endpoint.auth: api-key or endpoint.exposure: internal"
            )
        if not ep["tls"]:
            out.append(
                f"{r.name}: public endpoint without TLS (tls_certificate_arn unset); set "
                "endpoint.tls_certificate_arn to an ACM certificate"
            )
    meta = (r.props.get("metadata") or {}).get("annotations") or {}
    kind = r.props.get("kind")
    if (
        kind == "Ingress"
        and meta.get("alb.ingress.kubernetes.io/scheme") == "internet-facing"
        and not meta.get("alb.ingress.kubernetes.io/certificate-arn")
    ):
        out.append(
            f"{r.name}: internet-facing ALB Ingress without alb.ingress.kubernetes.io/certificate-arn; "
            "add an ACM certificate so clients connect over HTTPS"
        )
    if (
        kind == "Service"
        and (r.props.get("spec") or {}).get("type") == "LoadBalancer"
        and meta.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internet-facing"
        and not meta.get("service.beta.kubernetes.io/aws-load-balancer-ssl-cert")
    ):
        out.append(
            f"{r.name}: internet-facing NLB Service without "
            "service.beta.kubernetes.io/aws-load-balancer-ssl-cert; add an ACM certificate for TLS"
        )
    return out


def revision_pinned(r: Resource, config: dict[str, Any], production: bool) -> list[str]:
    if not is_deployment(r) or (r.props["environment"] == "production") != production:
        return []
    m = r.props["model"]
    if m["revisionIsCommit"]:
        return []
    return [
        f"{r.name}: model {m['repo']} revision {m['revision']!r} is a branch or tag (allowed: a 40-hex "
        f"commit); pin model.revision: {m['sha']}"
    ]


def safetensors_only(r: Resource, config: dict[str, Any]) -> list[str]:
    out = []
    if is_deployment(r) and r.props["model"]["weightsFormat"] != "safetensors":
        out.append(
            f"{r.name}: model {r.props['model']['repo']} weights are {r.props['model']['weightsFormat']} "
            "(allowed: safetensors); choose a safetensors checkpoint and run `sgldeploy lock`"
        )
    for where, c, _ in containers(r.props):
        fmt = _flag(c.get("args") or [], "--load-format")
        if fmt is not None and fmt not in config["allowed_load_formats"]:
            out.append(
                f"{r.name}: {where} loads weights with --load-format {fmt} (allowed: "
                f"{', '.join(config['allowed_load_formats'])}); remove it from serving.extra_args"
            )
    return out


def _flag(args: list[str], name: str) -> str | None:
    """The value the last `name` flag gets, as argparse would read it."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def remote_code_allowed(r: Resource, config: dict[str, Any]) -> list[str]:
    if not is_deployment(r) or not r.props["model"]["trustRemoteCode"]:
        return []
    repo = r.props["model"]["repo"]
    if repo in config["allowed_repos"]:
        return []
    return [
        f"{r.name}: model {repo} runs its own code (trust_remote_code) and is not allow-listed (allowed: "
        f"{', '.join(config['allowed_repos']) or 'none'}); review it and add it to allowed_repos"
    ]


def placement_fits(r: Resource, config: dict[str, Any]) -> list[str]:
    if not is_deployment(r):
        return []
    out, mem, serving = [], r.props["memory"], r.props["serving"]
    gpu_name = r.props["placement"]["gpuModel"]
    if mem["requiredGibPerGpu"] > mem["gpuMemoryGib"]:
        out.append(
            f"{r.name}: needs {mem['requiredGibPerGpu']:g} GiB per GPU, {gpu_name} has "
            f"{mem['gpuMemoryGib']:g} GiB; lower serving.context_length or max_concurrency, or use more GPUs"
        )
    gpu = gpu_models().get(gpu_name)
    if gpu is None:
        return out + [
            f"{r.name}: GPU {gpu_name!r} is not in the catalog (allowed: {', '.join(gpu_models())}); "
            "choose a catalogued GPU"
        ]
    need = MIN_CAPABILITY.get(serving["quantization"])
    if need and gpu.compute_capability < need:
        out.append(
            f"{r.name}: quantization {serving['quantization']} needs compute capability {need}, "
            f"{gpu_name} has {gpu.compute_capability}; choose a newer GPU or another quantization"
        )
    if serving["dtype"] == "bfloat16" and not gpu.bf16:
        out.append(
            f"{r.name}: dtype bfloat16 on {gpu_name}, which has none (allowed: float16, float32); set "
            "serving.precision: float16"
        )
    if serving["kvCacheDtype"].startswith("fp8") and gpu.compute_capability < FP8_KV_MIN_CAPABILITY:
        out.append(
            f"{r.name}: FP8 KV cache on {gpu_name} (compute capability {gpu.compute_capability}, needs "
            f"{FP8_KV_MIN_CAPABILITY}); set serving.kv_cache_dtype: auto"
        )
    return out


def instances_and_regions(r: Resource, config: dict[str, Any]) -> list[str]:
    if not is_deployment(r):
        return []
    out = []
    families = config["allowed_instance_families"]
    instances = [r.props["placement"]["instanceType"], *r.props["placement"]["alternatives"]]
    refused = [i for i in instances if families and i.split(".")[0] not in families]
    if refused:
        out.append(
            f"{r.name}: instance type {', '.join(refused)} (family {refused[0].split('.')[0]}) is not "
            f"allowed (allowed: {', '.join(families)}); set resources.instance_types or resources.gpu "
            "accordingly"
        )
    regions = config["allowed_regions"]
    if regions and r.props["region"] not in regions:
        out.append(
            f"{r.name}: region {r.props['region']} is not allowed (allowed: {', '.join(regions)}); "
            "deploy the stack to an allowed region"
        )
    return out


# ---- stack rules ---------------------------------------------------------------------------------


def _gpus(r: Resource) -> int:
    return int(r.props["replicas"]["max"]) * int(r.props["placement"]["gpusPerReplica"])


def gpu_caps(resources: list[Resource], config: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    deployments = [r for r in resources if is_deployment(r)]
    for r in deployments:
        if _gpus(r) > config["max_gpus_per_deployment"]:
            out.append(
                (
                    r.urn,
                    f"{r.name}: {_gpus(r)} GPUs at max replicas ({r.props['replicas']['max']} × "
                    f"{r.props['placement']['gpusPerReplica']}) exceeds max_gpus_per_deployment "
                    f"{config['max_gpus_per_deployment']}; lower scaling.max_replicas or raise the cap",
                )
            )
    total = sum(_gpus(r) for r in deployments)
    if total > config["max_gpus_total"]:
        out.append(
            (
                "",
                f"stack: {total} GPUs at max replicas exceeds max_gpus_total {config['max_gpus_total']}; "
                "lower max_replicas somewhere or raise the cap",
            )
        )
    return out


def budget(resources: list[Resource], config: dict[str, Any]) -> list[tuple[str, str]]:
    """The stack's monthly cost at max replicas within the budget (the policy's, else the platform's)."""
    platform = next((r for r in resources if is_platform(r)), None)
    limit = config.get("budget_usd_per_month")
    if limit is None and platform is not None:
        limit = platform.props.get("budgetUsdPerMonth")  # null values do not survive serialization
    if limit is None:
        return []
    parts = [r for r in resources if is_deployment(r) or is_platform(r)]
    unpriced = [name for r in parts for name in r.props["cost"].get("unpriced") or []]
    if unpriced:
        return [
            (
                "",
                f"stack: cannot check the budget of ${limit:,.0f}/month: unpriced {', '.join(unpriced)}; "
                "deploy to a priced region or set budget_usd_per_month: null",
            )
        ]
    total = round(sum(r.props["cost"].get("monthlyUsdMax") or 0 for r in parts), 2)
    if total <= limit:
        return []
    biggest = sorted(
        (r for r in parts if is_deployment(r)), key=lambda r: -(r.props["cost"].get("monthlyUsdMax") or 0)
    )
    top = ", ".join(f"{r.name} ${r.props['cost']['monthlyUsdMax']:,.0f}" for r in biggest[:3])
    return [
        (
            "",
            f"stack: ${total:,.2f}/month at max replicas exceeds the budget of ${limit:,.2f} ({top}); lower "
            "max_replicas, choose cheaper placements, or raise budget_usd_per_month",
        )
    ]


def production_availability(resources: list[Resource], config: dict[str, Any]) -> list[tuple[str, str]]:
    """Production deployments keep serving through rollouts and node drains."""
    out = []
    by_urn = {r.urn: r for r in resources}
    for r in resources:
        if not is_deployment(r) or r.props["environment"] != "production":
            continue
        if r.props["readiness"] == "always-ready" and r.props["replicas"]["min"] < 1:
            out.append(
                (
                    r.urn,
                    f"{r.name}: always-ready with min_replicas {r.props['replicas']['min']} "
                    "(allowed: ≥ 1); set scaling.min_replicas: 1 or more",
                )
            )
        if r.props["rollout"]["maxUnavailable"] != 0:
            out.append(
                (
                    r.urn,
                    f"{r.name}: rollout.max_unavailable {r.props['rollout']['maxUnavailable']} "
                    "(allowed: 0); set rollout.max_unavailable: 0 and use max_surge",
                )
            )
        kinds = {by_urn[u].props.get("kind") for u in _descendants(r.urn, resources)}
        if "PodDisruptionBudget" not in kinds:
            out.append(
                (r.urn, f"{r.name}: no PodDisruptionBudget guards its pods; keep the deployment's PDB")
            )
    return out


def _descendants(urn: str, resources: list[Resource]) -> list[str]:
    kids: dict[str, list[str]] = {}
    for r in resources:
        if r.parent:
            kids.setdefault(r.parent, []).append(r.urn)
    out, todo = [], list(kids.get(urn, []))
    while todo:
        u = todo.pop()
        out.append(u)
        todo += kids.get(u, [])
    return out
