"""The throughput model: its rooflines against ones derived here by hand, its boundaries, and its error on every
published measurement it is calibrated against (a regression table: a change of the model shows here)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from sgldeploy.models import throughput as t
from sgldeploy.models.throughput import Accelerator, ModelShape, Workload

H100 = Accelerator("H100", hbm_gbs=3350, dense_tflops=989, link="nvlink", link_gbs=450)
L4 = Accelerator("L4", hbm_gbs=300, dense_tflops=121, link="pcie", link_gbs=31.5)
# An 8B dense model in bf16: 16 GB of weights, 128 KiB of KV cache per token (32 layers × 8 KV heads × 128 × 2 × 2).
DENSE = ModelShape(
    weight_bytes=16e9,
    expert_weight_bytes=0,
    experts=0,
    experts_per_token=0,
    active_parameters=8e9,
    kv_bytes_per_token=131072,
    kv_replicated=False,
    layers=32,
    hidden_size=4096,
    attention_width=4096,
)
# A mixture of experts: 90 of its 100 GB in 64 routed experts, 4 per token.
MOE = replace(
    DENSE,
    weight_bytes=100e9,
    expert_weight_bytes=90e9,
    experts=64,
    experts_per_token=4,
    kv_bytes_per_token=65536,
    layers=24,
)


def exactly(value: float):
    """Equal but for float rounding: a factor changed by one part in a billion (1e9 → 1000000001) shows."""
    return pytest.approx(value, rel=1e-12)


BW, DEC, PRE, STEP = (
    t.HBM_EFFICIENCY,
    t.DECODE_COMPUTE_EFFICIENCY,
    t.PREFILL_COMPUTE_EFFICIENCY,
    t.STEP_OVERHEAD_SECONDS,
)


def test_decode_at_batch_1_reads_the_weights_and_one_context_at_the_calibrated_bandwidth():
    context = 1000
    read = 16e9 + context * 131072
    assert t.decode_step_seconds(DENSE, H100, 1, 1, context) == exactly(read / (3350e9 * BW) + STEP)


@pytest.mark.parametrize("context", [0, 1, 10, 100, 300, 800])  # from about 895 tokens, no knee at all
@pytest.mark.parametrize("tp", [1, 2, 8])
def test_decode_turns_compute_bound_at_the_knee_and_not_one_below(context, tp):
    knee = t.compute_bound_batch(DENSE, H100, tp, context)
    assert knee is not None

    def memory(b: int) -> float:
        return (16e9 + b * context * 131072) / tp / (3350e9 * BW)

    def compute(b: int) -> float:
        return 2 * 8e9 * b / tp / (989e12 * DEC)

    assert compute(knee) >= memory(knee) and (knee == 1 or compute(knee - 1) < memory(knee - 1))
    if context != 100 or tp != 1:
        return
    at_knee = t.decode_step_seconds(DENSE, H100, tp, knee, context)
    assert at_knee == exactly(compute(knee) + STEP)


def test_no_batch_is_compute_bound_when_the_kv_reads_outgrow_the_flops():
    # 131072 B of KV per token over 100k tokens of context: each request reads 13 GB per step for 16 GFLOPs.
    assert t.compute_bound_batch(DENSE, H100, 1, 100_000) is None


def test_tensor_parallel_splits_the_reads_and_adds_two_ring_all_reduces_per_layer():
    batch, context = 8, 2000
    read = (16e9 + batch * context * 131072) / 2
    ring = t.ALL_REDUCE_LATENCY_SECONDS["nvlink"] + 2 * (2 - 1) / 2 * batch * 4096 * 2 / 450e9
    expected = read / (3350e9 * BW) + 2 * 32 * ring + STEP
    assert t.decode_step_seconds(DENSE, H100, 2, batch, context) == exactly(expected)
    pcie = t.ALL_REDUCE_LATENCY_SECONDS["pcie"] + batch * 4096 * 2 / 31.5e9
    slow = read / (300e9 * BW) + 2 * 32 * pcie + STEP
    assert t.decode_step_seconds(DENSE, L4, 2, batch, context) == exactly(slow)


def test_a_replicated_kv_cache_is_read_whole_on_every_gpu():
    mla = replace(DENSE, kv_replicated=True)
    batch, context = 16, 4000
    kv = batch * context * 131072
    split = t.decode_step_seconds(DENSE, H100, 4, batch, context)
    whole = t.decode_step_seconds(mla, H100, 4, batch, context)
    assert whole - split == exactly((kv - kv / 4) / (3350e9 * BW))


@pytest.mark.parametrize("batch", [1, 2, 16, 200])
def test_a_mixture_of_experts_reads_the_experts_its_batch_routes_to(batch):
    touched = 1 - (1 - 4 / 64) ** batch  # the expected share of 64 experts that `batch` tokens of 4 reach
    read = 10e9 + 90e9 * touched + batch * 10 * 65536
    step = t.decode_step_seconds(MOE, H100, 1, batch, 10)
    assert step == exactly(max(read / (3350e9 * BW), 2 * 8e9 * batch / (989e12 * DEC)) + STEP)


def test_prefill_is_the_gemms_and_the_causal_attention_at_the_prefill_rate():
    tokens = 4000
    flops = 2 * 8e9 * tokens + 2 * 32 * 4096 * tokens * tokens
    assert t.prefill_seconds(DENSE, H100, 1, tokens) == exactly(flops / (989e12 * PRE))
    # A short prompt costs at least one read of the weights.
    assert t.prefill_seconds(DENSE, H100, 1, 1) == exactly(16e9 / (3350e9 * BW))


def test_a_request_waits_for_its_prefill_and_shares_the_others_prefills_over_its_output():
    w = Workload(input_tokens=2000, output_tokens=500, concurrency=8)
    found = t.estimate(DENSE, H100, 1, w)
    step = t.decode_step_seconds(DENSE, H100, 1, 8, 2000 + 250)
    prefill = t.prefill_seconds(DENSE, H100, 1, 2000)
    assert found.batch == 8 and found.kv_batch_limit is None
    assert found.ttft_seconds == exactly(prefill + step)
    assert found.itl_seconds == exactly(step + 7 * prefill / 500)
    assert found.output_tokens_per_second_per_request == exactly(1 / found.itl_seconds)
    assert found.output_tokens_per_second_per_replica == exactly(8 / found.itl_seconds)
    alone = t.estimate(DENSE, H100, 1, Workload(2000, 500, 1))
    assert alone.itl_seconds == exactly(t.decode_step_seconds(DENSE, H100, 1, 1, 2250))


@pytest.mark.parametrize("capacity, batch", [(2500 * 3 - 1, 2), (2500 * 3, 3), (2500 * 100, 8), (10, 1)])
def test_the_kv_pool_caps_the_batch_at_whole_requests(capacity, batch):
    found = t.estimate(DENSE, H100, 1, Workload(2000, 500, 8), kv_capacity_tokens=capacity)
    assert found.batch == batch and found.kv_batch_limit == capacity // 2500


def test_a_million_tokens_cost_the_hour_over_the_tokens_an_hour_serves():
    assert t.usd_per_million_output_tokens(3.6, 1000) == exactly(1.0)  # 3.6 M tokens an hour for $3.60


def test_the_accelerator_of_a_catalog_gpu_takes_fp8_only_where_it_has_fp8_tensor_cores():
    from sgldeploy.catalog import gpu_models

    gpus = gpu_models()
    h100 = t.accelerator(gpus["H100"], "p5", "fp8")
    assert (h100.hbm_gbs, h100.dense_tflops, h100.link, h100.link_gbs) == (3350, 1979, "nvlink", 450)
    assert t.accelerator(gpus["H100"], "p5", "bf16").dense_tflops == 989
    assert t.accelerator(gpus["A100-80GB"], "p4de", "fp8").dense_tflops == 312  # weight-only FP8: bf16 GEMMs
    t4 = t.accelerator(gpus["T4"], "g4dn", "bf16")
    assert (t4.dense_tflops, t4.link, t4.link_gbs) == (65, "pcie", 15.75)  # no bf16: its fp16 rate


# ---- the calibration rows: a regression table ------------------------------------------------------------

# modelled / measured for every row (bench/throughput.py prints them with their conditions; README's table).
RATIOS = {
    "qwen3-8b-h100-c1-itl": 1.18,
    "qwen3-8b-h100-c4-itl": 1.21,
    "qwen3-8b-fp8-h100-c4-itl": 0.87,
    "llama-8b-a100-c1-rate": 0.78,
    "llama-70b-fp8-h100-tp2-c1-long-itl": 1.12,
    "llama-70b-fp8-h100-tp2-c1-short-itl": 1.09,
    "llama-70b-fp8-h100-tp2-c1-long-ttft": 0.89,
    "llama-70b-fp8-h100-tp2-c1-short-ttft": 1.18,
    "llama-8b-fp8-h100-max": 0.97,
    "llama-8b-fp8-h200-max": 1.30,
    "llama-70b-fp8-h200-max": 0.91,
    "llama-70b-fp8-h100-tp2-max": 1.00,
    "qwen3-32b-h100-sharegpt": 1.84,
    "deepseek-r1-h200-tp8-rate": 1.29,
    "deepseek-r1-h200-tp8-itl": 0.84,
}


def test_every_calibration_row_is_modelled_as_the_table_says():
    got = {r.id: round(t.modelled(r) / r.value, 2) for r in t.calibration_rows()}
    assert got == RATIOS


def test_every_row_but_one_is_within_a_factor_of_1_5():
    """The one outside: vLLM on ShareGPT at an infinite rate, whose own page measures SGLang 1.4× slower."""
    outside = {r.id for r in t.calibration_rows() if abs(math.log(t.modelled(r) / r.value)) > math.log(1.5)}
    assert outside == {"qwen3-32b-h100-sharegpt"}


def test_the_gpus_rank_as_measured():
    rows = {r.id: r for r in t.calibration_rows()}
    for faster, slower in [
        ("llama-8b-fp8-h200-max", "llama-8b-fp8-h100-max"),
        ("llama-70b-fp8-h100-tp2-max", "llama-70b-fp8-h200-max"),
    ]:
        assert rows[faster].value > rows[slower].value
        assert t.modelled(rows[faster]) > t.modelled(rows[slower])


def test_every_calibration_row_names_its_source_and_conditions():
    for r in t.calibration_rows():
        assert r.source and len(r.conditions.split()) >= 5, r.id
        assert r.metric in ("itl_seconds", "ttft_seconds", "output_tokens_per_second_per_request",
                            "output_tokens_per_second_per_replica")  # fmt: skip


# ---- a locked model's shape --------------------------------------------------------------------------------


def locked(config: dict, parameters: int = 46_702_792_704):
    from sgldeploy.models.lock import LockedModel

    base = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
    return LockedModel(
        repo="org/moe",
        revision="main",
        sha="0" * 40,
        parameters=parameters,
        dtype="bfloat16",
        gated=False,
        pipeline_tag="text-generation",
        custom_code=False,
        config={**base, **config},
        source="test",
        parameters_by_dtype={},
        safetensors_bytes=None,
    )


def test_a_mixture_of_experts_counts_its_routed_experts_from_the_config():
    # Mixtral-8x7B: 32 layers of 8 experts, 2 per token, gated MLPs of 4096 × 14336 (its intermediate_size).
    mixtral = locked({"num_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 14336})
    shape = t.model_shape(mixtral, weight_bytes=2 * mixtral.parameters, kv_bytes_per_token=131072)
    routed = 32 * 8 * 3 * 4096 * 14336  # 45.1 B of the 46.7 B parameters
    assert (shape.experts, shape.experts_per_token) == (8, 2)
    assert shape.expert_weight_bytes == pytest.approx(2 * routed)
    assert shape.active_parameters == pytest.approx(mixtral.parameters - routed * 6 / 8)  # about 12.9 B
    assert 12.8e9 < shape.active_parameters < 13.0e9  # as Mistral states it


def test_dense_layers_before_the_first_moe_layer_are_not_experts():
    deepseek = locked(
        {"num_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 2048, "intermediate_size": 18432,
         "first_k_dense_replace": 3, "num_hidden_layers": 61, "hidden_size": 7168},
        parameters=671_000_000_000,
    )  # fmt: skip
    shape = t.model_shape(deepseek, weight_bytes=deepseek.parameters, kv_bytes_per_token=70272)
    assert shape.expert_weight_bytes == pytest.approx(58 * 256 * 3 * 7168 * 2048)  # fp8: a byte a parameter


def test_a_lock_entry_without_the_routing_fields_is_read_as_dense_and_says_so():
    from sgldeploy.catalog import gpu_models, instance_types
    from sgldeploy.spec import WorkloadSpec

    older = locked({"num_experts": 8})
    shape = t.model_shape(older, weight_bytes=2 * older.parameters, kv_bytes_per_token=131072)
    assert (shape.experts, shape.expert_weight_bytes, shape.active_parameters) == (0, 0, older.parameters)
    found = t.for_placement(
        older, shape, instance_types()["p5.48xlarge"], gpu_models()["H100"], 8, 1, "bf16", WorkloadSpec(), 8,
        4096, 10**6, 98.32,
    )  # fmt: skip
    assert "a mixture of experts read as dense: its lock entry records no experts per token" in found.basis
    dense = t.model_shape(locked({}), weight_bytes=2 * older.parameters, kv_bytes_per_token=131072)
    assert dense.experts == 0 and "mixture" not in t.for_placement(
        locked({}), dense, instance_types()["p5.48xlarge"], gpu_models()["H100"], 8, 1, "bf16", WorkloadSpec(), 8,
        4096, 10**6, 98.32,
    ).basis  # fmt: skip


# ---- a placement's figures for a deployment ------------------------------------------------------------------


@pytest.mark.parametrize(
    "context, shape",
    [(1280, (1024, 256)), (4096, (1024, 256)), (640, (512, 128)), (2, (1, 1))],
)
def test_the_default_request_is_shortened_in_proportion_to_a_short_context(context, shape):
    from sgldeploy.spec import WorkloadSpec

    assert t.request_shape(WorkloadSpec(), context) == shape


def for_h100(model, shape, *, nodes=1, tp=1, workload=None, concurrency=8, capacity=10**6, price=6.88):
    from sgldeploy.catalog import gpu_models, instance_types
    from sgldeploy.spec import WorkloadSpec

    instance = instance_types()["p5.48xlarge" if nodes > 1 or tp > 1 else "p5.4xlarge"]
    return t.for_placement(
        model, shape, instance, gpu_models()["H100"], tp, nodes, "bf16", workload or WorkloadSpec(), concurrency,
        4096, capacity, price,
    )  # fmt: skip


def test_the_replicas_for_a_request_rate_are_its_tokens_over_a_replicas():
    from sgldeploy.spec import WorkloadSpec

    dense = locked({})
    shape = t.model_shape(dense, 2 * dense.parameters, 131072)
    alone = for_h100(dense, shape)
    rate = alone.estimate.output_tokens_per_second_per_replica
    assert alone.replicas_for_workload is None
    # A rate a replica's tokens just cover needs one; a hair more needs two.
    exact = for_h100(dense, shape, workload=WorkloadSpec(requests_per_second=rate / 256))
    more = for_h100(dense, shape, workload=WorkloadSpec(requests_per_second=rate / 256 * 1.001))
    assert (exact.replicas_for_workload, more.replicas_for_workload) == (1, 2)
    assert alone.usd_per_million_output_tokens == pytest.approx(6.88 / (rate * 3600) * 1e6)
    assert for_h100(dense, shape, price=None).usd_per_million_output_tokens is None
    assert (alone.input_tokens, alone.output_tokens) == (1024, 256)


def test_the_basis_names_what_the_figures_assume():
    dense = locked({})
    shape = t.model_shape(dense, 2 * dense.parameters, 131072)
    plain = for_h100(dense, shape)
    assert plain.basis == t.BASIS
    full = for_h100(dense, shape, concurrency=8, capacity=1280 * 3)  # the pool holds 3 requests of 1024 + 256
    assert full.estimate.batch == 3
    assert full.basis == f"{t.BASIS}; the KV pool holds 3 such requests, fewer than max_concurrency"
    across = for_h100(dense, shape, nodes=2, tp=16)
    assert across.basis == f"{t.BASIS}; all-reduce over efa, which no calibration row measures"
    on_nvlink = for_h100(dense, shape, tp=8)
    assert on_nvlink.basis == t.BASIS


def test_a_replica_across_nodes_all_reduces_over_each_gpus_share_of_the_network():
    from sgldeploy.catalog import instance_types

    dense = locked({})
    shape = t.model_shape(dense, 2 * dense.parameters, 131072)
    p5 = instance_types()["p5.48xlarge"]
    efa = t.Accelerator("H100", 3350, 989, "efa", p5.network_gbps / 8 / p5.gpu_count)
    across = for_h100(dense, shape, nodes=2, tp=16)
    assert across.estimate.decode_step_seconds == pytest.approx(
        t.decode_step_seconds(shape, efa, 16, 8, 1024 + 128)
    )


@pytest.mark.parametrize("weights", [1e6, 1e9, 90e9])
def test_the_knee_of_a_mixture_of_experts_is_its_smallest_compute_bound_batch(weights):
    moe = replace(MOE, expert_weight_bytes=weights)

    def bound(b: int) -> bool:
        read = (100e9 - weights) + weights * (1 - (1 - 4 / 64) ** b) + b * 10 * 65536
        return 2 * 8e9 * b / (989e12 * DEC) >= read / (3350e9 * BW)

    knee = t.compute_bound_batch(moe, H100, 1, 10)
    assert knee is not None and bound(knee) and not bound(knee - 1)


def test_a_dense_model_that_is_compute_bound_from_batch_1_has_its_knee_there():
    tiny = replace(DENSE, weight_bytes=1.0)
    assert t.compute_bound_batch(tiny, H100, 1, 0) == 1


def test_an_estimate_carries_its_parts():
    found = t.estimate(DENSE, H100, 1, Workload(2000, 500, 8))
    assert found.prefill_seconds == exactly(t.prefill_seconds(DENSE, H100, 1, 2000))
    assert found.decode_step_seconds == exactly(t.decode_step_seconds(DENSE, H100, 1, 8, 2250))
    assert found.compute_bound_batch == t.compute_bound_batch(DENSE, H100, 1, 2250)


def test_a_locked_shape_takes_the_heads_width_and_mla_from_the_config():
    mla = locked({"kv_lora_rank": 512, "qk_rope_head_dim": 64, "head_dim": 128, "hidden_size": None})
    shape = t.model_shape(mla, 2 * mla.parameters, 70272)
    assert shape.kv_replicated and shape.hidden_size == 32 * 128 and shape.attention_width == 32 * 128
    assert (shape.layers, shape.kv_bytes_per_token, shape.weight_bytes) == (32, 70272, 2 * mla.parameters)
    assert t.model_shape(locked({"kv_lora_rank": 1}), 2.0, 1.0).kv_replicated  # any latent rank at all
    plain = t.model_shape(locked({"kv_lora_rank": 0}), 2.0, 1.0)
    assert not plain.kv_replicated and plain.hidden_size == 4096
    width_only = t.model_shape(locked({"moe_intermediate_size": 2048, "num_experts_per_tok": 2}), 2.0, 1.0)
    assert (width_only.experts, width_only.expert_weight_bytes) == (0, 0)  # no experts: dense


def test_the_accelerator_names_its_gpu():
    from sgldeploy.catalog import gpu_models

    assert t.accelerator(gpu_models()["L40S"], "g6e", "bf16") == t.Accelerator("L40S", 864, 362, "pcie", 31.5)
    assert t.accelerator(gpu_models()["L40S"], "g6e", "fp8").dense_tflops == 733


def test_the_basis_notes_start_at_their_boundaries():
    from sgldeploy.catalog import gpu_models, instance_types
    from sgldeploy.spec import WorkloadSpec

    dense = locked({})
    shape = t.model_shape(dense, 2 * dense.parameters, 131072)
    # The pool holding exactly max_concurrency requests caps nothing.
    assert for_h100(dense, shape, concurrency=3, capacity=1280 * 3).basis == t.BASIS
    # One GPU on a PCIe instance all-reduces nothing: no note about its link.
    one_l40s = t.for_placement(
        dense, shape, instance_types()["g6e.xlarge"], gpu_models()["L40S"], 1, 1, "bf16", WorkloadSpec(), 8,
        4096, 10**6, 1.861,
    )  # fmt: skip
    assert one_l40s.basis == t.BASIS
    two_l40s = t.for_placement(
        dense, shape, instance_types()["g6e.12xlarge"], gpu_models()["L40S"], 2, 1, "bf16", WorkloadSpec(), 8,
        4096, 10**6, 10.49,
    )  # fmt: skip
    assert two_l40s.basis == f"{t.BASIS}; all-reduce over pcie, which no calibration row measures"


def test_a_request_that_just_fits_the_context_is_kept_whole():
    from sgldeploy.spec import WorkloadSpec

    assert t.request_shape(WorkloadSpec(input_tokens=1000, output_tokens=24), 1024) == (1000, 24)
    assert t.request_shape(WorkloadSpec(input_tokens=1000, output_tokens=25), 1024) == (1000, 24)


def test_the_hidden_size_is_the_configs_not_the_heads_product():
    wide = locked({"hidden_size": 5120, "head_dim": 128})  # 32 heads × 128 = 4096 of attention
    shape = t.model_shape(wide, 2.0, 1.0)
    assert (shape.hidden_size, shape.attention_width) == (5120, 4096)


def test_the_constants_are_the_fit_of_the_calibration_rows(capsys):
    """bench/throughput.py --fit searches its grid over the rows: the module's constants are its answer, so a
    changed row or a changed model shows here."""
    import runpy
    from pathlib import Path

    bench = runpy.run_path(str(Path(__file__).resolve().parent.parent / "bench" / "throughput.py"))
    bench["fit"]()
    chosen = dict(line.strip().split(" = ") for line in capsys.readouterr().out.splitlines()[1:])
    assert {name: float(value) for name, value in chosen.items()} == {
        "HBM_EFFICIENCY": t.HBM_EFFICIENCY,
        "DECODE_COMPUTE_EFFICIENCY": t.DECODE_COMPUTE_EFFICIENCY,
        "PREFILL_COMPUTE_EFFICIENCY": t.PREFILL_COMPUTE_EFFICIENCY,
        "STEP_OVERHEAD_SECONDS": t.STEP_OVERHEAD_SECONDS,
        "nvlink all-reduce latency": t.ALL_REDUCE_LATENCY_SECONDS["nvlink"],
    }
