"""GPU placement and memory fit: on which instances a model is served, with how many GPUs, at what price.

The memory model follows SGLang (../shared/reference/sglang.md §5). On each of the `tp` GPUs of a replica:

    weights per GPU  = weight bytes / tp
                       (parameters × bytes per parameter for the served dtype or the online quantization;
                        a pre-quantized checkpoint weighs what its safetensors hold)
    KV per GPU       = context_length × max_concurrency tokens
                       × 2 (K and V) × layers × ceil(kv_heads / tp) × head_dim × KV bytes per element
                       (KV heads are replicated when tp > kv_heads; MLA models keep one latent of
                        kv_lora_rank + qk_rope_head_dim per layer on every rank)
    reserve per GPU  = GPU memory × (1 − mem_fraction_static)   (activations, CUDA graphs)
    fits             ⇔ weights per GPU + KV per GPU + reserve per GPU ≤ GPU memory

With `mem_fraction_static: auto` the fraction is what SGLang 0.5.23 picks for the GPU and tp. Worked example,
Qwen2.5-7B-Instruct (7,615,616,512 parameters, 28 layers, 4 KV heads of 128) in bf16 on one L4 (22.35 GiB):
weights 14.19 GiB; KV per token 2 × 28 × 4 × 128 × 2 B = 56 KiB, so 4,096 tokens × 4 requests take
0.88 GiB; SGLang's fraction for a 22.35 GiB GPU is 0.699, leaving 6.73 GiB reserve; 14.19 + 0.88 + 6.73 =
21.79 GiB ≤ 22.35: it fits.

Candidates are whole nodes: every instance type of the catalog carries `g` GPUs and a replica uses all of them
(tp = g), or, for 8-GPU instances, 2 or 4 nodes (tp = 8 × nodes, a LeaderWorkerSet). tp must divide the
attention heads, and the KV heads must be a multiple of tp or tp a multiple of them (SGLang's attention layers,
`tp_split_problem`). The cheapest feasible candidate wins (spot prices when capacity is spot, where known); ties
go to fewer GPUs, then to more memory headroom.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sgldeploy.catalog import GpuModel, InstanceType, gpu_models, instance_types
from sgldeploy.models import cold_start, weight_path
from sgldeploy.models import lora as lora_model
from sgldeploy.models import throughput as throughput_model
from sgldeploy.models.host_cache import (
    RANK_RESIDENT_GIB,
    SGLANG_RESERVE_GIB,
    HostCache,
    host_cache,
)
from sgldeploy.models.lock import LockedAdapter, LockedModel
from sgldeploy.models.lora import LoraLoad
from sgldeploy.spec import GPU_MODELS, QUANTIZATIONS, DeploymentSpec
from sgldeploy.spec.problems import Problem, ProblemError

GIB = 1024**3
MULTI_NODE_COUNTS = (2, 4)
MULTI_NODE_MIN_GPUS = 8  # only full 8-GPU (EFA-class) nodes are joined into one replica

# Bytes per parameter of online quantization; int4 methods carry group scales, hence above 0.5.
QUANT_BYTES = {
    "fp8": 1.0,
    "w8a8_fp8": 1.0,
    "w8a8_int8": 1.0,
    "modelopt_fp8": 1.0,
    "mxfp8": 1.0,
    "awq": 0.56,
    "awq_marlin": 0.56,
    "gptq": 0.56,
    "gptq_marlin": 0.56,
    "moe_wna16": 0.56,
    "modelopt_fp4": 0.56,
    "nvfp4_online": 0.56,
    "mxfp4": 0.56,
    "petit_nvfp4": 0.56,
    "w4afp8": 0.56,
    "bitsandbytes": 0.56,
}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Element sizes of safetensors dtypes (packed int4 weights are stored as I32, 8 to an element).
SAFETENSORS_BYTES = {
    "F64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "BF16": 2,
    "F16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
# Minimum compute capability per quantization method in SGLang 0.5.23 (layers/quantization, sglang.md §6).
MIN_CAPABILITY = {
    "fp8": 8.0,
    "w8a8_fp8": 8.9,
    "modelopt_fp8": 8.9,
    "awq": 7.5,
    "awq_marlin": 8.0,
    # SGLang 0.5.23's CUDA build registers no plain gptq (layers/quantization/__init__.py): a GPTQ checkpoint runs
    # only converted to gptq_marlin (gptq/gptq.py `override_quantization_method`), whose Marlin kernels need 8.0
    # (marlin_utils.py `query_marlin_supported_quant_types`); below, ModelConfig refuses "gptq".
    "gptq": 8.0,
    "gptq_marlin": 8.0,
    "w8a8_int8": 7.5,
    "bitsandbytes": 7.0,
    "gguf": 6.0,
    "modelopt_fp4": 8.0,
    "nvfp4_online": 10.0,
    "mxfp8": 10.0,
    "mxfp4": 8.0,
    "w4afp8": 9.0,
    "petit_nvfp4": 9.0,
    "moe_wna16": 8.0,
    "compressed-tensors": 8.0,
}
FP8_KV_MIN_CAPABILITY = 8.0  # FP8 KV cache kernels (FlashInfer, Triton) need Ampere or newer
# Architectures whose activations overflow float16 (max 65504): a bf16 checkpoint of these must not be cast
# to fp16 on GPUs without bf16. Gemma 3: huggingface/transformers#36822 and #39972; Gemma 4:
# unslothai/unsloth#5074 and #5092 (gate/up projections saturate at fp16's maximum).
FP16_UNSAFE_ARCHITECTURE_PREFIXES = ("Gemma3", "Gemma4")


@dataclass(frozen=True)
class MemoryFit:
    weights_gib: float  # the whole replica's weights
    kv_cache_gib: float  # the whole replica's KV cache for kv_tokens
    kv_tokens: int  # context_length × max_concurrency
    weights_gib_per_gpu: float
    kv_cache_gib_per_gpu: float
    reserve_gib_per_gpu: float
    required_gib_per_gpu: float
    gpu_memory_gib: float
    mem_fraction_static: float
    kv_bytes_per_token: int  # one token's K and V over all layers and heads (tp = 1)
    kv_capacity_tokens: int  # tokens the KV pool holds per replica once weights are loaded
    kv_pool_gib_per_gpu: float = 0.0  # the KV pool SGLang allocates per GPU: its static share less weights
    lora_gib_per_gpu: float = 0.0  # LoRA's A and B buffers for max_loras_per_batch adapters

    @property
    def fits(self) -> bool:
        return self.required_gib_per_gpu <= self.gpu_memory_gib

    @property
    def headroom_gib(self) -> float:
        return round(self.gpu_memory_gib - self.required_gib_per_gpu, 2)


@dataclass(frozen=True)
class Candidate:
    instance: InstanceType
    nodes: int
    tp: int
    dtype: str
    memory: MemoryFit
    hourly_usd: float | None  # per replica (all its nodes)
    price_basis: str  # on-demand | spot
    problem: str | None = None  # the GPU cannot run this configuration at all
    pod_memory_gib: float = 0.0  # the memory each pod requests on this instance type
    host: HostCache | None = None  # the hierarchical cache's host tier on each node, when there is one

    @property
    def host_fits(self) -> bool:
        return self.host is None or self.host.required_gib_per_node <= self.pod_memory_gib

    @property
    def feasible(self) -> bool:
        return self.problem is None and self.memory.fits and self.host_fits

    @property
    def label(self) -> str:
        nodes = f"{self.nodes}× " if self.nodes > 1 else ""
        return f"{nodes}{self.instance.name} ({self.tp}× {self.instance.gpu})"

    def rank(self) -> tuple[Any, ...]:
        return (
            self.hourly_usd is None,
            self.hourly_usd or 0.0,
            self.tp,
            -self.memory.headroom_gib,
            self.instance.name,
        )


@dataclass(frozen=True)
class Placement:
    instance_type: str
    gpu_model: str
    gpus_per_replica: int
    nodes_per_replica: int
    tensor_parallel: int
    alternatives: tuple[str, ...]  # other feasible instance types of the same shape, for the node pool
    hourly_usd_per_replica: float | None
    price_basis: str


@dataclass(frozen=True)
class Sizing:
    placement: Placement
    memory: MemoryFit
    dtype: str  # the --dtype SGLang gets
    context_length: int
    cpu: float  # requested per pod
    memory_request_gib: float
    shm_gib: int
    disk_gib: int
    startup_budget_seconds: int  # the startup probe's window: load, engine start, cold JIT
    rollout_deadline_seconds: int  # a new node, the image, a first download, then the startup budget
    cheaper_infeasible: tuple[Candidate, ...] = ()  # the two nearest cheaper options that do not fit
    dearer: tuple[Candidate, ...] = ()  # the next two feasible options up in price
    throughput: throughput_model.Throughput | None = None  # what the placement delivers for the workload
    choice: str | None = None  # why the placement beat the cheapest memory fit (None: it is that fit)
    host_cache: HostCache | None = None  # the hierarchical cache's host tier, when serving has one
    lora: LoraLoad | None = None  # what the adapters ask of every replica, when there are adapters

    @property
    def adapters(self) -> tuple[LockedAdapter, ...]:
        """The LoRA adapters served, as locked, in the order of model.adapters."""
        return self.lora.adapters if self.lora else ()


class SizingError(ProblemError):
    """A deployment no placement can serve; the problem's path is the field inside the deployment to change
    (`resources.gpu`), placed by the caller that knows the deployment."""


# ---- the context length SGLang starts with --------------------------------------------------------

# SGLang 0.5.23 derives a model's context length from its config and refuses a longer --context-length at start
# (ValueError) unless SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN is true: sgl-project/sglang v0.5.23,
# python/sglang/srt/configs/model_config.py `_derive_context_length` and srt/utils/hf_transformers/common.py
# `get_context_length`: the first of these keys the config sets, times the RoPE scaling factor, else 2048.
CONTEXT_LENGTH_KEYS = (
    "max_sequence_length",
    "seq_length",
    "max_seq_len",
    "model_max_length",
    "max_position_embeddings",
)
SGLANG_DEFAULT_CONTEXT = 2048
# The factor does not count when the RoPE parameters hold original_max_position_embeddings or are llama3's
# (get_context_length); transformers 5.19.0, SGLang 0.5.23's pin, adds original_max_position_embeddings to the
# parameters of these types when it reads a config (modeling_rope_utils.py `standardize_rope_params`).
UNSCALED_ROPE_TYPES = ("llama3", "yarn", "longrope")
LONGER_CONTEXT_ENV = "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"
# The values SGLang reads as true (srt/environ.py `EnvBool.parse`, case-insensitive); `EnvField.get` reads any
# other value as the default, false, with a warning.
ENV_TRUE = ("true", "1", "yes", "y")


def context_limit(model: LockedModel) -> tuple[int, str]:
    """The context length SGLang derives from the locked config, and from what (for messages)."""
    config = model.config
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type")
    scaled = "original_max_position_embeddings" not in rope and rope_type not in UNSCALED_ROPE_TYPES
    factor = rope.get("factor", 1) if scaled else 1
    key = next((k for k in CONTEXT_LENGTH_KEYS if config.get(k) is not None), None)
    if key is None:
        return SGLANG_DEFAULT_CONTEXT, "SGLang's default: the config sets no length"
    limit = int(factor * config[key])
    return limit, f"{key} {config[key]:,}" + (f" × RoPE factor {factor:g}" if factor != 1 else "")


def context_problem(dep: DeploymentSpec, model: LockedModel) -> Problem | None:
    """A context longer than the model's stops SGLang at start, after a whole cold start, unless allowed."""
    asked = dep.serving.context_length
    limit, derived_from = context_limit(model)
    if asked is None or asked <= limit:
        return None
    allowed = dep.env.get(LONGER_CONTEXT_ENV)
    if allowed is not None and allowed.lower() in ENV_TRUE:
        return None  # SGLang warns that outputs may be wrong past the trained length, and runs
    read_as_false = f" ({LONGER_CONTEXT_ENV}={allowed!r} reads as false)" if allowed is not None else ""
    return Problem(
        "serving.context_length",
        f"is longer than {model.repo} takes: SGLang 0.5.23 derives {limit:,} tokens from its config "
        f"({derived_from}) and refuses to start with more{read_as_false}",
        f"set serving.context_length ≤ {limit}; or, to run past the length the model was trained for "
        f'(SGLang warns outputs may be wrong), set env {LONGER_CONTEXT_ENV}: "1"',
        asked,
    )


