"""How a replica's weights reach its GPUs (`cache.loader`): the loader `auto` picks, with the reason the plan
shows, and the placements a loader cannot serve. Pure: the storage is chosen first (weight_cache.choose), the
loader after it, from the storage, the image, the readiness level, the model's size and the replica bounds.
"""

from __future__ import annotations

from sgldeploy.catalog import InstanceType
from sgldeploy.spec import OWN_LOADER_QUANTIZATIONS, SGLANG_IMAGE, DeploymentSpec
from sgldeploy.spec.problems import Problem

STOCK_IMAGE_LOADERS = frozenset({"safetensors", "runai-streamer", "remote-instance"})
"""What the stock lmsysorg/sglang image can load with: SGLang's own loaders, and the Run:ai streamer its Dockerfile
installs (`runai-model-streamer[s3,gcs,azure]`, the `sglang[runai]` requirement); not fastsafetensors."""
BUILT_IMAGE_LOADERS = frozenset({"safetensors", "fastsafetensors", "runai-streamer", "remote-instance"})
"""What the image built from sglang_image/ carries (its Dockerfile adds fastsafetensors to the stock image)."""

NOT_YET = {
    "s3": "no bucket, pod identity or prefetch into it",
    # SGLang 0.5.23's receiver posts to the seed's /init_weights_send_group_for_remote_instance with no API key,
    # which the seed then refuses (srt/model_loader/remote_instance_weight_loader_utils.py, srt/utils/auth.py).
    "remote-instance": "no seed discovery at start, and SGLang 0.5.23's receiver sends the seed no API key",
}
"""What is modelled but not declared yet, and what it lacks."""

PEER_FROM_GIB = 100
"""From this size a copy from a running replica beats reading storage: a 100 GiB read at the cache's rates
takes minutes, the copy over EFA seconds (models/cold_start.py)."""


def image_loaders(dep: DeploymentSpec) -> frozenset[str] | None:
    """The loaders `serving.image` is known to carry; None for an image sgldeploy does not know."""
    if dep.serving.image == SGLANG_IMAGE:
        return STOCK_IMAGE_LOADERS
    if dep.cache.prefetch_image and dep.serving.image == dep.cache.prefetch_image:
        return BUILT_IMAGE_LOADERS
    return None


def peer_topology(instance: InstanceType, gpus_per_replica: int, nodes_per_replica: int) -> str | None:
    """How a new replica can reach a running one for remote-instance (over EFA, or on the same node when one
    instance holds two replicas); None when neither holds."""
    if nodes_per_replica > 1:
        return None
    if instance.efa_interfaces:
        return "efa"
    if instance.gpu_count >= 2 * gpus_per_replica:
        return "same-node"
    return None


def fallback(storage: str) -> str:
    """What remote-instance loads with when no replica runs to copy from: the cache's own loader."""
    return "runai-streamer" if storage == "s3" else "safetensors"


def startup_loaders(dep: DeploymentSpec) -> tuple[str, ...]:
    """The loaders a starting replica may take: remote-instance's copy, or its fallback when no replica runs."""
    loader = dep.cache.loader
    return (loader, fallback(dep.cache_storage)) if loader == "remote-instance" else (loader,)


def paths(dep: DeploymentSpec) -> list[tuple[str, str]]:
    """(loader, storage) of every path a deployment's weights could take, its own first: the plan prices each."""
    storage = dep.cache_storage
    own = (dep.cache.loader, storage)
    files = storage if storage not in ("s3", "none") else "node-local"
    every = [
        own,
        ("safetensors", storage if storage != "s3" else files),
        ("fastsafetensors", "node-local"),
        ("runai-streamer", "s3"),
        ("remote-instance", storage if storage != "none" else files),
    ]
    return list(dict.fromkeys(every))


