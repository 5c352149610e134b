"""Placement and memory fit against hand-computed cases and published facts.

Model facts: ../shared/data/models.csv and ../shared/reference/data-notes.md (layers, KV heads, head dim,
parameter counts and bf16 footprints). Hand computations are written out next to each assertion.
"""

from __future__ import annotations

import csv
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgldeploy.catalog import gpu_models, instance_types
from sgldeploy.models.lock import LockedModel
from sgldeploy.models.sizing import (
    GIB,
    SizingError,
    candidates,
    capability_problem,
    kv_bytes_per_token,
    memory_fit,
    sglang_auto_fraction,
    size,
)
from sgldeploy.spec import DeploymentSpec
from sgldeploy.spec.validate import parse_stack

from .conftest import LLAMA_8B, LLAMA_70B, QWEN, ROOT, deployment, render_stack, resources_of, write_stack


def spec(**fields) -> DeploymentSpec:
    return parse_stack(None, [deployment(**fields)]).deployments[0]


def model_of(lock, ref) -> LockedModel:
    return lock[f"{ref['repo']}@{ref['revision']}"]


def facts(
    params,
    layers,
    heads,
    kv_heads,
    head_dim,
    context=32768,
    dtype="bfloat16",
    by_dtype=None,
    quantization=None,
    **extra,
) -> LockedModel:
    return LockedModel(
        repo="org/model",
        revision="main",
        sha="0" * 40,
        parameters=params,
        dtype=dtype,
        gated=False,
        pipeline_tag="text-generation",
        custom_code=False,
        source="test",
        config={
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": context,
            "quantization_method": quantization,
            **extra,
        },
        parameters_by_dtype=by_dtype or {},
        safetensors_bytes=None,
    )


# Architectures (data-notes.md §5): dense GQA, MHA, MoE, tied embeddings, MLA, pre-quantized.
MIXTRAL = facts(46_702_792_704, 32, 32, 8, 128)  # MoE, every expert resident: 86.99 GiB in bf16
QWEN3_MOE = facts(30_532_122_624, 48, 32, 4, 128)  # MoE 30B-A3B: 56.87 GiB
GEMMA2_27B = facts(27_227_128_320, 46, 32, 16, 128, context=8192)  # 50.71 GiB
PHI3_MINI = facts(3_821_079_552, 32, 32, 32, 96, context=4096)  # multi-head attention: 384 KiB/token
LLAMA32_1B = facts(1_235_814_400, 16, 32, 8, 64, context=131072)  # tied embeddings counted once
DEEPSEEK_V3 = facts(
    684_531_386_000,
    61,
    128,
    128,
    128,
    context=163840,
    quantization="fp8",
    by_dtype={"BF16": 3_918_786_560, "F8_E4M3": 680_571_043_840, "F32": 41_555_600},
    kv_lora_rank=512,
    qk_rope_head_dim=64,
)
GPTQ_8B = facts(
    8_030_261_248,
    32,
    32,
    8,
    128,
    dtype="float16",
    quantization="gptq",
    by_dtype={"I32": 875_560_960, "F16": 1_050_673_152},
)  # packed int4: 8 weights per I32


@pytest.mark.parametrize(
    "gpu, tp, expected",
    [("H100", 1, 0.83), ("L4", 1, 0.70), ("A10G", 1, 0.70), ("A100-40GB", 1, 0.83), ("T4", 1, 0.76)],
)
def test_auto_fraction_matches_sglangs_heuristic(gpu, tp, expected):
    assert sglang_auto_fraction(gpu_models()[gpu].memory_gib, tp) == pytest.approx(expected, abs=0.015)


@pytest.mark.parametrize(
    "model, kib",
    [
        ("qwen", 56),
        ("llama8", 128),
        ("llama70", 320),
        (MIXTRAL, 128),
        (QWEN3_MOE, 96),
        (GEMMA2_27B, 368),
        (PHI3_MINI, 384),
        (LLAMA32_1B, 32),
    ],
)
def test_kv_per_token_matches_published_table(lock, model, kib):
    refs = {"qwen": QWEN, "llama8": LLAMA_8B, "llama70": LLAMA_70B}
    locked = model_of(lock, refs[model]) if isinstance(model, str) else model
    assert kv_bytes_per_token(spec(), locked) == kib * 1024


def test_kv_heads_are_replicated_beyond_their_count():
    # Qwen3-30B-A3B has 4 KV heads: at tp 8 each GPU still holds one head, not half a head.
    assert kv_bytes_per_token(spec(), QWEN3_MOE, tp=8) == 2 * 48 * 1 * 128 * 2
    assert kv_bytes_per_token(spec(), QWEN3_MOE, tp=2) == 2 * 48 * 2 * 128 * 2


def test_mla_caches_one_latent_per_layer_on_every_rank():
    per_token = 61 * (512 + 64) * 2  # DeepSeek-V3: 70,272 B, the same on every TP rank
    assert kv_bytes_per_token(spec(), DEEPSEEK_V3, tp=1) == per_token
    assert kv_bytes_per_token(spec(), DEEPSEEK_V3, tp=16) == per_token


def test_pre_quantized_checkpoints_weigh_their_own_bytes():
    fit = memory_fit(spec(), DEEPSEEK_V3, gpu_models()["H200"], 16, 4096, "bfloat16")
    own = 3_918_786_560 * 2 + 680_571_043_840 * 1 + 41_555_600 * 4
    assert fit.weights_gib == pytest.approx(own / GIB, abs=0.01)  # ≈ 641 GiB, not 1,275 GiB in bf16
    gptq = memory_fit(spec(), GPTQ_8B, gpu_models()["L4"], 1, 4096, "float16")
    assert gptq.weights_gib == pytest.approx((875_560_960 * 4 + 1_050_673_152 * 2) / GIB, abs=0.01)


def test_llama_8b_bf16_fits_one_l4_only_with_a_short_context(lock):
    llama = model_of(lock, LLAMA_8B)
    l4 = gpu_models()["L4"]
    # 14.96 GiB weights + 2,048 × 128 KiB = 0.25 GiB KV + 22.35 × (1 − 0.699) = 6.73 reserve = 21.94 ≤ 22.35
    short = memory_fit(
        spec(model=dict(LLAMA_8B), serving={"context_length": 2048, "max_concurrency": 1}),
        llama,
        l4,
        1,
        2048,
        "bfloat16",
    )
    assert short.fits and short.required_gib_per_gpu == pytest.approx(21.94, abs=0.02)
    # 8,192 tokens: 1.0 GiB KV → 22.69 > 22.35
    long = memory_fit(
        spec(model=dict(LLAMA_8B), serving={"max_concurrency": 1}), llama, l4, 1, 8192, "bfloat16"
    )
    assert not long.fits and long.required_gib_per_gpu == pytest.approx(22.69, abs=0.02)


