"""Turn raw config (what `pulumi.Config.require_object` returns) into a StackSpec, or every problem at once.

Shapes, types and ranges come from pydantic; rules that span fields or deployments live here, each
naming the config path, the value found and the fix.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sgldeploy.spec import (
    OWN_LOADER_QUANTIZATIONS,
    PD_ROLES,
    SGLANG_IMAGE,
    DeploymentSpec,
    PlatformSpec,
    StackSpec,
    aws_text,
)
from sgldeploy.spec.problems import InvalidInput, Problem, SpecValueError, Verbatim, config_path

MAX_NAME = 40
# Flags sgldeploy derives from the spec; setting them in extra_args would fight the generated value.
MANAGED_FLAGS = {
    "--model-path": "model.repo",
    "--model": "model.repo",
    "--revision": "model.revision",
    "--served-model-name": "model.served_name",
    "--host": None,
    "--port": None,
    "--tp-size": "resources.gpu_count",
    "--tensor-parallel-size": "resources.gpu_count",
    "--dtype": "serving.precision",
    "--quantization": "serving.quantization",
    "--kv-cache-dtype": "serving.kv_cache_dtype",
    "--context-length": "serving.context_length",
    "--max-running-requests": "serving.max_concurrency",
    "--mem-fraction-static": "serving.mem_fraction_static",
    "--enable-metrics": "observability.metrics",
    "--api-key": "endpoint.auth",
    "--trust-remote-code": "model.trust_remote_code",
    "--speculative-algorithm": "serving.speculative",
    "--speculative-draft-model-path": "serving.speculative",
    "--enable-hierarchical-cache": "serving.hierarchical_cache",
    "--enable-hicache": "serving.hierarchical_cache",
    "--hicache-ratio": "serving.hierarchical_cache.ratio",
    "--hicache-size": "serving.hierarchical_cache.size_gib",
    "--hicache-storage-backend": "serving.hierarchical_cache.storage",
    "--attn-dp-size": "serving.parallelism.data_parallel_attention",
    "--attention-data-parallel-size": "serving.parallelism.data_parallel_attention",
    "--enable-dp-attention": "serving.parallelism.data_parallel_attention",
    "--enable-dp-lm-head": "serving.parallelism.data_parallel_attention",
    "--ep-size": "serving.parallelism.expert",
    "--expert-parallel-size": "serving.parallelism.expert",
    "--ep": "serving.parallelism.expert",
    "--moe-a2a-backend": "serving.parallelism.all_to_all",
    "--enable-lora": "model.adapters",
    "--lora-paths": "model.adapters",
    "--max-loras-per-batch": "serving.lora.max_loras_per_batch",
    "--disaggregation-mode": "disaggregation",
    "--disaggregation-transfer-backend": "disaggregation.transfer_backend",
    "--disaggregation-bootstrap-port": "disaggregation",
    "--max-loaded-loras": "serving.lora.max_loaded_loras",
    "--max-lora-rank": "serving.lora.max_lora_rank",
    "--lora-target-modules": "model.adapters",
    "--load-format": "cache.loader",
    "--model-loader-extra-config": "cache.streamer",
    "--remote-instance-weight-loader-seed-instance-ip": "cache.loader",
    "--remote-instance-weight-loader-seed-instance-service-port": "cache.loader",
    "--remote-instance-weight-loader-send-weights-group-ports": "cache.loader",
}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_ENV_NAMES = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SGLANG_API_KEY", "API_KEY"}


def parse_stack(platform: Any, deployments: Any) -> StackSpec:
    """Validate raw `sgldeploy:platform` and `sgldeploy:deployments`; raise InvalidInput with all problems."""
    problems: list[Problem] = []
    platform_spec = _parse(PlatformSpec, {} if platform is None else platform, "platform", (), problems)
    parsed: list[DeploymentSpec | None] = []
    if deployments is None:
        deployments = []
    if not isinstance(deployments, list):
        problems.append(
            Problem(
                config_path("deployments"),
                "must be a list of deployments",
                "write it as a YAML list, one `- name: …` entry per model",
                deployments,
            )
        )
        deployments = []
    for i, raw in enumerate(deployments):
        parsed.append(_parse(DeploymentSpec, raw, "deployments", (i,), problems))
    problems += stack_rules(platform_spec, parsed)
    if problems:
        raise InvalidInput(problems)
    return StackSpec(platform=platform_spec, deployments=[d for d in parsed if d is not None])


def stack_rules(platform: PlatformSpec | None, deployments: list[DeploymentSpec | None]) -> list[Problem]:
    problems: list[Problem] = aws_text.platform_problems(platform) if platform else []
    seen: dict[str, int] = {}
    for i, dep in enumerate(deployments):
        if dep is None:
            continue

        def at(*loc: object, i: int = i) -> str:
            return config_path("deployments", (i, *loc))

        if len(dep.name) > MAX_NAME or not _is_dns1035(dep.name):
            problems.append(
                Problem(
                    at("name"),
                    f"must be a DNS-1035 label of at most {MAX_NAME} characters "
                    "(lower-case letters, digits, '-', starting with a letter)",
                    "rename it, e.g. qwen-7b",
                    dep.name,
                )
            )
        elif dep.name in seen:
            problems.append(
                Problem(
                    at("name"),
                    f"is already used by deployments[{seen[dep.name]}]",
                    "give every deployment its own name",
                    dep.name,
                )
            )
        else:
            seen[dep.name] = i
        problems += _deployment_rules(platform, dep, at)
    return problems


def _deployment_rules(
    platform: PlatformSpec | None, dep: DeploymentSpec, at: Callable[..., str]
) -> list[Problem]:
    """The rules of one deployment that span its fields (or need the platform)."""
    return (
        _scaling_rules(dep, at)
        + _rollout_rules(dep, at)
        + _trust_rules(platform, dep, at)
        + _endpoint_rules(dep, at)
        + _serving_rules(dep, at)
        + _parallelism_rules(dep, at)
        + _adapter_rules(dep, at)
        + _env_rules(dep, at)
        + _workload_rules(dep, at)
        + _reservation_rules(platform, dep, at)
        + _disaggregation_rules(platform, dep, at)
        + _cache_rules(dep, at)
    )


# S3 bucket names (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html): 3-63 lower-case
# letters, digits, dots and hyphens, a letter or digit at each end, no two dots together, not an IP address.
_BUCKET = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FILE_LOADERS = ("safetensors", "fastsafetensors")


def _cache_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    """The loader against the storage it reads: each loader reads some storages only."""
    c, storage, out = dep.cache, dep.cache_storage, []
    if storage == "s3" and c.loader in _FILE_LOADERS:
        out.append(
            Problem(
                at("cache", "loader"),
                "reads files, but cache.storage s3 keeps the weights as objects",
                "use runai-streamer (or remote-instance, which falls back to it), or another cache.storage",
                c.loader,
            )
        )
    if c.loader == "fastsafetensors" and storage not in ("node-local", "s3"):
        out.append(
            Problem(
                at("cache", "loader"),
                f"reads the weights from the GPU node's NVMe, but cache.storage is {storage}",
                "set cache.storage: node-local, or choose safetensors",
                c.loader,
            )
        )
    if c.loader in ("runai-streamer", "remote-instance") and storage == "none":
        what = (
            "streams from a cache"
            if c.loader == "runai-streamer"
            else "falls back to the cache when no replica runs"
        )
        out.append(
            Problem(
                at("cache", "storage"),
                f"keeps no cache, but cache.loader {c.loader} {what}",
                "set cache.storage: s3 (or node-local, efs, fsx-lustre)",
                storage,
            )
        )
    if c.loader != "auto" and dep.serving.quantization in OWN_LOADER_QUANTIZATIONS:
        out.append(
            Problem(
                at("cache", "loader"),
                f"is not how {dep.serving.quantization} weights load: SGLang reads them with that format's loader",
                "leave cache.loader auto",
                c.loader,
            )
        )
    if c.bucket is not None and storage != "s3":
        out.append(
            Problem(
                at("cache", "bucket"),
                f"names a bucket, but cache.storage is {storage}",
                "set cache.storage: s3, or remove cache.bucket",
                c.bucket,
            )
        )
    if c.bucket is not None and not _BUCKET.match(c.bucket):
        out.append(
            Problem(
                at("cache", "bucket"),
                "is not an S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens, a letter or digit "
                "at each end",
                "use the bucket's name as S3 lists it, or leave it null to create one",
                c.bucket,
            )
        )
    return out


def _disaggregation_rules(
    platform: PlatformSpec | None, dep: DeploymentSpec, at: Callable[..., str]
) -> list[Problem]:
    """A disaggregated deployment: what its two roles and the PD router need."""
    if dep.disaggregation is None:
        return []
    out = [
        Problem(
            at(key),
            "is not read with disaggregation: each role has its own",
            f"move it under disaggregation.prefill.{key} and disaggregation.decode.{key}",
            show_got=False,
        )
        for key in ("resources", "scaling")
        if key in dep.model_fields_set
    ]
    longest = max(len(f"{dep.name}-{role}") for role in PD_ROLES)
    if longest > MAX_NAME and _is_dns1035(dep.name):
        out.append(
            Problem(
                at("name"),
                f"must be at most {MAX_NAME - (longest - len(dep.name))} characters with disaggregation: "
                f"each role is a deployment named <name>-prefill or <name>-decode, of at most {MAX_NAME}",
                "shorten it",
                dep.name,
            )
        )
    for role in PD_ROLES:
        out += _role_rules(platform, dep.role_spec(role), role, at)
    if dep.rollout.strategy != "rolling":
        out.append(
            Problem(
                at("rollout", "strategy"),
                "must be rolling with disaggregation: the PD router pairs every prefill with every decode "
                "replica, whatever commit each serves",
                "use strategy: rolling",
                dep.rollout.strategy,
            )
        )
    if dep.endpoint.algorithm == "ip-hash":
        out.append(
            Problem(
                at("endpoint", "algorithm"),
                "has no PD router policy: with disaggregation the router is the only way in",
                "use cache-aware, round-robin or least-connections",
                dep.endpoint.algorithm,
            )
        )
    if dep.endpoint.router.enabled is False:
        out.append(
            Problem(
                at("endpoint", "router", "enabled"),
                "cannot be false with disaggregation: only the router sends each request to both roles",
                "leave it unset",
                False,
            )
        )
    if platform is not None and not platform.addons.efa_device_plugin:
        out.append(
            Problem(
                config_path("platform", ("addons", "efa_device_plugin")),
                f"must be true: {dep.name} moves KV caches from prefill to decode over EFA, and pods get "
                "EFA interfaces only through the EFA device plugin",
                "set it to true (or existing, where the cluster runs it)",
                platform.addons.efa_device_plugin,
            )
        )
    return out


def _role_rules(
    platform: PlatformSpec | None, role: DeploymentSpec, name: str, at: Callable[..., str]
) -> list[Problem]:
    """One role's own scaling and reservation rules, at its paths under `disaggregation`."""

    def role_at(*loc: object) -> str:
        return at(*role.path(*loc))

    out = _scaling_rules(role, role_at) + _reservation_rules(platform, role, role_at)
    if role.state == "running" and role.min_replicas == 0:
        out.append(
            Problem(
                role_at("scaling", "min_replicas"),
                f"must be ≥ 1 with disaggregation (readiness {role.readiness} defaults it to 0): the PD router "
                "cannot hold a request while a role has no replica",
                "set it to 1 or more, or choose readiness always-ready",
                role.min_replicas,
            )
        )
    return out


