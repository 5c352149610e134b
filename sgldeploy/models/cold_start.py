"""What a cold start costs: seconds from a scale-up decision to a ready replica, term by term (node, image
pull, weights, engine start), from published figures. Pure: the plan shows it, sizing checks readiness
deadlines with it, and the autoscaler waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgldeploy.spec import DeploymentSpec

# Assumptions, each from a published figure (../shared/reference/serving-anchors.md §2, sglang.md §3):
NODE_PROVISIONING_S = 90  # Karpenter launching a GPU instance and the node joining (EKS, AL2023 NVIDIA AMI)
IMAGE_PULL_S = 70  # the SGLang image (~9 GB) on a new node: llm-d measured 69 s for 8.9 GB without streaming
IMPORTS_S = 60  # Python and CUDA imports: llm-d measured 73 s for vLLM
ENGINE_START_S = 75  # KV pool, CUDA graph capture, warm-up: llm-d measured 73 s engine init
HUB_MB_S = 250  # one node downloading from the Hub, per node
NVME_MB_S = 1500  # reading safetensors from the instance-store NVMe
SHARED_MB_S = {"efs": 300, "fsx-lustre": 1000}  # per client: EFS elastic throughput; FSx 250 MB/s/TiB × 4 TiB
DOWNLOAD_TO_VRAM_MB_S = 1400  # copying weights into GPU memory (llm-d: 61 GiB in 43 s)


@dataclass(frozen=True)
class ColdStart:
    node_s: int
    image_s: int
    weights_s: int
    engine_s: int
    note: str

    @property
    def total_s(self) -> int:
        return self.node_s + self.image_s + self.weights_s + self.engine_s


def cold_start(dep: DeploymentSpec, weights_gib: float, nodes: int, warm_node: bool) -> ColdStart:
    """Seconds from a scale-up decision to a ready replica, for the first replica of a deployment at rest."""
    mb_per_node = weights_gib * 1.073741824e3 / nodes
    if dep.cache_storage == "none":
        weights = mb_per_node / HUB_MB_S + mb_per_node / DOWNLOAD_TO_VRAM_MB_S
        where = f"weights from the Hub at {HUB_MB_S} MB/s"
    elif dep.cache_storage in SHARED_MB_S:  # a shared file system, filled before the rollout
        rate = SHARED_MB_S[dep.cache_storage]
        weights = mb_per_node / rate + mb_per_node / DOWNLOAD_TO_VRAM_MB_S
        where = f"weights from {dep.cache_storage} at {rate} MB/s"
    elif warm_node:
        weights = mb_per_node / NVME_MB_S + mb_per_node / DOWNLOAD_TO_VRAM_MB_S
        where = f"weights from the node's cache at {NVME_MB_S} MB/s"
    else:  # a new node's disk is empty: the prefetch downloads once, then the server reads the local copy
        weights = mb_per_node / HUB_MB_S + mb_per_node / NVME_MB_S + mb_per_node / DOWNLOAD_TO_VRAM_MB_S
        where = f"a first download at {HUB_MB_S} MB/s into the node's cache"
    node = 0 if warm_node else NODE_PROVISIONING_S
    image = 0 if warm_node else IMAGE_PULL_S
    note = (
        "a warm node: no provisioning or image pull"
        if warm_node
        else f"a new node ({NODE_PROVISIONING_S} s) and image pull ({IMAGE_PULL_S} s)"
    ) + f"; {where}"
    return ColdStart(node, image, int(round(weights)), IMPORTS_S + ENGINE_START_S, note)
