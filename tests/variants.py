"""The stacks every real-engine check runs over: the committed ones and generated variants that reach the
code paths the committed stacks do not (a created cluster, managed node groups, a replica spanning nodes,
shared caches, every add-on at once, scale from zero, the router, blue-green and canary rollouts, capacity
reservations, the serving modes, and the knobs none of those set).

`rendered_variants()` renders each once per test session; checks iterate over the result.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sgldeploy.offline.render import Plan

from .conftest import (
    COMMITTED_STACKS,
    DEEPSEEK_V3,
    LOCK,
    QWEN,
    QWEN3_235B,
    ROOT,
    deployment,
    disaggregated,
    multi_node,
    render_stack,
    with_secret,
    write_stack,
)

SECOND_COMMIT = "b" * 40
ALB_INTERNAL = {"exposure": "internal", "load_balancer": "alb"}
CREATED = {"cluster": {"name": "v", "create": True, "vpc_cidr": "10.60.0.0/16"}, "namespace": "llm"}
EXISTING = {"cluster": {"name": "v"}, "namespace": "llm"}
PREFETCH_IMAGE = "registry.example/sgl:1"
BLOCK = {  # a Capacity Block for ML, by its one id (what a managed node group's launch template can target)
    "capacity": "reserved",
    "reservation": {
        "ids": ["cr-0123456789abcdef0"],
        "capacity_block": True,
        "instances": 1,
        "ends_at": "2027-03-01",
    },
}


def _lock_with_second_commit(path: Path) -> None:
    """The committed lock plus Qwen at a second commit, as `sgldeploy lock` would add it."""
    lock = json.loads(path.read_text())
    entry = lock["models"][f"{QWEN['repo']}@{QWEN['revision']}"]
    lock["models"][f"{QWEN['repo']}@{SECOND_COMMIT}"] = {
        **entry,
        "revision": SECOND_COMMIT,
        "sha": SECOND_COMMIT,
    }
    path.write_text(json.dumps(lock))


SUPPORT = {"repo": "org/qwen-support-lora", "revision": "c" * 40}
LEGAL = {"repo": "org/qwen-legal-lora", "revision": "e" * 40}


def _lock_with_adapters(path: Path) -> None:
    """The committed lock plus two adapters of Qwen, as `sgldeploy lock` writes them (rank 16 on attention; rank
    32 on attention and MLP)."""
    lock = json.loads(path.read_text())
    lock["adapters"] = {
        f"{ref['repo']}@{ref['revision']}": {
            **ref,
            "sha": ref["revision"],
            "parameters": params,
            "parameters_by_dtype": {"BF16": params},
            "safetensors_bytes": 2 * params,
            "files": [],
            "source": "hub",
            "adapter": {
                "rank": rank,
                "alpha": 2 * rank,
                "target_modules": modules,
                "base_model": QWEN["repo"],
                "use_dora": False,
            },
        }
        for ref, rank, modules, params in (
            (SUPPORT, 16, ["k_proj", "o_proj", "q_proj", "v_proj"], 10_092_544),
            (LEGAL, 32, ["down_proj", "gate_proj", "o_proj", "q_proj", "up_proj", "v_proj"], 80_740_352),
        )
    }
    path.write_text(json.dumps(lock))


def qwen3_over_deepep(**fields: Any) -> dict:
    """Qwen3-235B-A22B on one 8 × H200 node, its experts split over the eight by DeepEP's kernels."""
    return deployment(
        name="qwen3-deepep",
        model=dict(QWEN3_235B),
        serving={
            "context_length": 16384,
            "max_concurrency": 16,
            "parallelism": {"expert": 8, "all_to_all": "deepep"},
        },
        resources={"gpu": "H200"},
        **fields,
    )


