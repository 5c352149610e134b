"""What a placement will deliver: a roofline model of one SGLang replica serving a stream of same-shaped requests.

Decode is memory-bound: each step reads the weights once (for a mixture of experts, the experts the batch's tokens
route to) and every running request's KV cache, at the GPU's HBM bandwidth times an efficiency; it becomes
compute-bound once 2 × active parameters × batch FLOPs outlast the read. Tensor parallelism splits both over
the GPUs and adds two all-reduces of the batch's hidden states per layer, over NVLink or PCIe. Prefill is
compute-bound: 2 × active parameters per prompt token plus causal attention, at the GPU's dense tensor rate
times an efficiency. With `concurrency` requests running, SGLang's continuous batching mixes each new request's
prefill chunks into the decode steps of the others, so every request's inter-token latency carries its share
of the prefills that complete meanwhile.

The efficiency factors are calibrated against published measurements (sgldeploy/data/throughput-calibration.csv,
each row with its source and conditions; bench/throughput.py prints the model's error on each). Where the model
is weaker: mixtures of experts (routing skew, expert parallelism), long prompts (attention kernels), and
tuned engines that beat SGLang's defaults.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from functools import cache

from sgldeploy.catalog import DATA, GpuModel, InstanceType, gpu_links, gpu_models
from sgldeploy.models.lock import LockedModel
from sgldeploy.spec import WorkloadSpec

# ---- the calibrated factors (bench/throughput.py fits and checks them against the calibration rows) ----------

# The share of peak HBM bandwidth a decode step reads at: weights and KV cache in large contiguous reads.
HBM_EFFICIENCY = 0.65
# The share of peak dense tensor FLOPs a decode step (small GEMMs, batch ≤ a few hundred) sustains.
DECODE_COMPUTE_EFFICIENCY = 0.30
# The share of peak dense tensor FLOPs prefill (large GEMMs, chunks of thousands of tokens) sustains.
PREFILL_COMPUTE_EFFICIENCY = 0.60
# Scheduling, sampling and kernel launches per decode step that no roofline sees (CUDA graphs keep it small).
STEP_OVERHEAD_SECONDS = 0.001
# The fixed cost of one all-reduce across the GPUs of a replica, by link (NCCL's latency at small messages).
# PCIe and EFA (a replica across nodes) have no calibration row: NCCL's order of magnitude.
ALL_REDUCE_LATENCY_SECONDS = {"nvlink": 20e-6, "pcie": 50e-6, "efa": 50e-6}


@dataclass(frozen=True)
class Accelerator:
    """One GPU of a placement, and how it reaches the others of its replica."""

    name: str
    hbm_gbs: float  # peak memory bandwidth, GB/s
    dense_tflops: float  # peak dense tensor TFLOPS at the serving precision
    link: str  # "nvlink" or "pcie"
    link_gbs: float  # one direction, per GPU, GB/s


@dataclass(frozen=True)
class ModelShape:
    """What the model costs per token: the bytes a replica reads and the FLOPs it does."""

    weight_bytes: float  # all of the replica's weights
    expert_weight_bytes: float  # the part held by routed experts (0 for a dense model)
    experts: int  # routed experts per MoE layer (0 for a dense model)
    experts_per_token: int
    active_parameters: float  # the parameters one token passes through
    kv_bytes_per_token: float  # one token's KV cache, all layers, whole replica
    kv_replicated: bool  # every GPU holds all of it (MLA's latent cache under tensor parallelism)
    layers: int
    hidden_size: int
    attention_width: int  # attention heads × head dim: what causal attention multiplies per token pair


@dataclass(frozen=True)
class Workload:
    input_tokens: int
    output_tokens: int
    concurrency: int


@dataclass(frozen=True)
class Estimate:
    batch: int  # requests running at once: the concurrency, or fewer where the KV pool holds fewer
    kv_batch_limit: int | None  # the most requests of this shape the KV pool holds (None: not given)
    compute_bound_batch: int | None  # the batch from which a decode step is compute-bound
    prefill_seconds: float
    decode_step_seconds: float
    ttft_seconds: float
    itl_seconds: float
    output_tokens_per_second_per_request: float
    output_tokens_per_second_per_replica: float


def _expert_share_read(shape: ModelShape, batch: int) -> float:
    """The expected share of routed experts a step's `batch` tokens touch, routing uniformly at random."""
    if not shape.experts:
        return 0.0
    untouched = (1 - shape.experts_per_token / shape.experts) ** batch
    return 1 - untouched


