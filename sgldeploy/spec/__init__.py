"""The typed deployment spec: what a stack file may say, with every default in one place.

The field names are a contract (../DESIGN.md): extend, never rename. Pydantic checks shapes,
types and ranges; `sgldeploy.spec.validate` checks what spans fields and deployments. Neither imports Pulumi.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
)

from sgldeploy.spec.problems import THIS_FIELD, Problem, SpecValueError

SGLANG_IMAGE = "lmsysorg/sglang:v0.5.23"
# The SGLang Model Gateway release whose Python launcher (sglang-router 0.3.2) the tests parse its arguments with.
ROUTER_IMAGE = "lmsysorg/sgl-model-gateway:v0.3.2"
"""The serving image; its SGLang version is the one whose parser the tests run (pyproject, Makefile)."""

# SGLang 0.5.23 `--quantization` choices (sglang/srt/arg_groups/choices.py), plus `none`.
QUANTIZATIONS = (
    "none",
    "auto-round",
    "auto-round-int8",
    "awq",
    "awq_marlin",
    "bitsandbytes",
    "compressed-tensors",
    "fp8",
    "gguf",
    "gptq",
    "gptq_marlin",
    "humming",
    "mlx_q4",
    "mlx_q8",
    "modelopt",
    "modelopt_fp4",
    "modelopt_fp8",
    "modelopt_mixed",
    "modelslim",
    "moe_wna16",
    "mxfp4",
    "mxfp8",
    "mxfp_w4a8",
    "nvfp4_online",
    "petit_nvfp4",
    "quark",
    "quark_int4fp8_moe",
    "quark_mxfp4",
    "unquant",
    "w4afp8",
    "w8a8_fp8",
    "w8a8_int8",
)
# SGLang 0.5.23 built-in `--speculative-algorithm` values (the parser has no choices list for them).
SPECULATIVE_ALGORITHMS = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE", "NGRAM", "DFLASH", "DSPARK", "UNO")
GPU_MODELS = ("T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200")

# `serving.kv_cache_dtype` values other than auto: written as `precision`, they are pointed to that field.
KV_CACHE_DTYPES = ("fp8_e4m3", "fp8_e5m2")
# Short dtype names people write for `serving.precision`, and the one the field takes.
PRECISION_ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float": "float32",
}

# Literals built from the tables above: pydantic reads them at runtime; a type checker sees str.
if TYPE_CHECKING:
    SpeculativeAlgorithm = str
    Quantization = str
    GpuChoice = str
else:
    SpeculativeAlgorithm = Literal[SPECULATIVE_ALGORITHMS]
    Quantization = Literal[QUANTIZATIONS]
    GpuChoice = Literal[("auto", *GPU_MODELS)]

USAGE_FILE_KEY = "sgldeploy:usageFile"  # stack config: the usage file `pulumi preview` prices with
MAX_REPLICAS = 1000  # a bound that catches typos in orders of magnitude, far above any GPU quota

Readiness = Literal["always-ready", "fast", "cold-start"]
CacheStorage = Literal["auto", "node-local", "efs", "fsx-lustre", "s3", "none"]
CacheLoader = Literal["auto", "safetensors", "fastsafetensors", "runai-streamer", "remote-instance"]
OWN_LOADER_QUANTIZATIONS = ("gguf", "bitsandbytes")
"""Quantizations whose weights SGLang reads with that format's own loader, never with `--load-format`."""
LOAD_FORMATS = {
    "safetensors": "safetensors",
    "fastsafetensors": "fastsafetensors",
    "runai-streamer": "runai_streamer",
    "remote-instance": "remote_instance",
}
"""`cache.loader` → SGLang 0.5.23's `--load-format` (srt/arg_groups/choices.py LOAD_FORMAT_CHOICES)."""


class ReadinessDefaults(TypedDict):
    min_replicas: int
    cache_storage: str
    idle_timeout_seconds: int


READINESS_DEFAULTS: dict[str, ReadinessDefaults] = {
    # Always a warm replica on a warm node; weights on the node's NVMe so restarts are quick.
    "always-ready": {"min_replicas": 1, "cache_storage": "node-local", "idle_timeout_seconds": 0},
    # May sleep at zero, but weights stay cached next to the GPUs and wake-up is a local load.
    "fast": {"min_replicas": 0, "cache_storage": "node-local", "idle_timeout_seconds": 900},
    # Cheapest: nothing kept warm, every start downloads from the Hub.
    "cold-start": {"min_replicas": 0, "cache_storage": "none", "idle_timeout_seconds": 300},
}
"""Readiness level → defaults for fields the user leaves unset. The only place these live."""

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/+=-]{1,255}$")
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_K8S_VERSION = re.compile(r"^1\.\d{2}$")


class Model(BaseModel):
    """Base: unknown keys are errors, so a typo never silently falls back to a default."""

    # Strict types: YAML `true` is not the number 1, nor "4" the number 4; NaN and infinity are no numbers.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False
    )


# ---- value types that accept `auto` or a number, with one clear message when neither -----------


