"""Weight paths (`cache.loader`): the cold-start model by hand and against published figures, the loader auto
picks, the paths refused, and each loader's flags as SGLang 0.5.23's own parser reads them."""

from __future__ import annotations

import csv
import json

import pytest

from sgldeploy.catalog import instance_types
from sgldeploy.models import cold_start, weight_path
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.validate import parse_stack

from .conftest import ROOT, deployment, resources_of
from .test_sglang_args import sglang_parse
from .variants import PREFETCH_IMAGE, rendered_variants

with open(ROOT / "sgldeploy" / "data" / "cold-start.csv", newline="") as f:
    ROWS = {r["term"]: float(r["value"]) for r in csv.DictReader(f)}
MB = 1073.741824  # per GiB


def spec(**fields):
    return parse_stack(None, [deployment(**fields)]).deployments[0]


def test_every_assumption_has_a_source():
    assert set(cold_start.assumptions()) == set(ROWS)
    assert all(len(a.source) > 20 for a in cold_start.assumptions().values())


def test_a_node_local_start_by_hand():
    dep = spec(readiness="fast", cache={"storage": "node-local"})
    g6 = instance_types()["g6.xlarge"]
    mb = 14.19 * MB
    warm = cold_start.cold_start(dep, 14.19, g6, 1, 1, warm_node=True, loader="safetensors")
    assert (warm.node_s, warm.image_s, warm.fetch_s) == (0, 0, 0)
    assert warm.load_s == round(mb / ROWS["nvme_mb_s"] + mb / ROWS["host_to_gpu_mb_s"])
    assert (
        warm.engine_s == ROWS["imports"] + ROWS["engine_init"] and warm.graphs_s == ROWS["cuda_graph_capture"]
    )
    new = cold_start.cold_start(dep, 14.19, g6, 1, 1, warm_node=False, loader="safetensors")
    assert new.fetch_s == round(mb / ROWS["hub_mb_s"])  # the prefetch init container's download
    assert new.total_s == ROWS["node_provisioning"] + ROWS["image_pull"] + new.fetch_s + warm.load_s + 65
    fast = cold_start.cold_start(dep, 14.19, g6, 1, 1, warm_node=True, loader="fastsafetensors")
    assert fast.load_s == round(mb / ROWS["fastsafetensors_mb_s"]) < warm.load_s


def test_the_streamer_is_bound_by_its_readers_or_the_network():
    dep = spec(cache={"storage": "s3", "loader": "runai-streamer", "streamer": {"concurrency": 4}})
    p5 = instance_types()["p5.48xlarge"]
    readers = 8 * 4 * ROWS["s3_connection_mb_s"]  # eight ranks of four readers each
    start = cold_start.cold_start(dep, 131.4, p5, 1, 8, warm_node=True)
    assert start.fetch_s == 0 and start.load_s == round(131.4 * MB / readers)
    small = instance_types()["g6.xlarge"]  # 2.5 Gbps: the network binds before 32 readers do
    one = cold_start.cold_start(
        spec(cache={"storage": "s3", "loader": "runai-streamer"}), 14.19, small, 1, 1, True
    )
    assert one.load_s == round(14.19 * MB / (2.5 * 125 * ROWS["nic_share"]))


def test_remote_instance_from_zero_takes_its_fallback(tmp_path):
    dep = spec(cache={"storage": "node-local", "loader": "remote-instance"})
    assert weight_path.startup_loaders(dep) == ("remote-instance", "safetensors")
    assert weight_path.fallback("s3") == "runai-streamer"


