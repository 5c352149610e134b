"""GPU node pools that fit each deployment's placement: Karpenter NodePool + EC2NodeClass, or an EKS managed
node group. Pure: the specs and arguments as data; components/node_pool.py declares them.

Every deployment gets its own pool. Its nodes carry two taints, `nvidia.com/gpu` (nothing without a GPU
toleration lands there) and `sgldeploy.io/node-pool=<pool>` (nothing but this deployment's pods), and the
label the deployment's pods select on, so a model always lands on nodes of its own shape and nothing else
takes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sgldeploy import catalog
from sgldeploy.builders import rollout
from sgldeploy.builders.gpu import GPU_PRESENT_LABEL, GPU_RESOURCE, GPU_TAINT, gpu_toleration
from sgldeploy.builders.weight_cache import NODE_CACHE_PATH
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec

POOL_LABEL = "sgldeploy.io/node-pool"
GPU_LABEL = "sgldeploy.io/gpu"
AMI_ALIAS = "al2023@v20260728"
"""EKS-optimised Amazon Linux 2023; Karpenter picks its NVIDIA variant (driver and container toolkit) for GPU
instance types. Pinned: `@latest` would replace every GPU node whenever AWS publishes an AMI. The release must
postdate the cluster's Kubernetes version: awslabs/amazon-eks-ami v20260728 publishes
amazon-eks-node-al2023-x86_64-nvidia-1.36-v20260728 (and the earlier versions EKS supports)."""
MANAGED_AMI_TYPE = "AL2023_x86_64_NVIDIA"
EXPIRE_AFTER = "720h"  # nodes are replaced within 30 days, so patches land even on always-busy pools
TERMINATION_GRACE = "2h"  # an expiring node waits this long for its serving pods to finish before draining
DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true"}
"""On serving pods: Karpenter never evicts them voluntarily (consolidation, drift); a node empties when the
autoscaler removes its replica, and expiry waits TERMINATION_GRACE."""

CAPACITY_TYPES = {
    "on-demand": ["on-demand"],
    "spot": ["spot"],
    "spot-fallback": ["spot", "on-demand"],
    "reserved": ["reserved"],
    "reserved-fallback": ["reserved", "on-demand"],
}
"""Karpenter launches the cheapest capacity type allowed, so spot-fallback means spot first, on-demand when
spot has none; reserved capacity (Karpenter's reservedCapacity feature, on by default in 1.14.1) is priced
near zero, so reserved-fallback fills the reservations first."""

_MAX_LABEL = 63


def pool_id(namespace: str, dep: DeploymentSpec) -> str:
    """Cluster-unique pool name and label value: `<namespace>-<deployment>`, hashed down to 63 characters."""
    name = f"{namespace}-{dep.name}"
    if len(name) <= _MAX_LABEL:
        return name
    return f"{name[: _MAX_LABEL - 9].rstrip('-')}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def pool_taint(pool: str) -> dict[str, str]:
    return {"key": POOL_LABEL, "value": pool, "effect": "NoSchedule"}


def node_labels(pool: str, sizing: Sizing) -> dict[str, str]:
    return {POOL_LABEL: pool, GPU_LABEL: sizing.placement.gpu_model, GPU_PRESENT_LABEL: "true"}


def pod_scheduling(pool: str) -> dict[str, Any]:
    """What a pod needs to land on the pool's nodes, and only there."""
    return {
        "nodeSelector": {POOL_LABEL: pool},
        "tolerations": [
            gpu_toleration(),
            {"key": POOL_LABEL, "operator": "Equal", "value": pool, "effect": "NoSchedule"},
        ],
    }


def instance_type_affinity(instance_types: list[str]) -> dict[str, Any]:
    """Pods land only on the placement's instance types (and their alternatives)."""
    term = {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": instance_types}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [term]}]
            }
        }
    }


def instance_types(sizing: Sizing) -> list[str]:
    """The placement's instance type and the alternatives of the same GPU and count that also fit."""
    return [sizing.placement.instance_type, *sizing.placement.alternatives]


def max_nodes(dep: DeploymentSpec, sizing: Sizing) -> int:
    """Nodes at max replicas, plus the surge a rollout adds."""
    first = dep.initial_replicas
    replicas = (
        dep.max_replicas
        + (dep.rollout.max_surge if dep.max_replicas else 0)
        + rollout.extra_replicas(dep, first)
        + (rollout.switch_surge(dep, first) if dep.max_replicas else 0)
    )
    return replicas * sizing.placement.nodes_per_replica


