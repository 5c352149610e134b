"""The SGLang server's Kubernetes objects as plain data (no Pulumi): labels, pod template, Service, PDB.

Components wrap these in Pulumi resources; tests check them directly and, once recorded, against the
Kubernetes schemas. Field names are the Kubernetes API's (camelCase), as in any manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sgldeploy.builders import (
    disaggregation,
    hierarchical_cache,
    node_pool,
    pod_security,
    rollout,
    sglang_args,
    weight_cache,
)
from sgldeploy.builders.gpu import GPU_RESOURCE, gpu_toleration
from sgldeploy.builders.rollout import Track
from sgldeploy.builders.sglang_args import API_KEY_ENV, SERVER_PORT, launch_command
from sgldeploy.builders.weight_cache import CacheLayout
from sgldeploy.models.lock import LockedModel
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec

SERVICE_PORT = 80  # the port of the model's Service and of its router's
TERMINATION_GRACE_SECONDS = 120  # a stopped or moved pod lets its in-flight generations finish
PROBE_PERIOD_SECONDS = 10
DIST_INIT_PORT = 20000  # torch.distributed rendezvous on the leader of a multi-node replica
ROLE_LABEL = "sgldeploy.io/role"


@dataclass(frozen=True)
class SecretRefs:
    """Names of the Kubernetes Secrets the pod reads; their values never enter the pod spec."""

    hf_token: str | None  # Secret with key HF_TOKEN, or None for public models without a token
    api_key: str | None  # Secret with key API_KEY, or None when endpoint.auth is none


def labels(dep: DeploymentSpec, component: str = "server") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "sglang",
        "app.kubernetes.io/instance": dep.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "sgldeploy",
    }


def selector(dep: DeploymentSpec) -> dict[str, str]:
    """The immutable subset of labels the Deployment, PDB and Service select on."""
    return server_pods(dep.name)


def server_pods(deployment: str) -> dict[str, str]:
    """The serving pods of the deployment named `deployment`."""
    return {"app.kubernetes.io/instance": deployment, "app.kubernetes.io/component": "server"}


def service_selector(dep: DeploymentSpec, multi_node: bool) -> dict[str, str]:
    """Traffic goes to single pods, or to the leader of each multi-node group (only it serves HTTP)."""
    return {**selector(dep), ROLE_LABEL: "leader"} if multi_node else selector(dep)


def probes(sizing: Sizing) -> dict[str, dict[str, Any]]:
    """Startup budget from the model size; cheap readiness; liveness with room for SGLang's 20 s `/health`.

    The port opens only after weights load and CUDA graphs are captured, so the startup probe's
    budget (failureThreshold × period) must cover the whole cold start.
    """
    return {
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(sizing.startup_budget_seconds / PROBE_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # SGLang 0.5.23's /health runs a one-token generation (SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION, on by
        # default) and answers 503 when nothing comes back within SGLANG_HEALTH_CHECK_TIMEOUT (20 s): a shorter
        # probe timeout would kill pods that are merely busy.
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 30,
            "timeoutSeconds": 30,
            "failureThreshold": 5,
        },
    }


def token_env(secrets: SecretRefs) -> dict[str, Any] | None:
    if not secrets.hf_token:
        return None
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secrets.hf_token, "key": "HF_TOKEN"}}}


def api_key_env(secret: str) -> dict[str, Any]:
    """The API key as `SGLANG_API_KEY`, read from the deployment's Secret by reference."""
    return {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "API_KEY"}}}


def env(dep: DeploymentSpec, secrets: SecretRefs, cache: CacheLayout) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = list(cache.server_env)
    token = token_env(secrets) if cache.hub_on_start else None  # a local cache never needs the token
    if token:
        out.append(token)
    if secrets.api_key:
        out.append(api_key_env(secrets.api_key))
    out += sglang_args.loader_env(dep)
    out += [{"name": k, "value": v} for k, v in sorted(dep.env.items())]
    return out


