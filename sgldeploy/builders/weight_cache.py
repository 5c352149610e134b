"""Where a deployment's weights live, as pod volumes and containers, and the storage `auto` chooses (no
Pulumi; what a cold start costs is models/cold_start.py).

- `none`: SGLang downloads from the Hub into a per-pod emptyDir on every start.
- `node-local`: a directory on the GPU node (`NODE_CACHE_PATH`, on the instance-store NVMe where the node
  class mounts it there) shared by every pod of the node. An init container runs the prefetch tool
  (sglang_image/prefetch.py), which fetches the locked commit only when it is not already complete and
  verified, and exits non-zero otherwise, so the server never starts on a partial cache. The tool is a
  ConfigMap (named by its sha256) run by the serving image's own Python, unless `cache.prefetch_image`
  names an image that carries it. The server mounts
  the directory read-only, loads from the local path with HF_HUB_OFFLINE=1 and never touches the Hub.
  The SGLang JIT kernel cache is kept beside it, so kernels are compiled once per node.
- `efs`, `fsx-lustre`: a file system shared by every node (components/weight_cache.py creates it, its
  PersistentVolume and claim). A prefetch Job per (model, commit) fills it before the Deployment rolls;
  serving pods wait in an init container until that commit's `.complete` is there, then mount the claim
  read-only. A new commit gets a new directory and a new Job; the old directory stays, so a rollback is
  instant. The JIT kernel cache lives on the same file system.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgldeploy.builders import pod_security, tool_file
from sgldeploy.builders.gpu import gpu_toleration
from sgldeploy.models.lock import LockedAdapter, LockedModel
from sgldeploy.spec import READINESS_DEFAULTS, AddonsSpec, DeploymentSpec
from sgldeploy.spec.problems import Problem

NODE_CACHE_PATH = "/mnt/sgldeploy-cache"  # the GPU node class mounts the instance-store NVMe here
MODELS_MOUNT = "/models"
JIT_MOUNT = "/root/.cache/sglang"
PREFETCH_PYTHON = "/opt/sgldeploy/venv/bin/python"  # the tool's own environment in the image (Dockerfile)
PREFETCH_TOOL = "/opt/sgldeploy/prefetch.py"
PREFETCH_TOOL_SOURCE = Path(__file__).resolve().parents[2] / "sglang_image" / "prefetch.py"
TOOL_VOLUME = "prefetch-tool"
TOOL_MOUNT = "/opt/sgldeploy-tool"  # the ConfigMap holding the tool, in any serving image
TOOL_KEY = "prefetch.py"
IMAGE_PYTHON = ("python3", "-I", "-B")
"""The serving image's own Python, as the server runs it (sglang_args.ENTRYPOINT): `-I` so no PYTHONPATH or
user site changes which huggingface_hub it imports, `-B` since the root filesystem is read-only (no bytecode)."""
SERVE_ENTRYPOINT = "/opt/sgldeploy/serve.sh"  # checks .complete, then execs SGLang (sglang_image/serve.sh)
MODEL_DIR_ENV = "SGLDEPLOY_MODEL_DIR"
SHARED = ("efs", "fsx-lustre")
WAIT_FOR_CACHE_SECONDS = 3 * 3600  # the prefetch Job of a large model on a new file system


@dataclass(frozen=True)
class CacheLayout:
    storage: str
    model_path: str  # what SGLang gets as --model-path
    volumes: list[dict[str, Any]]
    server_mounts: list[dict[str, Any]]
    server_env: list[dict[str, Any]]
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    hub_on_start: bool = True  # does a starting pod download the weights from the Hub?


def builtin_tool(dep: DeploymentSpec) -> bool:
    """The prefetch tool comes as a ConfigMap and runs in the serving image, unless `cache.prefetch_image`
    names an image of its own (built from sglang_image/)."""
    return dep.cache_storage != "none" and not dep.cache.prefetch_image


@functools.cache
def prefetch_tool_text() -> str:
    """sglang_image/prefetch.py byte for byte (read as bytes: text mode would rewrite newlines)."""
    return PREFETCH_TOOL_SOURCE.read_bytes().decode("utf-8")


def tool_config_map_name(dep: DeploymentSpec) -> str:
    """Named by the tool's content: a changed tool is a new ConfigMap, so the pods that mount it roll."""
    return tool_file.config_map_name(f"{dep.name}-prefetch-tool", prefetch_tool_text())


def tool_config_map(dep: DeploymentSpec) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/instance": dep.name,
        "app.kubernetes.io/component": "prefetch-tool",
        "app.kubernetes.io/managed-by": "sgldeploy",
    }
    return tool_file.config_map(f"{dep.name}-prefetch-tool", labels, TOOL_KEY, prefetch_tool_text())


