"""The host memory and disk SGLang's hierarchical KV cache (HiCache) takes, as SGLang 0.5.23 sizes it.

Each GPU's rank allocates its own host pool of pinned memory (sglang/srt/mem_cache/pool_host/base.py):
`--hicache-size` GB (decimal, `host_size * 1e9`), else `--hicache-ratio` × the rank's device KV pool. Before it
allocates, the rank checks the pool against the memory its cgroup has free less a 10 GiB reserve
(`HICACHE_HOST_MEMORY_RESERVE_BYTES`), split among the node's ranks, and refuses to start when it does not fit.
So the pod's memory must hold every rank's pool, SGLang's reserve, and what the ranks themselves already hold.
Pure: sizing keeps an instance only when its pod memory holds this, and the launch flags come from it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sgldeploy.spec import HierarchicalCacheSpec

GIB = 1024**3
SGLANG_RESERVE_GIB = 10  # pool_host/base.py HICACHE_HOST_MEMORY_RESERVE_BYTES, left free by every pool check
SGLANG_DEFAULT_RATIO = (
    2.0  # arg_groups/hicache_hook.py handle_hicache_ratio_default, host memory mode "cache"
)
# An allowance, not a measurement: a rank's scheduler process (Python, torch, the CUDA context, pinned staging)
# holds a few GiB before its pool is allocated, and that memory is no longer free when the pool is checked.
RANK_RESIDENT_GIB = 4
# The file tier's cap is SGLANG_HICACHE_FILE_BACKEND_MAX_SIZE (mem_cache/storage/file/lru_file_evictor.py);
# its volume is a tenth larger, so a page written while the evictor frees space never trips the kubelet's limit.
FILE_VOLUME_MARGIN_DIVISOR = 10


@dataclass(frozen=True)
class HostCache:
    ratio: float | None  # the --hicache-ratio SGLang gets, or None when the size is given
    size_gb: int | None  # the --hicache-size SGLang gets (decimal GB), or None when the ratio is given
    pool_gib_per_gpu: float  # one rank's host pool
    gpus_per_node: int
    storage: str  # none | file
    storage_gib: int  # the file tier's cap on each node

    @property
    def pools_gib_per_node(self) -> float:
        return self.pool_gib_per_gpu * self.gpus_per_node

    @property
    def required_gib_per_node(self) -> float:
        """The pod memory a node's ranks need to start with their pools: the check each rank runs."""
        return self.pools_gib_per_node + SGLANG_RESERVE_GIB + RANK_RESIDENT_GIB * self.gpus_per_node

    @property
    def volume_gib(self) -> int:
        """The node disk the file tier's volume may take (0 without one)."""
        if self.storage != "file":
            return 0
        return self.storage_gib + math.ceil(self.storage_gib / FILE_VOLUME_MARGIN_DIVISOR)


def host_cache(spec: HierarchicalCacheSpec, kv_pool_gib_per_gpu: float, gpus_per_node: int) -> HostCache:
    """The host tier of one node of a replica whose GPUs each hold `kv_pool_gib_per_gpu` of KV pool."""
    if spec.size_gib is not None:
        # SGLang counts the size in decimal GB; rounding down keeps the pool within what the spec allows.
        size_gb = max(1, int(spec.size_gib * GIB // 10**9))
        pool_gib = size_gb * 10**9 / GIB
        ratio = None
    else:
        ratio = spec.ratio if spec.ratio is not None else SGLANG_DEFAULT_RATIO
        size_gb = None
        pool_gib = ratio * kv_pool_gib_per_gpu
    return HostCache(
        ratio=ratio,
        size_gb=size_gb,
        pool_gib_per_gpu=pool_gib,
        gpus_per_node=gpus_per_node,
        storage=spec.storage,
        storage_gib=spec.storage_gib,
    )
