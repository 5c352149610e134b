"""`cluster.create: true`: a VPC across two zones and an EKS cluster with encrypted secrets, control-plane logs,
API access entries, the EKS-managed add-ons (pod identity agent included) and a small system node group."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from sgldeploy.builders import network
from sgldeploy.spec import ClusterSpec


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def managed_policy(name: str) -> str:
    return f"arn:aws:iam::aws:policy/{name}"


@dataclass(frozen=True)
class EksClusterArgs:
    spec: ClusterSpec
    region: str
    node_role_name: str
    tags: dict[str, str] = field(default_factory=dict)


class EksCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    node_role: aws.iam.Role
    system_nodes: aws.eks.NodeGroup

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:platform:EksCluster", name, None, opts)
        spec, tags = args.spec, args.tags
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones(state="available", opts=pulumi.InvokeOptions(parent=self)).names
        if len(zones) < network.ZONES:
            raise pulumi.RunError(
                f"error: aws:region: {args.region} has {len(zones)} available zone(s), an EKS "
                f"cluster needs {network.ZONES}; choose another region"
            )

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=spec.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": spec.name},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags=tags,
            opts=child,
        )
        public: list[aws.ec2.Subnet] = []
        private: list[aws.ec2.Subnet] = []
        for subnet in network.subnets(spec.vpc_cidr):
            kind = "public" if subnet.public else "private"
            made = aws.ec2.Subnet(
                f"{name}-{kind}-{subnet.zone_index}",
                vpc_id=vpc.id,
                cidr_block=subnet.cidr,
                availability_zone=zones[subnet.zone_index],
                map_public_ip_on_launch=subnet.public,
                tags={
                    **tags,
                    **network.subnet_tags(spec.name, subnet.public),
                    "Name": f"{spec.name}-{kind}-{zones[subnet.zone_index]}",
                },
                opts=child,
            )
            (public if subnet.public else private).append(made)
        for i, subnet in enumerate(public):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}", subnet_id=subnet.id, route_table_id=public_routes.id, opts=child
            )
        for i, subnet in enumerate(private):
            # One NAT gateway per zone: a zone's nodes never lose the internet with another zone.
            address = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags=tags, opts=child)
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{i}",
                allocation_id=address.id,
                subnet_id=public[i].id,
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
            routes = aws.ec2.RouteTable(
                f"{name}-private-{i}",
                vpc_id=vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
                tags=tags,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
        self.vpc_id = vpc.id
        self.private_subnet_ids = [s.id for s in private]

        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"EKS secrets encryption for {spec.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=child,
        )
        cluster_role = aws.iam.Role(
            f"{name}-cluster-role", assume_role_policy=_trust("eks.amazonaws.com"), tags=tags, opts=child
        )
        attached = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=cluster_role.name,
            policy_arn=managed_policy("AmazonEKSClusterPolicy"),
            opts=child,
        )
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{spec.name}/cluster",
            retention_in_days=network.LOG_RETENTION_DAYS,
            tags=tags,
            opts=child,
        )
        self.cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=spec.name,
            version=spec.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config={
                "subnet_ids": [s.id for s in private + public],
                "endpoint_private_access": True,
                "endpoint_public_access": True,
            },
            encryption_config={"provider": {"key_arn": key.arn}, "resources": ["secrets"]},
            enabled_cluster_log_types=network.CLUSTER_LOG_TYPES,
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            tags=tags,
            # The role must hold its policy before EKS uses it, and the log group (with its retention) must exist
            # before EKS creates one without.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[attached, logs]),
        )

        self.node_role = aws.iam.Role(
            f"{name}-node-role",
            name=args.node_role_name,
            assume_role_policy=_trust("ec2.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        node_policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=self.node_role.name,
                policy_arn=managed_policy(policy),
                opts=child,
            )
            for policy in network.NODE_POLICIES
        ]
        # Nodes Karpenter launches join with this role; EKS creates the entries of managed node groups itself.
        aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=self.cluster.name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            tags=tags,
            opts=child,
        )
        addons = [
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=self.cluster.name,
                addon_name=addon,
                resolve_conflicts_on_create="OVERWRITE",
                configuration_values=network.EKS_ADDON_CONFIG.get(addon),
                tags=tags,
                opts=child,
            )
            for addon in network.EKS_ADDONS_BEFORE_NODES
        ]
        template = aws.ec2.LaunchTemplate(
            f"{name}-system-nodes",
            metadata_options=network.IMDSV2_ONLY,
            block_device_mappings=network.encrypted_root_volume(network.SYSTEM_NODE_DISK_GIB),
            tags=tags,
            opts=child,
        )
        self.system_nodes = aws.eks.NodeGroup(
            f"{name}-system-nodes",
            cluster_name=self.cluster.name,
            node_group_name="system",
            node_role_arn=self.node_role.arn,
            subnet_ids=self.private_subnet_ids,
            instance_types=[network.SYSTEM_NODE_INSTANCE],
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            scaling_config={
                "min_size": network.SYSTEM_NODES,
                "max_size": network.SYSTEM_NODES + 1,
                "desired_size": network.SYSTEM_NODES,
            },
            labels={"sgldeploy.io/role": "system"},
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            update_config={"max_unavailable": 1},
            tags=tags,
            # Nodes join only with the role's policies attached and pod networking (vpc-cni) in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*node_policies, *addons]),
        )
        for addon in network.EKS_ADDONS_AFTER_NODES:
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=self.cluster.name,
                addon_name=addon,
                resolve_conflicts_on_create="OVERWRITE",
                tags=tags,
                # Its pods need somewhere to run before EKS reports it healthy.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_nodes]),
            )
        self.register_outputs({"clusterName": self.cluster.name, "vpcId": self.vpc_id})
