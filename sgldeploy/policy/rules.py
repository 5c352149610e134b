"""The policy rules, as pure functions over resource inputs and the deployment facts (policy/facts.py).

A resource rule gets one `Resource` and its policy's config and returns findings; a stack rule gets every
resource and returns (urn, finding) pairs. A finding is a violation message, or `Undetermined` when a value
the rule needs is not known before apply (policy/values.py: UNKNOWN), so a rule judges every known value and
never passes or fails one it cannot see. `policies/__main__.py` wraps the rules in CrossGuard policies for
`pulumi preview --policy-pack`, and `sgldeploy plan` runs them over the recorded resources: one logic, two
engines. Messages name the resource, the value, what is allowed and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sgldeploy.catalog import gpu_models
from sgldeploy.models.sizing import FP8_KV_MIN_CAPABILITY, MIN_CAPABILITY
from sgldeploy.policy.facts import DEPLOYMENT_TYPE, PLATFORM_TYPE
from sgldeploy.policy.values import UNKNOWN, get, is_unknown, unknown_paths


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: dict[str, Any]
    parent: str | None = None


@dataclass(frozen=True)
class Undetermined:
    """A rule could not judge: a value it needs is known only after apply."""

    message: str


Finding = str | Undetermined


def undetermined(r: Resource, paths: list[str], what: str) -> Undetermined:
    return Undetermined(
        f"{r.name}: cannot check {what} before apply: {', '.join(paths)} is known only after apply; "
        f"`pulumi up` checks it once known, before it creates {r.name}"
    )


def needs(r: Resource, what: str, *paths: tuple[str | int, ...]) -> Undetermined | None:
    """`Undetermined` when any value at (or under) one of `paths` in the resource's props is unknown."""
    unknown = [
        p for path in paths for p in unknown_paths(get(r.props, *path), ".".join(str(part) for part in path))
    ]
    return undetermined(r, unknown, what) if unknown else None


def is_deployment(r: Resource) -> bool:
    return r.type == DEPLOYMENT_TYPE and "model" in r.props


def is_platform(r: Resource) -> bool:
    return r.type == PLATFORM_TYPE and "environment" in r.props


# ---- containers of any workload ------------------------------------------------------------------

_POD_TEMPLATES = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_specs(props: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, pod spec, or UNKNOWN) for every pod template a Kubernetes workload's inputs hold."""
    kind = props.get("kind")
    if not isinstance(kind, str):
        return
    if kind in _POD_TEMPLATES:
        path = _POD_TEMPLATES[kind]
        yield ".".join(path), _pod(get(props, *path))
    elif kind == "LeaderWorkerSet":
        template = get(props, "spec", "leaderWorkerTemplate")
        if is_unknown(template):
            yield "spec.leaderWorkerTemplate", UNKNOWN
            return
        for role in ("leaderTemplate", "workerTemplate"):
            if isinstance(template, dict) and role in template:
                yield f"spec.leaderWorkerTemplate.{role}.spec", _pod(get(template, role, "spec"))


def _pod(value: Any) -> Any:
    return value if is_unknown(value) else value or {}


