"""`cluster.create: true`: a VPC across two zones and an EKS cluster with encrypted secrets, control-plane logs,
API access entries, the EKS-managed add-ons (pod identity agent included) and a small system node group."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    """The VPC (subnets, internet and NAT gateways, routes), the EKS cluster (its role, secrets key and log
    group), the node role with its access entry, the EKS-managed add-ons and the system node group."""

    cluster: aws.eks.Cluster
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    node_role: aws.iam.Role
    system_nodes: aws.eks.NodeGroup

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:platform:EksCluster", name, None, opts)
        zones = self._zones(args)
        vpc = self._vpc(name, args)
        gateway = self._internet_gateway(name, args, vpc)
        public, private = self._subnets(name, args, vpc, zones)
        self._public_routes(name, args, vpc, gateway, public)
        self._private_routes(name, args, vpc, gateway, public, private)
        self.vpc_id = vpc.id
        self.private_subnet_ids = [s.id for s in private]
        cluster_role = self._cluster_role(name, args)
        key = self._secrets_key(name, args)
        logs = self._log_group(name, args)
        self.cluster = self._cluster(name, args, cluster_role, key, logs, [*private, *public])
        self.node_role, node_policies = self._node_role(name, args)
        self._node_access_entry(name, args)
        networking = self._eks_addons(name, args, network.EKS_ADDONS_BEFORE_NODES)
        self.system_nodes = self._system_nodes(name, args, [*node_policies, *networking])
        # Their pods need somewhere to run before EKS reports them healthy.
        self._eks_addons(name, args, network.EKS_ADDONS_AFTER_NODES, after=[self.system_nodes])
        self.register_outputs({"clusterName": self.cluster.name, "vpcId": self.vpc_id})

    def _zones(self, args: EksClusterArgs) -> list[str]:
        """The region's available zones; an error line when it has fewer than the cluster spans."""
        zones = aws.get_availability_zones(state="available", opts=pulumi.InvokeOptions(parent=self)).names
        if len(zones) < network.ZONES:
            raise pulumi.RunError(
                f"error: aws:region: {args.region} has {len(zones)} available zone(s), an EKS "
                f"cluster needs {network.ZONES}; choose another region"
            )
        return list(zones)

    def _vpc(self, name: str, args: EksClusterArgs) -> aws.ec2.Vpc:
        return aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.spec.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**args.tags, "Name": args.spec.name},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _internet_gateway(self, name: str, args: EksClusterArgs, vpc: aws.ec2.Vpc) -> aws.ec2.InternetGateway:
        return aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=args.tags, opts=pulumi.ResourceOptions(parent=self)
        )

    def _subnets(
        self, name: str, args: EksClusterArgs, vpc: aws.ec2.Vpc, zones: list[str]
    ) -> tuple[list[aws.ec2.Subnet], list[aws.ec2.Subnet]]:
        """A public and a private subnet in each zone (sgldeploy.builders.network.subnets): (public, private)."""
        spec = args.spec
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
                    **args.tags,
                    **network.subnet_tags(spec.name, subnet.public),
                    "Name": f"{spec.name}-{kind}-{zones[subnet.zone_index]}",
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            (public if subnet.public else private).append(made)
        return public, private

    def _public_routes(
        self,
        name: str,
        args: EksClusterArgs,
        vpc: aws.ec2.Vpc,
        gateway: aws.ec2.InternetGateway,
        public: list[aws.ec2.Subnet],
    ) -> aws.ec2.RouteTable:
        """One route table for the public subnets: the internet through the internet gateway."""
        child = pulumi.ResourceOptions(parent=self)
        routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags=args.tags,
            opts=child,
        )
        for i, subnet in enumerate(public):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
        return routes

    def _private_routes(
        self,
        name: str,
        args: EksClusterArgs,
        vpc: aws.ec2.Vpc,
        gateway: aws.ec2.InternetGateway,
        public: list[aws.ec2.Subnet],
        private: list[aws.ec2.Subnet],
    ) -> list[aws.ec2.NatGateway]:
        """One NAT gateway per zone: a zone's nodes never lose the internet with another zone."""
        child = pulumi.ResourceOptions(parent=self)
        gateways = []
        for i, subnet in enumerate(private):
            address = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags=args.tags, opts=child)
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{i}",
                allocation_id=address.id,
                subnet_id=public[i].id,
                tags=args.tags,
                # A NAT gateway reaches the internet through the VPC's internet gateway.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
            routes = aws.ec2.RouteTable(
                f"{name}-private-{i}",
                vpc_id=vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
                tags=args.tags,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
            gateways.append(nat)
        return gateways

    def _cluster_role(self, name: str, args: EksClusterArgs) -> _AttachedRole:
        """The role EKS assumes, with the managed policy it needs."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-cluster-role", assume_role_policy=_trust("eks.amazonaws.com"), tags=args.tags, opts=child
        )
        attached = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=role.name,
            policy_arn=managed_policy("AmazonEKSClusterPolicy"),
            opts=child,
        )
        return _AttachedRole(role, attached)

    def _secrets_key(self, name: str, args: EksClusterArgs) -> aws.kms.Key:
        """The KMS key EKS encrypts Kubernetes Secrets with."""
        return aws.kms.Key(
            f"{name}-secrets-key",
            description=f"EKS secrets encryption for {args.spec.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _log_group(self, name: str, args: EksClusterArgs) -> aws.cloudwatch.LogGroup:
        """The control plane's log group, at the name EKS writes to, with a retention."""
        return aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{args.spec.name}/cluster",
            retention_in_days=network.LOG_RETENTION_DAYS,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _cluster(
        self,
        name: str,
        args: EksClusterArgs,
        role: _AttachedRole,
        key: aws.kms.Key,
        logs: aws.cloudwatch.LogGroup,
        subnets: list[aws.ec2.Subnet],
    ) -> aws.eks.Cluster:
        """The control plane, across the VPC's subnets."""
        spec = args.spec
        return aws.eks.Cluster(
            f"{name}-eks",
            name=spec.name,
            version=spec.kubernetes_version,
            role_arn=role.role.arn,
            vpc_config={
                "subnet_ids": [s.id for s in subnets],
                "endpoint_private_access": True,
                "endpoint_public_access": True,
            },
            encryption_config={"provider": {"key_arn": key.arn}, "resources": ["secrets"]},
            enabled_cluster_log_types=network.CLUSTER_LOG_TYPES,
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            tags=args.tags,
            # The role must hold its policy before EKS uses it, and the log group (with its retention) must exist
            # before EKS creates one without.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role.policy, logs]),
        )

    def _node_role(
        self, name: str, args: EksClusterArgs
    ) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
        """The role every GPU and system node assumes, with the managed policies nodes need."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-node-role",
            name=args.node_role_name,
            assume_role_policy=_trust("ec2.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}", role=role.name, policy_arn=managed_policy(policy), opts=child
            )
            for policy in network.NODE_POLICIES
        ]
        return role, policies

    def _node_access_entry(self, name: str, args: EksClusterArgs) -> aws.eks.AccessEntry:
        # Nodes Karpenter launches join with this role; EKS creates the entries of managed node groups itself.
        return aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=self.cluster.name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _eks_addons(
        self, name: str, args: EksClusterArgs, addons: Sequence[str], after: Sequence[pulumi.Resource] = ()
    ) -> list[aws.eks.Addon]:
        """EKS-managed add-ons by name, with their configuration (sgldeploy.builders.network.EKS_ADDON_CONFIG)."""
        return [
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=self.cluster.name,
                addon_name=addon,
                resolve_conflicts_on_create="OVERWRITE",
                configuration_values=network.EKS_ADDON_CONFIG.get(addon),
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
            )
            for addon in addons
        ]

    def _system_nodes(
        self, name: str, args: EksClusterArgs, prerequisites: list[pulumi.Resource]
    ) -> aws.eks.NodeGroup:
        """A small on-demand node group for the add-ons' pods, launched from an IMDSv2-only template."""
        template = aws.ec2.LaunchTemplate(
            f"{name}-system-nodes",
            metadata_options=network.IMDSV2_ONLY,
            block_device_mappings=network.encrypted_root_volume(network.SYSTEM_NODE_DISK_GIB),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return aws.eks.NodeGroup(
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
            tags=args.tags,
            # Nodes join only with the role's policies attached and pod networking (vpc-cni) in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=prerequisites),
        )


@dataclass(frozen=True)
class _AttachedRole:
    role: aws.iam.Role
    policy: aws.iam.RolePolicyAttachment
    """The attachment that gives the role its permissions: what uses the role waits for it."""
