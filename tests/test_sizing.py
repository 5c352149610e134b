"""Placement and memory fit against published figures (../shared/reference/sglang.md §5, data-notes.md)."""

from __future__ import annotations

import pytest

from sgldeploy.catalog import gpu_models, instance_types, instances_with
from sgldeploy.sizing import SizingError, kv_bytes_per_token, sglang_auto_fraction, size
from sgldeploy.validate import parse_stack

from .conftest import LLAMA_8B, LLAMA_70B, QWEN, deployment


def spec(**fields):
    return parse_stack(None, [deployment(**fields)]).deployments[0]


def model_of(lock, ref):
    return lock[f"{ref['repo']}@{ref['revision']}"]


@pytest.mark.parametrize("gpu, tp, expected", [("H100", 1, 0.83), ("L4", 1, 0.70), ("A10G", 1, 0.70),
                                               ("A100-40GB", 1, 0.83), ("T4", 1, 0.76)])
def test_auto_fraction_matches_sglangs_heuristic(gpu, tp, expected):
    assert sglang_auto_fraction(gpu_models()[gpu].memory_gib, tp) == pytest.approx(expected, abs=0.015)  # the reference rounds


@pytest.mark.parametrize("ref, kib", [(QWEN, 56), (LLAMA_8B, 128), (LLAMA_70B, 320)])
def test_kv_bytes_per_token_match_published_figures(lock, ref, kib):
    assert kv_bytes_per_token(spec(model=dict(ref)), model_of(lock, ref)) == kib * 1024


def test_fp8_kv_cache_halves_it(lock):
    dep = spec(serving={"kv_cache_dtype": "fp8_e4m3", "context_length": 1024})
    assert kv_bytes_per_token(dep, model_of(lock, QWEN)) == 28 * 1024


def test_qwen_7b_fits_one_l4_at_16k_but_not_at_32k(lock):
    fitted = size(spec(serving={"context_length": 16384}), model_of(lock, QWEN))
    assert fitted.placement.instance_type == "g6.xlarge"
    assert fitted.memory.weights_gib == pytest.approx(7_615_616_512 * 2 / 2**30, abs=0.01)
    assert fitted.memory.required_gib_per_gpu <= fitted.memory.gpu_memory_gib
    with pytest.raises(SizingError) as err:
        size(spec(serving={"context_length": 32768}), model_of(lock, QWEN))
    assert err.value.field == "resources.gpu" and "does not fit" in err.value.what
    assert "quantization: fp8" in err.value.fix


def test_auto_picks_the_cheapest_gpu_that_fits(lock):
    dep = spec(resources={"gpu": "auto", "gpu_count": "auto"}, serving={"context_length": 32768})
    chosen = size(dep, model_of(lock, QWEN))
    price = chosen.placement.hourly_usd_per_replica
    for gpu in gpu_models():
        for tp in (1, 2, 4, 8):
            for inst in instances_with(gpu, tp):
                if inst.on_demand_usd_per_hour is not None and inst.on_demand_usd_per_hour < price:
                    forced = spec(resources={"gpu": gpu, "gpu_count": tp, "instance_types": [inst.name]},
                                  serving={"context_length": 32768})
                    with pytest.raises(SizingError):
                        size(forced, model_of(lock, QWEN))  # every cheaper option must fail to fit


def test_fp8_fits_the_full_context_on_l4(lock):
    dep = spec(resources={"gpu": "auto", "gpu_count": "auto"}, serving={"quantization": "fp8"})
    chosen = size(dep, model_of(lock, QWEN))
    assert chosen.placement.gpu_model == "L4" and chosen.memory.weights_gib == pytest.approx(7.09, abs=0.01)


def test_70b_needs_a_whole_8_gpu_node_on_aws(lock):
    chosen = size(spec(model=dict(LLAMA_70B), serving={"context_length": 32768},
                       resources={"gpu": "H100", "gpu_count": "auto"}), model_of(lock, LLAMA_70B))
    # 4× H100 would fit, but no EC2 instance carries exactly four, so the placement is p5.48xlarge.
    assert (chosen.placement.instance_type, chosen.placement.tensor_parallel) == ("p5.48xlarge", 8)
    assert chosen.startup_budget_seconds > size(spec(), model_of(lock, QWEN)).startup_budget_seconds


def test_gpu_capability_rules(lock):
    t4 = size(spec(resources={"gpu": "T4", "gpu_count": 1}, serving={"quantization": "awq",
                                                                       "context_length": 2048}),
              model_of(lock, QWEN))
    assert t4.dtype == "float16"
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "T4", "gpu_count": 1}, serving={"quantization": "fp8"}), model_of(lock, QWEN))
    assert "compute capability 8.0" in err.value.what
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "T4", "gpu_count": 1}, serving={"precision": "bfloat16"}), model_of(lock, QWEN))
    assert "no bfloat16" in err.value.what


def test_unknown_instance_type_is_refused(lock):
    with pytest.raises(SizingError) as err:
        size(spec(resources={"gpu": "L4", "gpu_count": 1, "instance_types": ["m5.large"]}), model_of(lock, QWEN))
    assert err.value.field == "resources.instance_types" and err.value.got == "m5.large"


def test_catalog_tables_are_complete():
    for inst in instance_types().values():
        assert inst.gpu in gpu_models(), inst.name
        assert inst.source
    assert instances_with("L4", 1)[0].name == "g6.xlarge"