# ---- the quantization SGLang starts with ---------------------------------------------------------

# SGLang 0.5.23 checks --quantization against the checkpoint's own quantization_config.quant_method (the lock's
# quantization_method) when it builds the ModelConfig, and refuses to start (ValueError) unless the flag names that
# method, one the checkpoint converts to, or one its table pairs with it; then it refuses a method its build does
# not register. Source: sgl-project/sglang v0.5.23 python/sglang/srt/configs/model_config.py
# `_verify_quantization`, and the files named below. The tables hold what it does on an NVIDIA GPU with Marlin
# kernels (compute capability 8.0, which MIN_CAPABILITY asks of the methods that need them).
#
# --quantization unquant is resolved to none first (arg_groups/serving_hook.py).
MEANS_NONE = ("none", "unquant")
# Flags of the spec the CUDA build does not register (layers/quantization/__init__.py), and the way out.
UNREGISTERED_ON_CUDA = {
    "gptq": ("its GPTQ kernel is gone: GPTQ checkpoints run as gptq_marlin", "gptq_marlin"),
    "mlx_q4": ("an MLX method, registered on Apple silicon only", None),
    "mlx_q8": ("an MLX method, registered on Apple silicon only", None),
}
# The flags a checkpoint's method converts to (`override_quantization_method`: awq/awq.py AWQMarlinConfig,
# gptq/gptq.py GPTQMarlinConfig, moe_wna16.py MoeWNA16Config), for the layouts published checkpoints use: 4-bit
# AWQ with zero points, 4- or 8-bit symmetric GPTQ, groups Marlin takes (the lock does not record them).
CONVERTS_TO = {"awq": ("awq_marlin", "moe_wna16"), "gptq": ("gptq_marlin", "moe_wna16")}
# `compatible_quantization_methods`: a flag, and the checkpoint methods it is kept on.
COMPATIBLE_WITH = {
    "modelopt_fp8": ("modelopt",),
    "modelopt_fp4": ("modelopt", "fp8"),
    "modelopt_mixed": ("modelopt",),
    "nvfp4_online": ("fp8", "modelopt_fp8"),
    "petit_nvfp4": ("modelopt",),
    "w8a8_int8": ("compressed-tensors", "compressed_tensors"),
    "w8a8_fp8": ("compressed-tensors", "compressed_tensors"),
    "auto-round-int8": ("compressed-tensors", "compressed_tensors"),
}
# Flags every checkpoint takes: REQUANTIZATION_METHODS (requantized online), and humming, whose override claims
# every checkpoint but these (layers/quantization/humming.py).
REQUANTIZES = ("quark_mxfp4",)
CLAIMS_EVERY_CHECKPOINT_BUT = {"humming": ("mxfp4",)}
# Checkpoint methods whose own algorithm overrides the flag: a ModelOpt export runs as modelopt_fp8 or
# modelopt_fp4 from its quant_algo, which the lock does not record (layers/quantization/base_config.py
# `_modelopt_override_quantization_method`); nvfp4_online and quark_mxfp4 are kept, to requantize an FP8 export.
CHECKPOINT_DECIDES = ("modelopt",)