def _auto_or(kind: type, minimum: float, maximum: float | None = None) -> Any:
    def check(value: Any) -> Any:
        if value == "auto":
            return "auto"
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if kind is int:
            ok_type = ok_type and float(value).is_integer()
        if not ok_type:
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what=f"must be 'auto' or a {'whole ' if kind is int else ''}number",
                    fix="write auto to let sgldeploy choose, or a number",
                    got=value,
                )
            )
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"{minimum}–{maximum}" if maximum is not None else f"≥ {minimum}"
            raise SpecValueError(
                Problem(
                    THIS_FIELD, what=f"must be {bounds}", fix=f"use a value in {bounds}, or auto", got=value
                )
            )
        return kind(value)

    number: dict[str, Any] = {"type": "integer" if kind is int else "number", "minimum": minimum}
    if maximum is not None:
        number["maximum"] = maximum
    return Annotated[Any, PlainValidator(check), WithJsonSchema({"anyOf": [{"const": "auto"}, number]})]


if TYPE_CHECKING:
    AutoPositiveInt = int | str
    AutoPositiveNumber = float | str
    AutoMemFraction = float | str
else:
    AutoPositiveInt = _auto_or(int, 1)
    AutoPositiveNumber = _auto_or(float, 0.1)
    AutoMemFraction = _auto_or(float, 0.5, 0.95)


def _check_revision(value: str) -> str:
    """A branch, tag or commit that can never escape the directory it names."""
    if not isinstance(value, str) or not value:
        raise SpecValueError(
            Problem(
                THIS_FIELD,
                what="must be a branch, tag or 40-hex commit",
                fix="e.g. main or a commit sha",
                got=value,
            )
        )
    bad = [
        why
        for cond, why in (
            (".." in value, "'..'"),
            (value.startswith("/"), "a leading '/'"),
            ("\\" in value, "a backslash"),
            ("\0" in value, "a NUL byte"),
            (any(c.isspace() for c in value), "whitespace"),
            (value.endswith("/"), "a trailing '/'"),
        )
        if cond
    ]
    if bad:
        raise SpecValueError(
            Problem(
                THIS_FIELD,
                what=f"must not contain {', '.join(bad)}",
                fix="use a plain branch or tag name, or the 40-hex commit",
                got=value,
            )
        )
    if not _REVISION.match(value):
        raise SpecValueError(
            Problem(
                THIS_FIELD,
                what="may only contain letters, digits and . _ / + = -",
                fix="use the branch, tag or commit exactly as the Hub shows it",
                got=value,
            )
        )
    return value


Revision = Annotated[
    str, PlainValidator(_check_revision), WithJsonSchema({"type": "string", "pattern": _REVISION.pattern})
]


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.match(revision))


# ---- platform ----------------------------------------------------------------------------------


class ClusterSpec(Model):
    create: bool = Field(
        False,
        description="Create a VPC and an EKS cluster (true) or use the existing cluster "
        "named `name` (false). Default false.",
    )
    name: str = Field(
        "sgldeploy",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="EKS cluster name: the one to create, or the existing one to use. Default sgldeploy.",
    )
    kubernetes_version: str = Field(
        "1.35",
        description='Kubernetes minor version of the cluster, e.g. "1.35": one EKS offers on the day of the '
        "plan (its release calendar is sgldeploy/data/eks-versions.csv); the control plane is priced at "
        "extended support once the version leaves standard support, and warned about 90 days before. "
        "Manifests are validated against it. Default 1.35.",
    )
    vpc_cidr: str = Field(
        "10.0.0.0/16", description="IPv4 CIDR of the VPC created when `create` is true. Default 10.0.0.0/16."
    )

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        text = str(value) if isinstance(value, (str, float)) else value
        if not isinstance(text, str) or not _K8S_VERSION.match(text):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what='must be a Kubernetes minor version like "1.35"',
                    fix="quote it in YAML so 1.30 is not read as the number 1.3",
                    got=value,
                )
            )
        return text

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value)
        except ValueError:
            raise SpecValueError(
                Problem(
                    THIS_FIELD, what="must be an IPv4 network in CIDR form", fix="e.g. 10.0.0.0/16", got=value
                )
            ) from None
        if net.prefixlen > 20:
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="is too small for node and load-balancer subnets in two zones",
                    fix="use a /20 or larger, e.g. 10.0.0.0/16",
                    got=value,
                )
            )
        return value


def _addon(value: Any) -> Any:
    if value is True or value is False or value == "existing":
        return value
    raise SpecValueError(
        Problem(
            THIS_FIELD,
            what="must be true, false or existing",
            fix="true installs it, existing references one already on the cluster, false leaves it out",
            got=value,
        )
    )


Addon = Annotated[
    Any, PlainValidator(_addon), WithJsonSchema({"anyOf": [{"type": "boolean"}, {"const": "existing"}]})
]
"""true: sgldeploy installs it; "existing": already installed, only referenced; false: not used."""
_TRI = "true (install), existing (already installed) or false. Default"