def _all_reduce_seconds(gpu: Accelerator, tp: int, tokens: int, hidden_size: int) -> float:
    """Two all-reduces per layer of `tokens` hidden states in 16-bit (ring: 2 (tp − 1) / tp of the bytes)."""
    if tp == 1:
        return 0.0
    payload = tokens * hidden_size * 2
    return ALL_REDUCE_LATENCY_SECONDS[gpu.link] + 2 * (tp - 1) / tp * payload / (gpu.link_gbs * 1e9)


def _bytes_read_per_gpu(shape: ModelShape, tp: int, batch: int, context: float) -> float:
    """What one GPU reads in a decode step: its share of the weights the batch routes through, and of the
    batch's KV cache (all of it where the cache is replicated)."""
    dense = shape.weight_bytes - shape.expert_weight_bytes
    weights = dense + shape.expert_weight_bytes * _expert_share_read(shape, batch)
    kv = batch * context * shape.kv_bytes_per_token
    return weights / tp + (kv if shape.kv_replicated else kv / tp)


def _decode_rooflines(
    shape: ModelShape, gpu: Accelerator, tp: int, batch: int, context: float
) -> tuple[float, float]:
    """A decode step's two floors on one GPU: the time its reads take, and the time its FLOPs take."""
    memory = _bytes_read_per_gpu(shape, tp, batch, context) / (gpu.hbm_gbs * 1e9 * HBM_EFFICIENCY)
    compute = 2 * shape.active_parameters * batch / tp / (gpu.dense_tflops * 1e12 * DECODE_COMPUTE_EFFICIENCY)
    return memory, compute


def decode_step_seconds(shape: ModelShape, gpu: Accelerator, tp: int, batch: int, context: float) -> float:
    """One decode step of `batch` requests, each holding `context` tokens of KV cache."""
    comm = 2 * shape.layers * _all_reduce_seconds(gpu, tp, batch, shape.hidden_size)
    return max(_decode_rooflines(shape, gpu, tp, batch, context)) + comm + STEP_OVERHEAD_SECONDS


def prefill_seconds(shape: ModelShape, gpu: Accelerator, tp: int, tokens: int) -> float:
    """One prompt of `tokens`: its GEMMs, its causal attention (half the token pairs), and its all-reduces."""
    gemm = 2 * shape.active_parameters * tokens
    attention = 2 * shape.layers * shape.attention_width * tokens * tokens  # QKᵀ and AV, the lower triangle
    compute = (gemm + attention) / tp / (gpu.dense_tflops * 1e12 * PREFILL_COMPUTE_EFFICIENCY)
    weights = shape.weight_bytes / tp / (gpu.hbm_gbs * 1e9 * HBM_EFFICIENCY)
    comm = 2 * shape.layers * _all_reduce_seconds(gpu, tp, tokens, shape.hidden_size)
    return max(compute, weights) + comm


MAX_BATCH = 65536


def compute_bound_batch(shape: ModelShape, gpu: Accelerator, tp: int, context: float) -> int | None:
    """The smallest batch whose decode FLOPs outlast its reads (the knee of the roofline); None when the KV
    reads grow as fast as the FLOPs, so that no batch is compute-bound."""

    def bound(batch: int) -> bool:
        memory, compute = _decode_rooflines(shape, gpu, tp, batch, context)
        return compute >= memory

    batch = 1
    while not bound(batch):  # doubling, then a bisection: both sides grow monotonically in the batch
        batch *= 2
        if batch > MAX_BATCH:
            return None
    low = batch // 2
    while batch - low > 1:
        mid = (low + batch) // 2
        batch, low = (mid, low) if bound(mid) else (batch, mid)
    return batch


