"""SGLang's hierarchical KV cache: its flags as SGLang's parser reads them, the host memory each rank's pool takes
(derived here from SGLang 0.5.23's sizing rules, not from sgldeploy's), the instances that can hold it, the pod that
carries it, and a refusal with a field and a fix when no instance can."""

from __future__ import annotations

import json

import pytest

from sgldeploy.builders.sglang_args import launch_command
from sgldeploy.builders.sglang_server import SecretRefs, pod_template
from sgldeploy.catalog import gpu_models, instance_types

from .conftest import deployment, multi_node, problem_lines, sized
from .test_sglang_args import sglang_parse

GIB = 1024**3
QWEN_PARAMETERS = 7_615_616_512  # the lock's Qwen2.5-7B-Instruct, served in bf16
# SGLang 0.5.23, sglang/srt/mem_cache/pool_host/base.py: every pool check leaves 10 GiB of free memory; the
# allowance sgldeploy adds for what each rank holds before its pool (sgldeploy/models/host_cache.py says why).
SGLANG_RESERVE_GIB = 10
RANK_GIB = 4


def pod_memory_gib(instance: str) -> int:
    """The auto memory request: four fifths of the node's memory, less a GiB."""
    return int(instance_types()[instance].memory_gib * 0.8) - 1


def tiered(ratio=None, size_gib=None, **fields) -> dict:
    tiers = {k: v for k, v in (("ratio", ratio), ("size_gib", size_gib)) if v is not None}
    return deployment(
        serving={
            "context_length": 8192,
            "max_concurrency": 8,
            "mem_fraction_static": 0.8,
            "hierarchical_cache": tiers,
        },
        resources={"gpu": "L40S", "gpu_count": 1},
        **fields,
    )


def test_the_host_pool_is_the_ratio_times_the_gpus_kv_pool_and_picks_an_instance_that_holds_it(lock):
    _, _, plain = sized(lock, tiered() | {"serving": {"context_length": 8192, "max_concurrency": 8}})
    assert plain.host_cache is None and plain.placement.instance_type == "g6e.xlarge"
    _, _, with_tiers = sized(lock, tiered(ratio=2.5))
    kv_pool = (
        gpu_models()["L40S"].memory_gib * 0.8 - QWEN_PARAMETERS * 2 / GIB
    )  # SGLang's static share less weights
    pool = 2.5 * kv_pool
    need = pool + SGLANG_RESERVE_GIB + RANK_GIB
    host = with_tiers.host_cache
    assert host.pool_gib_per_gpu == pytest.approx(pool, abs=0.01)
    assert host.required_gib_per_node == pytest.approx(need, abs=0.01)
    # The smallest L40S instance whose pod memory holds it: g6e.xlarge and g6e.2xlarge do not.
    fitting = sorted(
        (t.hourly_usd(False), t.name)
        for t in instance_types().values()
        if t.gpu == "L40S" and t.gpu_count == 1 and pod_memory_gib(t.name) >= need
    )
    assert with_tiers.placement.instance_type == fitting[0][1] == "g6e.4xlarge"
    assert with_tiers.memory_request_gib == pod_memory_gib("g6e.4xlarge")


def test_a_size_is_sglangs_decimal_gigabytes_rounded_down_per_gpu_of_each_node(lock):
    _, _, one = sized(lock, tiered(size_gib=64))
    assert one.host_cache.size_gb == 68 and one.host_cache.ratio is None  # 64 GiB = 68.7 GB
    assert one.host_cache.pool_gib_per_gpu == pytest.approx(68e9 / GIB, abs=0.01)
    _, _, big = sized(
        lock,
        multi_node(
            serving={"context_length": 16384, "max_concurrency": 8, "hierarchical_cache": {"size_gib": 64}}
        ),
    )
    # Two nodes of eight GPUs: each node holds its own eight ranks' pools.
    assert big.host_cache.gpus_per_node == 8
    assert big.host_cache.required_gib_per_node == pytest.approx(
        8 * 68e9 / GIB + SGLANG_RESERVE_GIB + 8 * RANK_GIB, abs=0.01
    )