def test_llama_70b_bf16_needs_more_than_one_80gb_gpu(lock):
    llama = model_of(lock, LLAMA_70B)
    fit = memory_fit(spec(model=dict(LLAMA_70B)), llama, gpu_models()["H100"], 1, 4096, "bfloat16")
    assert fit.weights_gib == pytest.approx(70_553_706_496 * 2 / GIB, abs=0.01) and not fit.fits
    chosen = size(
        spec(
            model=dict(LLAMA_70B),
            serving={"context_length": 16384, "max_concurrency": 16},
            resources={"gpu": "H100", "gpu_count": "auto"},
        ),
        llama,
    )
    # 4× H100 would hold it, but no EC2 instance carries exactly four, so the placement is p5.48xlarge.
    assert (chosen.placement.instance_type, chosen.placement.tensor_parallel) == ("p5.48xlarge", 8)


def test_mixtral_placement_by_hand():
    dep = spec(
        resources={"gpu": "T4", "gpu_count": "auto"}, serving={"context_length": 4096, "max_concurrency": 8}
    )
    chosen = size(dep, MIXTRAL)
    # 8× T4 (g4dn.metal, $7.824/h), fp16, tp 8: 86.99/8 = 10.87 weights + 32,768 × 16 KiB = 0.5 KV
    # + 16 × (1 − 0.718) = 4.52 reserve = 15.89 ≤ 16 GiB; every smaller T4 instance is too small.
    assert chosen.placement.instance_type == "g4dn.metal" and chosen.dtype == "float16"
    assert chosen.memory.required_gib_per_gpu == pytest.approx(15.89, abs=0.02)
    assert chosen.memory.weights_gib == pytest.approx(86.99, abs=0.01)
    # On L40S in bf16, 4 of them (g6e.12xlarge): 21.75 + 1.0 + 7.33 = 30.08 ≤ 44.7
    bf16 = size(
        spec(
            resources={"gpu": "L40S", "gpu_count": "auto"},
            serving={"context_length": 4096, "max_concurrency": 8, "precision": "bfloat16"},
        ),
        MIXTRAL,
    )
    assert bf16.placement.instance_type == "g6e.12xlarge"
    assert bf16.memory.required_gib_per_gpu == pytest.approx(30.08, abs=0.02)


def test_deepseek_v3_needs_two_8_gpu_nodes_of_a100_80gb():
    dep = spec(
        resources={"gpu": "A100-80GB", "gpu_count": "auto"},
        serving={"context_length": 32768, "max_concurrency": 8},
    )
    chosen = size(dep, DEEPSEEK_V3)
    # 641.29 GiB of weights: one 8× A100 80GB node would need 80.16 GiB of weights per GPU alone. Two of them
    # (p4de.24xlarge, $27.44705/h each): 641.29 / 16 = 40.08 weights + 262,144 tokens × 70,272 B = 17.16 KV
    # (MLA: the same latent on every rank) + 80 × (1 − 0.806) = 15.52 reserve = 72.76 ≤ 80 GiB, $54.89/h.
    # (With gpu auto, one node of 8 H200, $63.296/h, serves its tokens cheaper: test_auto_… below.)
    assert fraction_by_rule(80, 16) == 0.806
    p = chosen.placement
    assert (p.instance_type, p.nodes_per_replica, p.tensor_parallel) == ("p4de.24xlarge", 2, 16)
    assert chosen.memory.required_gib_per_gpu == pytest.approx(40.08 + 17.16 + 15.52, abs=0.02)
    assert p.hourly_usd_per_replica == pytest.approx(2 * 27.44705)


def test_gemma_and_phi_and_small_models_pick_one_small_gpu():
    gemma = size(
        spec(
            resources={"gpu": "auto", "gpu_count": "auto"},
            serving={"context_length": 8192, "max_concurrency": 2, "quantization": "fp8"},
        ),
        GEMMA2_27B,
    )
    # fp8: 25.36 GiB weights + 16,384 × 368 KiB = 5.75 KV + 6.71 reserve = 37.82 ≤ 44.7 on one L40S
    assert gemma.placement.instance_type == "g6e.xlarge"
    assert gemma.memory.required_gib_per_gpu == pytest.approx(37.82, abs=0.02)
    tiny = size(
        spec(
            resources={"gpu": "auto", "gpu_count": "auto"},
            serving={"context_length": 8192, "max_concurrency": 8},
        ),
        LLAMA32_1B,
    )
    # Its checkpoint is bf16: not the T4 (the cheapest GPU instance of all), which has none.
    assert tiny.placement.gpus_per_replica == 1 and gpu_models()[tiny.placement.gpu_model].bf16
    assert tiny.placement.gpu_model != "T4" and tiny.dtype == "bfloat16"
    phi = size(
        spec(resources={"gpu": "L4", "gpu_count": 1}, serving={"context_length": 4096, "max_concurrency": 4}),
        PHI3_MINI,
    )
    assert phi.memory.kv_cache_gib == pytest.approx(4096 * 4 * 384 / 1024**2, abs=0.01)  # 6 GiB


def test_gpu_capability_rules(lock):
    qwen = model_of(lock, QWEN)
    t4 = size(
        spec(
            resources={"gpu": "T4", "gpu_count": 1}, serving={"quantization": "awq", "context_length": 2048}
        ),
        qwen,
    )
    assert t4.dtype == "float16"
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "T4", "gpu_count": 1}, serving={"quantization": "w8a8_fp8"}), qwen)
    assert "compute capability 8.9" in err.value.problem.what
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "T4", "gpu_count": 1}, serving={"precision": "bfloat16"}), qwen)
    assert "no bfloat16" in err.value.problem.what
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "T4", "gpu_count": 1}, serving={"kv_cache_dtype": "fp8_e4m3"}), qwen)
    assert "FP8 KV cache" in err.value.problem.what


def test_forced_gpu_that_cannot_hold_the_model_names_the_cheapest_alternative(lock):
    with pytest.raises(SizingError) as err:
        size(spec(serving={"context_length": 32768, "max_concurrency": 4}), model_of(lock, QWEN))
    assert err.value.problem.path == "resources.gpu" and err.value.problem.got == "L4"
    assert (
        "does not fit: needs" in err.value.problem.what and "the GPU has 22.35 GiB" in err.value.problem.what
    )
    assert "the cheapest placement that fits is g6e.xlarge (1× L40S)" in err.value.problem.fix


def test_infeasible_everywhere_says_what_would_fit():
    huge = facts(5_000_000_000_000, 120, 128, 8, 128)  # 9.3 TiB of bf16 weights: more than 32× B200 hold
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "auto", "gpu_count": "auto"}), huge)
    assert err.value.problem.path == "model.repo" and "does not fit" in err.value.problem.what
    assert "serving.quantization: fp8" in err.value.problem.fix
    with pytest.raises(SizingError) as err:
        size(
            spec(
                resources={"gpu": "auto", "gpu_count": "auto"},
                serving={"context_length": 131072, "max_concurrency": 1024},
            ),
            facts(8_030_261_248, 32, 32, 8, 128, context=131072),  # Llama 3.1 8B's own length
        )
    assert (
        "serving.max_concurrency ≤" in err.value.problem.fix
        and "serving.context_length ≤" in err.value.problem.fix
    )