def estimate(
    shape: ModelShape, gpu: Accelerator, tp: int, workload: Workload, kv_capacity_tokens: int | None = None
) -> Estimate:
    """Steady state of `workload.concurrency` requests of one shape on one replica of `tp` GPUs."""
    per_request = workload.input_tokens + workload.output_tokens
    kv_limit = kv_capacity_tokens // per_request if kv_capacity_tokens is not None else None
    batch = max(1, min(workload.concurrency, kv_limit)) if kv_limit is not None else workload.concurrency
    # A running request is halfway through its output, on average.
    context = workload.input_tokens + workload.output_tokens / 2
    step = decode_step_seconds(shape, gpu, tp, batch, context)
    prefill = prefill_seconds(shape, gpu, tp, workload.input_tokens)
    # Each request's output_tokens steps also carry the prefills of the batch's other requests that start meanwhile.
    itl = step + (batch - 1) * prefill / workload.output_tokens
    per_request_rate = 1 / itl
    return Estimate(
        batch=batch,
        kv_batch_limit=kv_limit,
        compute_bound_batch=compute_bound_batch(shape, gpu, tp, context),
        prefill_seconds=prefill,
        decode_step_seconds=step,
        ttft_seconds=prefill + step,
        itl_seconds=itl,
        output_tokens_per_second_per_request=per_request_rate,
        output_tokens_per_second_per_replica=batch * per_request_rate,
    )


def usd_per_million_output_tokens(hourly_usd: float, tokens_per_second: float) -> float:
    return hourly_usd / (tokens_per_second * 3600) * 1e6


# ---- a deployment's placement -----------------------------------------------------------------------------

BASIS = (
    "roofline model (sgldeploy/models/throughput.py) calibrated on published SGLang, vLLM, TensorRT-LLM and NIM "
    "measurements; steady state at max_concurrency requests of the workload's shape, equal lengths"
)


@dataclass(frozen=True)
class Throughput:
    """What a placement delivers for a deployment's workload, and what its tokens cost."""

    estimate: Estimate
    input_tokens: int
    output_tokens: int
    usd_per_million_output_tokens: float | None  # None where the placement has no price
    replicas_for_workload: int | None  # None without requests_per_second
    basis: str


def routed_expert_parameters(model: LockedModel) -> float:
    """The routed experts' parameters of a mixture of experts, from its config (MoE layers × experts × the three
    matrices of a gated MLP); 0 for a dense model or a lock entry without the routing fields."""
    c = model.config
    experts, per_token = c.get("num_experts") or 0, c.get("num_experts_per_tok") or 0
    expert_width = c.get("moe_intermediate_size") or c.get("intermediate_size")
    if not (experts and per_token and expert_width):
        return 0.0
    hidden = int(c.get("hidden_size") or model.num_attention_heads * model.head_dim)
    moe_layers = model.num_layers - int(c.get("first_k_dense_replace") or 0)
    return min(float(model.parameters), moe_layers * experts * 3 * hidden * float(expert_width))


def model_shape(model: LockedModel, weight_bytes: float, kv_bytes_per_token: float) -> ModelShape:
    """A locked model's shape. For a mixture of experts, the routed experts' parameters are counted from its
    config (MoE layers × experts × the three matrices of a gated MLP); a lock entry without the routing fields
    (written before they were recorded) is read as dense: every weight per step, a floor on throughput."""
    c = model.config
    experts, per_token = c.get("num_experts") or 0, c.get("num_experts_per_tok") or 0
    hidden = int(c.get("hidden_size") or model.num_attention_heads * model.head_dim)
    routed = routed_expert_parameters(model)
    bytes_per_parameter = weight_bytes / model.parameters
    return ModelShape(
        weight_bytes=weight_bytes,
        expert_weight_bytes=routed * bytes_per_parameter,
        experts=experts if routed else 0,
        experts_per_token=per_token if routed else 0,
        active_parameters=model.parameters - routed * (1 - per_token / experts)
        if routed
        else model.parameters,
        kv_bytes_per_token=kv_bytes_per_token,
        kv_replicated=model.kv_lora_rank > 0,
        layers=model.num_layers,
        hidden_size=hidden,
        attention_width=model.num_attention_heads * model.head_dim,
    )