class AddonsSpec(Model):
    """Each add-on: true (sgldeploy installs it, pinned), "existing" (already on the cluster: referenced, never
    reinstalled) or false (not used)."""

    karpenter: Addon = Field(
        True, description=f"Karpenter, which provisions GPU nodes on demand. {_TRI} true."
    )
    keda: Addon = Field(True, description=f"KEDA, which scales replicas on SGLang metrics. {_TRI} true.")
    keda_http: Addon = Field(
        True, description=f"KEDA HTTP add-on, which holds requests while scaling from zero. {_TRI} true."
    )
    aws_load_balancer_controller: Addon = Field(
        True, description=f"AWS Load Balancer Controller for ALB/NLB endpoints. {_TRI} true."
    )
    nvidia_device_plugin: Addon = Field(
        True, description=f"NVIDIA device plugin, which exposes nvidia.com/gpu. {_TRI} true."
    )
    prometheus: Addon = Field(
        True,
        description=f"Prometheus operator stack (kube-prometheus-stack) for metrics, "
        f"alerts and autoscaling signals. {_TRI} true.",
    )
    leader_worker_set: Addon = Field(
        False, description=f"LeaderWorkerSet, needed when one replica spans nodes. {_TRI} false."
    )
    efa_device_plugin: Addon = Field(
        False,
        description=f"AWS EFA device plugin: replicas that span nodes then get "
        f"the nodes' Elastic Fabric Adapters for NCCL. {_TRI} false.",
    )
    external_secrets: Addon = Field(False, description=f"External Secrets Operator. {_TRI} false.")
    efs_csi: Addon = Field(
        False, description=f"EFS CSI driver, needed for `cache.storage: efs`. {_TRI} false."
    )
    fsx_csi: Addon = Field(
        False, description=f"FSx for Lustre CSI driver, needed for `cache.storage: fsx-lustre`. {_TRI} false."
    )


class PlatformSpec(Model):
    environment: Literal["development", "staging", "production"] = Field(
        "development",
        description="Environment class; production tightens rules (e.g. pinned commits). "
        "Default development.",
    )
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="The EKS cluster.")
    namespace: str = Field(
        "sgldeploy",
        max_length=63,
        description="Kubernetes namespace of all deployments (DNS-1123 label). Default sgldeploy.",
    )
    node_provisioner: Literal["karpenter", "managed-node-group"] = Field(
        "karpenter",
        description="How GPU nodes are provisioned: a Karpenter NodePool and EC2NodeClass, or an EKS "
        "managed node group, per deployment. Default karpenter.",
    )
    node_role: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[\w+=,.@-]+$",
        description="IAM role name the GPU nodes assume, for an existing cluster; "
        "default KarpenterNodeRole-<cluster name> (Karpenter's convention).",
    )
    addons: AddonsSpec = Field(
        default_factory=AddonsSpec, description="Cluster add-ons installed as pinned Helm releases."
    )
    prometheus_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Prometheus the autoscaler queries; default the one the "
        "prometheus add-on runs (kube-prometheus-stack).",
    )
    budget_usd_per_month: float | None = Field(
        None, ge=0, description="Monthly budget in USD for the whole stack at max replicas; null for none."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="AWS tags added to every taggable resource."
    )
    network_policies: bool = Field(
        True,
        description="NetworkPolicies that let only the load balancer, the HTTP add-on, Prometheus and the "
        "namespace reach serving pods (enforced where the VPC CNI has network policy on). Default true.",
    )
    allow_trust_remote_code: bool = Field(
        False,
        description="Allow deployments to set "
        "`model.trust_remote_code: true` (runs code from the "
        "model repo). Default false.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _DNS1123_LABEL.match(value):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="must be a DNS-1123 label (lower-case letters, digits, '-')",
                    fix="e.g. llm-serving",
                    got=value,
                )
            )
        return value


# ---- one deployment ----------------------------------------------------------------------------


def repo_id(value: str) -> str:
    """A Hugging Face repo id, `org/name`, or the one problem with it."""
    parts = value.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts) or ".." in value:
        raise SpecValueError(
            Problem(
                THIS_FIELD,
                what="must be a Hugging Face repo id `org/name` of letters, digits, '.', '_' and '-'",
                fix="copy the id from the model page, e.g. Qwen/Qwen2.5-7B-Instruct",
                got=value,
            )
        )
    return value


_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AdapterRef(Model):
    """A LoRA adapter served on the deployment's base model: clients pick it by `model: "<served name>:<name>"`."""

    name: str = Field(..., description="The name clients select it by (letters, digits, '.', '_', '-').")
    repo: str = Field(..., description="Hugging Face repo id of the adapter, `org/name`.")
    revision: Revision = Field(
        "main", description="Branch, tag or 40-hex commit; production stacks must pin a commit. Default main."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ADAPTER_NAME.match(value):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    "must be 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit (SGLang "
                    "splits `model` at ':' into base and adapter)",
                    "rename it, e.g. support-v2",
                    value,
                )
            )
        return value

    _repo = field_validator("repo")(lambda cls, v: repo_id(v))


class ModelRef(Model):
    repo: str = Field(..., description="Hugging Face repo id, `org/name`.")
    revision: Revision = Field(
        "main", description="Branch, tag or 40-hex commit; production stacks must pin a commit. Default main."
    )
    served_name: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Model name clients send in the OpenAI API; default the repo id.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run Python code shipped in the model repo; refused "
        "unless `platform.allow_trust_remote_code`. Default false.",
    )
    adapters: list[AdapterRef] = Field(
        default_factory=list,
        description="LoRA adapters served on this model, each locked and cached like it. Default none.",
    )

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        return repo_id(value)