def test_gpu_count_no_instance_offers():
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "L4", "gpu_count": 2}), facts(1_000_000_000, 16, 32, 8, 64))
    assert "AWS offers no such GPU count" in err.value.problem.what


def _counts_from_catalog_csv(gpu: str) -> set[int]:
    """GPUs per replica for `gpu`, read from the catalog file itself: one node, or 2 or 4 nodes of 8."""
    with (ROOT / "sgldeploy" / "data" / "aws-gpu-instances.csv").open() as f:
        per_node = {int(row["gpu_count"]) for row in csv.DictReader(f) if row["gpu_model"] == gpu}
    return per_node | {n * k for n in per_node if n == 8 for k in (2, 4)}


@pytest.mark.parametrize(
    "gpu, count, constraint",
    [
        ("H100", 8, "does not divide the 28 attention heads"),  # the trial: 8× H100 exists, 28 % 8 ≠ 0
        ("H100", 4, "AWS offers no such GPU count for H100"),  # 4 divides 28, but no 4× H100 instance
        ("L4", 2, "AWS offers no such GPU count for L4"),
    ],
)
def test_gpu_count_message_names_the_failing_constraint_and_the_counts_that_work(
    lock, gpu, count, constraint
):
    qwen = model_of(lock, QWEN)
    heads, kv_heads = qwen.config["num_attention_heads"], qwen.config["num_key_value_heads"]

    def splits(
        n: int,
    ) -> bool:  # tp divides the heads; KV heads are a multiple of tp, or tp a multiple of them
        return heads % n == 0 and (kv_heads % n == 0 if kv_heads >= n else n % kv_heads == 0)

    working = sorted(n for n in _counts_from_catalog_csv(gpu) if splits(n))
    assert working  # H100: [1]; L4: [1, 4]
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": gpu, "gpu_count": count}), qwen)
    assert err.value.problem.path == "resources.gpu_count" and err.value.problem.got == count
    assert constraint in err.value.problem.what
    assert err.value.problem.fix.startswith(f"pick gpu_count {' or '.join(map(str, working))} (")
    assert str(count) not in err.value.problem.fix.split("(")[0]  # never suggests the count that was given


def test_gpu_without_a_count_dividing_the_heads_lists_what_is_offered(lock):
    qwen = model_of(lock, QWEN)  # only 8-GPU L4 nodes allowed: 8, 16 and 32 GPUs, none divides 28
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "L4", "gpu_count": "auto", "instance_types": ["g6.48xlarge"]}), qwen)
    assert err.value.problem.path == "resources.gpu"
    assert "offers no GPU count that divides the 28 attention heads" in err.value.problem.what
    assert err.value.problem.what.endswith(": 8, 16, 32)")


def test_instance_types_without_the_gpu_say_so(lock):
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "L4", "instance_types": ["p5.48xlarge"]}), model_of(lock, QWEN))
    assert err.value.problem.path == "resources.instance_types" and err.value.problem.got == "p5.48xlarge"
    assert "has no instance type that carries L4" in err.value.problem.what


def test_spot_capacity_prices_by_spot_where_known(lock):
    chosen = size(spec(resources={"gpu": "L4", "gpu_count": 1, "capacity": "spot"}), model_of(lock, QWEN))
    assert chosen.placement.price_basis == "spot"
    assert chosen.placement.hourly_usd_per_replica == instance_types()["g6.xlarge"].spot_usd_per_hour


def test_plan_shows_cheaper_infeasible_and_dearer_options(lock):
    chosen = size(
        spec(
            resources={"gpu": "auto", "gpu_count": "auto"},
            serving={"context_length": 32768, "max_concurrency": 8, "quantization": "fp8"},
        ),
        model_of(lock, QWEN),
    )
    assert chosen.placement.gpu_model == "L40S"
    assert len(chosen.cheaper_infeasible) == 2 and not any(c.feasible for c in chosen.cheaper_infeasible)
    assert all(c.hourly_usd <= chosen.placement.hourly_usd_per_replica for c in chosen.cheaper_infeasible)
    assert len(chosen.dearer) == 2 and all(c.feasible for c in chosen.dearer)
    assert all(c.hourly_usd >= chosen.placement.hourly_usd_per_replica for c in chosen.dearer)


def test_unknown_instance_type_is_refused(lock):
    with pytest.raises(SizingError) as err:
        size(
            spec(resources={"gpu": "L4", "gpu_count": 1, "instance_types": ["m5.large"]}),
            model_of(lock, QWEN),
        )
    assert err.value.problem.path == "resources.instance_types" and err.value.problem.got == "m5.large"


def test_catalog_tables_are_complete():
    for inst in instance_types().values():
        assert inst.gpu in gpu_models(), inst.name
        assert inst.source and inst.gpu_count >= 1


# ---- properties -----------------------------------------------------------------------------------


def by_hand(dep: DeploymentSpec, model: LockedModel, gpu: str, tp: int, dtype: str) -> bool:
    """The fit, recomputed independently of sizing.py's helpers."""
    mem = gpu_models()[gpu].memory_gib
    frac = (
        fraction_by_rule(mem, tp)
        if dep.serving.mem_fraction_static == "auto"
        else dep.serving.mem_fraction_static
    )
    per_param = {"fp8": 1.0}.get(dep.serving.quantization, 2 if dtype != "float32" else 4)
    kv_el = 1 if dep.serving.kv_cache_dtype != "auto" else 2
    kv = 2 * model.num_layers * math.ceil(model.num_kv_heads / tp) * model.head_dim * kv_el
    tokens = (dep.serving.context_length or model.max_context) * dep.serving.max_concurrency
    need = model.parameters * per_param / tp / GIB + kv * tokens / GIB + mem * (1 - frac)
    return round(need, 2) <= mem