# Published figures (../shared/reference/peers-2026-12.md §4.5, serving-anchors.md §2), each with the model's
# scenario: (loader, storage, instance, GiB, TP, nodes, what the figure covers, low, high seconds).
PUBLISHED = [
    # ai-dynamo/dynamo docs/kubernetes/fast-model-loading.md: Kimi-K2.7, 554 GiB over two nodes, TP16, 5.3 min load.
    ("runai-streamer", "fsx-lustre", "p5.48xlarge", 554, 16, 2, "load", 0.75 * 318, 1.25 * 318),
    # anyscale.com/blog/loading-llama-2-70b-20x-faster-with-anyscale-endpoints: 70B streamed S3 → GPU on p4de,
    # download and init in 20 s; the load alone fits inside it.
    ("runai-streamer", "s3", "p4de.24xlarge", 128.5, 8, 1, "load", 1, 20),
    # developer.nvidia.com Run:ai streamer blog: ~15 GB from S3 on g5.12xlarge, engine-ready in 23.18 s; the load
    # alone fits inside it, and no faster than the instance's 40 Gbps.
    ("runai-streamer", "s3", "g5.12xlarge", 14.0, 1, 1, "load", 15e3 / 5e3, 23.18),
    # tensorfuse.io/docs/blogs/reducing_gpu_cold_start: Llama-3.1-8B on L40S, download 61 s, load 33 s (vLLM).
    ("safetensors", "node-local", "g6e.2xlarge", 14.96, 1, 1, "fetch", 0.75 * 61, 1.25 * 61),
    ("safetensors", "node-local", "g6e.2xlarge", 14.96, 1, 1, "load", 0.5 * 33, 1.5 * 33),
    # llm-d/llm-d:guides/modelexpress-p2p/README.md: a 70B receiver Ready in 30-40 s, CUDA graphs off.
    ("remote-instance", "node-local", "p5.48xlarge", 131.4, 8, 1, "no-graphs", 30, 40),
]


@pytest.mark.parametrize("loader, storage, instance, gib, tp, nodes, term, low, high", PUBLISHED)
def test_the_model_against_published_figures(loader, storage, instance, gib, tp, nodes, term, low, high):
    extra = ["--disable-cuda-graph"] if term == "no-graphs" else []
    dep = spec(cache={"storage": storage, "loader": loader}, serving={"extra_args": extra})
    start = cold_start.cold_start(dep, gib, instance_types()[instance], nodes, tp, warm_node=True)
    modelled = {
        "load": start.load_s,
        "fetch": cold_start.cold_start(dep, gib, instance_types()[instance], nodes, tp, False).fetch_s,
        "no-graphs": start.total_s,
    }[term]
    assert low <= modelled <= high


@pytest.mark.parametrize(
    "cache, message",
    [
        ({"storage": "s3", "loader": "safetensors"}, "cache.loader: reads files, but cache.storage s3"),
        ({"storage": "efs", "loader": "fastsafetensors"}, "reads the weights from the GPU node's NVMe"),
        ({"storage": "none", "loader": "runai-streamer"}, "cache.storage: keeps no cache"),
        ({"storage": "none", "loader": "remote-instance"}, "falls back to the cache when no replica runs"),
        ({"storage": "node-local", "bucket": "weights"}, "cache.bucket: names a bucket"),
        ({"storage": "s3", "bucket": "Not_A_Bucket"}, "is not an S3 bucket name"),
        ({"storage": "s3", "bucket": "10.0.0.1"}, "is not an S3 bucket name"),
    ],
)
def test_a_loader_reads_only_the_storage_it_can(cache, message):
    with pytest.raises(InvalidInput) as e:
        spec(cache=cache)
    assert message in str(e.value)


def test_a_valid_bucket_name_passes():
    assert (
        spec(cache={"storage": "s3", "bucket": "my.model-weights-01"}).cache.bucket == "my.model-weights-01"
    )


def test_load_format_in_extra_args_points_to_the_loader():
    with pytest.raises(InvalidInput) as e:
        spec(serving={"extra_args": ["--load-format", "pt"]})
    assert "cache.loader" in str(e.value)


def test_the_streamer_implies_s3_when_the_storage_is_auto():
    assert spec(cache={"storage": "auto", "loader": "runai-streamer"}).cache_storage == "s3"


def _choose(instance: str, gib: float, tp: int = 1, nodes: int = 1, **fields):
    return weight_path.choose(spec(**fields), gib, instance_types()[instance], tp, nodes)


