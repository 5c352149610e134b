"""Large mixtures of experts: data-parallel attention and expert parallelism as SGLang 0.5.23 takes them (its
parser, and its start-up checks as the oracle of sgldeploy's refusals), the memory each GPU holds with them
(derived here from the committed lock's published facts), and a refusal with a field and a fix for every
topology SGLang or the hardware cannot run."""

from __future__ import annotations

import json

import pytest

from sgldeploy.builders.sglang_args import launch_command
from sgldeploy.catalog import gpu_models
from sgldeploy.models import throughput
from sgldeploy.offline.plan_text import summary

from .conftest import (
    DEEPSEEK_V3,
    QWEN,
    deployment,
    problem_lines,
    render_stack,
    sized,
    write_stack,
)
from .test_sglang_args import sglang_parse
from .test_sglang_config import case_for_args
from .variants import qwen3_over_deepep

GIB = 1024**3
# DeepSeek-V3's published facts (tests/test_cli.py PUBLISHED_MODEL_FACTS): the safetensors parameters by dtype,
# 61 decoder layers and one multi-token-prediction layer SGLang does not load, 58 MoE layers (3 dense) of 256
# experts of 3 × 7168 × 2048, and MLA's latent of 512 + 64 per layer.
DEEPSEEK_BYTES = 3_918_786_560 * 2 + 680_571_043_840 * 1 + 41_555_600 * 4
DEEPSEEK_PARAMETERS = 684_531_386_000
DEEPSEEK_ROUTED = 58 * 256 * 3 * 7168 * 2048
DEEPSEEK_LATENT_BYTES = 61 * (512 + 64) * 2  # bf16 KV cache


def deepseek(groups: int = 8, experts: int = 8, **serving) -> dict:
    return deployment(
        name="ds",
        model=dict(DEEPSEEK_V3),
        serving={
            "context_length": 32768,
            "max_concurrency": 64,
            "parallelism": {"data_parallel_attention": groups, "expert": experts},
            **serving,
        },
        resources={"gpu": "H200"},
    )


def lines(raw: dict) -> list[str]:
    return problem_lines([raw])


def test_attention_groups_hold_the_dense_weights_each_and_only_their_requests_latents(lock):
    _, _, chosen = sized(lock, deepseek())
    assert (chosen.placement.instance_type, chosen.placement.tensor_parallel) == ("p5en.48xlarge", 8)
    served = DEEPSEEK_BYTES * 61 / 62  # the MTP layer stays on disk
    routed = DEEPSEEK_ROUTED * DEEPSEEK_BYTES / DEEPSEEK_PARAMETERS
    per_gpu = (routed / 8 + (served - routed)) / GIB  # one group per GPU: the dense part whole on each
    assert chosen.memory.weights_gib_per_gpu == pytest.approx(per_gpu, abs=0.01)
    # 64 requests over 8 groups: each GPU caches 8 requests of 32,768 tokens.
    kv = 8 * 32768 * DEEPSEEK_LATENT_BYTES / GIB
    assert chosen.memory.kv_cache_gib_per_gpu == pytest.approx(kv, abs=0.01)
    fraction = chosen.memory.mem_fraction_static
    pool = gpu_models()["H200"].memory_gib * fraction - per_gpu
    assert chosen.memory.kv_capacity_tokens == pytest.approx(8 * pool * GIB / DEEPSEEK_LATENT_BYTES, abs=8)


def test_without_attention_groups_deepseek_v3_at_that_load_fits_no_placement():
    """MLA's latent is replicated on every GPU of plain tensor parallelism: 64 × 32k tokens need 137 GiB on each,
    more than an H200 holds, so plain TP fails where attention groups fit one node."""
    [line] = lines(deepseek(groups=1, experts=1))
    kv = 64 * 32768 * DEEPSEEK_LATENT_BYTES / GIB
    assert line.startswith("error: sgldeploy:deployments[0].resources.gpu: does not fit: needs ")
    assert f" + {round(kv, 2):g} KV for 2,097,152 tokens + " in line
    assert lines(deepseek()) == []


def test_a_mixture_of_experts_split_over_experts_keeps_tp_memory_and_the_flags_parse(lock):
    dep, model, sizing = sized(lock, qwen3_over_deepep())
    assert sizing.memory.weights_gib_per_gpu == pytest.approx(235_093_634_560 * 2 / 8 / GIB, abs=0.01)
    result = sglang_parse(launch_command(dep, model, sizing, api_key=False).args)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert (parsed["tp_size"], parsed["ep_size"], parsed["attn_dp_size"]) == (8, 8, 1)
    assert parsed["moe_a2a_backend"] == "deepep" and parsed["enable_dp_lm_head"] is False


def test_attention_groups_use_the_flag_sglang_0_5_23_keeps_not_the_deprecated_one(lock):
    dep, model, sizing = sized(lock, deepseek())
    args = launch_command(dep, model, sizing, api_key=False).args
    assert "--enable-dp-attention" not in args and "--dp-size" not in args
    at = args.index("--attn-dp-size")
    assert args[at : at + 5] == ["--attn-dp-size", "8", "--enable-dp-lm-head", "--ep-size", "8"]
    parsed = json.loads(sglang_parse(args).stdout)
    assert (parsed["attn_dp_size"], parsed["dp_size"], parsed["enable_dp_lm_head"]) == (8, 1, True)