class SpeculativeSpec(Model):
    algorithm: SpeculativeAlgorithm = Field(..., description="SGLang speculative decoding algorithm.")
    draft_repo: str | None = Field(None, description="Draft model repo id (not used by NGRAM).")
    draft_revision: Revision = Field("main", description="Draft model branch, tag or commit. Default main.")

    _repo = field_validator("draft_repo")(lambda cls, v: v if v is None else ModelRef._repo(v))


class LoraSpec(Model):
    """How many LoRA adapters SGLang serves at once, and the largest it takes (its LoRA flags)."""

    max_loras_per_batch: int = Field(
        8,
        ge=1,
        le=256,
        description="Adapters in one batch (`--max-loras-per-batch`); GPU buffers for each. Default 8.",
    )
    max_loaded_loras: int | None = Field(
        None,
        ge=1,
        description="Adapters kept in host memory (`--max-loaded-loras`); null: every adapter. At least "
        "max_loras_per_batch and the adapters' count.",
    )
    max_lora_rank: AutoPositiveInt = Field(
        "auto",
        description="The largest rank served (`--max-lora-rank`); auto: the adapters' largest. Default auto.",
    )


class HierarchicalCacheSpec(Model):
    """SGLang's hierarchical KV cache (HiCache): a tier of pinned host memory under each GPU's KV pool, and
    optionally a tier on the node's disk under that, so a prefix evicted from the GPU is reloaded, not
    recomputed. Pays where prompts share long prefixes (multi-turn chat, agents, RAG over the same documents)."""

    ratio: float | None = Field(
        None,
        gt=1,
        le=64,
        description="Host tier per GPU as a multiple of its KV pool (`--hicache-ratio`); set this or "
        "size_gib. Default 2 (SGLang's) when both are null.",
    )
    size_gib: int | None = Field(
        None,
        gt=0,
        description="Host tier per GPU in GiB (`--hicache-size`, which SGLang counts in GB); set this or ratio.",
    )
    storage: Literal["none", "file"] = Field(
        "none",
        description="A third tier: file keeps pages on the node's disk (`--hicache-storage-backend file`), "
        "none keeps GPU and host only. Default none.",
    )
    storage_gib: int = Field(
        100, gt=0, description="Disk the file tier may fill on each node (GiB), LRU-evicted. Default 100."
    )


class ParallelismSpec(Model):
    """How a replica's GPUs share the model. Tensor parallelism spans all of them; for a large mixture of experts,
    attention can run in data-parallel groups inside it (each group its own requests and KV cache) and the routed
    experts can be split across the GPUs (expert parallelism), as SGLang's DeepSeek and Qwen3 MoE guides run them."""

    tensor: AutoPositiveInt = Field(
        "auto",
        description="GPUs of a replica (`--tp-size`); auto: resources.gpu_count, else the placement's. Default auto.",
    )
    data_parallel_attention: int = Field(
        1,
        ge=1,
        le=64,
        description="Attention groups inside the tensor-parallel GPUs (`--attn-dp-size`, with "
        "`--enable-dp-lm-head`); must divide the tensor size. 1: none. Default 1.",
    )
    expert: int = Field(
        1,
        ge=1,
        le=64,
        description="GPUs the routed experts are split across (`--ep-size`); must divide the tensor size and "
        "the model's experts. 1: none. Default 1.",
    )
    all_to_all: Literal["auto", "none", "deepep"] = Field(
        "auto",
        description="How tokens reach their experts (`--moe-a2a-backend`): none (SGLang's default, all-reduce "
        "over NCCL), deepep (DeepEP kernels over NVLink: one 8-GPU NVLink node, expert = tensor); auto: none. "
        "Default auto.",
    )


class ServingSpec(Model):
    image: str = Field(SGLANG_IMAGE, min_length=1, description=f"Serving image. Default {SGLANG_IMAGE}.")
    precision: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weight and activation dtype (`--dtype`); auto follows the checkpoint, with float16 "
        "on GPUs without bf16. Default auto.",
    )
    quantization: Quantization = Field(
        "none",
        description="SGLang `--quantization` method; none for the checkpoint as is (pre-quantized "
        "checkpoints are detected by SGLang). Default none.",
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_is_a_dtype(cls, value: Any) -> Any:
        """`precision: fp8` (or bf16) is a common slip: point to the field or the spelling that means it."""
        if not isinstance(value, str):
            return value
        if value in QUANTIZATIONS and value not in ("none", "unquant"):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what=f"is the dtype of weights and activations; {value} is a quantization method",
                    fix=f"set serving.quantization: {value} and leave precision auto",
                    got=value,
                )
            )
        if value in KV_CACHE_DTYPES:
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="is the dtype of weights and activations, not of the KV cache",
                    fix=f"set serving.kv_cache_dtype: {value} and leave precision auto",
                    got=value,
                )
            )
        if value in PRECISION_ALIASES:
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="is not one of the allowed values",
                    fix=f"write precision: {PRECISION_ALIASES[value]}",
                    got=value,
                )
            )
        return value

    kv_cache_dtype: Literal["auto", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto", description="KV cache dtype. Default auto."
    )
    context_length: int | None = Field(
        None,
        gt=0,
        description="Max tokens per request (prompt + output); default the model's max_position_embeddings.",
    )
    max_concurrency: int = Field(
        32,
        ge=1,
        le=4096,
        description="Requests one replica runs at once (`--max-running-requests`). Default 32.",
    )
    mem_fraction_static: AutoMemFraction = Field(
        "auto", description="GPU memory share for weights and KV cache, 0.5–0.95, or auto. Default auto."
    )
    speculative: SpeculativeSpec | None = Field(None, description="Speculative decoding; null for none.")
    hierarchical_cache: HierarchicalCacheSpec | None = Field(
        None, description="A host-memory (and disk) tier under the GPU's KV cache; null for none."
    )
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec, description="Tensor, attention-data and expert parallelism."
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA serving sizes (with model.adapters).")
    extra_args: list[str] = Field(
        default_factory=list,
        description='Extra SGLang flags appended verbatim (e.g. ["--enable-torch-compile"]).',
    )