def sglang_takes_quantization(flag: str, saved: str | None) -> bool:
    """Whether SGLang starts with `--quantization flag` on a checkpoint saved quantized with `saved` (None: not
    quantized), as far as ModelConfig decides (what the method needs of the GPU is `capability_problem`'s)."""
    if flag in MEANS_NONE or saved in CHECKPOINT_DECIDES:
        return True
    if flag in UNREGISTERED_ON_CUDA:
        return False
    if saved is None or flag == saved:
        return True
    claims_it = flag in CLAIMS_EVERY_CHECKPOINT_BUT and saved not in CLAIMS_EVERY_CHECKPOINT_BUT[flag]
    return (
        flag in CONVERTS_TO.get(saved, ())
        or saved in COMPATIBLE_WITH.get(flag, ())
        or flag in REQUANTIZES
        or claims_it
    )


def quantization_problem(dep: DeploymentSpec, model: LockedModel) -> Problem | None:
    """A --quantization SGLang refuses for this checkpoint stops the server at start, after a whole cold start."""
    flag, saved = dep.serving.quantization, model.quantization_method
    if sglang_takes_quantization(flag, saved):
        return None
    if saved is None:  # only an unregistered flag is refused on a checkpoint that is not quantized
        reason, instead = UNREGISTERED_ON_CUDA[flag]
        return Problem(
            "serving.quantization",
            f"is not a method SGLang 0.5.23 runs on NVIDIA GPUs ({reason})",
            f"use {instead} or none" if instead else "use another method, or none",
            flag,
        )
    taken = [q for q in QUANTIZATIONS if q not in MEANS_NONE and sglang_takes_quantization(q, saved)]
    return Problem(
        "serving.quantization",
        f"does not match {model.repo}'s checkpoint, saved quantized with {saved}: SGLang 0.5.23 refuses to "
        "start with it" + (f" ({UNREGISTERED_ON_CUDA[flag][0]})" if flag in UNREGISTERED_ON_CUDA else ""),
        "leave serving.quantization none to serve the checkpoint as saved"
        + (f", or set it to one of {', '.join(taken)}" if taken else ""),
        flag,
    )


# ---- the tensor-parallel split ------------------------------------------------------------------


def tp_split_problem(model: LockedModel, tp: int) -> str | None:
    """Why SGLang 0.5.23 cannot split this model's attention over tp GPUs, or None. Its attention layers assert
    that tp divides the attention heads, and that the KV heads are a multiple of tp (each GPU holds its share) or
    tp a multiple of them (each GPU holds a copy of one): models/llama.py and models/qwen2.py `*Attention`,
    layers/linear.py `QKVParallelLinear` (`divide`)."""
    heads, kv_heads = model.num_attention_heads, model.num_kv_heads
    if heads % tp:
        return (
            f"does not divide the {heads} attention heads of {model.repo}: SGLang splits them evenly over "
            "the tensor-parallel size"
        )
    if (kv_heads % tp if kv_heads >= tp else tp % kv_heads) == 0:
        return None
    return (
        f"does not split the {kv_heads} KV heads of {model.repo}: SGLang needs them to be a multiple of the "
        "tensor-parallel size, or the size a multiple of them (each GPU then holds a copy of one)"
    )


# ---- the formula --------------------------------------------------------------------------------