models = st.builds(
    lambda params, layers, heads_pow, kv_div, head_dim: facts(
        params, layers, 2**heads_pow, max(1, 2**heads_pow // kv_div), head_dim
    ),
    st.integers(500_000_000, 400_000_000_000),
    st.integers(8, 96),
    st.integers(3, 7),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([64, 96, 128, 256]),
)
specs = st.builds(
    lambda ctx, conc, quant, kv, frac: spec(
        resources={"gpu": "auto", "gpu_count": "auto"},
        serving={
            "context_length": ctx,
            "max_concurrency": conc,
            "quantization": quant,
            "kv_cache_dtype": kv,
            "mem_fraction_static": frac,
        },
    ),
    st.sampled_from([1024, 4096, 8192, 32768]),
    st.integers(1, 64),
    st.sampled_from(["none", "fp8"]),
    st.sampled_from(["auto", "fp8_e4m3"]),
    st.sampled_from(["auto", 0.8, 0.9]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models, dep=specs)
def test_choice_is_feasible_and_nothing_fits_that_serves_tokens_cheaper(model, dep):
    try:
        chosen = size(dep, model)
    except SizingError:
        for c in candidates(dep, model, dep.serving.context_length):
            assert not (c.problem is None and by_hand(dep, model, c.instance.gpu, c.tp, c.dtype)), c.label
        return
    from sgldeploy.models.sizing import delivered, keeps_checkpoint_dtype

    p = chosen.placement
    assert by_hand(dep, model, p.gpu_model, p.tensor_parallel, chosen.dtype)
    assert model.num_attention_heads % p.tensor_parallel == 0
    context = dep.serving.context_length
    per_token = chosen.throughput.usd_per_million_output_tokens
    keeps = [c for c in candidates(dep, model, context) if keeps_checkpoint_dtype(dep, model, c)]
    for c in keeps:
        fits = c.problem is None and by_hand(dep, model, c.instance.gpu, c.tp, c.dtype)
        if fits and c.hourly_usd is not None:
            rate = delivered(dep, model, c, context).estimate.output_tokens_per_second_per_replica
            usd = c.hourly_usd / (rate * 3600) * 1e6
            assert usd >= per_token * (1 - 1e-9), f"{c.label} fits and serves tokens cheaper"


def test_models_that_overflow_in_fp16_are_not_cast_down():
    gemma3 = facts(4_300_079_472, 34, 8, 4, 256, architectures=["Gemma3ForConditionalGeneration"])
    on_t4 = spec(
        resources={"gpu": "T4", "gpu_count": 1}, serving={"context_length": 2048, "max_concurrency": 1}
    )
    with pytest.raises(SizingError) as err:
        size(on_t4, gemma3)
    assert (
        "Gemma3ForConditionalGeneration overflows in float16 and T4 has no bfloat16" in err.value.problem.what
    )
    forced = spec(resources={"gpu": "L4", "gpu_count": 1}, serving={"precision": "float16"})
    with pytest.raises(SizingError) as err:
        size(forced, gemma3)
    assert "use precision bfloat16 or auto" in err.value.problem.what
    chosen = size(
        spec(
            resources={"gpu": "auto", "gpu_count": "auto"},
            serving={"context_length": 2048, "max_concurrency": 1},
        ),
        gemma3,
    )
    assert chosen.placement.gpu_model != "T4" and chosen.dtype == "bfloat16"  # T4 is cheaper, but unsafe
    llama_on_t4 = size(on_t4, facts(1_235_814_400, 16, 32, 8, 64, context=4096))
    assert llama_on_t4.dtype == "float16"  # other bf16 checkpoints are cast down as SGLang users do


# ---- refusals SGLang makes at start, made at sizing (SGLang itself is their oracle: tests/test_sglang_config.py)


PHI3_MEDIUM = facts(13_960_238_080, 40, 40, 10, 128, context=4096)  # 40 attention heads, 10 KV heads


def test_a_gpu_count_that_splits_the_kv_heads_unevenly_names_the_rule():
    # tp 4 divides the 40 heads; 10 KV heads are neither a multiple of 4 nor 4 a multiple of 10 (SGLang's
    # QKVParallelLinear asserts one). Of the counts AWS offers (1, 4, 8, 16, 32) only 1 splits both: 8 fails the
    # KV heads too, 16 and 32 do not divide 40.
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "auto", "gpu_count": 4}), PHI3_MEDIUM)
    assert err.value.problem.path == "resources.gpu_count" and err.value.problem.got == 4
    assert err.value.problem.what.startswith("does not split the 10 KV heads of org/model: ")
    assert (
        err.value.problem.fix.startswith("pick gpu_count 1 (")
        and "40 attention heads and 10 KV heads" in err.value.problem.fix
    )
    # Only 8-GPU L4 nodes: 8, 16 and 32 GPUs; the KV heads refuse the one count that divides the heads.
    with pytest.raises(SizingError) as err:
        size(
            spec(resources={"gpu": "L4", "gpu_count": "auto", "instance_types": ["g6.48xlarge"]}), PHI3_MEDIUM
        )
    assert (
        "offers no GPU count that splits the 10 KV heads and the 40 attention heads" in err.value.problem.what
    )


def test_kv_heads_fewer_than_the_gpus_are_replicated_when_the_gpus_are_a_multiple_of_them(lock):
    # Llama 3.1 70B: 8 KV heads over 16 GPUs, two copies of each (16 % 8 == 0): two 8-GPU nodes.
    chosen = size(
        spec(model=dict(LLAMA_70B), resources={"gpu": "H100", "gpu_count": 16}), model_of(lock, LLAMA_70B)
    )
    assert chosen.placement.tensor_parallel == 16 and chosen.placement.nodes_per_replica == 2


def test_a_method_sglangs_cuda_build_does_not_register_is_refused(lock):
    with pytest.raises(SizingError) as err:
        size(spec(serving={"quantization": "gptq"}), model_of(lock, QWEN))
    assert err.value.problem.path == "serving.quantization" and err.value.problem.got == "gptq"
    assert err.value.problem.what == (
        "is not a method SGLang 0.5.23 runs on NVIDIA GPUs (its GPTQ kernel is gone: GPTQ checkpoints run as "
        "gptq_marlin)"
    )
    assert err.value.problem.fix == "use gptq_marlin or none"


# ---- SGLang's own fraction, re-derived from its rule ----------------------------------------------

# SGLang 0.5.23 arg_groups/memory_hook.py, as ../shared/reference/sglang.md §5 tabulates it: by GPU memory in
# GB (10^9 bytes), the chunked-prefill size and the decode CUDA-graph batch size (tp < 4, tp ≥ 4).
SGLANG_DEFAULTS_BY_GB = (
    (20, 2048, 8, 8),
    (35, 4096, 48, 160),
    (60, 4096, 32, 160),
    (90, 8192, 256, 512),
    (160, 8192, 256, 512),
    (math.inf, 16384, 512, 512),
)


def fraction_by_rule(gpu_memory_gib: float, tp: int) -> float:
    """(gpu MB − reserved MB) / gpu MB with reserved = 512 + 1.5 × max(chunked, 2048) + tp/8 × 1024 + 2 × graph
    batch, at least 10 GB over 60 GB; SGLang rounds to three places."""
    gb = gpu_memory_gib * 2**30 / 10**9
    _, chunked, small_tp, large_tp = next(row for row in SGLANG_DEFAULTS_BY_GB if gb < row[0])
    reserved = 512 + 1.5 * max(chunked, 2048) + tp / 8 * 1024 + 2 * (small_tp if tp < 4 else large_tp)
    if gb > 60:
        reserved = max(reserved, 10 * 1024)
    mb = gpu_memory_gib * 1024
    return round((mb - reserved) / mb, 3)


def test_the_rule_gives_the_fractions_readme_states():
    assert fraction_by_rule(22.35, 1) == 0.699  # L4: 512 + 6,144 + 128 + 96 = 6,880 MB of 22,886 MB
    assert fraction_by_rule(80, 1) == pytest.approx(0.83, abs=0.01)  # H100