def tool_volumes(dep: DeploymentSpec) -> list[dict[str, Any]]:
    """The tool's ConfigMap as a read-only file, for pods whose prefetch containers run the built-in tool."""
    if not builtin_tool(dep):
        return []
    return [tool_file.volume(TOOL_VOLUME, tool_config_map_name(dep), TOOL_KEY)]


def serves_through_entrypoint(dep: DeploymentSpec) -> bool:
    """The sgldeploy image (the prefetch image) also serves, so its entrypoint can check the cache itself."""
    return dep.cache_storage != "none" and dep.serving.image == dep.cache.prefetch_image


def local_model_dir(repo: str, sha: str) -> str:
    return f"{MODELS_MOUNT}/{repo}/{sha}"


def layout(
    dep: DeploymentSpec,
    model: LockedModel,
    disk_gib: int,
    token_env: dict[str, Any] | None,
    adapters: tuple[LockedAdapter, ...] = (),
) -> CacheLayout:
    """The cache of `dep`'s effective storage. `token_env` is the HF_TOKEN env entry (a Secret reference).
    LoRA `adapters` (locked, in spec order) go into the same cache beside the model, fetched and verified by the
    same tool: by init containers on a node-local cache, by the prefetch Job on a shared one."""
    storage = dep.cache_storage
    if storage == "none":
        return CacheLayout(
            storage=storage,
            model_path=dep.model.repo,
            volumes=[{"name": "hf-cache", "emptyDir": {"sizeLimit": f"{disk_gib}Gi"}}],
            server_mounts=[{"name": "hf-cache", "mountPath": "/root/.cache"}],
            server_env=[{"name": "HF_HOME", "value": "/root/.cache/huggingface"}],
        )
    if storage in SHARED:
        waits = [
            _waiting(prefetch_container(dep, repo, sha, None, name=name, read_only=True))
            for name, repo, sha in _fetched(dep, model, adapters, "wait-for-cache")
        ]
        return CacheLayout(
            storage=storage,
            model_path=local_model_dir(dep.model.repo, model.sha),
            volumes=[
                {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim_name(dep)}},
                *tool_volumes(dep),
            ],
            server_mounts=[
                {"name": "model-cache", "mountPath": MODELS_MOUNT, "readOnly": True},
                {"name": "model-cache", "mountPath": JIT_MOUNT, "subPath": ".jit"},
            ],
            server_env=[
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "SGLANG_CACHE_DIR", "value": JIT_MOUNT},
            ],
            init_containers=waits,
            hub_on_start=False,
        )
    return CacheLayout(
        storage=storage,
        model_path=local_model_dir(dep.model.repo, model.sha),
        volumes=[
            {
                "name": "model-cache",
                "hostPath": {"path": f"{NODE_CACHE_PATH}/models", "type": "DirectoryOrCreate"},
            },
            {
                "name": "jit-cache",
                "hostPath": {"path": f"{NODE_CACHE_PATH}/jit", "type": "DirectoryOrCreate"},
            },
            *tool_volumes(dep),
        ],
        server_mounts=[
            {"name": "model-cache", "mountPath": MODELS_MOUNT, "readOnly": True},
            {"name": "jit-cache", "mountPath": JIT_MOUNT},
        ],
        server_env=[
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "SGLANG_CACHE_DIR", "value": JIT_MOUNT},
        ],
        init_containers=[
            prefetch_container(dep, repo, sha, token_env, name=name)
            for name, repo, sha in _fetched(dep, model, adapters, "prefetch")
        ],
        hub_on_start=False,
    )


def _fetched(
    dep: DeploymentSpec, model: LockedModel, adapters: tuple[LockedAdapter, ...], role: str
) -> list[tuple[str, str, str]]:
    """(container name, repo, commit) of the model and then each adapter the cache holds."""
    return [(role, dep.model.repo, model.sha)] + [
        (f"{role}-adapter-{j}", a.repo, a.sha) for j, a in enumerate(adapters)
    ]


def _waiting(container: dict[str, Any]) -> dict[str, Any]:
    """The tool waiting for a commit's `.complete` on a shared cache, which the prefetch Job fills."""
    return {
        **container,
        "args": container["args"] + ["--wait-complete", str(WAIT_FOR_CACHE_SECONDS)],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    }


PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def prepull_daemon_set_spec(
    dep: DeploymentSpec, affinity: dict[str, Any], scheduling: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`fast` readiness: every GPU node the deployment can land on pulls its images as soon as it joins, so a
    replica scaling up from zero does not wait for a multi-gigabyte pull. The init containers only pull and
    exit; a pause container keeps the pod (and so the images) on the node at almost no cost. `affinity` keeps it
    on the placement's instance types (node_pool.instance_type_affinity); `scheduling` (node selector and
    tolerations) puts it on the deployment's own node pool."""
    labels = {
        "app.kubernetes.io/instance": dep.name,
        "app.kubernetes.io/component": "image-prepull",
        "app.kubernetes.io/managed-by": "sgldeploy",
    }
    images = [dep.serving.image] + (
        [dep.cache.prefetch_image]
        if dep.cache.prefetch_image and dep.cache.prefetch_image != dep.serving.image
        else []
    )
    pulls = [
        {
            "name": f"pull-{i}",
            "image": image,
            "command": ["sh", "-c", "true"],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"},
            },
            "securityContext": pod_security.read_only_container(),
        }
        for i, image in enumerate(images)
    ]
    return {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "initContainers": pulls,
                "containers": [
                    {
                        "name": "pause",
                        "image": PAUSE_IMAGE,
                        "resources": {
                            "requests": {"cpu": "1m", "memory": "8Mi"},
                            "limits": {"cpu": "10m", "memory": "16Mi"},
                        },
                        "securityContext": pod_security.read_only_container(),
                    }
                ],
                **(scheduling or {"tolerations": [gpu_toleration()]}),
                "affinity": affinity,
                "terminationGracePeriodSeconds": 1,
                # It only pulls images and sleeps: no root, nothing written.
                **pod_security.without_api_token(pod_security.non_root_pod()),
            },
        },
    }


def claim_name(dep: DeploymentSpec) -> str:
    return f"{dep.name}-weights"


def prefetch_container(
    dep: DeploymentSpec,
    repo: str,
    sha: str,
    token_env: dict[str, Any] | None,
    name: str = "prefetch",
    read_only: bool = False,
) -> dict[str, Any]:
    """The prefetch tool for one locked commit (the model's or an adapter's), writing under /models (init
    container or Job): the ConfigMap's copy run by the serving image's Python, or the tool inside
    `cache.prefetch_image`."""
    builtin = builtin_tool(dep)
    return {
        "name": name,
        "image": dep.serving.image if builtin else dep.cache.prefetch_image,
        "command": [*IMAGE_PYTHON, f"{TOOL_MOUNT}/{TOOL_KEY}"]
        if builtin
        else [PREFETCH_PYTHON, PREFETCH_TOOL],
        "args": ["--repo", repo, "--revision", sha, "--dest", MODELS_MOUNT],
        "env": [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}, *([token_env] if token_env else [])],
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODELS_MOUNT, **({"readOnly": True} if read_only else {})},
            *([{"name": TOOL_VOLUME, "mountPath": TOOL_MOUNT, "readOnly": True}] if builtin else []),
        ],
        "resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        # The tool writes only under /models (its own temporary files included).
        "securityContext": pod_security.read_only_container(),
    }


def prefetch_job_spec(
    dep: DeploymentSpec,
    model: LockedModel,
    token_env: dict[str, Any] | None,
    adapters: tuple[LockedAdapter, ...] = (),
) -> dict[str, Any]:
    """A Job that fills a shared cache with one commit (and the adapters served on it, each by its own container);
    re-running it over a complete cache costs nothing."""
    labels = {
        "app.kubernetes.io/instance": dep.name,
        "app.kubernetes.io/component": "prefetch",
        "app.kubernetes.io/managed-by": "sgldeploy",
    }
    return {
        "backoffLimit": 6,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "OnFailure",
                **pod_security.without_api_token(),
                "containers": [
                    prefetch_container(dep, repo, sha, token_env, name=name)
                    for name, repo, sha in _fetched(dep, model, adapters, "prefetch")
                ],
                "volumes": [
                    {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim_name(dep)}},
                    *tool_volumes(dep),
                ],
            },
        },
    }


# FSx for Lustre, as sgldeploy creates it: PERSISTENT_2 on SSD (the default storage type).
FSX_DEPLOYMENT_TYPE = "PERSISTENT_2"
FSX_SMALL_CAPACITIES_GIB = (1200, 2400)
FSX_CAPACITY_STEP_GIB = 2400
"""PERSISTENT_2 SSD takes 1200 GiB, 2400 GiB or a multiple of 2400 GiB (CreateFileSystem StorageCapacity:
https://docs.aws.amazon.com/fsx/latest/APIReference/API_CreateFileSystem.html, as searched:
https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/fsx/aws.sdk.kotlin.services.fsx.model/-create-file-system-request/storage-capacity.html;
botocore 1.44.5 fsx service-2.json carries the same text in its documentation, not as a constraint)."""
FSX_PER_UNIT_THROUGHPUTS_MB_S_TIB = (125, 250, 500, 1000)
"""What PERSISTENT_2 SSD accepts as PerUnitStorageThroughput (CreateFileSystemLustreConfiguration:
https://docs.aws.amazon.com/fsx/latest/APIReference/API_CreateFileSystemLustreConfiguration.html, as searched:
https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/fsx/aws.sdk.kotlin.services.fsx.model/-create-file-system-lustre-configuration/per-unit-storage-throughput.html)."""
FSX_PER_UNIT_THROUGHPUT_MB_S_TIB = 250


