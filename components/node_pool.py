"""A deployment's GPU nodes: a Karpenter NodePool and EC2NodeClass, or an EKS managed node group.

The specs come from sgldeploy/builders/node_pool.py, where the pool's taints and labels are defined together with the
pod scheduling that matches them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.platform import ClusterNetwork
from sgldeploy.builders import network, node_pool
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class GpuNodePoolArgs:
    spec: DeploymentSpec
    sizing: Sizing
    pool: str
    """Cluster-unique pool name (sgldeploy.builders.node_pool.pool_id), also the label and taint value."""
    provisioner: str
    """karpenter or managed-node-group (platform.node_provisioner)."""
    cluster_name: str
    network: ClusterNetwork
    node_role_name: str
    node_role_arn: pulumi.Input[str]
    tags: dict[str, str] = field(default_factory=dict)
    crds: list[Any] = field(default_factory=list)
    """Resources that install the Karpenter CRDs (its Helm release), which the custom resources wait for."""


class GpuNodePool(pulumi.ComponentResource):
    """A cluster placement group when a replica spans nodes, then a Karpenter EC2NodeClass and NodePool, or a
    launch template and an EKS managed node group (platform.node_provisioner)."""

    name: pulumi.Output[str]

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:nodes:GpuNodePool", name, None, opts)
        tags = {**args.tags, "sgldeploy.io/node-pool": args.pool}
        subnets = node_pool.pool_subnets(
            args.sizing, args.network.subnet_ids, kv_transfer=args.spec.serving_role is not None
        )
        placement_group = self._placement_group(name, args, tags)
        if args.provisioner == "karpenter":
            node_class = self._node_class(name, args, tags, subnets, placement_group)
            self.name = self._karpenter_node_pool(name, args, node_class)
        else:
            template = self._launch_template(name, args, tags, placement_group)
            self.name = self._managed_node_group(name, args, tags, subnets, template)
        self.register_outputs({"name": self.name})

    def _placement_group(
        self, name: str, args: GpuNodePoolArgs, tags: dict[str, str]
    ) -> aws.ec2.PlacementGroup | None:
        """The nodes of one replica talk NCCL to each other: keep them close on the network. None when a
        replica fits one node."""
        if not node_pool.multi_node(args.sizing):
            return None
        return aws.ec2.PlacementGroup(
            f"{name}-placement-group",
            name=args.pool,
            strategy="cluster",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _node_class(
        self,
        name: str,
        args: GpuNodePoolArgs,
        tags: dict[str, str],
        subnets: list[Any],
        placement_group: aws.ec2.PlacementGroup | None,
    ) -> k8s.apiextensions.CustomResource:
        """Karpenter's EC2NodeClass: how the pool's nodes launch (role, subnets, security group, AMI, disk)."""
        return k8s.apiextensions.CustomResource(
            f"{name}-node-class",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": args.pool},
            spec=node_pool.ec2_node_class_spec(
                args.spec,
                args.sizing,
                role=args.node_role_name,
                subnet_ids=subnets,
                security_group_ids=[args.network.security_group_id],
                tags=tags,
                placement_group=args.pool if placement_group else None,
            ),
            # Karpenter resolves the placement group by name when it launches a node.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.crds, *([placement_group] if placement_group else [])]
            ),
        )

    def _karpenter_node_pool(
        self, name: str, args: GpuNodePoolArgs, node_class: k8s.apiextensions.CustomResource
    ) -> pulumi.Output[str]:
        """Karpenter's NodePool: which instances it may launch, with the pool's labels and taints; returns its
        name."""
        pool = k8s.apiextensions.CustomResource(
            f"{name}-node-pool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata={"name": args.pool},
            spec=node_pool.node_pool_spec(args.spec, args.sizing, args.pool),
            # The NodePool names its EC2NodeClass; Karpenter launches nothing until that class is ready.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.crds, node_class]),
        )
        pool_name: pulumi.Output[str] = pool.metadata.apply(lambda m: m["name"])
        return pool_name

    def _launch_template(
        self,
        name: str,
        args: GpuNodePoolArgs,
        tags: dict[str, str],
        placement_group: aws.ec2.PlacementGroup | None,
    ) -> aws.ec2.LaunchTemplate:
        """How the managed node group's nodes launch: IMDSv2 only, an encrypted root volume, the placement
        group, the node-local cache's disk setup, and the capacity reservation."""
        user_data = node_pool.node_cache_user_data() if args.spec.cache_storage == "node-local" else None
        return aws.ec2.LaunchTemplate(
            f"{name}-launch-template",
            metadata_options=network.IMDSV2_ONLY,
            block_device_mappings=network.encrypted_root_volume(args.sizing.disk_gib),
            user_data=_base64(user_data) if user_data is not None else None,
            placement={"group_name": placement_group.name} if placement_group else None,
            **node_pool.launch_template_reservation(args.spec),
            tag_specifications=[{"resource_type": "instance", "tags": tags}],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _managed_node_group(
        self,
        name: str,
        args: GpuNodePoolArgs,
        tags: dict[str, str],
        subnets: list[Any],
        template: aws.ec2.LaunchTemplate,
    ) -> pulumi.Output[str]:
        """The EKS managed node group, from zero nodes up; returns its name."""
        dep, sizing = args.spec, args.sizing
        group = aws.eks.NodeGroup(
            f"{name}-node-group",
            cluster_name=args.cluster_name,
            node_group_name=args.pool,
            node_role_arn=args.node_role_arn,
            subnet_ids=subnets,
            instance_types=node_pool.instance_types(sizing),
            ami_type=node_pool.MANAGED_AMI_TYPE,
            capacity_type=node_pool.managed_capacity_type(dep),
            scaling_config={
                "min_size": 0,
                "max_size": max(1, node_pool.max_nodes(dep, sizing)),
                "desired_size": 0,
            },
            labels=node_pool.node_labels(args.pool, sizing),
            taints=node_pool.managed_taints(args.pool),
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            update_config={"max_unavailable": 1},
            tags={**tags, **node_pool.autoscaler_tags(args.cluster_name, args.pool, sizing)},
            # The Cluster Autoscaler owns the desired size once the group exists.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["scalingConfig.desiredSize"]),
        )
        group_name: pulumi.Output[str] = group.node_group_name
        return group_name


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