def variant_stack_files(root: Path) -> dict[str, Path]:
    """Stack files (each with its lock beside it) by variant name, written under `root`."""
    files: dict[str, Path] = {}
    for name in COMMITTED_STACKS:
        (root / f"committed-{name}").mkdir(parents=True)
        files[name] = with_secret(ROOT / "stacks" / f"Pulumi.{name}.yaml", root / f"committed-{name}")
    files["managed-node-groups"] = write_stack(
        root / "managed-node-groups",
        platform={**CREATED, "node_provisioner": "managed-node-group", "addons": {"leader_worker_set": True}},
        deployments=[
            deployment(name="mng"),
            multi_node(name="mng-big"),
            deployment(name="mng-block", resources={**BLOCK, "gpu": "H100", "gpu_count": 1}),
        ],
        extra={"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    files["multi-node"] = write_stack(
        root / "multi-node",
        platform={**CREATED, "addons": {"leader_worker_set": True, "efa_device_plugin": True}},
        deployments=[multi_node()],
        extra={"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    files["shared-caches"] = write_stack(
        root / "shared-caches",
        platform={**CREATED, "addons": {"efs_csi": True, "fsx_csi": True}},
        deployments=[
            # One with an image of its own (the override), one running the built-in tool in the serving image.
            deployment(name="efs", cache={"storage": "efs", "prefetch_image": PREFETCH_IMAGE}),
            deployment(name="fsx", cache={"storage": "fsx-lustre"}),
        ],
    )

    # The weight loaders beyond SGLang's own, in the image built from sglang_image/ that carries them: fastsafetensors
    # on the node's NVMe (chosen by auto, and written), the streamer reading a shared file system.
    def built() -> dict[str, Any]:  # a fresh dict each: the YAML writer would alias a shared one
        return {"context_length": 4096, "max_concurrency": 4, "image": PREFETCH_IMAGE}

    files["weight-loaders"] = write_stack(
        root / "weight-loaders",
        platform={**CREATED, "addons": {"fsx_csi": True}},
        deployments=[
            deployment(
                name="fast-auto",
                serving=built(),
                cache={"storage": "node-local", "prefetch_image": PREFETCH_IMAGE},
            ),
            deployment(
                name="fast-nvme",
                serving=built(),
                cache={
                    "storage": "node-local",
                    "loader": "fastsafetensors",
                    "prefetch_image": PREFETCH_IMAGE,
                },
            ),
            deployment(
                name="streamed",
                serving=built(),
                cache={
                    "storage": "fsx-lustre",
                    "loader": "runai-streamer",
                    "prefetch_image": PREFETCH_IMAGE,
                    "streamer": {"concurrency": 16, "chunk_mib": 16, "memory_limit_gib": 4},
                },
            ),
        ],
    )
    # Every add-on installed at once (External Secrets is in no other variant), so each pinned chart is checked.
    files["every-add-on"] = write_stack(
        root / "every-add-on",
        platform={
            **CREATED,
            "addons": {
                "leader_worker_set": True,
                "efa_device_plugin": True,
                "external_secrets": True,
                "efs_csi": True,
                "fsx_csi": True,
            },
        },
        deployments=[deployment(name="all")],
    )
    files["scale-from-zero"] = write_stack(
        root / "scale-from-zero",
        platform=EXISTING,
        deployments=[
            deployment(
                name="sleepy",
                readiness="cold-start",
                scaling={"min_replicas": 0, "max_replicas": 2},
                endpoint={**ALB_INTERNAL, "hostname": "sleepy.example.com"},
            )
        ],
    )
    files["router"] = write_stack(
        root / "router",
        platform=EXISTING,
        deployments=[
            deployment(
                name="routed",
                scaling={"min_replicas": 1, "max_replicas": 3},
                endpoint={**ALB_INTERNAL, "algorithm": "cache-aware"},
            )
        ],
    )
    # Karpenter launching into capacity reservations: by id, and by tags with on-demand beyond them.
    files["reserved"] = write_stack(
        root / "reserved",
        platform=EXISTING,
        deployments=[
            deployment(
                name="held",
                resources={**BLOCK, "gpu": "H100", "gpu_count": 1},
                scaling={"min_replicas": 1, "max_replicas": 1},
                endpoint=dict(ALB_INTERNAL),
            ),
            deployment(
                name="held-or-not",
                resources={
                    "gpu": "L40S",
                    "gpu_count": 1,
                    "capacity": "reserved-fallback",
                    "reservation": {"ids": ["cr-0fedcba9876543210"], "tags": {"team": "llm", "pool": "*"}},
                },
                scaling={"min_replicas": 1, "max_replicas": 3},
                endpoint=dict(ALB_INTERNAL),
            ),
        ],
    )
    # The knobs no other variant sets: a stopped deployment, a public NLB with TLS and sticky sessions, spot
    # capacity, the other scaling signals, FP8 weights and KV cache, speculative decoding, alert thresholds.
    files["knobs"] = write_stack(
        root / "knobs",
        platform={**EXISTING, "budget_usd_per_month": 50000, "tags": {"team": "llm", "cost-center": "42"}},
        deployments=[
            deployment(name="stopped", state="stopped", endpoint=dict(ALB_INTERNAL)),
            deployment(
                name="public",
                resources={"gpu": "L40S", "gpu_count": 1, "capacity": "spot-fallback"},
                scaling={"min_replicas": 1, "max_replicas": 3, "metric": "running-requests", "target": 8},
                serving={
                    "context_length": 8192,
                    "max_concurrency": 16,
                    "quantization": "fp8",
                    "kv_cache_dtype": "fp8_e4m3",
                    "speculative": {"algorithm": "NGRAM"},
                },
                endpoint={
                    "exposure": "public",
                    "load_balancer": "nlb",
                    "sticky_sessions": True,
                    "auth": "api-key",
                    "hostname": "llm.example.com",
                    "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/abc",
                },
                observability={"alerts": {"p99_latency_seconds": 5, "error_rate_percent": 2}},
            ),
            deployment(
                name="by-memory",
                resources={"gpu": "L4", "gpu_count": 1, "capacity": "spot"},
                scaling={"min_replicas": 1, "max_replicas": 2, "metric": "memory-utilization", "target": 70},
                endpoint=dict(ALB_INTERNAL),
            ),
            deployment(
                name="by-cpu",
                scaling={"min_replicas": 1, "max_replicas": 2, "metric": "cpu-utilization", "target": 60},
                endpoint={**ALB_INTERNAL, "algorithm": "least-connections"},
            ),
        ],
        extra={"sgldeploy:apiKey": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    # SGLang's hierarchical KV cache: a ratio with a file tier on one GPU, a fixed size on a replica over nodes.
    files["hierarchical-cache"] = write_stack(
        root / "hierarchical-cache",
        platform={**EXISTING, "addons": {"leader_worker_set": True, "efa_device_plugin": True}},
        deployments=[
            deployment(
                name="tiered",
                resources={"gpu": "L40S", "gpu_count": 1},
                serving={
                    "context_length": 8192,
                    "max_concurrency": 8,
                    "hierarchical_cache": {"ratio": 2.5, "storage": "file", "storage_gib": 50},
                },
                scaling={"min_replicas": 1, "max_replicas": 2},
                endpoint=dict(ALB_INTERNAL),
            ),
            multi_node(
                name="tiered-big",
                serving={
                    "context_length": 16384,
                    "max_concurrency": 8,
                    "hierarchical_cache": {"size_gib": 64},
                },
            ),
        ],
        extra={"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    # Large mixtures of experts beyond the committed stack: DeepEP's all-to-all on one NVLink node, and attention
    # groups and expert parallelism across two nodes (a LeaderWorkerSet over EFA).
    files["expert-parallel"] = write_stack(
        root / "expert-parallel",
        platform={**EXISTING, "addons": {"leader_worker_set": True, "efa_device_plugin": True}},
        deployments=[
            qwen3_over_deepep(scaling={"min_replicas": 1, "max_replicas": 1}, endpoint=dict(ALB_INTERNAL)),
            deployment(
                name="deepseek-two-nodes",
                model=dict(DEEPSEEK_V3),
                serving={
                    "context_length": 16384,
                    "max_concurrency": 64,
                    "parallelism": {"data_parallel_attention": 8, "expert": 16},
                },
                resources={"gpu": "H100", "gpu_count": 16},
                scaling={"min_replicas": 1, "max_replicas": 1},
                endpoint=dict(ALB_INTERNAL),
            ),
        ],
        extra={"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    # LoRA adapters on a node-local cache (two, one with sizes set) and on a shared one (the prefetch Job).
    files["lora"] = write_stack(
        root / "lora",
        platform={**EXISTING, "addons": {"efs_csi": True}},
        deployments=[
            deployment(
                name="tuned",
                model={**QWEN, "adapters": [{"name": "support", **SUPPORT}, {"name": "legal", **LEGAL}]},
                serving={"context_length": 4096, "max_concurrency": 4, "lora": {"max_loras_per_batch": 2}},
                cache={"storage": "node-local"},
                scaling={"min_replicas": 1, "max_replicas": 2},
                endpoint=dict(ALB_INTERNAL),
            ),
            deployment(
                name="tuned-shared",
                model={**QWEN, "adapters": [{"name": "support", **SUPPORT}]},
                cache={"storage": "efs"},
                scaling={"min_replicas": 1, "max_replicas": 1},
                endpoint=dict(ALB_INTERNAL),
            ),
        ],
    )
    _lock_with_adapters(files["lora"].parent / LOCK.name)
    # Prefill/decode disaggregation beyond the committed stack: NIXL on a created cluster behind a public NLB, and a
    # prefill role whose replicas span two nodes (a LeaderWorkerSet) with a one-node decode role.
    files["disaggregated-nixl"] = write_stack(
        root / "disaggregated-nixl",
        platform={**CREATED, "addons": {"leader_worker_set": True, "efa_device_plugin": True}},
        deployments=[
            disaggregated(
                name="pd-nixl",
                disaggregation={
                    "transfer_backend": "nixl",
                    "prefill": {
                        "resources": {"gpu": "L40S", "gpu_count": 1},
                        "scaling": {"min_replicas": 1, "max_replicas": 3, "metric": "running-requests"},
                    },
                    "decode": {
                        "resources": {"gpu": "L4", "gpu_count": 1},
                        "scaling": {"min_replicas": 1, "max_replicas": 1},
                    },
                },
                endpoint={"exposure": "public", "load_balancer": "nlb", "algorithm": "least-connections"},
            ),
            {
                **{k: v for k, v in multi_node(name="pd-wide").items() if k != "resources"},
                "disaggregation": {
                    "prefill": {
                        "resources": {"gpu": "H100", "gpu_count": 16},
                        "scaling": {"min_replicas": 1, "max_replicas": 1},
                    },
                    "decode": {
                        "resources": {"gpu": "H200", "gpu_count": 8},
                        "scaling": {"min_replicas": 1, "max_replicas": 1},
                    },
                },
                "endpoint": dict(ALB_INTERNAL),
            },
        ],
        extra={"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    files["verify-from-zero"] = write_stack(
        root / "verify-from-zero",
        platform={**EXISTING, "addons": {"keda_http": True}},
        deployments=[
            deployment(
                name="sleepy",
                readiness="fast",
                scaling={"max_replicas": 2},
                slo={"ttft_p95_seconds": 2},
                verify={"job": True, "concurrency": 3, "requests": 9},
            )
        ],
    )
    for strategy, rollout in (
        ("blue-green", {"strategy": "blue-green", "previous_revision": SECOND_COMMIT}),
        ("canary", {"strategy": "canary", "canary_revision": SECOND_COMMIT, "canary_percent": 25}),
    ):
        files[strategy] = write_stack(
            root / strategy,
            platform=EXISTING,
            deployments=[
                deployment(
                    name=strategy,
                    scaling={"min_replicas": 2, "max_replicas": 4},
                    endpoint=ALB_INTERNAL,
                    rollout=rollout,
                    slo={"ttft_p95_seconds": 1.5, "itl_p95_seconds": 0.1},
                    verify={"job": True, "canary_margin_percent": 15},
                )
            ],
        )
        _lock_with_second_commit(files[strategy].parent / LOCK.name)
    return files


class RenderedVariants(Mapping[str, Plan]):
    """Each variant rendered offline when first asked for, once per session.

    Rendered one at a time rather than all at once, so the first test to ask for a variant is the one that
    runs its program: mutation testing (make mutate) maps each function to the tests that call it, and a
    function only one variant reaches then maps to that variant's tests."""

    def __init__(self) -> None:
        self._files = variant_stack_files(Path(tempfile.mkdtemp(prefix="sgldeploy-variants-")))
        self._plans: dict[str, Plan] = {}

    def __getitem__(self, name: str) -> Plan:
        if name not in self._plans:
            self._plans[name] = render_stack(self._files[name])
        return self._plans[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


@functools.cache
def rendered_variants() -> RenderedVariants:
    """Every variant, rendered once per session (see RenderedVariants)."""
    return RenderedVariants()