def test_auto_picks_by_storage_image_and_placement():
    built = {"image": PREFETCH_IMAGE, "context_length": 4096, "max_concurrency": 4}
    local = {"storage": "node-local", "prefetch_image": PREFETCH_IMAGE}
    loader, why = _choose("g6.xlarge", 14.2, serving=built, cache=local)
    assert loader == "fastsafetensors" and "NVMe" in why
    loader, why = _choose("g6.xlarge", 14.2, cache={"storage": "node-local"})  # the stock image lacks it
    assert loader == "safetensors" and "sglang_image/" in why
    assert _choose("g6.xlarge", 14.2, cache={"storage": "s3"})[0] == "runai-streamer"
    assert _choose("g6.xlarge", 14.2, cache={"storage": "none"})[0] == "safetensors"
    assert _choose("g6.xlarge", 14.2, cache={"storage": "none", "loader": "safetensors"}) == (
        "safetensors",
        "",
    )


def test_refusals_name_the_topology():
    def refused(loader, instance, gpus, nodes, **fields):
        dep = spec(cache={"storage": "node-local", "loader": loader}, **fields)
        return " ".join(p.what for p in weight_path.problems(dep, instance_types()[instance], gpus, nodes))

    assert "g6.xlarge has no EFA and holds one replica" in refused("remote-instance", "g6.xlarge", 1, 1)
    assert "spans 2 nodes" in refused("remote-instance", "p5.48xlarge", 8, 2)
    assert weight_path.peer_topology(instance_types()["p3.8xlarge"], 2, 1) == "same-node"  # 4 GPUs, no EFA
    assert weight_path.peer_topology(instance_types()["p3.8xlarge"], 4, 1) is None
    assert weight_path.peer_topology(instance_types()["p5.48xlarge"], 8, 1) == "efa"
    assert "does not carry" in refused("fastsafetensors", "g6.xlarge", 1, 1)  # the stock image
    assert "spans 2 nodes" in refused("fastsafetensors", "p5.48xlarge", 8, 2)
    assert "not declared by this version yet" in refused("remote-instance", "p5.48xlarge", 8, 1)
    assert refused("safetensors", "g6.xlarge", 1, 1) == ""


@pytest.fixture(scope="module")
def loaders():
    return rendered_variants()["weight-loaders"]


def _server(plan, name):
    r = next(r for r in resources_of(plan, "kubernetes:apps/v1:Deployment") if r.name.startswith(f"{name}-"))
    return r.inputs["spec"]["template"]["spec"]["containers"][0]


def test_each_loader_as_sglang_reads_it(loaders):
    expected = {
        "fast-auto": ("fastsafetensors", None),
        "fast-nvme": ("fastsafetensors", None),
        "streamed": ("runai_streamer", {"concurrency": 16, "memory_limit": 4 * 2**30}),
    }
    for name, (load_format, extra) in expected.items():
        server = _server(loaders, name)
        args = [a.replace("$(SGLANG_API_KEY)", "k") for a in server["args"]]
        done = sglang_parse(args)
        assert done.returncode == 0, done.stderr
        parsed = json.loads(done.stdout)
        assert parsed["load_format"] == load_format
        if extra:
            assert json.loads(parsed["model_loader_extra_config"]) == extra
        else:
            assert "--model-loader-extra-config" not in args
    env = {e["name"]: e.get("value") for e in _server(loaders, "streamed")["env"]}
    assert env["RUNAI_STREAMER_CHUNK_BYTESIZE"] == str(16 * 2**20)
    assert "RUNAI_STREAMER_CHUNK_BYTESIZE" not in {e["name"] for e in _server(loaders, "fast-nvme")["env"]}


def test_the_plan_prices_every_path(loaders):
    from sgldeploy.offline.plan_json import deployment_json

    item = next(d for d in loaders.loaded.deployments if d.spec.name == "fast-auto")
    c = deployment_json(item, loaders.estimate, loaders.loaded.spec.platform.addons)["cold_start_seconds"]
    assert c["loader"] == "fastsafetensors" and c["why"].startswith("auto:")
    chosen = [p for p in c["paths"] if p["chosen"]]
    assert len(chosen) == 1 and chosen[0]["warm_node"] == c["warm_node"]["total"]
    by = {(p["loader"], p["storage"]): p for p in c["paths"]}
    assert (
        by[("safetensors", "node-local")]["warm_node"] > c["warm_node"]["total"]
    )  # what fastsafetensors buys
    assert "not declared" in by[("runai-streamer", "s3")]["refused"]
    assert c["new_node"]["total"] == sum(
        c["new_node"][k] for k in ("node", "image", "fetch", "load", "engine")
    )