class ReservationSpec(Model):
    """EC2 capacity reservations the GPU nodes launch into: On-Demand Capacity Reservations, or Capacity Blocks
    for ML, named by id or selected by tags."""

    ids: list[str] = Field(default_factory=list, description="Reservation ids (cr-…).")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Select reservations by these tags ('*' matches any value)."
    )
    capacity_block: bool = Field(
        False,
        description="The reservations are Capacity Blocks for ML (reclaimed at ends_at). Default false.",
    )
    instances: int | None = Field(
        None, gt=0, description="Instances reserved: the committed spend the plan prices; null for max nodes."
    )
    ends_at: str | None = Field(
        None, description="When the reservation ends (YYYY-MM-DD); the plan warns 30 days before."
    )

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for rid in value:
            if not re.fullmatch(r"cr-[0-9a-z]+", rid):
                raise SpecValueError(
                    Problem(
                        THIS_FIELD, "must hold reservation ids like cr-0123456789abcdef0", "correct it", rid
                    )
                )
        return value

    @field_validator("ends_at", mode="before")
    @classmethod
    def _ends_at(cls, value: Any) -> str | None:
        """YAML reads an unquoted date as one; Pulumi's config hands the program a string."""
        if value is None or isinstance(value, date):
            return None if value is None else value.isoformat()[:10]
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise SpecValueError(
                Problem(THIS_FIELD, "must be a date, YYYY-MM-DD", "write the day the reservation ends", value)
            ) from None


class ResourcesSpec(Model):
    gpu: GpuChoice = Field("auto", description="GPU model, or auto for the cheapest that fits. Default auto.")
    gpu_count: AutoPositiveInt = Field(
        "auto",
        description="GPUs per replica (tensor parallel size): 1, 2, 4, 8 or "
        "a multiple of 8, or auto. Default auto.",
    )
    instance_types: list[str] = Field(
        default_factory=list, description="Allowed EC2 instance types; empty for any that carries the GPU."
    )
    capacity: Literal["on-demand", "spot", "spot-fallback", "reserved", "reserved-fallback"] = Field(
        "on-demand",
        description="EC2 capacity: on-demand, spot, spot with on-demand fallback, the reservations of "
        "resources.reservation, or those with on-demand fallback. Default on-demand.",
    )
    reservation: ReservationSpec | None = Field(
        None, description="The capacity reservations of capacity reserved or reserved-fallback."
    )
    cpu: AutoPositiveNumber = Field(
        "auto", description="CPU cores requested per replica, or auto. Default auto."
    )

    @field_validator("gpu_count")
    @classmethod
    def _tensor_parallel_size(cls, value: Any) -> Any:
        if value != "auto" and not (value in (1, 2, 4, 8) or value % 8 == 0):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="must be 1, 2, 4, 8 or a multiple of 8",
                    fix="tensor parallelism splits attention heads evenly; pick the next allowed size",
                    got=value,
                )
            )
        return value

    memory_gib: AutoPositiveNumber = Field(
        "auto", description="Memory (GiB) per replica, or auto. Default auto."
    )
    disk_gib: AutoPositiveInt = Field("auto", description="Node root disk (GiB), or auto. Default auto.")


class ScalingSpec(Model):
    min_replicas: int | None = Field(
        None,
        ge=0,
        le=MAX_REPLICAS,
        description="Fewest replicas; default from readiness (always-ready 1, otherwise 0).",
    )
    max_replicas: int = Field(
        1, ge=0, le=MAX_REPLICAS, description="Most replicas (at most 1000). Default 1."
    )
    metric: Literal[
        "queue-depth", "running-requests", "gpu-utilization", "cpu-utilization", "memory-utilization", "slo"
    ] = Field(
        "queue-depth",
        description="Signal the autoscaler follows. `slo`: the p95 time to first token and inter-token latency "
        "against `slo` (a disaggregated deployment's prefill role on TTFT, its decode role on ITL), while "
        "requests queue, together with queue depth at `target`. Default queue-depth.",
    )
    target: float = Field(
        4,
        gt=0,
        description="Target value of the metric per replica (requests, or percent "
        "for utilisations; with slo, the queue depth). Default 4.",
    )
    idle_timeout_seconds: int | None = Field(
        None, ge=0, description="Seconds without requests before scaling to zero; default from readiness."
    )
    scale_down_delay_seconds: int = Field(
        300, ge=0, description="Seconds a lower replica count must hold before scaling down. Default 300."
    )