def parallel_split_problem(
    dep: DeploymentSpec, model: LockedModel, inst: InstanceType, nodes: int
) -> str | None:
    """Why this many nodes of this instance cannot run the spec's parallelism, or None: the attention groups and
    the expert split must divide the GPUs (SGLang asserts it at start), each group's GPUs must split the heads,
    and DeepEP's kernels run over NVLink inside one node with the experts split over all its GPUs (SGLang sets
    expert = tensor for any all-to-all backend; DeepEP's internode path needs InfiniBand, which EFA is not)."""
    par, tp = dep.serving.parallelism, inst.gpu_count * nodes
    for size, name in ((par.data_parallel_attention, "attention groups"), (par.expert, "expert split")):
        if tp % size:
            return f"its {tp} GPUs do not divide into the {name} of {size}"
    if par.all_to_all == "deepep" and (nodes > 1 or inst.gpu_link != "nvlink" or par.expert != tp):
        return "DeepEP needs one NVLink node whose GPUs all split the experts"
    return tp_split_problem(model, tp // par.data_parallel_attention)


def serving_dtype(dep: DeploymentSpec, model: LockedModel, gpu: GpuModel) -> str:
    """The `--dtype` to pass: the spec's, or bf16/fp16 as the checkpoint and the GPU allow."""
    if dep.serving.precision != "auto":
        return dep.serving.precision
    if dep.serving.quantization in ("awq", "awq_marlin") or model.quantization_method in ("awq", "gptq"):
        return "float16"  # AWQ/GPTQ kernels take float16 activations
    if model.dtype == "float16" or not gpu.bf16:
        return "float16"  # Turing and Volta have no bf16
    return "bfloat16"


def weight_bytes(dep: DeploymentSpec, model: LockedModel, dtype: str) -> float:
    """What the served layers weigh on the GPUs."""
    return _checkpoint_bytes(dep, model, dtype) * served_share(model)


def served_share(model: LockedModel) -> float:
    """The share of the checkpoint SGLang loads: it skips DeepSeek's multi-token-prediction layers (stored after
    the decoder's, `num_nextn_predict_layers`) unless it drafts with them (models/deepseek_common/
    deepseek_weight_loader.py); such a layer is counted as an average one."""
    extra = int(model.config.get("num_nextn_predict_layers") or 0)
    return model.num_layers / (model.num_layers + extra)


def _checkpoint_bytes(dep: DeploymentSpec, model: LockedModel, dtype: str) -> float:
    if model.quantization_method:  # pre-quantized: the checkpoint's own bytes
        if model.safetensors_bytes:
            return float(model.safetensors_bytes)
        if model.parameters_by_dtype:
            return float(sum(n * SAFETENSORS_BYTES.get(d, 2) for d, n in model.parameters_by_dtype.items()))
    if dep.serving.quantization != "none":
        return model.parameters * QUANT_BYTES.get(dep.serving.quantization, 1.0)
    return model.parameters * DTYPE_BYTES.get(dtype, 2)


def _kv_element_bytes(dep: DeploymentSpec, dtype: str) -> int:
    return 1 if dep.serving.kv_cache_dtype.startswith("fp8") else DTYPE_BYTES.get(dtype, 2)


def kv_bytes_per_token(dep: DeploymentSpec, model: LockedModel, dtype: str = "bfloat16", tp: int = 1) -> int:
    """One token's KV cache on one GPU of a tp-way replica (all of it when tp = 1)."""
    element = _kv_element_bytes(dep, dtype)
    if model.kv_lora_rank:
        return model.num_layers * (model.kv_lora_rank + model.qk_rope_head_dim) * element
    return 2 * model.num_layers * math.ceil(model.num_kv_heads / tp) * model.head_dim * element


def sglang_auto_fraction(gpu_memory_gib: float, tp: int) -> float:
    """What SGLang 0.5.23 picks for --mem-fraction-static when unset (arg_groups/memory_hook.py)."""
    mem_mb = gpu_memory_gib * 1024
    gb = gpu_memory_gib * GIB / 1e9
    chunked = 2048 if gb < 20 else 4096 if gb < 60 else 8192 if gb < 160 else 16384
    graph_bs = (
        8
        if gb < 20
        else (48 if tp < 4 else 160)
        if gb < 35
        else (32 if tp < 4 else 160)
        if gb < 60
        else (256 if tp < 4 else 512)
        if gb < 160
        else 512
    )
    reserved = 512 + 1.5 * max(chunked, 2048) + (tp / 8) * 1024 + 2 * graph_bs
    if gb > 60:
        reserved = max(reserved, 10 * 1024)
    return round((mem_mb - reserved) / mem_mb, 3)


def memory_fit(
    dep: DeploymentSpec,
    model: LockedModel,
    gpu: GpuModel,
    tp: int,
    context_length: int,
    dtype: str,
    lora: LoraLoad | None = None,
) -> MemoryFit:
    """With data-parallel attention in `a` groups (SGLang's attn_dp_size), each group's tp / a GPUs hold the
    attention and the other dense weights whole between them (a copies in a replica: the routed experts alone stay
    split over all tp GPUs), and the KV cache of their own requests only: SGLang gives each group
    max_running_requests / a of them (mem_cache/kv_cache_configurator.py). LoRA's buffers (models/lora.py) come
    out of the static share before the KV pool does."""
    weights = weight_bytes(dep, model, dtype)
    groups = dep.serving.parallelism.data_parallel_attention
    tokens = context_length * dep.serving.max_concurrency
    per_gpu_token = kv_bytes_per_token(dep, model, dtype, tp // groups)
    frac = dep.serving.mem_fraction_static
    fraction = sglang_auto_fraction(gpu.memory_gib, tp) if frac == "auto" else float(frac)
    routed = routed_expert_bytes(model, weights)
    weights_gpu = (routed + (weights - routed) * groups) / tp / GIB
    kv_gpu = per_gpu_token * context_length * math.ceil(dep.serving.max_concurrency / groups) / GIB
    reserve = gpu.memory_gib * (1 - fraction)
    adapters = (
        lora_model.buffer_bytes_per_gpu(model, lora, tp, DTYPE_BYTES.get(dtype, 2), tp // groups) / GIB
        if lora
        else 0.0
    )
    pool = gpu.memory_gib * fraction - weights_gpu - adapters
    return MemoryFit(
        weights_gib=round(weights / GIB, 2),
        kv_cache_gib=round(kv_gpu * tp, 2),
        kv_tokens=tokens,
        weights_gib_per_gpu=round(weights_gpu, 2),
        kv_cache_gib_per_gpu=round(kv_gpu, 2),
        reserve_gib_per_gpu=round(reserve, 2),
        required_gib_per_gpu=round(weights_gpu + adapters + kv_gpu + reserve, 2),
        gpu_memory_gib=gpu.memory_gib,
        mem_fraction_static=fraction,
        kv_bytes_per_token=kv_bytes_per_token(dep, model, dtype, 1),
        kv_capacity_tokens=max(0, int(pool * GIB // per_gpu_token)) * groups,
        kv_pool_gib_per_gpu=max(0.0, pool),
        lora_gib_per_gpu=round(adapters, 2),
    )


def routed_expert_bytes(model: LockedModel, weights: float) -> float:
    """The routed experts' share of the weights (0 for a dense model)."""
    return (
        throughput_model.routed_expert_parameters(model) * weights / (model.parameters * served_share(model))
    )


def capability_problem(dep: DeploymentSpec, model: LockedModel, gpu: GpuModel, dtype: str) -> str | None:
    method = dep.serving.quantization if dep.serving.quantization != "none" else model.quantization_method
    need = MIN_CAPABILITY.get(method or "")
    if need and gpu.compute_capability < need:
        return (
            f"quantization {method} needs compute capability {need}, {gpu.name} has {gpu.compute_capability}"
        )
    if dtype == "bfloat16" and not gpu.bf16:
        return (
            f"{gpu.name} (compute capability {gpu.compute_capability}) has no bfloat16; use precision float16"
        )
    architectures = model.config.get("architectures") or []
    if (
        dtype == "float16"
        and model.dtype == "bfloat16"
        and any(a.startswith(FP16_UNSAFE_ARCHITECTURE_PREFIXES) for a in architectures)
    ):
        return (
            f"{architectures[0]} overflows in float16 and {gpu.name} has no bfloat16"
            if not gpu.bf16
            else f"{architectures[0]} overflows in float16; use precision bfloat16 or auto"
        )
    if dep.serving.kv_cache_dtype.startswith("fp8") and gpu.compute_capability < FP8_KV_MIN_CAPABILITY:
        return (
            f"an FP8 KV cache needs compute capability {FP8_KV_MIN_CAPABILITY}, {gpu.name} has "
            f"{gpu.compute_capability}"
        )
    return None


# ---- candidates and the choice ------------------------------------------------------------------


def candidates(
    dep: DeploymentSpec,
    model: LockedModel,
    context: int,
    *,
    gpu: str | None = None,
    gpu_count: int | None = None,
    allowed: tuple[str, ...] = (),
    lora: LoraLoad | None = None,
) -> list[Candidate]:
    """Every whole-node placement of the catalog, feasible or not, within the given constraints (and with the
    adapters' LoRA buffers, when `lora`)."""
    spot = dep.resources.capacity in ("spot", "spot-fallback")  # a reservation bills at the on-demand rate
    found = []
    tiers = dep.serving.hierarchical_cache
    for inst, nodes in shapes(gpu, allowed, gpu_count):
        tp = inst.gpu_count * nodes
        if parallel_split_problem(dep, model, inst, nodes):
            continue
        if dep.serving_role and not inst.efa_interfaces:  # a role's KV cache crosses nodes over EFA
            continue
        gpu_model = gpu_models()[inst.gpu]
        dtype = serving_dtype(dep, model, gpu_model)
        price = inst.hourly_usd(spot)
        basis = "spot" if spot and inst.spot_usd_per_hour is not None else "on-demand"
        fit = memory_fit(dep, model, gpu_model, tp, context, dtype, lora)
        found.append(
            Candidate(
                instance=inst,
                nodes=nodes,
                tp=tp,
                dtype=dtype,
                memory=fit,
                hourly_usd=None if price is None else price * nodes,
                price_basis=basis,  # rounded only when shown
                problem=capability_problem(dep, model, gpu_model, dtype),
                pod_memory_gib=pod_memory_gib(dep, inst),
                host=host_cache(tiers, fit.kv_pool_gib_per_gpu, inst.gpu_count) if tiers else None,
            )
        )
    return sorted(found, key=Candidate.rank)


def shapes(
    gpu: str | None, allowed: tuple[str, ...] = (), gpu_count: int | None = None
) -> Iterator[tuple[InstanceType, int]]:
    """(instance type, nodes) of every whole-node replica shape the catalog offers within the constraints: one
    node's GPUs, or 2 or 4 nodes of an 8-GPU type."""
    for inst in instance_types().values():
        # GPUs outside the spec's list (V100) are below what SGLang's default kernels need.
        if (gpu and inst.gpu != gpu) or (allowed and inst.name not in allowed) or inst.gpu not in GPU_MODELS:
            continue
        for nodes in (1,) + (MULTI_NODE_COUNTS if inst.gpu_count >= MULTI_NODE_MIN_GPUS else ()):
            if not gpu_count or inst.gpu_count * nodes == gpu_count:
                yield inst, nodes


def size(dep: DeploymentSpec, model: LockedModel, lora: LoraLoad | None = None) -> Sizing:
    """The cheapest feasible placement within the spec's constraints, or SizingError saying what would fit;
    `lora`: what the deployment's adapters add to every GPU."""
    res = dep.resources
    refused = context_problem(dep, model) or quantization_problem(dep, model) or experts_problem(dep, model)
    if refused:
        raise SizingError(refused)
    context = dep.serving.context_length or context_limit(model)[0]
    unknown = [t for t in res.instance_types if t not in instance_types()]
    if unknown:
        raise SizingError(
            Problem(
                "resources.instance_types",
                f"has instance types without GPU data: {', '.join(unknown)}",
                "use GPU instance types listed in sgldeploy/data/aws-gpu-instances.csv",
                unknown[0],
            )
        )
    without_efa = [t for t in res.instance_types if not instance_types()[t].efa_interfaces]
    if dep.serving_role and without_efa:
        raise SizingError(
            Problem(
                "resources.instance_types",
                f"has instance types without EFA: {', '.join(without_efa)}; a {dep.serving_role.role} replica "
                "sends or receives KV caches over EFA",
                "choose EFA-capable types (sgldeploy/data/aws-gpu-efa.csv), e.g. p5.48xlarge or g6e.12xlarge, "
                "or leave instance_types empty",
                without_efa[0],
            )
        )
    gpu = None if res.gpu == "auto" else res.gpu
    tensor = dep.serving.parallelism.tensor
    count = res.gpu_count if res.gpu_count != "auto" else tensor
    gpu_count = None if count == "auto" else int(count)
    allowed = tuple(res.instance_types)
    options = candidates(dep, model, context, gpu=gpu, gpu_count=gpu_count, allowed=allowed, lora=lora)
    if not options and not _default_parallelism(dep):
        raise SizingError(_parallelism_unplaceable(dep, model, gpu, gpu_count, allowed))
    feasible = [c for c in options if c.feasible]
    if not feasible:
        raise SizingError(
            _infeasible(dep, model, context, options, constrained=any((gpu, gpu_count, allowed)), lora=lora)
        )
    best, delivers, choice = choose(dep, model, context, feasible)
    same_shape = tuple(
        c.instance.name
        for c in feasible
        if c is not best and c.instance.gpu == best.instance.gpu and c.tp == best.tp and c.nodes == best.nodes
    )
    priced = [c for c in options if c.hourly_usd is not None]
    cheaper = tuple(c for c in priced if c.rank() < best.rank() and not c.feasible)[-2:]
    dearer = tuple(
        c
        for c in feasible
        if c.rank() > best.rank() and c.hourly_usd is not None and c.instance.name not in same_shape
    )[:2]
    placement = Placement(
        instance_type=best.instance.name,
        gpu_model=best.instance.gpu,
        gpus_per_replica=best.tp,
        nodes_per_replica=best.nodes,
        tensor_parallel=best.tp,
        alternatives=same_shape,
        hourly_usd_per_replica=best.hourly_usd,
        price_basis=best.price_basis,
    )
    sized = _finish(dep, best, placement, context, cheaper, dearer, delivers, choice)
    return replace(sized, lora=lora) if lora else sized


def experts_problem(dep: DeploymentSpec, model: LockedModel) -> Problem | None:
    """Expert parallelism needs routed experts, split evenly (SGLang asserts it as it builds each MoE layer)."""
    split = dep.serving.parallelism.expert
    if split == 1:
        return None
    experts = int(model.config.get("num_experts") or 0)
    if not experts:
        return Problem(
            "serving.parallelism.expert",
            f"splits routed experts, and {model.repo} has none (a dense model)",
            "set expert: 1",
            split,
        )
    if experts % split:
        return Problem(
            "serving.parallelism.expert",
            f"must divide the {experts} routed experts of {model.repo}",
            "pick a divisor of the experts that also divides the tensor size",
            split,
        )
    return None


def _default_parallelism(dep: DeploymentSpec) -> bool:
    par = dep.serving.parallelism
    return par.data_parallel_attention == 1 and par.expert == 1 and par.all_to_all != "deepep"


def _parallelism_unplaceable(
    dep: DeploymentSpec, model: LockedModel, gpu: str | None, gpu_count: int | None, allowed: tuple[str, ...]
) -> Problem:
    """No shape of the catalog runs the spec's parallelism: the reason of the largest shape within the other
    constraints (the one most likely meant), and the GPU counts that would."""
    offered = sorted(
        (inst.gpu_count * nodes, inst.name, inst, nodes) for inst, nodes in shapes(gpu, allowed, gpu_count)
    )
    par = dep.serving.parallelism
    got = f"data_parallel_attention {par.data_parallel_attention}, expert {par.expert}, all_to_all {par.all_to_all}"
    if not offered:
        return _no_placement(dep, model, 0, "resources.gpu_count", gpu_count)
    tp, name, inst, nodes = offered[-1]
    reason = parallel_split_problem(dep, model, inst, nodes)
    where = name if nodes == 1 else f"{nodes}× {name}"
    return Problem(
        "serving.parallelism",
        f"fits no placement: on {where} ({tp} GPUs), {reason}",
        "choose sizes that divide the GPUs of a placement and split the heads, or leave resources.gpu_count auto",
        got,
    )


def keeps_checkpoint_dtype(dep: DeploymentSpec, model: LockedModel, option: Candidate) -> bool:
    """A bf16 checkpoint is not silently served in float16 on a GPU without bf16 (a T4): only when the
    precision is set explicitly."""
    gpu = gpu_models()[option.instance.gpu]
    return dep.serving.precision != "auto" or model.dtype != "bfloat16" or gpu.bf16


def meets_targets(dep: DeploymentSpec, t: throughput_model.Throughput) -> bool:
    """The latency targets at max_concurrency, and the requests per second within max_replicas."""
    slo = dep.slo
    return (
        (slo.ttft_p95_seconds is None or t.estimate.ttft_seconds <= slo.ttft_p95_seconds)
        and (slo.itl_p95_seconds is None or t.estimate.itl_seconds <= slo.itl_p95_seconds)
        and (t.replicas_for_workload is None or t.replicas_for_workload <= dep.max_replicas)
    )


def choose(
    dep: DeploymentSpec, model: LockedModel, context: int, feasible: list[Candidate]
) -> tuple[Candidate, throughput_model.Throughput, str | None]:
    """With `gpu: auto`, the placement with the lowest cost per million output tokens among those that keep
    the checkpoint's dtype and meet the targets (all that keep it, when none meets them; the plan then warns),
    and why it beat the cheapest memory fit; with a GPU chosen, the cheapest fit of it."""
    cheapest = feasible[0]
    if dep.resources.gpu != "auto":
        return cheapest, delivered(dep, model, cheapest, context), None
    scored = [(c, delivered(dep, model, c, context)) for c in feasible]
    keeping = [(c, t) for c, t in scored if keeps_checkpoint_dtype(dep, model, c)] or scored
    pool = [(c, t) for c, t in keeping if meets_targets(dep, t)] or keeping
    priced = [(c, t) for c, t in pool if t.usd_per_million_output_tokens is not None] or pool
    best, delivers = min(priced, key=lambda ct: (ct[1].usd_per_million_output_tokens or 0.0, ct[0].rank()))
    if best is cheapest:
        return best, delivers, None
    base = dict(scored)[cheapest]
    why = [f"{best.label} serves a million output tokens for {_usd(delivers.usd_per_million_output_tokens)}"]
    if not keeps_checkpoint_dtype(dep, model, cheapest):
        why.append(f"the cheapest memory fit, {cheapest.label}, has no bfloat16 for this bf16 checkpoint")
    elif not meets_targets(dep, base):
        why.append(f"the cheapest memory fit, {cheapest.label}, misses the slo or the requests per second")
    else:
        why.append(
            f"the cheapest memory fit, {cheapest.label}, costs {_usd(cheapest.hourly_usd)}/h but "
            f"{_usd(base.usd_per_million_output_tokens)} per 1M output tokens"
        )
    return best, delivers, "; ".join(why)


def _usd(value: float | None) -> str:
    return "an unknown price" if value is None else f"${value:,.2f}"


# Quantizations whose GEMMs run in FP8 on a GPU with FP8 tensor cores (else weight-only, at the bf16 rate).
FP8_GEMMS = ("fp8", "w8a8_fp8", "modelopt_fp8", "modelopt")


def delivered(
    dep: DeploymentSpec, model: LockedModel, option: Candidate, context: int
) -> throughput_model.Throughput:
    """What a placement serves of the deployment's workload at max_concurrency, and at what cost per token."""
    method = dep.serving.quantization if dep.serving.quantization != "none" else model.quantization_method
    shape = throughput_model.with_attention_groups(
        throughput_model.model_shape(
            model, weight_bytes(dep, model, option.dtype), option.memory.kv_bytes_per_token
        ),
        option.tp,
        dep.serving.parallelism.data_parallel_attention,
    )
    return throughput_model.for_placement(
        model,
        shape,
        option.instance,
        gpu_models()[option.instance.gpu],
        option.tp,
        option.nodes,
        "fp8" if method in FP8_GEMMS else "bf16",
        dep.workload,
        dep.serving.max_concurrency,
        context,
        option.memory.kv_capacity_tokens,
        option.hourly_usd,
    )


def _infeasible(
    dep: DeploymentSpec,
    model: LockedModel,
    context: int,
    options: list[Candidate],
    constrained: bool,
    lora: LoraLoad | None = None,
) -> Problem:
    field = (
        "resources.gpu"
        if dep.resources.gpu != "auto"
        else "resources.gpu_count"
        if dep.resources.gpu_count != "auto"
        else "resources.instance_types"
        if dep.resources.instance_types
        else "model.repo"
    )
    got = {
        "resources.gpu": dep.resources.gpu,
        "resources.gpu_count": dep.resources.gpu_count,
        "resources.instance_types": ", ".join(dep.resources.instance_types),
        "model.repo": dep.model.repo,
    }[field]
    if not options:
        return _no_placement(dep, model, context, field, got)
    capable = [c for c in options if c.problem is None]
    if not capable:
        return Problem(
            field,
            f"cannot run this deployment: {options[0].problem}",
            "choose another GPU, or change serving.quantization or serving.precision",
            got,
        )
    short_of_host = [c for c in capable if c.memory.fits and not c.host_fits]
    if short_of_host:
        return _host_memory_problem(dep, short_of_host)
    closest = min(capable, key=lambda c: c.memory.required_gib_per_gpu - c.memory.gpu_memory_gib)
    m = closest.memory
    adapters = f"{m.lora_gib_per_gpu:g} LoRA buffers + " if m.lora_gib_per_gpu else ""
    what = (
        f"does not fit: needs {m.required_gib_per_gpu:g} GiB per GPU on {closest.label} "
        f"({m.weights_gib_per_gpu:g} weights + {adapters}{m.kv_cache_gib_per_gpu:g} KV for {m.kv_tokens:,} "
        f"tokens + {m.reserve_gib_per_gpu:g} reserve), the GPU has {m.gpu_memory_gib:g} GiB"
    )
    if constrained:
        elsewhere = [c for c in candidates(dep, model, context, lora=lora) if c.feasible]
        if elsewhere:
            return Problem(
                field,
                what,
                f"the cheapest placement that fits is {elsewhere[0].label}; allow "
                "it, or lower serving.context_length or serving.max_concurrency",
                got,
            )
    return Problem(field, what, _what_would_fit(dep, capable, context), got)


def _host_memory_problem(dep: DeploymentSpec, short: list[Candidate]) -> Problem:
    """Every placement whose GPUs hold the model lacks the host memory its hierarchical cache needs: name the
    roomiest, and the largest host tier that fits it."""
    tiers = dep.serving.hierarchical_cache
    assert tiers is not None  # only a host tier can fall short of host memory

    def spare(c: Candidate) -> float:  # what a node's pods hold for the pools, beyond the rest
        return c.pod_memory_gib - SGLANG_RESERVE_GIB - RANK_RESIDENT_GIB * c.instance.gpu_count

    roomiest = max(short, key=lambda c: (spare(c) / c.instance.gpu_count, c.instance.name))
    host = roomiest.host
    assert host is not None
    what = (
        f"leaves too little host memory for the hierarchical cache: {roomiest.label} needs "
        f"{round(host.required_gib_per_node, 2):g} GiB per node ({host.gpus_per_node} × "
        f"{host.pool_gib_per_gpu:.2f} GiB "
        f"host pools + SGLang's {SGLANG_RESERVE_GIB} GiB reserve + {RANK_RESIDENT_GIB} GiB per GPU for its "
        f"ranks), its pods get {roomiest.pod_memory_gib:g} GiB"
    )
    per_gpu = max(0.0, spare(roomiest) / host.gpus_per_node)
    if tiers.size_gib is not None:
        smaller = f"size_gib ≤ {math.floor(per_gpu)}"
    else:
        smaller = f"ratio ≤ {math.floor(10 * per_gpu / roomiest.memory.kv_pool_gib_per_gpu) / 10:g}"
    if dep.resources.memory_gib != "auto":
        fix = (
            f"raise resources.memory_gib to {math.ceil(host.required_gib_per_node)} (within the node), or set "
            f"serving.hierarchical_cache.{smaller}"
        )
        memory = float(dep.resources.memory_gib)
        return Problem("resources.memory_gib", what, fix, int(memory) if memory.is_integer() else memory)
    fix = f"set {smaller} (it fits {roomiest.label}), or allow instance types with more memory per GPU"
    got = f"size_gib {tiers.size_gib}" if tiers.size_gib is not None else f"ratio {host.ratio:g}"
    return Problem("serving.hierarchical_cache", what, fix, got)


def offered_gpu_counts(gpu: str | None, allowed: tuple[str, ...] = ()) -> list[int]:
    """GPUs per replica the catalog offers for a GPU (any when None) among the allowed instance types: one
    node's GPUs, or 2 or 4 nodes of 8 (the shapes `candidates` builds, before the model's constraints)."""
    return sorted({inst.gpu_count * nodes for inst, nodes in shapes(gpu, allowed)})


def _no_placement(dep: DeploymentSpec, model: LockedModel, context: int, field: str, got: object) -> Problem:
    """No candidate at all: name the constraint that fails (the count AWS offers, or the model's heads) and
    the GPU counts that satisfy both."""
    res = dep.resources
    gpu = None if res.gpu == "auto" else res.gpu
    allowed = tuple(res.instance_types)
    offered = offered_gpu_counts(gpu, allowed)
    working = [n for n in offered if candidates(dep, model, context, gpu=gpu, gpu_count=n, allowed=allowed)]
    where = (gpu or "any GPU") + (" among resources.instance_types" if allowed else "")
    heads, kv_heads = model.num_attention_heads, model.num_kv_heads
    if not offered:
        return Problem(
            "resources.instance_types",
            f"has no instance type that carries {gpu or 'a GPU sgldeploy serves on'}",
            "allow instance types listed for it in sgldeploy/data/aws-gpu-instances.csv, or empty the list",
            ", ".join(allowed),
        )
    listed = ", ".join(map(str, offered))
    fix = (
        f"pick gpu_count {' or '.join(map(str, working))} (the counts AWS offers for {where} that split "
        f"{model.repo}'s {heads} attention heads and {kv_heads} KV heads), or auto"
        if working
        else "pick another resources.gpu (or resources.instance_types), or set both to auto"
    )
    if res.gpu_count == "auto":
        # The KV heads decide only where a count divides the attention heads (tp_split_problem).
        split = "divides" if all(heads % n for n in offered) else f"splits the {kv_heads} KV heads and"
        what = (
            f"offers no GPU count that {split} the {heads} attention heads of {model.repo} "
            f"(AWS offers per replica, for {where}: {listed})"
        )
        return Problem(field, what, fix, got)
    count = int(res.gpu_count)
    if count not in offered:
        what = (
            f"AWS offers no such GPU count for {where}: one node of the GPUs an instance carries, "
            f"or 2 or 4 nodes of 8 (offered: {listed})"
        )
    else:
        what = (
            tp_split_problem(model, count) or f"is not a tensor-parallel size {model.repo} can be split into"
        )
    return Problem("resources.gpu_count", what, fix, res.gpu_count)


def _what_would_fit(dep: DeploymentSpec, capable: list[Candidate], context: int) -> str:
    """Concrete changes that make the cheapest option whose weights fit hold the KV cache too."""
    hints = []
    fewer = next((c for c in capable if c.memory.kv_capacity_tokens >= context), None)
    if fewer:
        hints.append(
            f"serving.max_concurrency ≤ {fewer.memory.kv_capacity_tokens // context} fits {fewer.label}"
        )
    concurrency = dep.serving.max_concurrency
    shorter = next((c for c in capable if c.memory.kv_capacity_tokens // concurrency >= 512), None)
    if shorter:
        hints.append(
            f"serving.context_length ≤ {shorter.memory.kv_capacity_tokens // concurrency} fits "
            f"{shorter.label}"
        )
    if dep.serving.quantization == "none":
        hints.append("serving.quantization: fp8 halves the weights")
    if not dep.serving.kv_cache_dtype.startswith("fp8"):
        hints.append("serving.kv_cache_dtype: fp8_e4m3 halves the KV cache")
    return "; ".join(hints) or "no placement in the catalog can hold this model"


def pod_memory_gib(dep: DeploymentSpec, node: InstanceType) -> float:
    """The spec's memory, or the node's less a fifth and a GiB for the kubelet, system daemons and the device
    plugin."""
    if dep.resources.memory_gib != "auto":
        return float(dep.resources.memory_gib)
    return float(max(4, math.floor(node.memory_gib * 0.8) - 1))


def _finish(
    dep: DeploymentSpec,
    best: Candidate,
    placement: Placement,
    context: int,
    cheaper: tuple[Candidate, ...],
    dearer: tuple[Candidate, ...],
    throughput: throughput_model.Throughput,
    choice: str | None,
) -> Sizing:
    node = best.instance
    # Leave a core for the kubelet, system daemons and the device plugin.
    cpu = float(dep.resources.cpu) if dep.resources.cpu != "auto" else float(max(1, node.vcpu - 1))
    mem = best.pod_memory_gib
    # NCCL needs /dev/shm beyond Docker's 64 MB once GPUs talk to each other; one GPU needs little.
    shm = 1 if best.tp == 1 else min(16, max(2, int(mem // 8)))
    weights_per_node = best.memory.weights_gib / best.nodes
    disk = (
        int(dep.resources.disk_gib)
        if dep.resources.disk_gib != "auto"
        else int(
            math.ceil((100 + 2 * weights_per_node + (best.host.volume_gib if best.host else 0)) / 50) * 50
        )
    )
    # The slowest start the server itself may take: remote-instance falls back to the cache when no replica runs.
    server_s = max(
        start.load_s + start.engine_s + start.graphs_s
        for start in (
            cold_start.cold_start(dep, best.memory.weights_gib, node, best.nodes, best.tp, True, loader)
            for loader in weight_path.startup_loaders(dep)
        )
    )
    # Twice the expected load and engine start, plus ten minutes for kernels compiled cold (JIT caches empty).
    budget = min(3600, 2 * server_s + 600)
    first_download = (
        int(weights_per_node * cold_start.MB_PER_GIB / cold_start.figure("hub_mb_s"))
        if dep.cache_storage != "none"
        else 0
    )  # the prefetch (init container or Job), before the server starts
    deadline = (
        int(cold_start.figure("node_provisioning") + cold_start.figure("image_pull"))
        + first_download
        + budget
    )
    return Sizing(
        placement=placement,
        memory=best.memory,
        dtype=best.dtype,
        context_length=context,
        cpu=cpu,
        memory_request_gib=mem,
        shm_gib=shm,
        disk_gib=disk,
        startup_budget_seconds=budget,
        rollout_deadline_seconds=deadline,
        cheaper_infeasible=cheaper,
        dearer=dearer,
        throughput=throughput,
        choice=choice,
        host_cache=best.host,
    )