def test_sglangs_parser_reads_the_tier_flags(lock):
    for tiers, expected in (
        (
            {"ratio": 2.5, "storage": "file"},
            {"hicache_ratio": 2.5, "hicache_size": 0, "hicache_storage_backend": "file"},
        ),
        ({"size_gib": 64}, {"hicache_ratio": None, "hicache_size": 68, "hicache_storage_backend": None}),
        (
            {},
            {"hicache_ratio": 2.0, "hicache_size": 0, "hicache_storage_backend": None},
        ),  # SGLang's ratio, explicit
    ):
        raw = tiered()
        raw["serving"]["hierarchical_cache"] = tiers
        dep, model, sizing = sized(lock, raw)
        result = sglang_parse(launch_command(dep, model, sizing, api_key=False).args)
        assert result.returncode == 0, result.stderr
        parsed = json.loads(result.stdout)
        assert parsed["enable_hierarchical_cache"] is True
        assert {k: parsed[k] for k in expected} == expected


def test_without_a_tier_no_flag_and_no_volume(lock):
    dep, model, sizing = sized(lock, deployment())
    args = launch_command(dep, model, sizing, api_key=False).args
    assert not [a for a in args if "hicache" in a or "hierarchical" in a]
    pod = pod_template(dep, model, sizing, SecretRefs(None, None), ["g6.xlarge"])
    assert "hicache" not in [v["name"] for v in pod["spec"]["volumes"]]
    assert not [e for e in pod["spec"]["containers"][0]["env"] if "HICACHE" in e["name"]]


def test_a_tier_in_host_memory_alone_has_no_volume_and_a_gigabyte_is_one(lock):
    dep, model, sizing = sized(lock, tiered(ratio=2.5))
    assert sizing.host_cache.size_gb is None and sizing.host_cache.volume_gib == 0
    pod = pod_template(dep, model, sizing, SecretRefs(None, None), [sizing.placement.instance_type])
    container = pod["spec"]["containers"][0]
    assert "hicache" not in [m["name"] for m in container["volumeMounts"]]
    assert "hicache" not in [v["name"] for v in pod["spec"]["volumes"]]
    assert not [e for e in container["env"] if "HICACHE" in e["name"]]
    _, _, one = sized(lock, tiered(size_gib=1))
    assert (one.host_cache.size_gb, one.host_cache.ratio) == (1, None)  # 1 GiB is 1.07 GB


def test_the_file_tier_is_a_capped_directory_on_a_node_disk_volume_a_tenth_larger(lock):
    raw = tiered(ratio=2.5)
    raw["serving"]["hierarchical_cache"] |= {"storage": "file", "storage_gib": 50}
    dep, model, sizing = sized(lock, raw)
    _, _, without = sized(lock, tiered(ratio=2.5))
    pod = pod_template(dep, model, sizing, SecretRefs(None, None), [sizing.placement.instance_type])
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR"] == "/var/cache/sglang/hicache"
    assert env["SGLANG_HICACHE_FILE_BACKEND_MAX_SIZE"] == "50Gi"  # SGLang's human_readable_int reads Gi
    assert {"name": "hicache", "mountPath": "/var/cache/sglang/hicache"} in container["volumeMounts"]
    assert {"name": "hicache", "emptyDir": {"sizeLimit": "55Gi"}} in pod["spec"]["volumes"]
    assert (
        container["resources"]["requests"]["memory"]
        == container["resources"]["limits"]["memory"]
        == (f"{pod_memory_gib(sizing.placement.instance_type)}Gi")
    )
    # The node's disk grows by the volume (rounded up to 50 GiB): 100 + 2 × 14.19 GiB of weights + 55.
    assert (without.disk_gib, sizing.disk_gib) == (150, 200)


def lines(raw: dict) -> list[str]:
    return problem_lines([raw])