def pod_template(
    dep: DeploymentSpec,
    model: LockedModel,
    sizing: Sizing,
    secrets: SecretRefs,
    instance_types: list[str],
    role: str = "server",
    pool: str | None = None,
    efa: int = 0,
) -> dict[str, Any]:
    """The pod of a one-node replica (`server`), or of the `leader` or a `worker` of a multi-node one; on the
    deployment's own node pool when `pool` names it, with `efa` Elastic Fabric Adapters for NCCL."""
    cache = weight_cache.layout(dep, model, sizing.disk_gib, token_env(secrets), sizing.adapters)
    launch = launch_command(
        dep,
        model,
        sizing,
        api_key=secrets.api_key is not None,
        model_path=None if cache.hub_on_start else cache.model_path,
    )
    gpus = sizing.placement.gpus_per_replica // sizing.placement.nodes_per_replica
    memory = f"{int(sizing.memory_request_gib)}Gi"
    command, args = launch.command, launch.args
    extra_env: list[dict[str, Any]] = []
    if weight_cache.serves_through_entrypoint(dep):
        # A second guard after the init container: the image's entrypoint refuses a cache without .complete.
        command = [weight_cache.SERVE_ENTRYPOINT, *command]
        extra_env.append({"name": weight_cache.MODEL_DIR_ENV, "value": cache.model_path})
    if role != "server":
        # LeaderWorkerSet injects the leader's address and the group size; the index comes from the pod label.
        args = args + [
            "--dist-init-addr",
            f"$(LWS_LEADER_ADDRESS):{DIST_INIT_PORT}",
            "--nnodes",
            "$(LWS_GROUP_SIZE)",
            "--node-rank",
            "$(LWS_WORKER_INDEX)",
        ]
        extra_env += [
            {
                "name": "LWS_WORKER_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"}
                },
            }
        ]
    tiers = sizing.host_cache
    if tiers:
        extra_env += hierarchical_cache.env(tiers)
    pd = dep.serving_role
    if pd:
        extra_env += disaggregation.role_env(pd)
    fabric = {node_pool.EFA_RESOURCE: str(efa)} if efa else {}
    if efa:  # NCCL's libfabric plugin (aws-ofi-nccl, when the image has it) then runs over EFA, not TCP
        extra_env += [{"name": "FI_PROVIDER", "value": "efa"}]
    container = {
        "name": "sglang",
        "image": dep.serving.image,
        "command": command,
        "args": args,
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            *(disaggregation.container_ports(pd) if pd else []),
        ],
        "env": env(dep, secrets, cache) + extra_env,
        "resources": {
            "requests": {"cpu": f"{sizing.cpu:g}", "memory": memory, GPU_RESOURCE: str(gpus), **fabric},
            # No CPU limit: throttling the tokenizer and scheduler threads only adds latency.
            "limits": {"memory": memory, GPU_RESOURCE: str(gpus), **fabric},
        },
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            *cache.server_mounts,
            *(hierarchical_cache.mounts(tiers) if tiers else []),
        ],
        # EFA's registered memory must stay locked in RAM: the one capability a replica over EFA needs.
        "securityContext": pod_security.container(*(["IPC_LOCK"] if efa else [])),
        # Ranks ≥ 1 of a multi-node replica serve no HTTP at all: only the leader and single pods are probed.
        **(probes(sizing) if role != "worker" else {}),
    }
    pod_labels = {**labels(dep), **({ROLE_LABEL: role} if role != "server" else {})}
    return {
        "metadata": {
            "labels": pod_labels,
            "annotations": {
                "sgldeploy.io/model": f"{dep.model.repo}@{model.sha}",
                **(node_pool.DO_NOT_DISRUPT if pool else {}),
                **(disaggregation.pod_annotations(pd) if pd and role != "worker" else {}),
            },
        },
        "spec": {
            # The prefetch init container exits non-zero unless the cache is complete and verified, so the
            # server never starts on a partial one.
            **({"initContainers": cache.init_containers} if cache.init_containers else {}),
            "containers": [container],
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            **pod_security.without_api_token(),
            **(node_pool.pod_scheduling(pool) if pool else {"tolerations": [gpu_toleration()]}),
            "affinity": {
                **node_pool.instance_type_affinity(instance_types),
                **(disaggregation.peer_anti_affinity(pd) if pd else {}),
            },
            "volumes": [
                # NCCL and the tokenizer workers use /dev/shm; Docker's 64 MB default is too small.
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{sizing.shm_gib}Gi"}},
                *cache.volumes,
                *(hierarchical_cache.volumes(tiers) if tiers else []),
            ],
        },
    }


