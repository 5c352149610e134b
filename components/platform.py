"""The cluster every deployment runs on, the Kubernetes provider that reaches it, the namespace the deployments
share and the cluster add-ons.

`cluster.create: true` declares the VPC and EKS cluster (EksCluster, components/cluster.py).
`cluster.create: false` uses an existing EKS cluster by name: nothing about the cluster is created or
changed, only read (`aws.eks.get_cluster`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.addons import ClusterAddons, ClusterAddonsArgs
from components.cluster import EksCluster, EksClusterArgs
from sgldeploy.builders.addons import ClusterFacts
from sgldeploy.spec import PlatformSpec, aws_text


@dataclass(frozen=True)
class PlatformArgs:
    spec: PlatformSpec
    region: str
    labels: dict[str, str]
    node_cache: bool = False
    """Some deployment caches weights on its nodes (hostPath), which the baseline pod security level forbids."""
    facts: dict[str, Any] | None = None
    """Environment, budget and the platform's own cost (sgldeploy.policy.facts), for policies to read."""


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token`, so no long-lived credential is stored."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": [
                "eks",
                "get-token",
                "--cluster-name",
                cluster_name,
                "--region",
                region,
                "--output",
                "json",
            ],
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": cluster_name,
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "users": [{"name": cluster_name, "user": user}],
        }
    )


def _field(result: Any, name: str) -> Any:
    """A field of an invoke result: typed output objects and plain maps (as mocks return them) alike."""
    if hasattr(result, name):
        return getattr(result, name)
    camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    return result.get(name, result.get(camel))


@dataclass(frozen=True)
class ClusterNetwork:
    """Plain values for an existing cluster; outputs of the resources for a created one."""

    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]  # the cluster's subnets, where nodes run
    security_group_id: pulumi.Input[str]  # the cluster security group every node carries
    vpc_cidr: pulumi.Input[str]  # where load balancers send from, for NetworkPolicies


class Platform(pulumi.ComponentResource):
    """The EKS cluster (an EksCluster, or an existing one read by name), a server-side-apply Kubernetes provider,
    the namespace and the add-ons (ClusterAddons)."""

    provider: k8s.Provider
    """The Kubernetes provider every Kubernetes resource of the stack is created with."""
    namespace: pulumi.Output[str]
    """Namespace of all deployments."""
    cluster_name: pulumi.Output[str]
    network: ClusterNetwork
    node_role_name: str
    """IAM role the GPU nodes assume (EC2NodeClass `role`, managed node groups)."""
    node_role_arn: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """Secret: authenticates with `aws eks get-token`, so it holds no credential, but names the endpoint."""

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        # The facts are the component's inputs, so CrossGuard policies and the offline plan read the same values.
        super().__init__("sgldeploy:platform:Platform", name, args.facts, opts)
        spec = args.spec
        self.node_role_name = spec.node_role or aws_text.default_node_role(spec.cluster.name)
        account = aws.get_caller_identity(opts=pulumi.InvokeOptions(parent=self)).account_id
        cluster = (
            self._created_cluster(name, args)
            if spec.cluster.create
            else self._existing_cluster(args, account)
        )
        self.cluster_name, self.network, self.node_role_arn = (
            cluster.name,
            cluster.network,
            cluster.node_role_arn,
        )
        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig)
        self.provider = self._kubernetes_provider(name)
        self.namespace = self._namespace(name, args)
        self.addons = self._addons(name, args, account, cluster.addons_after)
        self.register_outputs(
            {**(args.facts or {}), "clusterName": self.cluster_name, "namespace": self.namespace}
        )

    def _created_cluster(self, name: str, args: PlatformArgs) -> _Cluster:
        """`cluster.create: true`: the VPC and EKS cluster of EksCluster."""
        eks = EksCluster(
            f"{name}-cluster",
            EksClusterArgs(
                spec=args.spec.cluster,
                region=args.region,
                node_role_name=self.node_role_name,
                tags=args.spec.tags,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        cluster = eks.cluster
        return _Cluster(
            name=cluster.name,
            network=ClusterNetwork(
                vpc_id=eks.vpc_id,
                subnet_ids=eks.private_subnet_ids,
                security_group_id=cluster.vpc_config.cluster_security_group_id,
                vpc_cidr=args.spec.cluster.vpc_cidr,
            ),
            kubeconfig=pulumi.Output.all(
                cluster.name, cluster.endpoint, cluster.certificate_authority.data
            ).apply(lambda v: kubeconfig(v[0], v[1], v[2], args.region)),
            node_role_arn=eks.node_role.arn,
            addons_after=[eks.system_nodes],  # add-on pods need nodes to run on
        )

    def _existing_cluster(self, args: PlatformArgs, account: str) -> _Cluster:
        """`cluster.create: false`: the cluster read by name, as plain values (the network facts decide how many
        mount targets a shared cache gets)."""
        cluster = aws.eks.get_cluster(name=args.spec.cluster.name, opts=pulumi.InvokeOptions(parent=self))
        vpc = cluster.vpc_config
        return _Cluster(
            name=pulumi.Output.from_input(cluster.name),
            network=ClusterNetwork(
                vpc_id=_field(vpc, "vpc_id"),
                subnet_ids=list(_field(vpc, "subnet_ids")),
                security_group_id=_field(vpc, "cluster_security_group_id"),
                vpc_cidr=aws.ec2.get_vpc(
                    id=_field(vpc, "vpc_id"), opts=pulumi.InvokeOptions(parent=self)
                ).cidr_block,
            ),
            kubeconfig=kubeconfig(
                cluster.name,
                cluster.endpoint,
                _field(cluster.certificate_authorities[0], "data"),
                args.region,
            ),
            node_role_arn=pulumi.Output.from_input(f"arn:aws:iam::{account}:role/{self.node_role_name}"),
            addons_after=[],
        )

    def _kubernetes_provider(self, name: str) -> k8s.Provider:
        return k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _namespace(self, name: str, args: PlatformArgs) -> pulumi.Output[str]:
        # Baseline pod security, unless a node-local weight cache needs its hostPath; the warnings stay on.
        enforce = "privileged" if args.node_cache else "baseline"
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": args.spec.namespace,
                "labels": {
                    **args.labels,
                    "pod-security.kubernetes.io/enforce": enforce,
                    "pod-security.kubernetes.io/warn": "baseline",
                    "pod-security.kubernetes.io/audit": "baseline",
                },
            },
            # The namespace name is fixed by the spec; a rename must delete the old one first.
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, delete_before_replace=True),
        )
        namespace_name: pulumi.Output[str] = namespace.metadata.apply(lambda m: m["name"])
        return namespace_name

    def _addons(
        self, name: str, args: PlatformArgs, account: str, after: list[pulumi.Resource]
    ) -> ClusterAddons:
        spec = args.spec
        facts = ClusterFacts(
            name=spec.cluster.name,
            region=args.region,
            account=account,
            vpc_id=self.network.vpc_id,
            node_role_name=self.node_role_name,
            interruption_queue=aws_text.interruption_queue(spec.cluster.name),
        )
        return ClusterAddons(
            f"{name}-addons",
            ClusterAddonsArgs(spec=spec.addons, cluster=facts, tags=spec.tags),
            opts=pulumi.ResourceOptions(
                parent=self, providers={"kubernetes": self.provider}, depends_on=after
            ),
        )


@dataclass(frozen=True)
class _Cluster:
    """What the platform needs of its cluster, created or existing."""

    name: pulumi.Output[str]
    network: ClusterNetwork
    kubeconfig: pulumi.Input[str]
    node_role_arn: pulumi.Output[str]
    addons_after: list[pulumi.Resource]
    """What the add-ons wait for (the system nodes of a created cluster)."""