def _scaling_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    out: list[Problem] = []
    s = dep.scaling
    if s.min_replicas is not None and s.min_replicas > s.max_replicas:
        out.append(
            Problem(
                at("scaling", "max_replicas"),
                "must be ≥ min_replicas",
                "raise max_replicas or lower min_replicas",
                Verbatim(f"{s.max_replicas} < {s.min_replicas}"),
            )
        )
    if dep.state == "running" and s.max_replicas < 1:
        out.append(
            Problem(
                at("scaling", "max_replicas"),
                "must be ≥ 1 while state is running",
                "raise max_replicas, or set state: stopped to run no replicas",
                s.max_replicas,
            )
        )
    if s.metric == "slo":
        out += _slo_scaling_rules(dep, at)
    if dep.state == "running" and dep.readiness == "always-ready" and s.min_replicas == 0:
        out.append(
            Problem(
                at("scaling", "min_replicas"),
                "must be ≥ 1 with readiness always-ready",
                "raise min_replicas, or choose readiness fast to allow scale to zero",
                0,
            )
        )
    return out


def _slo_scaling_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    """`metric: slo` needs a target to scale on, and replicas a Prometheus trigger can see."""
    out = []
    if not dep.slo_targets():
        keys = " or ".join(f"slo.{key}" for key in dep.slo_keys)
        whose = f"the {dep.serving_role.role} role scales" if dep.serving_role else "it scales"
        out.append(
            Problem(
                at("scaling", "metric"),
                f"is slo, but {whose} on {keys}, which is not set",
                f"set {keys}, or choose another metric",
                "slo",
            )
        )
    if dep.state == "running" and dep.min_replicas == 0:
        out.append(
            Problem(
                at("scaling", "metric"),
                f"is slo, but min_replicas is 0 (readiness {dep.readiness} defaults it so): from zero the KEDA "
                "HTTP add-on scales on requests in flight, and no latency is measured while nothing runs",
                "set scaling.min_replicas to 1 or more, or choose metric queue-depth",
                "slo",
            )
        )
    return out