class StreamerSpec(Model):
    """The Run:ai Model Streamer's reads (`cache.loader: runai-streamer`), per serving process."""

    concurrency: int = Field(
        32,
        ge=1,
        le=256,
        description="Parallel S3 reads per process (the streamer's concurrency); more saturate a faster network. "
        "Default 32.",
    )
    chunk_mib: int = Field(
        8,
        ge=1,
        le=1024,
        description="Bytes each read asks for, in MiB (RUNAI_STREAMER_CHUNK_BYTESIZE). Default 8.",
    )
    memory_limit_gib: AutoPositiveInt = Field(
        "auto",
        description="CPU buffer the streamer stages tensors in, in GiB; auto leaves the streamer's own bound. "
        "Default auto.",
    )


class CacheSpec(Model):
    storage: CacheStorage = Field(
        "auto",
        description="Where weights are cached: node-local (the GPU node's "
        "NVMe), efs, fsx-lustre, s3 (streamed by cache.loader runai-streamer), none (download on start), "
        "or auto (follows readiness). Default auto.",
    )
    size_gib: AutoPositiveInt = Field(
        "auto", description="Cache size (GiB), or auto from the model size. Default auto."
    )
    prefetch_image: str | None = Field(
        None,
        min_length=1,
        description="Image whose own prefetch tool fills the cache (built from "
        "sglang_image/). Default: none, the serving image runs the tool from a ConfigMap.",
    )
    loader: CacheLoader = Field(
        "auto",
        description="How a replica loads the weights into GPU memory: safetensors (SGLang's own loader, from "
        "the cache), fastsafetensors (parallel reads from the node's NVMe), runai-streamer (streamed from "
        "cache.storage s3), remote-instance (copied from a running replica over NCCL, the cache when none "
        "runs), or auto (chosen from the storage, the image and the placement). Default auto.",
    )
    bucket: str | None = Field(
        None,
        min_length=3,
        max_length=63,
        description="cache.storage s3: an existing bucket to keep the weights in; null creates one "
        "(encrypted, private, keeping two commits). Default null.",
    )
    streamer: StreamerSpec = Field(
        default_factory=lambda: StreamerSpec(),
        description="The runai-streamer loader's reads from S3.",
    )


class HealthCheckSpec(Model):
    path: str = Field(
        "/ready", description="Load balancer health check path. Default /ready (cheap, no auth)."
    )
    interval_seconds: int = Field(15, ge=5, le=300, description="Seconds between health checks. Default 15.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="must be an absolute URL path",
                    fix="start it with '/', e.g. /ready",
                    got=value,
                )
            )
        return value


class RouterSpec(Model):
    enabled: bool | None = Field(
        None,
        description="Put the router in front with any algorithm (round-robin → round_robin, least-connections → "
        "power_of_two); null: only for cache-aware. Default null.",
    )
    image: str = Field(
        ROUTER_IMAGE, min_length=1, description=f"SGLang Model Gateway image. Default {ROUTER_IMAGE}."
    )
    replicas: int = Field(
        1,
        ge=1,
        le=10,
        description="Router pods. Each keeps its own view of the replicas' caches, so more of them means "
        "fewer cache hits; 2 for high availability. Default 1.",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description='Extra router flags appended verbatim (e.g. ["--cache-threshold", "0.5"]).',
    )


class EndpointSpec(Model):
    exposure: Literal["public", "internal", "cluster"] = Field(
        "cluster",
        description="public (internet-facing LB), internal (VPC-only LB) or cluster (ClusterIP only). "
        "Default cluster.",
    )
    load_balancer: Literal["alb", "nlb"] = Field("alb", description="AWS load balancer kind. Default alb.")
    algorithm: Literal["round-robin", "least-connections", "ip-hash", "cache-aware"] = Field(
        "round-robin",
        description="How requests are spread over replicas; cache-aware adds the SGLang router. "
        "Default round-robin.",
    )
    sticky_sessions: bool = Field(False, description="Pin a client to a replica. Default false.")
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec, description="LB health check.")
    auth: Literal["api-key", "none"] = Field(
        "api-key",
        description="api-key: clients send a bearer key (`sgldeploy:apiKey`, or generated). Default api-key.",
    )
    tls_certificate_arn: str | None = Field(None, description="ACM certificate ARN for HTTPS; null for none.")
    hostname: str | None = Field(None, description="DNS name clients use; null for the LB's own name.")
    router: RouterSpec = Field(
        default_factory=RouterSpec, description="The SGLang router, used with algorithm cache-aware."
    )

    @field_validator("tls_certificate_arn")
    @classmethod
    def _arn(cls, value: str | None) -> str | None:
        if value is not None and not _ACM_ARN.match(value):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="must be an ACM certificate ARN",
                    fix="e.g. arn:aws:acm:us-east-1:123456789012:certificate/…",
                    got=value,
                )
            )
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.match(value):
            raise SpecValueError(
                Problem(
                    THIS_FIELD, what="must be a lower-case DNS name", fix="e.g. llm.example.com", got=value
                )
            )
        return value


