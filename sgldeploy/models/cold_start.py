"""What a cold start costs: seconds from a scale-up decision to a ready replica, term by term (node, image
pull, fetch, load to GPU, engine start, CUDA graph capture), for each weight path a deployment can take. Pure:
the plan shows it, sizing checks readiness deadlines with it, and the autoscaler waits for it. Every rate and
duration is a row of sgldeploy/data/cold-start.csv, with its source.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sgldeploy.catalog import DATA, InstanceType, instance_types
from sgldeploy.models import weight_path
from sgldeploy.spec import DeploymentSpec

if TYPE_CHECKING:  # sizing imports this module
    from sgldeploy.models.sizing import Sizing

MB_PER_GIB = 1073.741824


@dataclass(frozen=True)
class Assumption:
    value: float
    unit: str
    source: str


@functools.cache
def assumptions() -> dict[str, Assumption]:
    with open(DATA / "cold-start.csv", newline="") as f:
        return {r["term"]: Assumption(float(r["value"]), r["unit"], r["source"]) for r in csv.DictReader(f)}


def figure(term: str) -> float:
    return assumptions()[term].value


SHARED_RATES = {"efs": "efs_mb_s", "fsx-lustre": "fsx_lustre_mb_s"}


@dataclass(frozen=True)
class ColdStart:
    loader: str  # the weight path: cache.loader's value
    storage: str  # where the weights come from
    node_s: int
    image_s: int
    fetch_s: int  # storage → the node, before the server starts (the prefetch init container, a Hub download)
    load_s: int  # into GPU memory, once the server runs
    engine_s: int  # imports, KV pool and warm-up
    graphs_s: int  # CUDA graph capture
    note: str

    @property
    def weights_s(self) -> int:
        return self.fetch_s + self.load_s

    @property
    def total_s(self) -> int:
        return self.node_s + self.image_s + self.fetch_s + self.load_s + self.engine_s + self.graphs_s


def cold_start(
    dep: DeploymentSpec,
    weights_gib: float,
    instance: InstanceType,
    nodes: int,
    tensor_parallel: int,
    warm_node: bool,
    loader: str | None = None,
) -> ColdStart:
    """Seconds from a scale-up decision to a ready replica taking weight path `loader` (default: the
    deployment's own), for the first replica of a deployment at rest, or (remote-instance) one joining a
    running replica."""
    loader = loader or dep.cache.loader
    storage = dep.cache_storage
    mb = weights_gib * MB_PER_GIB / nodes  # what each node of a replica loads
    ranks = max(1, tensor_parallel // nodes)  # the serving processes on each node
    fetch, load, where = _weights(dep, loader, storage, mb, instance, ranks, warm_node)
    node = 0 if warm_node else figure("node_provisioning")
    image = 0 if warm_node else figure("image_pull")
    graphs = 0 if "--disable-cuda-graph" in dep.serving.extra_args else figure("cuda_graph_capture")
    note = (
        "a warm node: no provisioning or image pull"
        if warm_node
        else f"a new node ({node:g} s) and image pull ({image:g} s)"
    ) + f"; {where}"
    return ColdStart(
        loader=loader,
        storage=storage,
        node_s=int(node),
        image_s=int(image),
        fetch_s=int(round(fetch)),
        load_s=int(round(load)),
        engine_s=int(figure("imports") + figure("engine_init")),
        graphs_s=int(graphs),
        note=note,
    )


def of(dep: DeploymentSpec, sizing: Sizing, warm_node: bool, loader: str | None = None) -> ColdStart:
    """cold_start on a sized deployment's placement."""
    p = sizing.placement
    instance = instance_types()[p.instance_type]
    return cold_start(
        dep, sizing.memory.weights_gib, instance, p.nodes_per_replica, p.tensor_parallel, warm_node, loader
    )


def from_zero(dep: DeploymentSpec, sizing: Sizing, warm_node: bool) -> ColdStart:
    """The first replica of a deployment at rest: with no replica running, remote-instance takes its fallback."""
    return of(dep, sizing, warm_node, weight_path.startup_loaders(dep)[-1])


def _weights(
    dep: DeploymentSpec,
    loader: str,
    storage: str,
    mb: float,
    instance: InstanceType,
    ranks: int,
    warm_node: bool,
) -> tuple[float, float, str]:
    """(fetch seconds, load seconds, what they assume) for `mb` megabytes on one node."""
    to_gpu = figure("host_to_gpu_mb_s")
    if loader == "remote-instance":
        rate = peer_mb_s(instance)
        return 0.0, mb / rate, f"copied from a running replica at {rate:,.0f} MB/s"
    if loader == "runai-streamer" and storage == "s3":
        rate = s3_stream_mb_s(instance, ranks, dep.cache.streamer.concurrency)
        return 0.0, mb / rate, f"streamed from S3 into GPU memory at {rate:,.0f} MB/s"
    if storage in SHARED_RATES:
        rate = figure(SHARED_RATES[storage])
        if loader == "runai-streamer":  # concurrent reads overlap the copy into GPU memory
            return 0.0, mb / rate, f"streamed from {storage} at {rate:,.0f} MB/s"
        return 0.0, mb / rate + mb / to_gpu, f"weights from {storage} at {rate:,.0f} MB/s"
    hub = figure("hub_mb_s")
    fetch = 0.0 if storage == "node-local" and warm_node else mb / hub
    if storage == "none":
        where = f"weights from the Hub at {hub:g} MB/s"
    elif warm_node:
        where = "weights from the node's cache"
    else:  # a new node's disk is empty: the prefetch downloads once, then the server reads the local copy
        where = f"a first download at {hub:g} MB/s into the node's cache"
    if loader == "fastsafetensors":
        rate = figure("fastsafetensors_mb_s")
        return fetch, mb / rate, f"{where}, read by fastsafetensors at {rate:,.0f} MB/s"
    if storage == "none":  # read back from the page cache the download just filled
        return fetch, mb / to_gpu, where
    nvme = figure("nvme_mb_s")
    return fetch, mb / nvme + mb / to_gpu, f"{where}, read at {nvme:g} MB/s"


def s3_stream_mb_s(instance: InstanceType, ranks: int, concurrency: int) -> float:
    """What one node streams from S3: every serving process's readers (the streamer splits the files among the
    ranks), up to the share of the instance's network one bulk transfer reaches."""
    readers = ranks * concurrency * figure("s3_connection_mb_s")
    return min(readers, instance.network_gbps * 125 * figure("nic_share"))


def peer_mb_s(instance: InstanceType) -> float:
    """A running replica's GPUs sending weights to a new one: over EFA between nodes, else over the instance's
    own network (NCCL's sockets)."""
    share = figure("efa_share") if instance.efa_interfaces else figure("nic_share")
    return instance.network_gbps * 125 * share