@pytest.mark.parametrize("gpu", sorted(gpu_models()))
@pytest.mark.parametrize("tp", [1, 2, 3, 4, 8, 16, 32])
def test_auto_fraction_is_sglangs_rule_for_every_gpu_and_tp(gpu, tp):
    assert sglang_auto_fraction(gpu_models()[gpu].memory_gib, tp) == fraction_by_rule(
        gpu_models()[gpu].memory_gib, tp
    )


@pytest.mark.parametrize("threshold_gb", [20, 35, 60, 90, 160])
@pytest.mark.parametrize("step_gb", [-0.5, 0, 0.5])
@pytest.mark.parametrize("tp", [1, 4])
def test_auto_fraction_at_each_memory_threshold(threshold_gb, step_gb, tp):
    # One below, at and one above each GB threshold of SGLang's table (and of the 10 GB floor over 60 GB).
    gib = (threshold_gb + step_gb) * 10**9 / 2**30
    assert sglang_auto_fraction(gib, tp) == fraction_by_rule(gib, tp)


def test_auto_fraction_by_hand_on_the_thresholds():
    # Exactly 20 GB is past "< 20": chunked 4096, graph 48 at tp 1. 20 GB = 19,073.49 MiB.
    mb = 20e9 / 2**20
    assert sglang_auto_fraction(20e9 / 2**30, 1) == round((mb - (512 + 6144 + 128 + 96)) / mb, 3)
    # 19.5 GB: chunked 2048, graph 8.
    mb = 19.5e9 / 2**20
    assert sglang_auto_fraction(19.5e9 / 2**30, 1) == round((mb - (512 + 3072 + 128 + 16)) / mb, 3)
    # 61 GB at tp 1: 512 + 12,288 + 128 + 512 = 13,440 MB, above the 10 GB floor; 60 GB is not "over 60".
    mb = 61e9 / 2**20
    assert sglang_auto_fraction(61e9 / 2**30, 1) == round((mb - 13440) / mb, 3)
    mb = 60e9 / 2**20
    assert sglang_auto_fraction(60e9 / 2**30, 1) == round((mb - (512 + 12288 + 128 + 512)) / mb, 3)


# ---- the dtype quantized kernels take --------------------------------------------------------------

BF16_GPTQ = facts(
    8_030_261_248,
    32,
    32,
    8,
    128,
    dtype="bfloat16",  # a GPTQ checkpoint whose config says bfloat16 (the activations it was calibrated in)
    quantization="gptq",
    by_dtype={"I32": 875_560_960, "BF16": 1_050_673_152},
)
BF16_AWQ = facts(
    8_030_261_248,
    32,
    32,
    8,
    128,
    dtype="bfloat16",
    quantization="awq",
    by_dtype={"I32": 875_560_960, "BF16": 1_050_673_152},
)
PLAIN_BF16 = facts(8_030_261_248, 32, 32, 8, 128, context=8192)
ON_L4 = {
    "resources": {"gpu": "L4", "gpu_count": 1},
    "serving": {"context_length": 2048, "max_concurrency": 1},
}


@pytest.mark.parametrize(
    "model, quantization, precision, dtype",
    [
        # AWQ and GPTQ kernels take float16 activations only (sglang.md §6: AWQConfig supports float16 only):
        # on an L4, which has bf16, these are still served in float16.
        (BF16_GPTQ, "none", "auto", "float16"),
        (BF16_AWQ, "none", "auto", "float16"),
        (PLAIN_BF16, "awq", "auto", "float16"),
        (PLAIN_BF16, "awq_marlin", "auto", "float16"),
        # Beside them: other methods keep the checkpoint's bf16, and a precision the spec sets wins.
        (PLAIN_BF16, "fp8", "auto", "bfloat16"),
        (PLAIN_BF16, "none", "auto", "bfloat16"),
        (BF16_GPTQ, "none", "bfloat16", "bfloat16"),
    ],
)
def test_awq_and_gptq_are_served_in_float16_even_where_the_gpu_has_bf16(
    model, quantization, precision, dtype
):
    serving = {**ON_L4["serving"], "quantization": quantization, "precision": precision}
    chosen = size(spec(resources=ON_L4["resources"], serving=serving), model)
    assert chosen.placement.gpu_model == "L4" and chosen.dtype == dtype


def test_the_awq_float16_reaches_the_servers_dtype_flag(tmp_path):
    dep = deployment(serving={"context_length": 4096, "max_concurrency": 4, "quantization": "awq"})
    [server] = resources_of(
        render_stack(write_stack(tmp_path, deployments=[dep])), "kubernetes:apps/v1:Deployment"
    )
    [container] = [
        c for c in server.inputs["spec"]["template"]["spec"]["containers"] if c["name"] == "sglang"
    ]
    args = container["args"]
    assert args[args.index("--dtype") + 1] == "float16"  # Qwen's bf16 checkpoint, on a bf16-capable L4


# ---- compute capability: one below, at and above each method's minimum -------------------------------

# Compute capability by GPU and the minimum of each method in SGLang 0.5.23 (../shared/reference/sglang.md §6:
# get_min_capability() of layers/quantization/*.py; gptq runs as gptq_marlin on CUDA, hence 80).
CAPABILITY = {"T4": 7.5, "A10G": 8.6, "A100-40GB": 8.0, "L4": 8.9, "L40S": 8.9, "H100": 9.0, "B200": 10.0}
METHOD_MINIMUM = {
    "fp8": 8.0,
    "w8a8_fp8": 8.9,
    "awq": 7.5,
    "awq_marlin": 8.0,
    "gptq_marlin": 8.0,
    "w8a8_int8": 7.5,
    "w4afp8": 9.0,
    "mxfp8": 10.0,
}


@pytest.mark.parametrize("method", sorted(METHOD_MINIMUM))
@pytest.mark.parametrize("gpu", sorted(CAPABILITY))
def test_a_method_runs_from_its_minimum_capability_up(method, gpu):
    dep = spec(serving={"quantization": method, "precision": "float16"})
    problem = capability_problem(dep, PLAIN_BF16, gpu_models()[gpu], "float16")
    if CAPABILITY[gpu] >= METHOD_MINIMUM[method]:
        assert problem is None
    else:
        assert problem == (
            f"quantization {method} needs compute capability {METHOD_MINIMUM[method]}, {gpu} has "
            f"{CAPABILITY[gpu]}"
        )


@pytest.mark.parametrize("gpu", sorted(CAPABILITY))
def test_an_fp8_checkpoint_needs_capability_8_0_too(gpu):
    fp8_checkpoint = facts(8_030_261_248, 32, 32, 8, 128, quantization="fp8")
    problem = capability_problem(spec(), fp8_checkpoint, gpu_models()[gpu], "float16")
    assert (problem is None) == (CAPABILITY[gpu] >= 8.0), problem