def surge_and_unavailable(dep: DeploymentSpec) -> dict[str, int]:
    """`rollout.max_surge` and `max_unavailable` as a Deployment's and a LeaderWorkerSet's rolling update take
    them (replicas, or whole groups for a LeaderWorkerSet)."""
    return {"maxSurge": dep.rollout.max_surge, "maxUnavailable": dep.rollout.max_unavailable}


def deployment_spec(
    dep: DeploymentSpec,
    model: LockedModel,
    sizing: Sizing,
    secrets: SecretRefs,
    instance_types: list[str],
    pool: str | None = None,
    track: Track | None = None,
    efa: int = 0,
) -> dict[str, Any]:
    """One track's Deployment (sgldeploy.builders.rollout): `model` already carries the track's commit."""
    track = track or rollout.tracks(dep, model.sha, dep.initial_replicas)[0]
    template = pod_template(dep, model, sizing, secrets, instance_types, pool=pool, efa=efa)
    template["metadata"]["labels"].update(track.labels)
    return {
        "replicas": dep.initial_replicas if track.replicas is None else track.replicas,
        "selector": {"matchLabels": {**selector(dep), **track.labels}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": surge_and_unavailable(dep)},
        # A rollout not ready within a cold node, a first download and the startup budget is reported failed.
        "progressDeadlineSeconds": sizing.rollout_deadline_seconds,
        "template": template,
    }


def leader_worker_set_spec(
    dep: DeploymentSpec,
    model: LockedModel,
    sizing: Sizing,
    secrets: SecretRefs,
    instance_types: list[str],
    pool: str | None = None,
    efa: int = 0,
) -> dict[str, Any]:
    """One replica spread over `nodes_per_replica` nodes: a leader (rank 0, serves HTTP) and workers."""
    return {
        "replicas": dep.initial_replicas,
        "startupPolicy": "LeaderCreated",
        "rolloutStrategy": {
            "type": "RollingUpdate",
            "rollingUpdateConfiguration": surge_and_unavailable(dep),
        },
        "leaderWorkerTemplate": {
            "size": sizing.placement.nodes_per_replica,
            # A failed rank leaves the others hung in NCCL: restart the whole group together.
            "restartPolicy": "RecreateGroupOnPodRestart",
            "leaderTemplate": pod_template(
                dep, model, sizing, secrets, instance_types, role="leader", pool=pool, efa=efa
            ),
            "workerTemplate": pod_template(
                dep, model, sizing, secrets, instance_types, role="worker", pool=pool, efa=efa
            ),
        },
    }


def service_spec(dep: DeploymentSpec, multi_node: bool = False, track: Track | None = None) -> dict[str, Any]:
    """The ClusterIP Service of the deployment's active track (or of its canary)."""
    return {
        "type": "ClusterIP",
        "selector": {**service_selector(dep, multi_node), **(track.labels if track else {})},
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
    }


def disruption_budget_spec(dep: DeploymentSpec) -> dict[str, Any]:
    """always-ready keeps its minimum through node drains; the others allow one replica at a time."""
    budget: dict[str, Any] = {
        "selector": {"matchLabels": selector(dep)},
        # A crash-looping pod must not block node drains.
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    if dep.readiness == "always-ready" and dep.min_replicas > 0:
        budget["minAvailable"] = dep.min_replicas
    else:
        budget["maxUnavailable"] = 1
    return budget