def gpu_limit(dep: DeploymentSpec, sizing: Sizing) -> int:
    per_node = sizing.placement.gpus_per_replica // sizing.placement.nodes_per_replica
    return max_nodes(dep, sizing) * per_node


def multi_node(sizing: Sizing) -> bool:
    return sizing.placement.nodes_per_replica > 1


def pool_subnets(sizing: Sizing, subnet_ids: Sequence[Any], kv_transfer: bool) -> list[Any]:
    """The subnets a pool's nodes launch in. A replica spanning nodes gets a cluster placement group, which
    lives in one Availability Zone: Auto Scaling refuses one with subnets in several zones ("You cannot specify
    multiple Availability Zones and a cluster placement group", CreateAutoScalingGroup PlacementGroup,
    https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html), and Karpenter
    (1.14, pkg/providers/instancetype/offering) offers every zone of its subnets whatever the group, so nodes
    of one replica could land in two zones. One subnet is one zone: the first of the cluster's. The two roles of
    a disaggregated deployment (`kv_transfer`) take the same one: EFA's OS-bypass traffic does not leave its
    subnet (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/efa.html, "EFA limitations"). Ids may be
    Pulumi outputs (a created VPC)."""
    return list(subnet_ids[:1]) if multi_node(sizing) or kv_transfer else list(subnet_ids)


EFA_RESOURCE = "vpc.amazonaws.com/efa"


def efa_interfaces(sizing: Sizing, kv_transfer: bool) -> int:
    """EFA interfaces each pod requests, for NCCL across the nodes of a replica or (`kv_transfer`) a role of a
    disaggregated deployment sending KV caches to the other: what every allowed instance type has (one pod per
    node); 0 for other one-node replicas and for types without EFA."""
    if not (multi_node(sizing) or kv_transfer):
        return 0
    known = catalog.instance_types()
    return min((known[t].efa_interfaces for t in instance_types(sizing) if t in known), default=0)


# ---- Karpenter ---------------------------------------------------------------------------------------


def node_pool_spec(dep: DeploymentSpec, sizing: Sizing, pool: str) -> dict[str, Any]:
    return {
        "template": {
            "metadata": {"labels": node_labels(pool, sizing)},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": pool},
                "requirements": [
                    {
                        "key": "node.kubernetes.io/instance-type",
                        "operator": "In",
                        "values": instance_types(sizing),
                    },
                    {
                        "key": "karpenter.sh/capacity-type",
                        "operator": "In",
                        "values": CAPACITY_TYPES[dep.resources.capacity],
                    },
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                ],
                "taints": [GPU_TAINT, pool_taint(pool)],
                "expireAfter": EXPIRE_AFTER,
                "terminationGracePeriod": TERMINATION_GRACE,
            },
        },
        # Never more GPUs than max replicas (and a rollout's surge) need: a runaway scale-up stops here.
        "limits": {GPU_RESOURCE: str(gpu_limit(dep, sizing))},
        "disruption": {
            # Only empty nodes are consolidated: moving a loaded model costs minutes of GPU time.
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": f"{max(60, dep.scaling.scale_down_delay_seconds)}s",
            "budgets": [{"nodes": "1"}],  # drift and expiry replace one node at a time
        },
    }


NODE_CACHE_SCRIPT = f"""#!/bin/bash
# sgldeploy: the instance-store NVMe disks (RAID0 when several) hold the weight cache at {NODE_CACHE_PATH}.
set -euo pipefail
mkdir -p {NODE_CACHE_PATH}
mountpoint -q {NODE_CACHE_PATH} && exit 0
mapfile -t disks < <(for d in /dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*; do
  [ -e "$d" ] && [[ "$d" != *-part* ]] && readlink -f "$d"; done | sort -u)
[ "${{#disks[@]}}" -eq 0 ] && exit 0  # no instance store: the cache stays on the root volume
dev="${{disks[0]}}"
if [ "${{#disks[@]}}" -gt 1 ]; then
  mdadm --create /dev/md/sgldeploy-cache --level=0 --raid-devices="${{#disks[@]}}" "${{disks[@]}}" --run
  dev=/dev/md/sgldeploy-cache
fi
mkfs.xfs -f "$dev"
mount -o noatime "$dev" {NODE_CACHE_PATH}
"""

USER_DATA_BOUNDARY = "//sgldeploy//"