@pytest.mark.parametrize("gpu", sorted(CAPABILITY))
def test_an_fp8_kv_cache_needs_ampere(gpu):
    # FlashInfer and Triton FP8 KV kernels: compute capability 8.0 (A100) and up; T4 (7.5) is below.
    dep = spec(serving={"kv_cache_dtype": "fp8_e4m3", "precision": "float16"})
    problem = capability_problem(dep, PLAIN_BF16, gpu_models()[gpu], "float16")
    if CAPABILITY[gpu] >= 8.0:
        assert problem is None
    else:
        assert problem == f"an FP8 KV cache needs compute capability 8.0, {gpu} has {CAPABILITY[gpu]}"


# ---- the pod's requests: the node less a core and a fifth of its memory ------------------------------


def _catalog_row(instance_type: str) -> dict[str, str]:
    with (ROOT / "sgldeploy" / "data" / "aws-gpu-instances.csv").open() as f:
        return next(row for row in csv.DictReader(f) if row["instance_type"] == instance_type)


@pytest.mark.parametrize("instance_type", ["g6.xlarge", "g6e.xlarge", "g6.4xlarge"])
def test_the_server_requests_the_node_less_a_core_and_a_fifth_of_memory(tmp_path, instance_type):
    row = _catalog_row(instance_type)
    cpu = int(row["vcpu"]) - 1  # g6.xlarge 4 vCPU → 3; g6.4xlarge 16 → 15
    memory = math.floor(int(row["memory_gib"]) * 0.8) - 1  # 16 GiB → 11; 32 → 24; 64 → 50
    dep = deployment(resources={"gpu": "auto", "gpu_count": "auto", "instance_types": [instance_type]})
    [server] = resources_of(
        render_stack(write_stack(tmp_path, deployments=[dep])), "kubernetes:apps/v1:Deployment"
    )
    [container] = [
        c for c in server.inputs["spec"]["template"]["spec"]["containers"] if c["name"] == "sglang"
    ]
    assert container["resources"]["requests"]["cpu"] == str(cpu)
    assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["memory"] == f"{memory}Gi"
    assert "cpu" not in container["resources"]["limits"]  # CPU limits throttle SGLang's scheduler


def test_a_cpu_request_the_spec_sets_is_taken_as_written():
    chosen = size(
        spec(resources={"gpu": "L4", "gpu_count": 1, "cpu": 2, "memory_gib": 8}), facts(1e9, 16, 32, 8, 64)
    )
    assert (chosen.cpu, chosen.memory_request_gib) == (2.0, 8.0)


# ---- the options the plan lists beside the choice -----------------------------------------------------