def choose(
    dep: DeploymentSpec,
    weights_gib: float,
    instance: InstanceType,
    gpus_per_replica: int,
    nodes_per_replica: int,
) -> tuple[str, str]:
    """(loader, why) for `cache.loader: auto`; a loader written in the spec stays, with no reason."""
    if dep.cache.loader != "auto":
        return dep.cache.loader, ""
    storage, carried = dep.cache_storage, image_loaders(dep) or frozenset({"safetensors"})
    if dep.serving.quantization in OWN_LOADER_QUANTIZATIONS:
        return "safetensors", f"auto: {dep.serving.quantization} weights load through SGLang's own loader"
    if storage == "s3":
        return "runai-streamer", "auto: the weights are in S3, which only the streamer reads"
    topology = peer_topology(instance, gpus_per_replica, nodes_per_replica)
    if (
        "remote-instance" not in NOT_YET
        and storage != "none"
        and dep.min_replicas >= 1
        and dep.max_replicas > dep.min_replicas
        and weights_gib >= PEER_FROM_GIB
        and topology
    ):
        return "remote-instance", (
            f"auto: {weights_gib:.0f} GiB, and a replica always runs (min_replicas {dep.min_replicas}) for a new "
            f"one to copy from over {'EFA' if topology == 'efa' else 'the node'}"
        )
    if storage == "node-local" and instance.local_nvme_gb and "fastsafetensors" in carried:
        return (
            "fastsafetensors",
            "auto: the node's NVMe holds the weights and the image carries fastsafetensors",
        )
    why = "auto: SGLang's own safetensors loader"
    if storage == "node-local" and instance.local_nvme_gb and "fastsafetensors" not in carried:
        why += "; an image with fastsafetensors (sglang_image/) would read the NVMe in parallel"
    return "safetensors", why


def problems(
    dep: DeploymentSpec, instance: InstanceType, gpus_per_replica: int, nodes_per_replica: int
) -> list[Problem]:
    """The loader against the placement and the image (paths inside the deployment)."""
    loader, out = dep.cache.loader, []
    carried = image_loaders(dep)
    for path, value in (("cache.storage", dep.cache_storage), ("cache.loader", loader)):
        if value in NOT_YET:
            out.append(
                Problem(
                    path,
                    f"{value} is modelled in the plan but not declared by this version yet ({NOT_YET[value]})",
                    "use node-local, efs or fsx-lustre, with safetensors, fastsafetensors or runai-streamer",
                    value,
                )
            )
    if loader not in ("auto", "safetensors") and carried is not None and loader not in carried:
        out.append(
            Problem(
                "cache.loader",
                f"needs a package serving.image {dep.serving.image} does not carry",
                "build the image in sglang_image/ and set it as serving.image and cache.prefetch_image, or "
                "choose another loader",
                loader,
            )
        )
    if loader == "fastsafetensors" and nodes_per_replica > 1:
        # SGLang 0.5.23's fastsafetensors loader places each rank's tensors on cuda:{world rank}
        # (srt/model_loader/weight_utils.py), a device a second node does not have.
        out.append(
            Problem(
                "cache.loader",
                f"reads each rank's tensors onto the GPU of its world rank, but a replica spans {nodes_per_replica} "
                "nodes",
                "choose safetensors or runai-streamer for a replica of several nodes",
                loader,
            )
        )
    if loader == "fastsafetensors" and not instance.local_nvme_gb:
        out.append(
            Problem(
                "cache.loader",
                f"reads the node's NVMe, which {instance.name} does not have",
                "choose an instance type with instance-store NVMe (resources.instance_types), or safetensors",
                loader,
            )
        )
    if loader == "remote-instance" and not peer_topology(instance, gpus_per_replica, nodes_per_replica):
        where = (
            f"a replica spans {nodes_per_replica} nodes"
            if nodes_per_replica > 1
            else f"{instance.name} has no EFA and holds one replica of {gpus_per_replica} GPU(s)"
        )
        out.append(
            Problem(
                "cache.loader",
                f"copies weights from a running replica over EFA or within a node, but {where}",
                "choose an EFA instance type (sgldeploy/data/aws-gpu-efa.csv), or a loader that reads the cache",
                loader,
            )
        )
    return out