def node_cache_user_data() -> str:
    """MIME multi-part user data (what AL2023's nodeadm and Karpenter merge into) running NODE_CACHE_SCRIPT."""
    return (
        f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{USER_DATA_BOUNDARY}"\n\n'
        f'--{USER_DATA_BOUNDARY}\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n'
        f"{NODE_CACHE_SCRIPT}\n--{USER_DATA_BOUNDARY}--\n"
    )


def ec2_node_class_spec(
    dep: DeploymentSpec,
    sizing: Sizing,
    *,
    role: str,
    subnet_ids: Sequence[Any],  # ids, or Pulumi outputs the engine resolves inside the spec
    security_group_ids: Sequence[Any],
    tags: dict[str, str],
    placement_group: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "amiSelectorTerms": [{"alias": AMI_ALIAS}],
        "role": role,
        "subnetSelectorTerms": [{"id": s} for s in subnet_ids],
        "securityGroupSelectorTerms": [{"id": g} for g in security_group_ids],
        # IMDSv2 only, one hop: pods cannot reach the node's credentials (they use pod identity).
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,
            "httpTokens": "required",
        },
        # The root volume holds the images (the SGLang image is ~9 GB) and, without NVMe, the cache.
        "blockDeviceMappings": [
            {
                "deviceName": "/dev/xvda",
                "rootVolume": True,
                "ebs": {
                    "volumeSize": f"{sizing.disk_gib}Gi",
                    "volumeType": "gp3",
                    "encrypted": True,
                    "deleteOnTermination": True,
                },
            }
        ],
        "tags": dict(tags),
    }
    if dep.cache_storage == "node-local":
        spec["userData"] = node_cache_user_data()
    if dep.resources.reservation is not None and dep.resources.capacity.startswith("reserved"):
        spec["capacityReservationSelectorTerms"] = reservation_terms(dep)
    if placement_group:
        spec["placementGroupSelector"] = {"name": placement_group}
    return spec


# ---- EKS managed node groups ------------------------------------------------------------------------


def reservation_terms(dep: DeploymentSpec) -> list[dict[str, Any]]:
    """Karpenter's capacityReservationSelectorTerms: one per id (an id stands alone in its term), and one of
    the tags; the terms are ORed."""
    r = dep.resources.reservation
    assert r is not None
    return [{"id": rid} for rid in r.ids] + ([{"tags": dict(r.tags)}] if r.tags else [])


def managed_capacity_type(dep: DeploymentSpec) -> str:
    """A managed node group has one capacity type: spot-fallback runs on demand (Karpenter can mix them); a
    Capacity Block is its own type."""
    r = dep.resources.reservation
    if dep.resources.capacity == "reserved" and r is not None and r.capacity_block:
        return "CAPACITY_BLOCK"
    return "SPOT" if dep.resources.capacity == "spot" else "ON_DEMAND"


def launch_template_reservation(dep: DeploymentSpec) -> dict[str, Any]:
    """The launch template's arguments that put a managed node group's instances into its one reservation
    (validation allows exactly one id there): targeted, and a Capacity Block's market."""
    r = dep.resources.reservation
    if dep.resources.capacity != "reserved" or r is None:
        return {}
    out: dict[str, Any] = {
        "capacity_reservation_specification": {
            "capacity_reservation_target": {"capacity_reservation_id": r.ids[0]}
        }
    }
    if r.capacity_block:
        out["instance_market_options"] = {"market_type": "capacity-block"}
    return out


def autoscaler_tags(cluster: str, pool: str, sizing: Sizing) -> dict[str, str]:
    """What the Cluster Autoscaler reads to scale the group from zero: it must know the labels and taints its
    nodes will have before any exists."""
    per_node = sizing.placement.gpus_per_replica // sizing.placement.nodes_per_replica
    prefix = "k8s.io/cluster-autoscaler/node-template"
    return {
        "k8s.io/cluster-autoscaler/enabled": "true",
        f"k8s.io/cluster-autoscaler/{cluster}": "owned",
        f"{prefix}/label/{POOL_LABEL}": pool,
        f"{prefix}/label/{GPU_LABEL}": sizing.placement.gpu_model,
        **{
            f"{prefix}/taint/{t['key']}": f"{t['value']}:{t['effect']}" for t in (GPU_TAINT, pool_taint(pool))
        },
        f"{prefix}/resources/{GPU_RESOURCE}": str(per_node),
    }


def managed_taints(pool: str) -> list[dict[str, str]]:
    return [
        {"key": t["key"], "value": t["value"], "effect": "NO_SCHEDULE"} for t in (GPU_TAINT, pool_taint(pool))
    ]