def test_the_plan_lists_the_two_nearest_cheaper_misses_and_the_next_two_dearer_fits(lock):
    chosen = size(
        spec(
            resources={"gpu": "auto", "gpu_count": "auto"},
            serving={"context_length": 32768, "max_concurrency": 8, "quantization": "fp8"},
        ),
        model_of(lock, QWEN),
    )
    # Qwen 7B in fp8: 7.09 GiB of weights + 32,768 × 8 tokens × 56 KiB = 14 GiB of KV already exceed what one
    # 22.35 GiB GPU keeps after its 6.73 GiB reserve; one L40S (44.7 GiB, g6e.xlarge $1.861/h) holds them.
    assert chosen.placement.instance_type == "g6e.xlarge"
    with (ROOT / "sgldeploy" / "data" / "aws-gpu-instances.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["on_demand_usd_per_hour_us_east_1"]]
    price = {r["instance_type"]: float(r["on_demand_usd_per_hour_us_east_1"]) for r in rows}
    cheaper = sorted(
        (r for r in rows if price[r["instance_type"]] < 1.861), key=lambda r: price[r["instance_type"]]
    )
    # Every cheaper instance carries one GPU of at most 22.35 GiB: none fits, and the nearest two are listed.
    assert all(r["gpu_count"] == "1" and float(r["gpu_memory_gib_per_gpu"]) <= 22.35 for r in cheaper)
    assert [c.instance.name for c in chosen.cheaper_infeasible] == [r["instance_type"] for r in cheaper[-2:]]
    assert [c.instance.name for c in chosen.cheaper_infeasible] == ["gr6.4xlarge", "g5.4xlarge"]
    # Dearer: the other one-L40S instances are the same shape (alternatives of the node pool), 4× T4
    # (g4dn.12xlarge, $3.912) has no fp8 (7.5 < 8.0); then 4× L4 ($4.6016) and 4× A10G ($5.672) fit at tp 4:
    # 7.09 / 4 = 1.77 weights + 14 / 4 = 3.5 KV + 22.35 × (1 − 0.673) = 7.31 reserve = 12.58 ≤ 22.35.
    assert fraction_by_rule(22.35, 4) == 0.673
    assert chosen.placement.alternatives == ("g6e.2xlarge", "g6e.4xlarge", "g6e.8xlarge", "g6e.16xlarge")
    assert [(c.instance.name, c.tp) for c in chosen.dearer] == [("g6.12xlarge", 4), ("g5.12xlarge", 4)]
    assert [c.memory.required_gib_per_gpu for c in chosen.dearer] == [pytest.approx(12.58, abs=0.01)] * 2


# ---- /dev/shm and the disk -----------------------------------------------------------------------------

SMALL = facts(1_000_000_000, 16, 32, 8, 64, context=4096)  # splits over 1, 2, 4 or 8 GPUs


@pytest.mark.parametrize(
    "gpus, memory_gib, shm_gib",
    [
        (1, 64, 1),  # one GPU: NCCL moves nothing through /dev/shm
        (4, 16, 2),  # an eighth of 16 is 2, the least
        (4, 8, 2),  # an eighth of 8 is 1: raised to 2
        (4, 24, 3),
        (4, 127, 15),  # 127 / 8 = 15.9, whole GiB below
        (4, 128, 16),
        (4, 136, 16),  # 17 would exceed the 16 GiB cap
    ],
)
def test_shared_memory_is_an_eighth_of_the_request_between_2_and_16_gib(gpus, memory_gib, shm_gib):
    chosen = size(spec(resources={"gpu": "L4", "gpu_count": gpus, "memory_gib": memory_gib}), SMALL)
    assert chosen.placement.tensor_parallel == gpus and chosen.shm_gib == shm_gib


@pytest.mark.parametrize(
    "weights_gib, disk_gib",
    [(10, 150), (25, 150), (25.5, 200), (50, 200), (50.5, 250)],  # 100 + 2 × weights, up to a multiple of 50
)
def test_the_disk_holds_two_copies_of_the_weights_and_100_gib_more(weights_gib, disk_gib):
    model = facts(int(weights_gib * GIB / 2), 16, 32, 8, 64, context=4096)  # bf16: 2 bytes a parameter
    chosen = size(spec(resources={"gpu": "auto", "gpu_count": "auto"}), model)
    assert chosen.memory.weights_gib == weights_gib and chosen.placement.nodes_per_replica == 1
    assert chosen.disk_gib == disk_gib


def test_the_rendered_node_disk_cache_volume_and_shm_follow_the_sizing(tmp_path):
    # Qwen 7B on 4× L4 (g6.12xlarge, 192 GiB): 14.19 GiB of weights → 100 + 28.38 → 150 GiB of disk;
    # memory request 153.6 → 152 GiB, an eighth 19 → /dev/shm capped at 16 GiB.
    dep = deployment(resources={"gpu": "L4", "gpu_count": 4})
    plan = render_stack(write_stack(tmp_path, deployments=[dep]))
    [server] = resources_of(plan, "kubernetes:apps/v1:Deployment")
    volumes = {v["name"]: v["emptyDir"] for v in server.inputs["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"] == {"sizeLimit": "16Gi", "medium": "Memory"}
    assert volumes["hf-cache"] == {"sizeLimit": "150Gi"}
    [node_class] = resources_of(plan, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")
    [root] = node_class.inputs["spec"]["blockDeviceMappings"]
    assert root["ebs"]["volumeSize"] == "150Gi"


def test_a_multi_node_replica_sizes_each_nodes_disk_for_its_share_of_the_weights(lock):
    chosen = size(
        spec(model=dict(LLAMA_70B), resources={"gpu": "H100", "gpu_count": 16}), model_of(lock, LLAMA_70B)
    )
    # 70,553,706,496 × 2 B = 131.42 GiB over 2 nodes: 65.71 each → 100 + 131.42 → 250 GiB (not 400).
    weights = round(70_553_706_496 * 2 / GIB, 2)
    assert chosen.placement.nodes_per_replica == 2 and chosen.memory.weights_gib == weights
    assert chosen.disk_gib == math.ceil((100 + 2 * weights / 2) / 50) * 50 == 250


# ---- the context SGLang derives, and the KV pool it leaves ------------------------------------------------


def test_a_config_without_a_length_gets_sglangs_default_of_2048():
    # get_context_length: none of the length keys set → 2048 (sgl-project/sglang v0.5.23 hf_transformers/common.py)
    lengthless = facts(1_000_000_000, 16, 32, 8, 64, max_position_embeddings=None)
    on_l4 = {"gpu": "L4", "gpu_count": 1}
    assert size(spec(resources=on_l4, serving={"context_length": None}), lengthless).context_length == 2048
    assert size(spec(resources=on_l4, serving={"context_length": 2048}), lengthless).context_length == 2048
    with pytest.raises(SizingError) as err:
        size(spec(resources=on_l4, serving={"context_length": 2049}), lengthless)
    assert (
        err.value.problem.path == "serving.context_length"
        and "derives 2,048 tokens" in err.value.problem.what
    )


def test_the_kv_pool_is_what_the_static_fraction_leaves_after_the_weights(lock):
    # README's dev stack: Qwen 7B in bf16 on an L4: 22.35 GiB × 0.699 − 7,615,616,512 × 2 B of weights, over
    # 56 KiB a token ≈ 26,915 tokens.
    fit = memory_fit(spec(), model_of(lock, QWEN), gpu_models()["L4"], 1, 4096, "bfloat16")
    pool_bytes = 22.35 * 0.699 * GIB - 7_615_616_512 * 2
    assert fit.kv_capacity_tokens == int(pool_bytes // (56 * 1024)) == 26915


@pytest.mark.parametrize("extra_gib, fits", [(-0.01, True), (0, True), (0.01, False)])
def test_a_replica_fits_up_to_exactly_the_gpus_memory(extra_gib, fits):
    # At a fraction of 0.9 an L4 keeps 22.35 × 0.1 = 2.235 GiB in reserve; 2,048 tokens × 32 KiB = 0.0625 GiB of
    # KV; weights of 22.35 − 2.235 − 0.0625 = 20.0525 GiB fill it exactly (to the cent of a GiB shown).
    weights_gib = 22.35 - 2.235 - 0.0625 + extra_gib
    model = facts(int(weights_gib * GIB / 2), 16, 32, 8, 64, context=4096)
    dep = spec(serving={"context_length": 2048, "max_concurrency": 1, "mem_fraction_static": 0.9})
    fit = memory_fit(dep, model, gpu_models()["L4"], 1, 2048, "bfloat16")
    assert fit.required_gib_per_gpu == pytest.approx(22.35 + extra_gib, abs=1e-9)
    assert fit.fits is fits


def test_instance_types_without_any_gpu_say_so():
    with pytest.raises(SizingError) as err:
        # p3 carries V100s, in the instance catalog but not among the GPUs sgldeploy serves on
        size(
            spec(resources={"gpu": "auto", "instance_types": ["p3.2xlarge"]}),
            facts(1_000_000_000, 16, 32, 8, 64),
        )
    assert err.value.problem.line() == (
        "error: resources.instance_types: has no instance type that carries a GPU sgldeploy serves on (got "
        "'p3.2xlarge'); allow instance types listed for it in sgldeploy/data/aws-gpu-instances.csv, or empty "
        "the list"
    )


def test_infeasible_with_every_halving_already_taken_says_nothing_fits():
    """FP8 weights and an FP8 KV cache already: no concurrency or context would fit either, so no hint."""
    # 6e12 parameters at fp8 are 5.5 TiB; 32× B200 hold 5.6 TiB: too little KV room for 64 requests of 512 tokens
    huge = facts(6_000_000_000_000, 120, 128, 8, 128, context=131072)
    with pytest.raises(SizingError) as err:
        size(
            spec(
                resources={"gpu": "auto", "gpu_count": "auto"},
                serving={
                    "quantization": "fp8",
                    "kv_cache_dtype": "fp8_e4m3",
                    "context_length": 131072,
                    "max_concurrency": 64,
                },
            ),
            huge,
        )
    assert err.value.problem.path == "model.repo" and "does not fit" in err.value.problem.what
    assert err.value.problem.fix == "no placement in the catalog can hold this model"


@pytest.mark.parametrize(
    "precision, kv_cache_dtype, element_bytes",
    [("float32", "auto", 4), ("bfloat16", "auto", 2), ("float16", "auto", 2), ("float32", "fp8_e4m3", 1)],
)
def test_the_fits_kv_bytes_per_token_follow_the_dtype_it_serves(precision, kv_cache_dtype, element_bytes):
    """An auto KV cache holds K and V in the serving dtype (4 B in float32), an fp8 one in 1 B: Phi-3-mini,
    32 layers × 32 KV heads × head dim 96, caches 2 × 32 × 32 × 96 = 196,608 elements per token."""
    dep = spec(serving={"kv_cache_dtype": kv_cache_dtype, "context_length": 4096, "max_concurrency": 1})
    fit = memory_fit(dep, PHI3_MINI, gpu_models()["H100"], 1, 4096, precision)
    assert fit.kv_bytes_per_token == 196_608 * element_bytes
    assert fit.kv_cache_gib == round(4096 * 196_608 * element_bytes / 2**30, 2)


@pytest.mark.parametrize(
    "capacity_per_request, hints",
    [
        (
            512,  # the shortest context worth suggesting
            "serving.context_length ≤ 512 fits {label}; serving.quantization: fp8 halves the weights; "
            "serving.kv_cache_dtype: fp8_e4m3 halves the KV cache",
        ),
        (
            511,
            "serving.quantization: fp8 halves the weights; serving.kv_cache_dtype: fp8_e4m3 halves the KV cache",
        ),
    ],
)
def test_what_would_fit_suggests_a_context_of_512_tokens_or_more(lock, capacity_per_request, hints):
    """The hints for a placement whose KV pool holds `capacity_per_request` tokens for each of the 4 requests
    (of 4096: too few for a concurrency hint): a shorter context is suggested only from 512 tokens."""
    from dataclasses import replace

    from sgldeploy.models.sizing import _what_would_fit

    dep = spec()  # 4 requests of 4096 tokens
    option = candidates(dep, model_of(lock, QWEN), 4096, gpu="L4", gpu_count=1)[0]
    option = replace(option, memory=replace(option.memory, kv_capacity_tokens=4 * capacity_per_request))
    assert _what_would_fit(dep, [option], 4096) == hints.format(label=option.label)


# ---- gpu: auto chooses by cost per token ----------------------------------------------------------------

AUTO = {"gpu": "auto", "gpu_count": "auto"}


def per_token_table(dep, model, context):
    """$ per 1M output tokens of every feasible placement: its hourly price over the tokens an hour serves."""
    from sgldeploy.models.sizing import delivered

    out = {}
    for c in candidates(dep, model, context):
        if c.feasible and c.hourly_usd is not None:
            rate = delivered(dep, model, c, context).estimate.output_tokens_per_second_per_replica
            out[c.label] = (c.hourly_usd / (rate * 3600) * 1e6, c)
    return out


def test_a_bf16_model_on_auto_leaves_the_t4_for_the_cheapest_tokens(lock):
    """The trial: Qwen2.5-7B at 32k × 16 once landed on 4× T4 in float16, the cheapest memory fit."""
    qwen = model_of(lock, QWEN)
    dep = spec(resources=AUTO, serving={"context_length": 32768, "max_concurrency": 16})
    table = per_token_table(dep, qwen, 32768)
    cheapest_fit = min(table.values(), key=lambda v: v[1].rank())[1]
    assert cheapest_fit.instance.gpu == "T4"
    keeping = {label: v for label, v in table.items() if gpu_models()[v[1].instance.gpu].bf16}
    want_usd, want = min(keeping.values(), key=lambda v: v[0])
    sized = size(dep, qwen)
    assert (sized.placement.instance_type, sized.dtype) == (want.instance.name, "bfloat16")
    assert sized.throughput.usd_per_million_output_tokens == pytest.approx(want_usd)
    assert sized.choice == (
        f"{want.label} serves a million output tokens for ${want_usd:,.2f}; the cheapest memory fit, "
        f"{cheapest_fit.label}, has no bfloat16 for this bf16 checkpoint"
    )


def test_auto_picks_the_lowest_cost_per_token_and_says_what_the_cheapest_fit_costs(lock):
    qwen = model_of(lock, QWEN)
    dep = spec(resources=AUTO)  # 4 × 4096
    table = per_token_table(dep, qwen, 4096)
    want_usd, want = min(table.values(), key=lambda v: (v[0], v[1].rank()))
    cheap_usd, cheapest = min(table.values(), key=lambda v: v[1].rank())
    assert want is not cheapest  # an L4 is the cheapest hour, not the cheapest token
    sized = size(dep, qwen)
    assert sized.placement.instance_type == want.instance.name
    assert sized.choice == (
        f"{want.label} serves a million output tokens for ${want_usd:,.2f}; the cheapest memory fit, "
        f"{cheapest.label}, costs ${cheapest.hourly_usd:,.2f}/h but ${cheap_usd:,.2f} per 1M output tokens"
    )


def test_a_latency_target_rules_out_placements_that_miss_it(lock):
    qwen = model_of(lock, QWEN)
    base = spec(resources=AUTO)
    first = size(base, qwen)
    itl = first.throughput.estimate.itl_seconds
    tight = spec(resources=AUTO, slo={"itl_p95_seconds": itl * 0.9})
    sized = size(tight, qwen)
    assert sized.throughput.estimate.itl_seconds <= itl * 0.9 < itl
    assert sized.throughput.usd_per_million_output_tokens >= first.throughput.usd_per_million_output_tokens
    # None meets an impossible target: the cheapest per token all the same (the plan warns).
    impossible = size(spec(resources=AUTO, slo={"itl_p95_seconds": 1e-6}), qwen)
    assert impossible.placement == first.placement


def test_requests_per_second_beyond_max_replicas_rules_a_placement_out(lock):
    qwen = model_of(lock, QWEN)
    first = size(spec(resources=AUTO), qwen)
    rate = first.throughput.estimate.output_tokens_per_second_per_replica
    # Just more than 2 replicas of the cheapest-per-token placement serve: it needs 3 of max 2.
    rps = 2 * rate / 256 * 1.01
    busy = spec(resources=AUTO, scaling={"max_replicas": 2}, workload={"requests_per_second": rps})
    sized = size(busy, qwen)
    assert sized.placement.instance_type != first.placement.instance_type
    assert sized.throughput.replicas_for_workload <= 2
    roomy = spec(resources=AUTO, scaling={"max_replicas": 3}, workload={"requests_per_second": rps})
    assert size(roomy, qwen).throughput.replicas_for_workload == 3


def test_a_chosen_gpu_gets_its_cheapest_fit_and_no_reason(lock):
    qwen = model_of(lock, QWEN)
    sized = size(spec(resources={"gpu": "L4", "gpu_count": "auto"}), qwen)
    assert (sized.placement.instance_type, sized.choice) == ("g6.xlarge", None)


@pytest.mark.parametrize(
    "precision, checkpoint, gpu, keeps",
    [
        ("auto", "bfloat16", "T4", False),
        ("float16", "bfloat16", "T4", True),  # asked for explicitly
        ("auto", "float16", "T4", True),  # the checkpoint's own dtype
        ("auto", "bfloat16", "L4", True),
    ],
)
def test_only_an_explicit_precision_serves_a_bf16_checkpoint_on_a_gpu_without_bf16(
    lock, precision, checkpoint, gpu, keeps
):
    from dataclasses import replace

    from sgldeploy.models.sizing import keeps_checkpoint_dtype

    model = replace(model_of(lock, QWEN), dtype=checkpoint)
    dep = spec(resources={"gpu": gpu, "gpu_count": "auto"}, serving={"precision": precision, "max_concurrency": 1,
                                                                     "context_length": 1024})  # fmt: skip
    option = candidates(dep, model, 1024, gpu=gpu)[0]
    assert keeps_checkpoint_dtype(dep, model, option) is keeps