class RolloutSpec(Model):
    strategy: Literal["rolling", "blue-green", "canary"] = Field(
        "rolling", description="How new versions replace old ones. Default rolling."
    )
    canary_percent: int | None = Field(
        None,
        description="Share of traffic (1–99) the canary gets; only with strategy canary (default 10 there).",
    )
    canary_revision: str | None = Field(
        None,
        description="canary: the 40-hex commit the canary Deployment serves (model.revision stays the stable "
        "one); null for no canary. Promote by making it model.revision and removing this.",
    )
    previous_revision: str | None = Field(
        None,
        description="blue-green: a 40-hex commit kept warm (one replica, no traffic) for an instant rollback; "
        "null to delete the old commit's Deployment after the switch.",
    )

    @field_validator("canary_revision", "previous_revision")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is not None and not is_commit(value):
            raise SpecValueError(
                Problem(
                    THIS_FIELD,
                    what="must be a 40-hex commit",
                    fix="use the commit sha (models.lock.json lists the one each revision resolved to)",
                    got=value,
                )
            )
        return value

    max_surge: int = Field(1, ge=0, description="Extra replicas allowed during a rollout. Default 1.")
    max_unavailable: int = Field(
        0, ge=0, description="Replicas that may be down during a rollout. Default 0."
    )


class AlertsSpec(Model):
    p99_latency_seconds: float | None = Field(
        30, gt=0, description="Alert when p99 end-to-end latency exceeds this; null to disable. Default 30."
    )
    error_rate_percent: float | None = Field(
        5, gt=0, le=100, description="Alert when the share of failed requests exceeds this. Default 5."
    )
    queue_depth: int | None = Field(
        50, gt=0, description="Alert when queued requests per replica exceed this. Default 50."
    )


class ObservabilitySpec(Model):
    metrics: bool = Field(
        True, description="Expose SGLang metrics (`--enable-metrics`) and scrape them. Default true."
    )
    alerts: AlertsSpec = Field(default_factory=AlertsSpec, description="Alert thresholds.")


class WorkloadSpec(Model):
    """The requests the deployment serves, for the throughput, latency and $/1M tokens the plan states."""

    input_tokens: int = Field(1024, gt=0, description="Prompt tokens of a typical request. Default 1024.")
    output_tokens: int = Field(256, gt=0, description="Generated tokens of a typical request. Default 256.")
    requests_per_second: float | None = Field(
        None, gt=0, description="Requests per second at peak; null to size for max_concurrency alone."
    )


class SloSpec(Model):
    """Latency targets the plan checks the placement against (95th percentile, at max_concurrency)."""

    ttft_p95_seconds: float | None = Field(
        None, gt=0, description="Time to first token, seconds; null for none."
    )
    itl_p95_seconds: float | None = Field(
        None, gt=0, description="Inter-token latency, seconds; null for none."
    )


SLO_KEYS = ("ttft_p95_seconds", "itl_p95_seconds")


class VerifySpec(Model):
    """`sgldeploy verify` in the cluster: a Job that measures the endpoint after each update reaches it."""

    job: bool = Field(
        False,
        description="Render a Job (the serving image) that sends the workload to the endpoint once an update "
        "is ready and fails when the SLO is missed, so `pulumi up` fails with it. Default false.",
    )
    concurrency: int | None = Field(
        None, ge=1, le=4096, description="Requests in flight; default serving.max_concurrency."
    )
    requests: int | None = Field(
        None, ge=1, le=100_000, description="Requests to send; default 4 × concurrency, at least 20."
    )
    canary_margin_percent: float = Field(
        10,
        ge=0,
        le=100,
        description="With a canary: how much worse than the stable commit (p95 TTFT or ITL, percent) the "
        "canary may measure before the Job fails. Default 10.",
    )


class RoleSpec(Model):
    """One role of a disaggregated deployment: its own GPUs and replica bounds, the deployment's shape."""

    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="The role's GPU and node resources."
    )
    scaling: ScalingSpec = Field(
        default_factory=ScalingSpec, description="The role's replica bounds and autoscaling."
    )


TransferBackend = Literal["mooncake", "nixl"]
PD_ROLES = ("prefill", "decode")


class DisaggregationSpec(Model):
    """Prefill/decode disaggregation: prompts are prefilled on one set of replicas, their KV caches sent over EFA
    to another that decodes, and the SGLang router in PD mode is the only way in."""

    transfer_backend: TransferBackend = Field(
        "mooncake",
        description="How the KV cache moves from prefill to decode: mooncake (Mooncake's transfer engine) or "
        "nixl (NVIDIA's NIXL); both over EFA. Default mooncake.",
    )
    prefill: RoleSpec = Field(default_factory=RoleSpec, description="The replicas that prefill prompts.")
    decode: RoleSpec = Field(default_factory=RoleSpec, description="The replicas that decode.")


@dataclass(frozen=True)
class ServingRole:
    """What a role's spec knows of the disaggregated deployment it belongs to."""

    deployment: str  # the disaggregated deployment's name
    role: str  # prefill or decode
    transfer_backend: str

    @property
    def peer(self) -> str:
        """The other role's deployment name."""
        other = next(r for r in PD_ROLES if r != self.role)
        return f"{self.deployment}-{other}"