def test_no_instance_with_the_memory_is_refused_with_the_largest_tier_that_fits():
    raw = tiered(ratio=2)
    raw["resources"]["instance_types"] = ["g6e.xlarge", "g6e.2xlarge"]
    kv_pool = gpu_models()["L40S"].memory_gib * 0.8 - QWEN_PARAMETERS * 2 / GIB
    need = round(2 * kv_pool + SGLANG_RESERVE_GIB + RANK_GIB, 2)
    spare = pod_memory_gib("g6e.2xlarge") - SGLANG_RESERVE_GIB - RANK_GIB
    largest_ratio = int(10 * spare / kv_pool) / 10
    assert lines(raw) == [
        "error: sgldeploy:deployments[0].serving.hierarchical_cache: leaves too little host memory for the "
        f"hierarchical cache: g6e.2xlarge (1× L40S) needs {need:g} GiB per node (1 × {2 * kv_pool:.2f} GiB host "
        f"pools + SGLang's 10 GiB reserve + 4 GiB per GPU for its ranks), its pods get 50 GiB (got 'ratio 2'); set "
        f"ratio ≤ {largest_ratio:g} (it fits g6e.2xlarge (1× L40S)), or allow instance types with more memory per GPU"
    ]
    assert largest_ratio == 1.6


def test_a_pod_memory_too_small_for_the_tier_names_memory_gib():
    raw = tiered(size_gib=40)
    raw["resources"]["memory_gib"] = 48
    pool = 42e9 / GIB  # 40 GiB is 42.9 GB: SGLang gets 42
    assert lines(raw) == [
        "error: sgldeploy:deployments[0].resources.memory_gib: leaves too little host memory for the hierarchical "
        f"cache: g6e.xlarge (1× L40S) needs {round(pool + 14, 2):g} GiB per node (1 × {pool:.2f} GiB host pools + "
        "SGLang's 10 GiB reserve + 4 GiB per GPU for its ranks), its pods get 48 GiB (got 48); raise "
        "resources.memory_gib to 54 (within the node), or set serving.hierarchical_cache.size_gib ≤ 34"
    ]


def test_ratio_and_size_together_and_tier_flags_in_extra_args_are_refused():
    raw = tiered(ratio=2, size_gib=10)
    raw["serving"]["extra_args"] = ["--hicache-ratio", "3", "--enable-hicache"]
    assert lines(raw) == [
        "error: sgldeploy:deployments[0].serving.extra_args[0]: --hicache-ratio is generated from the spec (got "
        "'--hicache-ratio'); set serving.hierarchical_cache.ratio in the spec instead",
        "error: sgldeploy:deployments[0].serving.extra_args[2]: --enable-hicache is generated from the spec (got "
        "'--enable-hicache'); set serving.hierarchical_cache in the spec instead",
        "error: sgldeploy:deployments[0].serving.hierarchical_cache: sets both ratio and size_gib, and SGLang's "
        "--hicache-size overrides --hicache-ratio (got 'ratio 2, size_gib 10'); keep one of them",
    ]


@pytest.mark.parametrize("ratio", [1, 0.5])
def test_a_host_tier_no_larger_than_the_gpus_is_refused(ratio):
    assert lines(tiered(ratio=ratio)) == [
        f"error: sgldeploy:deployments[0].serving.hierarchical_cache.ratio: must be > 1.0 (got {ratio}); use a "
        "value > 1.0"
    ]


def test_the_committed_multi_turn_stack_is_placed_by_its_host_cache():
    """README's Stacks table: the L40S types below g6e.4xlarge fit the model on the GPU but not the host cache in
    their memory, so the placement moves up to the first that holds it."""
    from sgldeploy.offline.render import load_offline
    from sgldeploy.spec.stackfile import read_stack_file

    from .conftest import ROOT

    [item] = load_offline(read_stack_file(ROOT / "stacks" / "Pulumi.multi-turn.yaml")).deployments
    assert item.sizing.placement.instance_type == "g6e.4xlarge"
    host = item.sizing.host_cache
    assert host is not None and item.sizing.memory_request_gib >= host.required_gib_per_node
    cheaper = {c.instance.name: c for c in item.sizing.cheaper_infeasible}
    assert set(cheaper) == {"g6e.xlarge", "g6e.2xlarge"}
    for c in cheaper.values():
        assert c.memory.fits and not c.host_fits  # the GPU holds the model; the node's memory not the cache