def with_attention_groups(shape: ModelShape, tp: int, groups: int) -> ModelShape:
    """The shape as each GPU meets it when attention runs in `groups` data-parallel groups of tp / groups GPUs:
    every group holds the dense weights whole between its GPUs (so `groups` copies are read per step, with the
    routed experts still split over all tp), and an MLA latent only on the GPUs of the group that serves its
    request (replicated tp / groups times, not tp)."""
    if groups == 1:
        return shape
    dense = shape.weight_bytes - shape.expert_weight_bytes
    return replace(
        shape,
        weight_bytes=shape.expert_weight_bytes + dense * groups,
        kv_bytes_per_token=shape.kv_bytes_per_token * (tp // groups if shape.kv_replicated else 1),
        kv_replicated=False,
    )


def request_shape(workload: WorkloadSpec, context_length: int) -> tuple[int, int]:
    """The workload's request, shortened in proportion where the context cannot hold it (the defaults on a
    short context; a shape the user wrote is checked against it by validation)."""
    total = workload.input_tokens + workload.output_tokens
    if total <= context_length:
        return workload.input_tokens, workload.output_tokens
    output = max(1, workload.output_tokens * context_length // total)
    return max(1, context_length - output), output


def for_placement(
    model: LockedModel,
    shape: ModelShape,
    instance: InstanceType,
    gpu: GpuModel,
    tp: int,
    nodes: int,
    precision: str,
    workload: WorkloadSpec,
    concurrency: int,
    context_length: int,
    kv_capacity_tokens: int,
    hourly_usd: float | None,
) -> Throughput:
    device = accelerator(gpu, instance.family, precision)
    if nodes > 1:  # the all-reduces cross nodes: each GPU's share of the instance's network
        device = replace(device, link="efa", link_gbs=instance.network_gbps / 8 / instance.gpu_count)
    input_tokens, output_tokens = request_shape(workload, context_length)
    found = estimate(
        shape, device, tp, Workload(input_tokens, output_tokens, concurrency), kv_capacity_tokens
    )
    rate = found.output_tokens_per_second_per_replica
    replicas = (
        math.ceil(workload.requests_per_second * output_tokens / rate)
        if workload.requests_per_second
        else None
    )
    notes = [BASIS]
    if found.kv_batch_limit is not None and found.kv_batch_limit < concurrency:
        notes.append(f"the KV pool holds {found.kv_batch_limit} such requests, fewer than max_concurrency")
    if model.config.get("num_experts") and not shape.experts:
        notes.append("a mixture of experts read as dense: its lock entry records no experts per token")
    if device.link != "nvlink" and tp > 1:
        notes.append(f"all-reduce over {device.link}, which no calibration row measures")
    return Throughput(
        estimate=found,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        usd_per_million_output_tokens=usd_per_million_output_tokens(hourly_usd, rate) if hourly_usd else None,
        replicas_for_workload=replicas,
        basis="; ".join(notes),
    )


# ---- the hardware, from the catalog ----------------------------------------------------------------------


def accelerator(gpu: GpuModel, instance_family: str, precision: str) -> Accelerator:
    """A GPU as the model sees it: its tensor rate at `precision` (fp8 only where it has FP8 tensor cores;
    else bf16, else fp16), and its instance family's link between GPUs."""
    rates = dict(gpu.dense_tflops)
    rate = rates.get("fp8") if precision == "fp8" and gpu.fp8 else None
    rate = rate or rates.get("bf16") or rates["fp16"]
    link, link_gbs = gpu_links()[instance_family]
    return Accelerator(gpu.name, gpu.memory_bandwidth_gbs, rate, link, link_gbs)


# ---- the calibration rows ------------------------------------------------------------------------------

# The instance family a calibration row's GPU is served on in AWS (its link between GPUs).
FAMILY_OF_GPU = {"A100-40GB": "p4d", "A100-80GB": "p4de", "H100": "p5", "H200": "p5en", "B200": "p6-b200"}
BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}
GIB = 2**30


@dataclass(frozen=True)
class CalibrationRow:
    id: str
    engine: str
    model: str
    weights: str
    kv_cache: str
    gpu: str
    tp: int
    concurrency: int | None  # None: the batch the KV pool holds
    memory_fraction: float | None  # of GPU memory the engine takes for weights and KV pool
    input_tokens: int
    output_tokens: int
    metric: str
    value: float
    source: str
    conditions: str


@cache
def calibration_rows() -> tuple[CalibrationRow, ...]:
    with open(DATA / "throughput-calibration.csv", newline="") as f:
        return tuple(
            CalibrationRow(
                id=r["id"],
                engine=r["engine"],
                model=r["model"],
                weights=r["weights"],
                kv_cache=r["kv_cache"],
                gpu=r["gpu"],
                tp=int(r["tp"]),
                concurrency=None if r["concurrency"] == "kv-limit" else int(r["concurrency"]),
                memory_fraction=float(r["memory_fraction"]) if r["memory_fraction"] else None,
                input_tokens=int(r["input_tokens"]),
                output_tokens=int(r["output_tokens"]),
                metric=r["metric"],
                value=float(r["value"]),
                source=r["source"],
                conditions=r["conditions"],
            )
            for r in csv.DictReader(f)
        )


@cache
def calibration_shapes() -> dict[tuple[str, str, str], ModelShape]:
    """The shape of each calibration model, by (model, weights precision, KV precision)."""
    with open(DATA / "calibration-models.csv", newline="") as f:
        models = {r["model"]: r for r in csv.DictReader(f)}
    out = {}
    for row in calibration_rows():
        m = models[row.model]
        mla = int(m["kv_lora_rank"]) > 0
        per_layer = (
            int(m["kv_lora_rank"]) + int(m["qk_rope_head_dim"])
            if mla
            else 2 * int(m["kv_heads"]) * int(m["head_dim"])
        )
        out[(row.model, row.weights, row.kv_cache)] = ModelShape(
            weight_bytes=int(m["parameters"]) * BYTES[row.weights],
            expert_weight_bytes=int(m["routed_expert_parameters"]) * BYTES[row.weights],
            experts=int(m["experts"]),
            experts_per_token=int(m["experts_per_token"]),
            active_parameters=int(m["active_parameters"]),
            kv_bytes_per_token=int(m["layers"]) * per_layer * BYTES[row.kv_cache],
            kv_replicated=mla,
            layers=int(m["layers"]),
            hidden_size=int(m["hidden_size"]),
            attention_width=int(m["attention_heads"]) * int(m["head_dim"]),
        )
    return out


def modelled(row: CalibrationRow) -> float:
    """The model's figure for a calibration row, in the row's metric."""
    gpu = gpu_models()[row.gpu]
    shape = calibration_shapes()[(row.model, row.weights, row.kv_cache)]
    capacity = None
    if row.memory_fraction is not None:
        pool = gpu.memory_gib * GIB * row.tp * row.memory_fraction - shape.weight_bytes
        per_token = shape.kv_bytes_per_token * (row.tp if shape.kv_replicated else 1)
        capacity = int(pool / per_token)
    concurrency = row.concurrency or MAX_BATCH
    workload = Workload(row.input_tokens, row.output_tokens, concurrency)
    found = estimate(shape, accelerator(gpu, FAMILY_OF_GPU[row.gpu], row.weights), row.tp, workload, capacity)
    return {
        "itl_seconds": found.itl_seconds,
        "ttft_seconds": found.ttft_seconds,
        "output_tokens_per_second_per_request": found.output_tokens_per_second_per_request,
        "output_tokens_per_second_per_replica": found.output_tokens_per_second_per_replica,
    }[row.metric]