def containers(props: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(where, container, pod spec) for every container and init container; a container is UNKNOWN when it
    (or its list, or its pod spec) is not known yet, and `where` then names what is unknown."""
    for where, pod in pod_specs(props):
        if is_unknown(pod):
            yield where, UNKNOWN, UNKNOWN
            continue
        for group in ("initContainers", "containers"):
            listed = pod.get(group)
            if is_unknown(listed):
                yield f"{where}.{group}", UNKNOWN, pod
                continue
            for c in listed or []:
                name = get(c, "name")
                yield f"{where}.{group}[{name if isinstance(name, str) else '?'}]", c, pod


# ---- resource rules ------------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_tag(image: str) -> str | None:
    """The tag of an image reference, '' for none; None when it is pinned by digest."""
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def images_pinned(r: Resource, config: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for where, c, _ in containers(r.props):
        image = get(c, "image")
        if is_unknown(image):
            out.append(undetermined(r, [where if is_unknown(c) else f"{where}.image"], "its image's tag"))
            continue
        image = image or ""
        if "@" in image and not _DIGEST.search(image):
            # The runtime refuses such a reference at pull time; its text after ':' is no version tag either.
            out.append(
                f"{r.name}: {where} image {image!r} has a malformed digest (allowed: @sha256: and 64 "
                "lowercase hex digits); pin it by its full digest, or by a version tag without '@'"
            )
            continue
        tag = image_tag(image)
        if tag is not None and (tag in ("", "latest") or tag in config["forbidden_tags"]):
            shown = f"tag {tag!r}" if tag else "no tag"
            out.append(
                f"{r.name}: {where} image {image!r} has {shown} (allowed: a version tag or @sha256 digest); "
                "pin it, e.g. lmsysorg/sglang:v0.5.23"
            )
    return out


def container_resources(r: Resource, config: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    need = [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")]
    if config["require_cpu_limit"]:
        need.append(("limits", "cpu"))
    for where, c, _ in containers(r.props):
        groups = {group: get(c, "resources", group) for group in ("requests", "limits")}
        unknown = [g for g, v in groups.items() if is_unknown(v)]
        if is_unknown(c) or unknown:
            paths = [where] if is_unknown(c) else [f"{where}.resources.{g}" for g in unknown]
            out.append(undetermined(r, paths, "its resource requests and limits"))
            continue
        missing = [f"{group}.{what}" for group, what in need if what not in (groups[group] or {})]
        if missing:
            out.append(
                f"{r.name}: {where} has no {', '.join(missing)} (required: cpu and memory requests, a "
                f"memory limit{', a cpu limit' if config['require_cpu_limit'] else ''}); set them in "
                "its resources"
            )
    return out


def no_privilege(r: Resource, config: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for where, c, _ in containers(r.props):
        if is_unknown(c):
            out.append(undetermined(r, [where], "its privileges"))
            continue
        privileged = get(c, "securityContext", "privileged")
        escalation = get(c, "securityContext", "allowPrivilegeEscalation")
        unknown = [
            f"{where}.securityContext{'' if is_unknown(get(c, 'securityContext')) else '.' + key}"
            for key, value in (("privileged", privileged), ("allowPrivilegeEscalation", escalation))
            if is_unknown(value)
        ]
        if unknown:
            out.append(undetermined(r, sorted(set(unknown)), "its privileges"))
            continue
        if privileged:
            out.append(
                f"{r.name}: {where} is privileged (allowed: false); drop privileged and grant only the "
                "capabilities it needs"
            )
        if escalation is not False:
            out.append(
                f"{r.name}: {where} may escalate privileges (allowPrivilegeEscalation "
                f"{'unset' if escalation is None else escalation}; allowed: false); set it to false"
            )
    for where, pod in pod_specs(r.props):
        out += _pod_privileges(r, where, pod, config)
    return out


def _pod_privileges(r: Resource, where: str, pod: Any, config: dict[str, Any]) -> list[Finding]:
    if is_unknown(pod):
        return []  # reported once for its containers
    out: list[Finding] = []
    shared = {key: get(pod, key) for key in ("hostNetwork", "hostPID", "hostIPC")}
    unknown = [f"{where}.{key}" for key, value in shared.items() if is_unknown(value)]
    if unknown:
        out.append(undetermined(r, unknown, "whether its pod shares the host's namespaces"))
    elif any(shared.values()):
        out.append(
            f"{r.name}: pod shares the host's network, PID or IPC namespace (allowed: none); remove it"
        )
    volumes = get(pod, "volumes")
    if is_unknown(volumes):
        return out + [undetermined(r, [f"{where}.volumes"], "its host paths")]
    allowed = tuple(p.rstrip("/") for p in config["allowed_host_paths"])
    for i, v in enumerate(volumes or []):
        host_path = get(v, "hostPath")
        if host_path is None:
            continue
        path = get(host_path, "path")
        if is_unknown(path):
            out.append(undetermined(r, [f"{where}.volumes[{i}].hostPath.path"], "its host paths"))
            continue
        path = (path or "").rstrip("/")
        if not any(path == a or path.startswith(a + "/") for a in allowed):
            out.append(
                f"{r.name}: volume {v.get('name')!r} mounts host path {path or '/'!r} (allowed under: "
                f"{', '.join(allowed) or 'none'}); use a PersistentVolumeClaim or the node cache"
            )
    return out


def public_endpoint_secured(r: Resource, config: dict[str, Any]) -> list[Finding]:
    """A load balancer on the internet needs TLS, and the model behind it an API key."""
    if is_deployment(r):
        return _public_deployment_secured(r)
    kind = r.props.get("kind")
    if kind == "Ingress":
        return _internet_facing_without_cert(
            r,
            "ALB Ingress",
            "alb.ingress.kubernetes.io/scheme",
            "alb.ingress.kubernetes.io/certificate-arn",
            "add an ACM certificate so clients connect over HTTPS",
        )
    if kind == "Service":
        findings = _internet_facing_without_cert(
            r,
            "NLB Service",
            "service.beta.kubernetes.io/aws-load-balancer-scheme",
            "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
            "add an ACM certificate for TLS",
        )
        service_type = get(r.props, "spec", "type")
        if findings and is_unknown(service_type):
            return [undetermined(r, ["spec.type"], "whether it is an internet-facing load balancer")]
        return findings if service_type == "LoadBalancer" else []
    return []


def _public_deployment_secured(r: Resource) -> list[Finding]:
    if unknown := needs(r, "whether its endpoint is public", ("endpoint", "exposure")):
        return [unknown]
    ep = r.props["endpoint"]
    if ep["exposure"] != "public":
        return []
    if unknown := needs(r, "its public endpoint's auth and TLS", ("endpoint", "auth"), ("endpoint", "tls")):
        return [unknown]
    out: list[Finding] = []
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
    return out


def _internet_facing_without_cert(
    r: Resource, what: str, scheme_key: str, cert_key: str, fix: str
) -> list[Finding]:
    """A present certificate passes even while its ARN is unknown (one is set); an unknown scheme, or the
    annotations themselves, cannot be judged."""
    annotations = get(r.props, "metadata", "annotations")
    if is_unknown(annotations):
        return [undetermined(r, ["metadata.annotations"], "whether it is internet-facing with TLS")]
    annotations = annotations or {}
    scheme = annotations.get(scheme_key)
    if cert_key in annotations and annotations[cert_key] != "":
        return []
    if is_unknown(scheme):
        return [undetermined(r, [f"metadata.annotations[{scheme_key}]"], "whether it is internet-facing")]
    if scheme != "internet-facing":
        return []
    return [f"{r.name}: internet-facing {what} without {cert_key}; {fix}"]


def revision_pinned(r: Resource, config: dict[str, Any], production: bool) -> list[Finding]:
    if not is_deployment(r):
        return []
    if unknown := needs(r, "its environment", ("environment",)):
        return [unknown]
    if (r.props["environment"] == "production") != production:
        return []
    if unknown := needs(r, "that its model revision is a commit", ("model",)):
        return [unknown]
    m = r.props["model"]
    if m["revisionIsCommit"]:
        return []
    return [
        f"{r.name}: model {m['repo']} revision {m['revision']!r} is a branch or tag (allowed: a 40-hex "
        f"commit); pin model.revision: {m['sha']}"
    ]


def safetensors_only(r: Resource, config: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    if is_deployment(r):
        if format_unknown := needs(r, "its weights' format", ("model",)):
            out.append(format_unknown)
        elif r.props["model"]["weightsFormat"] != "safetensors":
            out.append(
                f"{r.name}: model {r.props['model']['repo']} weights are {r.props['model']['weightsFormat']} "
                "(allowed: safetensors); choose a safetensors checkpoint and run `sgldeploy lock`"
            )
    for where, c, _ in containers(r.props):
        args = get(c, "args")
        unknown_args = unknown_paths(args, f"{where}.args") if not is_unknown(c) else [where]
        if unknown_args:  # an unknown argument could be --load-format itself
            out.append(undetermined(r, unknown_args, "its --load-format"))
            continue
        fmt = _flag(args or [], "--load-format")
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


def remote_code_allowed(r: Resource, config: dict[str, Any]) -> list[Finding]:
    if not is_deployment(r):
        return []
    if unknown := needs(r, "whether its model runs its own code", ("model",)):
        return [unknown]
    if not r.props["model"]["trustRemoteCode"]:
        return []
    repo = r.props["model"]["repo"]
    if repo in config["allowed_repos"]:
        return []
    return [
        f"{r.name}: model {repo} runs its own code (trust_remote_code) and is not allow-listed (allowed: "
        f"{', '.join(config['allowed_repos']) or 'none'}); review it and add it to allowed_repos"
    ]


def placement_fits(r: Resource, config: dict[str, Any]) -> list[Finding]:
    if not is_deployment(r):
        return []
    if unknown := needs(r, "its placement's fit", ("memory",), ("serving",), ("placement", "gpuModel")):
        return [unknown]
    out: list[Finding] = []
    mem, serving = r.props["memory"], r.props["serving"]
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


def instances_and_regions(r: Resource, config: dict[str, Any]) -> list[Finding]:
    if not is_deployment(r):
        return []
    if unknown := needs(r, "its instance types and region", ("placement",), ("region",)):
        return [unknown]
    out: list[Finding] = []
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


def gpu_caps(resources: list[Resource], config: dict[str, Any]) -> list[tuple[str, Finding]]:
    out: list[tuple[str, Finding]] = []
    deployments = []
    for r in (r for r in resources if is_deployment(r)):
        unknown = needs(r, "its GPUs", ("replicas", "max"), ("placement", "gpusPerReplica"))
        if unknown:
            out.append((r.urn, unknown))
        else:
            deployments.append(r)
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
    if total > config["max_gpus_total"]:  # the known GPUs alone already exceed the cap
        out.append(
            (
                "",
                f"stack: {total} GPUs at max replicas exceeds max_gpus_total {config['max_gpus_total']}; "
                "lower max_replicas somewhere or raise the cap",
            )
        )
    elif len(deployments) < len([r for r in resources if is_deployment(r)]):
        out.append(
            ("", Undetermined(f"stack: cannot check max_gpus_total before apply ({total} GPUs known)"))
        )
    return out


def budget(resources: list[Resource], config: dict[str, Any]) -> list[tuple[str, Finding]]:
    """The stack's monthly cost at max replicas within the budget (the policy's, else the platform's)."""
    platform = next((r for r in resources if is_platform(r)), None)
    limit = config.get("budget_usd_per_month")
    if limit is None and platform is not None:
        if budget_unknown := needs(platform, "the budget", ("budgetUsdPerMonth",)):
            return [("", budget_unknown)]
        limit = platform.props.get("budgetUsdPerMonth")  # null values do not survive serialization
    if limit is None:
        return []
    unknown: list[tuple[str, Finding]] = []
    parts = []
    for r in (r for r in resources if is_deployment(r) or is_platform(r)):
        if cost_unknown := needs(r, "the stack's cost against its budget", ("cost",)):
            unknown.append(("", cost_unknown))
        else:
            parts.append(r)
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
    if total <= limit:  # with a cost unknown, the known ones alone are within it: undetermined
        return unknown
    # Ties by name: the engine sends resources in no set order, and the message must be the same each time.
    biggest = sorted(
        (r for r in parts if is_deployment(r)),
        key=lambda r: (-(r.props["cost"].get("monthlyUsdMax") or 0), r.name),
    )
    top = ", ".join(f"{r.name} ${r.props['cost']['monthlyUsdMax']:,.0f}" for r in biggest[:3])
    return [
        (
            "",
            f"stack: ${total:,.2f}/month at max replicas exceeds the budget of ${limit:,.2f} ({top}); lower "
            "max_replicas, choose cheaper placements, or raise budget_usd_per_month",
        )
    ]


def production_availability(resources: list[Resource], config: dict[str, Any]) -> list[tuple[str, Finding]]:
    """Production deployments keep serving through rollouts and node drains."""
    out: list[tuple[str, Finding]] = []
    by_urn = {r.urn: r for r in resources}
    for r in resources:
        if not is_deployment(r):
            continue
        if unknown := needs(r, "its environment", ("environment",)):
            out.append((r.urn, unknown))
            continue
        if r.props["environment"] != "production":
            continue
        what = "its availability"
        if unknown := needs(r, what, ("readiness",), ("replicas", "min"), ("rollout", "maxUnavailable")):
            out.append((r.urn, unknown))
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