@pytest.mark.parametrize(
    "groups, sglang_refuses",
    [(8, False), (4, False), (2, False), (3, True), (16, True)],
)
def test_sglangs_start_up_checks_and_sgldeploy_agree_on_attention_groups(
    sglang_engine, groups, sglang_refuses
):
    """SGLang's resolution (tests/contract/sglang_config.py) on the command sgldeploy would render for 8 GPUs,
    against sgldeploy's own verdict on the spec."""
    raw = deepseek(groups=groups, experts=8, context_length=4096, max_concurrency=16)
    raw["resources"]["gpu_count"] = 8
    refused = lines(raw)
    assert bool(refused) == sglang_refuses, refused
    args = [
        "--model-path", "m", "--tp-size", "8", "--attn-dp-size", str(groups), "--ep-size", "8",
        "--context-length", "4096", "--load-format", "safetensors",
    ]  # fmt: skip
    [verdict] = sglang_engine.start([case_for_args(DEEPSEEK_V3, args)])
    assert (verdict["error"] is not None) == sglang_refuses, verdict
    if sglang_refuses:
        assert refused == [
            f"error: sgldeploy:deployments[0].serving.parallelism.data_parallel_attention: must divide the "
            f"tensor-parallel size 8 (got {groups}); pick a divisor of 8, or 1"
        ]


def test_expert_parallelism_needs_experts_that_split_evenly():
    dense = deployment(
        serving={"context_length": 4096, "max_concurrency": 4, "parallelism": {"expert": 2}},
        resources={"gpu": "L4", "gpu_count": 4},
    )
    assert lines(dense) == [
        f"error: sgldeploy:deployments[0].serving.parallelism.expert: splits routed experts, and {QWEN['repo']} "
        "has none (a dense model) (got 2); set expert: 1"
    ]
    odd = deepseek(groups=1, experts=3, context_length=4096, max_concurrency=4)
    odd["resources"] = {"gpu": "H200", "gpu_count": 24}
    problems = lines(odd)
    assert (
        "error: sgldeploy:deployments[0].serving.parallelism.expert: must divide the 256 routed experts of "
        in problems[0]
    )


def test_deepep_runs_on_one_nvlink_node_with_every_gpu_splitting_the_experts():
    spread = deepseek(groups=8, experts=16, context_length=16384)
    spread["serving"]["parallelism"]["all_to_all"] = "deepep"
    spread["resources"] = {"gpu": "H100", "gpu_count": 16}
    assert lines(spread) == [
        "error: sgldeploy:deployments[0].serving.parallelism: fits no placement: on 2× p5.48xlarge (16 GPUs), "
        "DeepEP needs one NVLink node whose GPUs all split the experts (got 'data_parallel_attention 8, expert "
        "16, all_to_all deepep'); choose sizes that divide the GPUs of a placement and split the heads, or leave "
        "resources.gpu_count auto"
    ]
    alone = deepseek(groups=1, experts=1, context_length=4096, max_concurrency=4)
    alone["serving"]["parallelism"]["all_to_all"] = "deepep"
    assert lines(alone) == [
        "error: sgldeploy:deployments[0].serving.parallelism.all_to_all: dispatches tokens to experts split "
        "across GPUs, and expert is 1 (got 'deepep'); set serving.parallelism.expert to the tensor size, or "
        "all_to_all: auto"
    ]


def test_tensor_and_gpu_count_must_agree_and_the_flags_are_the_specs():
    raw = deepseek()
    raw["serving"]["parallelism"]["tensor"] = 16
    raw["resources"]["gpu_count"] = 8
    raw["serving"]["extra_args"] = ["--enable-dp-attention", "--ep-size", "4"]
    assert lines(raw) == [
        "error: sgldeploy:deployments[0].serving.extra_args[0]: --enable-dp-attention is generated from the spec "
        "(got '--enable-dp-attention'); set serving.parallelism.data_parallel_attention in the spec instead",
        "error: sgldeploy:deployments[0].serving.extra_args[1]: --ep-size is generated from the spec (got "
        "'--ep-size'); set serving.parallelism.expert in the spec instead",
        "error: sgldeploy:deployments[0].serving.parallelism.tensor: differs from resources.gpu_count 8: SGLang's "
        "tensor parallelism spans a replica's GPUs (got 16); set one of them, or both to the same count",
    ]


def test_tensor_alone_sets_the_gpus_of_a_replica(lock):
    raw = deepseek(groups=8, experts=16, context_length=16384)
    raw["serving"]["parallelism"]["tensor"] = 16
    raw["resources"] = {"gpu": "H100"}
    _, _, sizing = sized(lock, raw)
    assert (sizing.placement.gpus_per_replica, sizing.placement.nodes_per_replica) == (16, 2)


def test_the_throughput_model_reads_a_copy_of_the_dense_weights_per_group_and_each_latent_once(lock):
    model = lock[f"{DEEPSEEK_V3['repo']}@{DEEPSEEK_V3['revision']}"]
    shape = throughput.model_shape(model, 1000.0, 100.0)
    assert shape.kv_replicated  # MLA under plain tensor parallelism
    grouped = throughput.with_attention_groups(shape, 8, 4)
    dense = shape.weight_bytes - shape.expert_weight_bytes
    assert grouped.weight_bytes == pytest.approx(shape.expert_weight_bytes + 4 * dense)
    # Replicated over the 2 GPUs of a group, read by one group: per GPU, 2 × 100 / 8 of a token's latent.
    assert (grouped.kv_bytes_per_token, grouped.kv_replicated) == (200.0, False)
    assert throughput.with_attention_groups(shape, 8, 1) is shape


def test_the_plan_names_the_split(tmp_path):
    plan = render_stack(write_stack(tmp_path, deployments=[deepseek()]))
    text = summary(plan)
    assert "· TP 8 (attention in 8 data-parallel groups) · EP 8 · 1 node(s) per replica" in text
