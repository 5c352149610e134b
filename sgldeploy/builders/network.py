"""The VPC a created cluster gets: subnets carved from `cluster.vpc_cidr`, and the tags the AWS Load Balancer
Controller and Karpenter discover them by. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

ZONES = 2  # two availability zones: the fewest EKS accepts, and a zone outage leaves half the nodes
SYSTEM_NODE_INSTANCE = "m6i.large"  # the on-demand node group that runs controllers and add-ons (see cost.py)
SYSTEM_NODES = 2  # one per zone
SYSTEM_NODE_DISK_GIB = 50
CLUSTER_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
LOG_RETENTION_DAYS = 30
NODE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
)
"""AWS-managed policies every node role needs: join the cluster, pod networking, pull images, SSM access
instead of SSH."""
EKS_ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
EKS_ADDONS_AFTER_NODES = ("coredns",)  # a Deployment: it only becomes healthy once nodes exist
"""EKS-managed add-ons, at the default version EKS pairs with the cluster's Kubernetes version; the pod identity
agent is what gives the Helm add-ons their AWS roles."""
EKS_ADDON_CONFIG = {"vpc-cni": '{"enableNetworkPolicy": "true"}'}
"""Add-on settings (JSON): the VPC CNI enforces NetworkPolicies only with its network policy agent on."""


IMDSV2_ONLY = {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}
"""Launch template metadata options: IMDSv2 only, one hop, so pods cannot reach the node's credentials."""


def encrypted_root_volume(gib: int) -> list[dict[str, Any]]:
    """A launch template's block device mappings: an encrypted gp3 root volume deleted with the node."""
    return [
        {
            "device_name": "/dev/xvda",
            "ebs": {
                "volume_size": gib,
                "volume_type": "gp3",
                "encrypted": "true",
                "delete_on_termination": "true",
            },
        }
    ]


@dataclass(frozen=True)
class Subnet:
    zone_index: int
    cidr: str
    public: bool


def subnets(vpc_cidr: str, zones: int = ZONES) -> list[Subnet]:
    """Per zone a large private subnet (nodes and pods take an IP each) and a small public one (load balancers
    and NAT): the VPC is cut in 4 parts, private subnets take one part each, public ones share the last."""
    net = ipaddress.IPv4Network(vpc_cidr)
    quarters = list(net.subnets(prefixlen_diff=2))
    private = [Subnet(i, str(quarters[i]), False) for i in range(zones)]
    publics = list(quarters[3].subnets(prefixlen_diff=2))
    public = [Subnet(i, str(publics[i]), True) for i in range(zones)]
    return private + public


def subnet_tags(cluster: str, public: bool) -> dict[str, str]:
    """Load balancers go to public subnets (internet-facing) or private ones (internal); Karpenter finds the
    private ones."""
    tags = {f"kubernetes.io/cluster/{cluster}": "shared"}
    if public:
        tags["kubernetes.io/role/elb"] = "1"
    else:
        tags["kubernetes.io/role/internal-elb"] = "1"
        tags["karpenter.sh/discovery"] = cluster
    return tags