def _rollout_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    out: list[Problem] = []
    r = dep.rollout
    if r.canary_percent is not None and r.strategy != "canary":
        out.append(
            Problem(
                at("rollout", "canary_percent"),
                "is only used with strategy canary",
                "set rollout.strategy: canary, or remove canary_percent",
                r.canary_percent,
            )
        )
    elif r.canary_percent is not None and not 1 <= r.canary_percent <= 99:
        out.append(
            Problem(
                at("rollout", "canary_percent"),
                "must be 1–99",
                "pick the share of traffic the canary should get, e.g. 10",
                r.canary_percent,
            )
        )
    if r.max_surge == 0 and r.max_unavailable == 0:
        out.append(
            Problem(
                at("rollout", "max_unavailable"),
                "and max_surge cannot both be 0",
                "allow max_surge: 1 (a spare GPU node) or max_unavailable: 1",
                0,
            )
        )
    return out


def _trust_rules(platform: PlatformSpec | None, dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    out: list[Problem] = []
    # With an invalid platform, rules that depend on it wait until it is fixed.
    if platform and dep.model.trust_remote_code and not platform.allow_trust_remote_code:
        out.append(
            Problem(
                at("model", "trust_remote_code"),
                "runs code from the model repo, which the platform does not allow",
                "set sgldeploy:platform.allow_trust_remote_code: true after reviewing "
                "the repo's code, or choose a model without custom code",
                True,
            )
        )
    return out


def _endpoint_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    out: list[Problem] = []
    e = dep.endpoint
    if e.exposure == "cluster" and (e.tls_certificate_arn or e.hostname):
        field = "tls_certificate_arn" if e.tls_certificate_arn else "hostname"
        out.append(
            Problem(
                at("endpoint", field),
                "needs a load balancer, but exposure is cluster",
                "set endpoint.exposure to public or internal, or remove it",
                getattr(e, field),
            )
        )
    if e.exposure == "public" and e.auth == "none":
        out.append(
            Problem(
                at("endpoint", "auth"),
                "must not be none on a public endpoint",
                "use auth: api-key, or exposure: internal",
                "none",
            )
        )
    return out


def _serving_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    out: list[Problem] = []
    sv = dep.serving
    if sv.quantization in ("awq", "awq_marlin") and sv.precision == "bfloat16":
        out.append(
            Problem(
                at("serving", "precision"),
                f"bfloat16 does not work with {sv.quantization}, which runs float16 activations only",
                "set precision: float16 or auto",
                "bfloat16",
            )
        )
    if sv.speculative and sv.speculative.algorithm != "NGRAM" and sv.speculative.draft_repo is None:
        out.append(
            Problem(
                at("serving", "speculative", "draft_repo"),
                f"is required by {sv.speculative.algorithm}",
                "name the draft model repo (org/name), or use NGRAM",
                None,
            )
        )
    for j, arg in enumerate(sv.extra_args):
        flag = arg.split("=", 1)[0]
        if not arg.startswith("--"):
            continue  # a value following a flag
        if flag in MANAGED_FLAGS:
            spec_field = MANAGED_FLAGS[flag]
            fix = (
                f"set {spec_field} in the spec instead"
                if spec_field
                else "remove it; sgldeploy sets it for the pod"
            )
            out.append(
                Problem(at("serving", "extra_args", j), f"{flag} is generated from the spec", fix, arg)
            )
    hc = sv.hierarchical_cache
    if hc and hc.ratio is not None and hc.size_gib is not None:
        out.append(
            Problem(
                at("serving", "hierarchical_cache"),
                "sets both ratio and size_gib, and SGLang's --hicache-size overrides --hicache-ratio",
                "keep one of them",
                f"ratio {hc.ratio:g}, size_gib {hc.size_gib}",
            )
        )
    if sv.image != SGLANG_IMAGE and ":" not in sv.image.rsplit("/", 1)[-1] and "@" not in sv.image:
        out.append(
            Problem(
                at("serving", "image"),
                "has no tag or digest, so a restart may pull another version",
                f"pin it, e.g. {SGLANG_IMAGE}",
                sv.image,
            )
        )
    return out


def _parallelism_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    """What SGLang 0.5.23 asserts of the sizes at start (arg_groups/parallel_hook.py, overrides.py), where the
    spec fixes the tensor size; with it on auto, sizing only offers placements that satisfy them."""
    out: list[Problem] = []
    par, gpus = dep.serving.parallelism, dep.resources.gpu_count
    if par.tensor != "auto" and gpus != "auto" and par.tensor != gpus:
        out.append(
            Problem(
                at("serving", "parallelism", "tensor"),
                f"differs from resources.gpu_count {gpus}: SGLang's tensor parallelism spans a replica's GPUs",
                "set one of them, or both to the same count",
                par.tensor,
            )
        )
    tensor = par.tensor if par.tensor != "auto" else gpus
    for name, size in (("data_parallel_attention", par.data_parallel_attention), ("expert", par.expert)):
        if tensor != "auto" and size > 1 and int(tensor) % size:
            out.append(
                Problem(
                    at("serving", "parallelism", name),
                    f"must divide the tensor-parallel size {tensor}",
                    f"pick a divisor of {tensor}, or 1",
                    size,
                )
            )
    if par.all_to_all == "deepep" and par.expert == 1:
        out.append(
            Problem(
                at("serving", "parallelism", "all_to_all"),
                "dispatches tokens to experts split across GPUs, and expert is 1",
                "set serving.parallelism.expert to the tensor size, or all_to_all: auto",
                "deepep",
            )
        )
    return out


def _adapter_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    """What SGLang 0.5.23 asserts of its LoRA sizes at start (arg_groups/lora_hook.py), and names clients can
    tell apart."""
    out: list[Problem] = []
    adapters, lora = dep.model.adapters, dep.serving.lora
    seen: set[str] = set()
    for j, adapter in enumerate(adapters):
        if adapter.name in seen:
            out.append(
                Problem(
                    at("model", "adapters", j, "name"),
                    "is the name of an earlier adapter",
                    "give each adapter its own name",
                    adapter.name,
                )
            )
        seen.add(adapter.name)
    if adapters and dep.cache.storage == "none":
        out.append(
            Problem(
                at("cache", "storage"),
                "cannot hold the LoRA adapters, and SGLang would fetch each adapter's default branch from the "
                "Hub, not its locked commit",
                "set node-local (or efs, fsx-lustre), or auto",
                "none",
            )
        )
    loaded = lora.max_loaded_loras
    if loaded is not None and loaded < lora.max_loras_per_batch:
        out.append(
            Problem(
                at("serving", "lora", "max_loaded_loras"),
                f"must be at least max_loras_per_batch ({lora.max_loras_per_batch}): a batch's adapters are all "
                "loaded",
                f"raise it to {lora.max_loras_per_batch}, or lower max_loras_per_batch",
                loaded,
            )
        )
    if loaded is not None and len(adapters) > loaded:
        out.append(
            Problem(
                at("serving", "lora", "max_loaded_loras"),
                f"is fewer than the {len(adapters)} adapters SGLang loads at start",
                f"raise it to {len(adapters)}, or leave it null",
                loaded,
            )
        )
    return out


def _reservation_rules(
    platform: PlatformSpec | None, dep: DeploymentSpec, at: Callable[..., str]
) -> list[Problem]:
    res = dep.resources
    reserved = res.capacity in ("reserved", "reserved-fallback")
    r = res.reservation
    if not reserved:
        if r is None:
            return []
        return [
            Problem(
                at("resources", "reservation"),
                f"is only used with capacity reserved or reserved-fallback, and capacity is {res.capacity}",
                "set resources.capacity: reserved, or remove the reservation",
                show_got=False,
            )
        ]
    if r is None or not (r.ids or r.tags):
        return [
            Problem(
                at("resources", "reservation"),
                f"must name the reservations that capacity {res.capacity} launches into",
                "set resources.reservation.ids: [cr-…], or resources.reservation.tags",
                show_got=False,
            )
        ]
    if platform is None or platform.node_provisioner != "managed-node-group":
        return []
    out = []
    if r.tags or len(r.ids) != 1:  # a launch template targets one reservation
        out.append(
            Problem(
                at("resources", "reservation", "ids"),
                "must be exactly one id with managed node groups: a launch template targets one reservation",
                "name one reservation id and no tags, or use node_provisioner: karpenter",
                Verbatim(", ".join(r.ids) or "tags"),
            )
        )
    if res.capacity == "reserved-fallback":
        out.append(
            Problem(
                at("resources", "capacity"),
                "cannot fall back with a managed node group, which has one capacity type",
                "use capacity: reserved, or node_provisioner: karpenter",
                res.capacity,
            )
        )
    return out


def _workload_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    # The defaults describe a typical chat request; only a shape the user wrote must fit the context.
    w, context = dep.workload, dep.serving.context_length
    if "workload" not in dep.model_fields_set or context is None:
        return []
    if w.input_tokens + w.output_tokens <= context:
        return []
    return [
        Problem(
            at("workload", "input_tokens"),
            f"and output_tokens make requests of {w.input_tokens + w.output_tokens} tokens, longer than "
            f"serving.context_length {context}",
            "shorten the workload, or raise serving.context_length",
            w.input_tokens,
        )
    ]


def _env_rules(dep: DeploymentSpec, at: Callable[..., str]) -> list[Problem]:
    out: list[Problem] = []
    for key in dep.env:
        if not _ENV_NAME.match(key):
            out.append(
                Problem(
                    at("env", key),
                    "is not a valid environment variable name",
                    "use letters, digits and '_', not starting with a digit",
                    key,
                )
            )
        elif key.upper() in SECRET_ENV_NAMES:
            out.append(
                Problem(
                    at("env", key),
                    "would put a secret in plain text in the manifest",
                    "remove it; set it with pulumi config set --secret sgldeploy:hfToken "
                    "(or sgldeploy:apiKey)",
                    key,
                )
            )
    return out


def _is_dns1035(name: str) -> bool:
    return bool(_DNS1035.match(name))


# ---- pydantic errors → problem lines ------------------------------------------------------------


def _parse(
    model: type[BaseModel], raw: Any, key: str, prefix: tuple[Any, ...], problems: list[Problem]
) -> Any:
    if raw is not None and not isinstance(raw, dict):
        what = "must be an object (a YAML mapping)"
        problems.append(Problem(config_path(key, prefix), what, "write it as `key: value` lines", raw))
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems.append(_problem(model, key, prefix, err))
        return None


def _problem(model: type[BaseModel], key: str, prefix: tuple[Any, ...], err: ErrorDetails) -> Problem:
    loc = tuple(err["loc"])
    path = config_path(key, prefix + loc)
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    cause = ctx.get("error")
    if isinstance(cause, SpecValueError):  # the validator's own line, its path THIS_FIELD
        return replace(cause.problem, path=path)
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        return Problem(
            path,
            "is not a known key",
            "remove it or fix the spelling; known keys here: " + ", ".join(allowed),
            loc[-1],
        )
    if kind == "missing":
        return Problem(path, "is required", "add it", show_got=False)
    if kind == "literal_error":
        allowed = _choices(model, loc)
        return Problem(path, "is not one of the allowed values", "use one of: " + " | ".join(allowed), got)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<", "less_than_equal": "≤"}[
            kind
        ]
        bound = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        return Problem(path, f"must be {sign} {bound}", f"use a value {sign} {bound}", got)
    if kind == "finite_number":
        return Problem(path, "must be a finite number", "write a number, not NaN or infinity", got)
    if kind in ("string_too_long", "string_too_short", "string_pattern_mismatch"):
        # pydantic's sentence, its first letter lowered to start the line's clause; a pattern in it keeps its case
        msg = err["msg"]
        return Problem(path, msg[:1].lower() + msg[1:], "shorten or correct it", got)
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "model_type":
        expected = {
            "int": "a whole number",
            "float": "a number",
            "bool": "true or false",
            "string": "text",
            "list": "a list",
            "dict": "an object (a YAML mapping)",
            "model": "an object (a YAML mapping)",
        }
        want = next((v for k, v in expected.items() if kind.startswith(k)), kind.replace("_", " "))
        return Problem(path, f"must be {want}", f"write {want} here", got)
    return Problem(path, err["msg"], "correct the value", got)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or part not in current.model_fields
        ):
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _choices(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    parent = _model_at(model, loc[:-1])
    if parent is None or loc[-1] not in parent.model_fields:
        return []
    return [str(v) for v in typing.get_args(parent.model_fields[loc[-1]].annotation)]


def _unwrap(annotation: Any) -> Any:
    """Optional[X] → X, list[X] → X."""
    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation
