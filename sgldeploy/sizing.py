"""GPU placement and memory fit: which instance serves a model, with how many GPUs, and whether it fits.

Memory model (../shared/reference/sglang.md §5, data-notes.md): SGLang keeps weights plus the KV pool in
`mem_fraction_static` of each GPU's memory and leaves the rest for activations and CUDA graphs. A replica
fits when its weights and one full-context request's KV cache, split over the tensor-parallel GPUs, fit in
that static share. With `auto`, the share is what SGLang 0.5.23 itself would pick for the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .catalog import GpuModel, InstanceType, gpu_models, instance_types, instances_with
from .lock import LockedModel
from .spec import GPU_MODELS, DeploymentSpec

GIB = 1024**3
GPUS_PER_NODE = 8

# Bytes per parameter by quantization method; int4 methods carry group scales, hence above 0.5.
_QUANT_BYTES = {"fp8": 1.0, "w8a8_fp8": 1.0, "w8a8_int8": 1.0, "modelopt_fp8": 1.0, "mxfp8": 1.0,
                "awq": 0.56, "awq_marlin": 0.56, "gptq": 0.56, "gptq_marlin": 0.56, "moe_wna16": 0.56,
                "modelopt_fp4": 0.56, "nvfp4_online": 0.56, "mxfp4": 0.56, "petit_nvfp4": 0.56,
                "w4afp8": 0.56, "bitsandbytes": 0.56}
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Minimum compute capability per quantization method in SGLang 0.5.23 (layers/quantization, sglang.md §6).
MIN_CAPABILITY = {"fp8": 8.0, "w8a8_fp8": 8.9, "modelopt_fp8": 8.9, "awq": 7.5, "awq_marlin": 8.0,
                  "gptq": 6.0, "gptq_marlin": 8.0, "w8a8_int8": 7.5, "bitsandbytes": 7.0, "gguf": 6.0,
                  "modelopt_fp4": 8.0, "nvfp4_online": 10.0, "mxfp8": 10.0, "mxfp4": 8.0, "w4afp8": 9.0,
                  "petit_nvfp4": 9.0, "moe_wna16": 8.0}


@dataclass(frozen=True)
class Placement:
    instance_type: str
    gpu_model: str
    gpus_per_replica: int
    nodes_per_replica: int
    tensor_parallel: int
    alternatives: tuple[str, ...]  # other instance types with the same GPU and count, for the node pool
    hourly_usd_per_replica: Optional[float]


@dataclass(frozen=True)
class MemoryFit:
    weights_gib: float
    kv_cache_gib: float  # one full-context request
    required_gib_per_gpu: float  # weights and KV per GPU plus what SGLang keeps outside its static share
    gpu_memory_gib: float
    mem_fraction_static: float
    kv_bytes_per_token: int
    kv_capacity_tokens: int  # tokens the KV pool holds per replica once weights are loaded

    @property
    def fits(self) -> bool:
        return self.required_gib_per_gpu <= self.gpu_memory_gib


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
    startup_budget_seconds: int


class SizingError(Exception):
    def __init__(self, field: str, what: str, fix: str, got):
        super().__init__(what)
        self.field, self.what, self.fix, self.got = field, what, fix, got


def serving_dtype(dep: DeploymentSpec, model: LockedModel, gpu: GpuModel) -> str:
    """The `--dtype` to pass: the spec's, or bf16/fp16 as the checkpoint and the GPU allow."""
    if dep.serving.precision != "auto":
        return dep.serving.precision
    if dep.serving.quantization in ("awq", "awq_marlin"):
        return "float16"  # AWQ kernels take float16 activations only
    if model.dtype in ("bfloat16", "float32") and not gpu.bf16:
        return "float16"  # Turing/Volta have no bf16
    return "bfloat16" if model.dtype in ("bfloat16", "float32") else "float16"


def weight_bytes(dep: DeploymentSpec, model: LockedModel, dtype: str) -> float:
    per_param = _QUANT_BYTES.get(dep.serving.quantization, _DTYPE_BYTES.get(dtype, 2))
    if model.config.get("quantization_method") in ("fp8",):
        per_param = 1.0
    return model.parameters * per_param


def kv_bytes_per_token(dep: DeploymentSpec, model: LockedModel) -> int:
    element = 1 if dep.serving.kv_cache_dtype.startswith("fp8") else 2
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * element


def sglang_auto_fraction(gpu_memory_gib: float, tp: int) -> float:
    """What SGLang 0.5.23 picks for --mem-fraction-static when unset (arg_groups/memory_hook.py)."""
    mem_mb = gpu_memory_gib * 1024
    gb = gpu_memory_gib * GIB / 1e9
    chunked = 2048 if gb < 20 else 4096 if gb < 60 else 8192 if gb < 160 else 16384
    graph_bs = 8 if gb < 20 else (48 if tp < 4 else 160) if gb < 35 else (32 if tp < 4 else 160) if gb < 60 \
        else (256 if tp < 4 else 512) if gb < 160 else 512
    reserved = 512 + 1.5 * max(chunked, 2048) + (tp / 8) * 1024 + 2 * graph_bs
    if gb > 60:
        reserved = max(reserved, 10 * 1024)
    return round((mem_mb - reserved) / mem_mb, 3)


def memory_fit(dep: DeploymentSpec, model: LockedModel, gpu: GpuModel, tp: int, context_length: int,
               dtype: str) -> MemoryFit:
    weights = weight_bytes(dep, model, dtype)
    per_token = kv_bytes_per_token(dep, model)
    kv = per_token * context_length
    frac = dep.serving.mem_fraction_static
    fraction = sglang_auto_fraction(gpu.memory_gib, tp) if frac == "auto" else float(frac)
    outside = gpu.memory_gib * (1 - fraction)
    required = (weights + kv) / tp / GIB + outside
    pool = gpu.memory_gib * fraction * tp * GIB - weights
    return MemoryFit(
        weights_gib=round(weights / GIB, 2),
        kv_cache_gib=round(kv / GIB, 2),
        required_gib_per_gpu=round(required, 2),
        gpu_memory_gib=gpu.memory_gib,
        mem_fraction_static=fraction,
        kv_bytes_per_token=per_token,
        kv_capacity_tokens=max(0, int(pool // per_token)),
    )


def _tp_choices(model: LockedModel, fixed: Optional[int]) -> list[int]:
    if fixed is not None:
        return [fixed]
    return [tp for tp in (1, 2, 4, 8, 16, 32) if model.num_attention_heads % tp == 0]


def _gpu_problem(dep: DeploymentSpec, gpu: GpuModel, dtype: str) -> Optional[str]:
    need = MIN_CAPABILITY.get(dep.serving.quantization)
    if need and gpu.compute_capability < need:
        return f"quantization {dep.serving.quantization} needs compute capability {need}, {gpu.name} has " \
               f"{gpu.compute_capability}"
    if dtype == "bfloat16" and not gpu.bf16:
        return f"{gpu.name} has no bfloat16"
    return None


def size(dep: DeploymentSpec, model: LockedModel) -> Sizing:
    """The cheapest placement that fits, or the one the spec fixes; SizingError when none does."""
    res = dep.resources
    context = dep.serving.context_length or model.max_context
    catalog = instance_types()
    unknown = [t for t in res.instance_types if t not in catalog]
    if unknown:
        raise SizingError("resources.instance_types", f"has instance types without GPU data: {', '.join(unknown)}",
                          "use GPU instance types from sgldeploy/data/aws-gpu-instances.csv", unknown[0])
    gpus = [res.gpu] if res.gpu != "auto" else [g for g in GPU_MODELS if g in gpu_models()]
    fixed_tp = None if res.gpu_count == "auto" else int(res.gpu_count)
    candidates: list[tuple[float, Placement, MemoryFit, str]] = []
    closest: Optional[tuple[MemoryFit, str, int]] = None
    reasons: list[str] = []
    for name in gpus:
        gpu = gpu_models()[name]
        dtype = serving_dtype(dep, model, gpu)
        problem = _gpu_problem(dep, gpu, dtype)
        if problem:
            reasons.append(problem)
            continue
        for tp in _tp_choices(model, fixed_tp):
            fit = memory_fit(dep, model, gpu, tp, context, dtype)
            shortfall = fit.required_gib_per_gpu - fit.gpu_memory_gib
            if closest is None or shortfall < closest[0].required_gib_per_gpu - closest[0].gpu_memory_gib:
                closest = (fit, name, tp)
            if not fit.fits:
                continue
            placement = _place(name, tp, res.instance_types)
            if placement is None:
                continue
            price = placement.hourly_usd_per_replica
            candidates.append((math.inf if price is None else price, placement, fit, dtype))
            break  # more GPUs of the same model only cost more
    if not candidates:
        raise _no_fit(dep, context, closest, reasons)
    _, placement, fit, dtype = min(candidates, key=lambda c: (c[0], c[1].gpus_per_replica))
    return _finish(dep, model, placement, fit, dtype, context)


def _place(gpu: str, tp: int, allowed: list[str]) -> Optional[Placement]:
    per_node = min(tp, GPUS_PER_NODE)
    nodes = max(1, tp // GPUS_PER_NODE)
    options = [i for i in instances_with(gpu, per_node) if not allowed or i.name in allowed]
    if not options:
        return None
    best = options[0]
    price = None if best.on_demand_usd_per_hour is None else round(best.on_demand_usd_per_hour * nodes, 4)
    return Placement(instance_type=best.name, gpu_model=gpu, gpus_per_replica=tp, nodes_per_replica=nodes,
                     tensor_parallel=tp, alternatives=tuple(i.name for i in options[1:]),
                     hourly_usd_per_replica=price)


def _no_fit(dep: DeploymentSpec, context: int, closest, reasons: list[str]) -> SizingError:
    if closest is None:
        return SizingError("resources.gpu", "cannot run this deployment: " + "; ".join(reasons),
                           "choose another GPU, or change serving.quantization or serving.precision",
                           dep.resources.gpu)
    fit, gpu, tp = closest
    return SizingError(
        "resources.gpu" if dep.resources.gpu != "auto" else "model.repo",
        f"does not fit: needs {fit.required_gib_per_gpu} GiB per GPU on {tp}× {gpu} ({fit.weights_gib} GiB "
        f"weights + {fit.kv_cache_gib} GiB KV for {context} tokens), the GPU has {fit.gpu_memory_gib} GiB",
        "use more or larger GPUs, serving.quantization: fp8, or a shorter serving.context_length",
        dep.resources.gpu if dep.resources.gpu != "auto" else dep.model.repo)


def _finish(dep: DeploymentSpec, model: LockedModel, placement: Placement, fit: MemoryFit, dtype: str,
            context: int) -> Sizing:
    node: InstanceType = instance_types()[placement.instance_type]
    # Leave a core and a fifth of memory for the kubelet, system daemons and the device plugin.
    cpu = float(dep.resources.cpu) if dep.resources.cpu != "auto" else float(max(1, node.vcpu - 1))
    mem = float(dep.resources.memory_gib) if dep.resources.memory_gib != "auto" \
        else float(max(4, math.floor(node.memory_gib * 0.8) - 1))
    # NCCL needs /dev/shm beyond Docker's 64 MB once GPUs talk to each other; one GPU needs little.
    shm = 1 if placement.gpus_per_replica == 1 else min(16, max(2, int(mem // 8)))
    weights_per_node = fit.weights_gib / placement.nodes_per_replica
    disk = int(dep.resources.disk_gib) if dep.resources.disk_gib != "auto" \
        else int(math.ceil((100 + 2 * weights_per_node) / 50) * 50)
    downloads = dep.cache_storage == "none"
    budget = min(3600, int(600 + fit.weights_gib * (8 if downloads else 2)))
    return Sizing(placement=placement, memory=fit, dtype=dtype, context_length=context, cpu=cpu,
                  memory_request_gib=mem, shm_gib=shm, disk_gib=disk, startup_budget_seconds=budget)