def fsx_capacity_valid(gib: int) -> bool:
    return gib in FSX_SMALL_CAPACITIES_GIB or (gib > 0 and gib % FSX_CAPACITY_STEP_GIB == 0)


def fsx_capacity_at_least(gib: float) -> int:
    """The smallest capacity PERSISTENT_2 accepts that holds `gib`."""
    for small in FSX_SMALL_CAPACITIES_GIB:
        if gib <= small:
            return small
    return math.ceil(gib / FSX_CAPACITY_STEP_GIB) * FSX_CAPACITY_STEP_GIB


def fsx_capacities_around(gib: int) -> tuple[int | None, int]:
    """The valid capacities just below (None when there is none) and just above an invalid `gib`."""
    above = fsx_capacity_at_least(gib)
    below = [c for c in (*FSX_SMALL_CAPACITIES_GIB, above - FSX_CAPACITY_STEP_GIB) if 0 < c < gib]
    return (max(below) if below else None), above


def shared_size_gib(dep: DeploymentSpec, weights_gib: float) -> int:
    """The shared cache's size: the spec's, or room for two commits (the served one and the next)."""
    if dep.cache.size_gib != "auto":
        return int(dep.cache.size_gib)
    need = 2 * weights_gib * 1.1
    if dep.cache_storage == "fsx-lustre":
        return fsx_capacity_at_least(need)
    return max(100, math.ceil(need / 100) * 100)


def size_problem(dep: DeploymentSpec) -> Problem | None:
    """The problem (its path inside the deployment) when `cache.size_gib` is a size the cache's file system refuses, else None."""
    size = dep.cache.size_gib
    if dep.cache_storage != "fsx-lustre" or size == "auto" or fsx_capacity_valid(int(size)):
        return None
    below, above = fsx_capacities_around(int(size))
    small, large = FSX_SMALL_CAPACITIES_GIB
    nearest = f"{below} or {above}" if below else str(above)
    return Problem(
        "cache.size_gib",
        f"is not a size FSx for Lustre {FSX_DEPLOYMENT_TYPE} accepts: {small}, {large} or a multiple of "
        f"{FSX_CAPACITY_STEP_GIB} GiB",
        f"use {nearest}, or auto",
        int(size),
    )


SHARE_FROM_GIB = 100  # below this, a download per node is cheaper than a file system
SHARE_FROM_NODES = 3  # a shared copy pays off once three or more nodes would each download the weights


def choose(
    dep: DeploymentSpec, addons: AddonsSpec, weights_gib: float, nodes_per_replica: int
) -> tuple[str, str]:
    """`cache.storage: auto`: (storage, why) from the readiness level, the model's size and the replica bounds."""
    default = READINESS_DEFAULTS[dep.readiness]["cache_storage"]
    if default == "none" and dep.model.adapters:
        return "node-local", (
            f"auto: readiness {dep.readiness} keeps nothing warm, but the LoRA adapters are served from a cache "
            "(SGLang would fetch an adapter's default branch, not its locked commit)"
        )
    if default == "none":
        return default, f"auto: readiness {dep.readiness} keeps nothing warm"
    nodes = max(1, dep.max_replicas) * nodes_per_replica
    if weights_gib >= SHARE_FROM_GIB and nodes >= SHARE_FROM_NODES:
        repeat = f"{weights_gib:.0f} GiB on up to {nodes} nodes would be downloaded {nodes} times"
        for storage, addon in (("fsx-lustre", "fsx_csi"), ("efs", "efs_csi")):
            if getattr(addons, addon):
                return (
                    storage,
                    f"auto: readiness {dep.readiness}; {repeat}, so one shared copy is filled once",
                )
        return (
            default,
            f"auto: readiness {dep.readiness}; {repeat} (enable the fsx_csi or efs_csi add-on to "
            "fill one shared copy instead)",
        )
    return default, f"auto: readiness {dep.readiness}, {weights_gib:.0f} GiB on at most {nodes} node(s)"


def explain(dep: DeploymentSpec, reason: str = "") -> str:
    """Why the cache is what it is, for the plan; `reason` says how `auto` decided."""
    storage = dep.cache_storage
    what = {
        "none": "none: every replica downloads from the Hub when it starts",
        "node-local": f"node-local: weights verified on the GPU node's disk ({NODE_CACHE_PATH}), fetched once "
        "per node by the prefetch init container; replicas load them without the Hub",
        "efs": "efs: one EFS file system shared by every node; a prefetch Job fills it once per commit",
        "fsx-lustre": "fsx-lustre: one FSx for Lustre file system shared by every node, filled once per commit "
        "by a prefetch Job",
    }[storage]
    return f"{what} ({reason})" if reason else what
