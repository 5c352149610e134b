"""SGLang's hierarchical KV cache in the pod: its flags, and the node-disk volume of its file tier.

The sizes come from sgldeploy.models.host_cache, which sizing already checked against the pod's memory.
"""

from __future__ import annotations

from typing import Any

from sgldeploy.models.host_cache import HostCache

FILE_TIER_DIR = "/var/cache/sglang/hicache"
VOLUME = "hicache"


def flags(host: HostCache) -> list[str]:
    """The size is always explicit: SGLang's own default shrinks the ratio to the memory it finds free, and the
    pod's memory was sized for this one."""
    size = ["--hicache-size", str(host.size_gb)] if host.size_gb else ["--hicache-ratio", f"{host.ratio:g}"]
    storage = ["--hicache-storage-backend", "file"] if host.storage == "file" else []
    return ["--enable-hierarchical-cache", *size, *storage]


def env(host: HostCache) -> list[dict[str, Any]]:
    """Where the file tier writes, and its cap (its evictor frees the least recently used pages past it)."""
    if host.storage != "file":
        return []
    return [
        {"name": "SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR", "value": FILE_TIER_DIR},
        {"name": "SGLANG_HICACHE_FILE_BACKEND_MAX_SIZE", "value": f"{host.storage_gib}Gi"},
    ]


def mounts(host: HostCache) -> list[dict[str, Any]]:
    return [{"name": VOLUME, "mountPath": FILE_TIER_DIR}] if host.storage == "file" else []


def volumes(host: HostCache) -> list[dict[str, Any]]:
    """The file tier lives on the node's disk for the pod's lifetime: pages outlive an eviction from memory,
    not the pod, so a fresh replica starts with an empty tier."""
    if host.storage != "file":
        return []
    return [{"name": VOLUME, "emptyDir": {"sizeLimit": f"{host.volume_gib}Gi"}}]