class DeploymentSpec(Model):
    name: str = Field(
        ..., description="Deployment name: DNS-1035 label, ≤ 40 characters, unique in the stack."
    )
    description: str = Field("", description="Free text shown in plans.")
    model: ModelRef = Field(..., description="The Hugging Face model to serve.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="SGLang server settings.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="GPU and node resources.")
    readiness: Readiness = Field(
        "fast",
        description="always-ready, fast or cold-start; sets the defaults of "
        "min_replicas, cache and idle timeout. Default fast.",
    )
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="Replica bounds and autoscaling.")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Weight cache.")
    endpoint: EndpointSpec = Field(default_factory=EndpointSpec, description="How clients reach the model.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How updates roll out.")
    observability: ObservabilitySpec = Field(
        default_factory=ObservabilitySpec, description="Metrics and alerts."
    )
    state: Literal["running", "stopped"] = Field(
        "running", description="stopped keeps the definition and the cache but runs no replicas."
    )
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec, description="The shape of its requests.")
    slo: SloSpec = Field(default_factory=SloSpec, description="Latency targets.")
    verify: VerifySpec = Field(
        default_factory=VerifySpec, description="Measure the endpoint against the SLO after each update."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the server."
    )
    disaggregation: DisaggregationSpec | None = Field(
        None,
        description="Prefill and decode on separate replicas (each with its own resources and scaling); null "
        "for replicas that do both. Default null.",
    )
    _serving_role: ServingRole | None = PrivateAttr(None)

    # -- a disaggregated deployment's roles --

    @property
    def serving_role(self) -> ServingRole | None:
        """Set on the spec of one role of a disaggregated deployment (role_spec); None on any other."""
        return self._serving_role

    def role_spec(self, role: str) -> DeploymentSpec:
        """The deployment one role serves as: named `<name>-<role>`, with the role's resources and scaling, and
        everything else the disaggregated deployment's."""
        assert self.disaggregation is not None
        chosen: RoleSpec = getattr(self.disaggregation, role)
        spec = self.model_copy(
            update={
                "name": f"{self.name}-{role}",
                "resources": chosen.resources,
                "scaling": chosen.scaling,
                "disaggregation": None,
            }
        )
        spec._serving_role = ServingRole(self.name, role, self.disaggregation.transfer_backend)
        return spec

    def path(self, *loc: object) -> tuple[object, ...]:
        """A path inside the deployment as the stack file spells it: a role's own resources and scaling sit under
        `disaggregation.<role>`."""
        role = self._serving_role
        if role is not None and loc and loc[0] in ("resources", "scaling"):
            return ("disaggregation", role.role, *loc)
        return loc

    @property
    def slo_keys(self) -> tuple[str, ...]:
        """The `slo` targets this deployment answers for: both where replicas prefill and decode; for a role of a
        disaggregated deployment, its own half (prefill the time to first token, decode the inter-token
        latency)."""
        role = self._serving_role
        if role is None:
            return SLO_KEYS
        return ("ttft_p95_seconds",) if role.role == "prefill" else ("itl_p95_seconds",)

    def slo_targets(self) -> dict[str, float]:
        """The targets of `slo_keys` that are set, by key."""
        found = {key: getattr(self.slo, key) for key in self.slo_keys}
        return {key: value for key, value in found.items() if value is not None}

    def serving_units(self) -> list[DeploymentSpec]:
        """What serves the deployment: itself, or its two roles' specs."""
        return [self.role_spec(r) for r in PD_ROLES] if self.disaggregation else [self]

    # -- effective values: readiness defaults applied, in this one place --

    @property
    def min_replicas(self) -> int:
        if self.state == "stopped":
            return 0
        if self.scaling.min_replicas is not None:
            return self.scaling.min_replicas
        return READINESS_DEFAULTS[self.readiness]["min_replicas"]

    @property
    def max_replicas(self) -> int:
        return 0 if self.state == "stopped" else self.scaling.max_replicas

    @property
    def initial_replicas(self) -> int:
        """Replicas the Deployment declares: none when stopped, else at least one so the model serves from the
        first `pulumi up` (scale to zero needs an autoscaler to wake it)."""
        return 0 if self.state == "stopped" else max(1, self.min_replicas)

    @property
    def idle_timeout_seconds(self) -> int:
        if self.scaling.idle_timeout_seconds is not None:
            return self.scaling.idle_timeout_seconds
        return READINESS_DEFAULTS[self.readiness]["idle_timeout_seconds"]

    @property
    def cache_storage(self) -> str:
        if self.cache.storage != "auto":
            return self.cache.storage
        if self.cache.loader == "runai-streamer":  # the streamer is there to read S3
            return "s3"
        return READINESS_DEFAULTS[self.readiness]["cache_storage"]

    @property
    def served_name(self) -> str:
        return self.model.served_name or self.model.repo

    @property
    def extra_revisions(self) -> list[tuple[str, str]]:
        """(field, commit) of each commit besides model.revision the rollout serves: like model.revision, each
        must be in the lock (`sgldeploy lock` resolves them too)."""
        r = self.rollout
        out = []
        if r.strategy == "blue-green" and r.previous_revision:
            out.append(("rollout.previous_revision", r.previous_revision))
        if r.strategy == "canary" and r.canary_revision:
            out.append(("rollout.canary_revision", r.canary_revision))
        return out


class StackSpec(Model):
    """Everything under the `sgldeploy:` config namespace that is not a secret."""

    platform: PlatformSpec = Field(default_factory=PlatformSpec, description="`sgldeploy:platform`")
    deployments: list[DeploymentSpec] = Field(default_factory=list, description="`sgldeploy:deployments`")
