"""The NVIDIA GPU as Kubernetes names it, for every builder that schedules onto GPU nodes (no Pulumi).

The device plugin advertises GPUs as an extended resource; GPU nodes carry a taint of the same name, so that
only pods that tolerate it (serving pods, the image pre-pull, node agents) land there.
"""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"  # what the device plugin's chart selects nodes by without NFD
GPU_TAINT = {"key": GPU_RESOURCE, "value": "true", "effect": "NoSchedule"}


def gpu_toleration() -> dict[str, Any]:
    """Tolerates GPU_TAINT, whatever its value."""
    return {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
