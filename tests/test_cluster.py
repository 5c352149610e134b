"""The platform in both modes: a created VPC and EKS cluster, or an existing cluster read and left alone."""

from __future__ import annotations

import ipaddress
import json

import pytest

from sgldeploy.builders import network

from .conftest import deployment, render_stack, resources_of, write_stack

CREATE = {
    "cluster": {"name": "gpu", "create": True, "kubernetes_version": "1.33", "vpc_cidr": "10.40.0.0/16"},
    "namespace": "llm",
    "tags": {"team": "ml"},
}


@pytest.fixture(scope="module")
def created(tmp_path_factory):
    return render_stack(
        write_stack(tmp_path_factory.mktemp("create"), platform=CREATE, deployments=[deployment()])
    )


def one(plan, type_):
    [found] = resources_of(plan, type_)
    return found


def test_subnets_split_the_vpc_without_overlap():
    for cidr in ("10.0.0.0/16", "172.16.0.0/20"):
        subnets = network.subnets(cidr)
        nets = [ipaddress.IPv4Network(s.cidr) for s in subnets]
        assert all(n.subnet_of(ipaddress.IPv4Network(cidr)) for n in nets)
        assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
        assert sorted((s.public, s.zone_index) for s in subnets) == [
            (False, 0),
            (False, 1),
            (True, 0),
            (True, 1),
        ]
        private = [n for n, s in zip(nets, subnets, strict=True) if not s.public]
        assert all(
            n.num_addresses >= 4 * m.num_addresses
            for n in private
            for m, s in zip(nets, subnets, strict=True)
            if s.public
        )  # nodes and pods need the addresses


def test_vpc_subnets_are_tagged_for_load_balancers_and_karpenter(created):
    vpc = one(created, "aws:ec2/vpc:Vpc").inputs
    assert vpc["cidrBlock"] == "10.40.0.0/16" and vpc["enableDnsHostnames"] is True
    subnets = {r.name: r.inputs for r in resources_of(created, "aws:ec2/subnet:Subnet")}
    assert len(subnets) == 4
    for name, s in subnets.items():
        tags = s["tags"]
        assert tags["kubernetes.io/cluster/gpu"] == "shared" and tags["team"] == "ml"
        if "public" in name:
            assert tags["kubernetes.io/role/elb"] == "1" and s["mapPublicIpOnLaunch"] is True
        else:
            assert tags["kubernetes.io/role/internal-elb"] == "1" and tags["karpenter.sh/discovery"] == "gpu"
    zones = {s["availabilityZone"] for s in subnets.values()}
    assert zones == {"us-east-1a", "us-east-1b"}


def test_a_nat_gateway_per_zone_and_private_routes_through_it(created):
    nats = resources_of(created, "aws:ec2/natGateway:NatGateway")
    assert len(nats) == 2
    private_tables = [
        r for r in resources_of(created, "aws:ec2/routeTable:RouteTable") if "private" in r.name
    ]
    assert len(private_tables) == 2
    assert all(set(t.inputs["routes"][0]) >= {"cidrBlock", "natGatewayId"} for t in private_tables)


def test_eks_cluster_encrypts_secrets_logs_and_uses_access_entries(created):
    eks = one(created, "aws:eks/cluster:Cluster").inputs
    assert eks["name"] == "gpu" and eks["version"] == "1.33"
    assert eks["encryptionConfig"]["resources"] == ["secrets"]
    assert set(eks["enabledClusterLogTypes"]) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }
    assert eks["accessConfig"]["authenticationMode"] == "API"
    assert len(eks["vpcConfig"]["subnetIds"]) == 4
    key = one(created, "aws:kms/key:Key").inputs
    assert key["enableKeyRotation"] is True
    logs = one(created, "aws:cloudwatch/logGroup:LogGroup").inputs
    assert logs["name"] == "/aws/eks/gpu/cluster" and logs["retentionInDays"] == 30
    by_name = {r.name: r for r in created.recording.resources}
    assert by_name["platform-cluster-logs"].urn in by_name["platform-cluster-eks"].dependencies


def test_roles_carry_only_the_managed_policies_they_need(created):
    roles = {r.name: r.inputs for r in resources_of(created, "aws:iam/role:Role")}
    trust = {
        n: json.loads(r["assumeRolePolicy"])["Statement"][0]["Principal"]["Service"] for n, r in roles.items()
    }
    assert trust["platform-cluster-cluster-role"] == "eks.amazonaws.com"
    assert trust["platform-cluster-node-role"] == "ec2.amazonaws.com"
    assert roles["platform-cluster-node-role"]["name"] == "KarpenterNodeRole-gpu"
    attached = {
        r.inputs["policyArn"].rsplit("/", 1)[1]
        for r in resources_of(created, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert attached == {"AmazonEKSClusterPolicy", *network.NODE_POLICIES}
    entry = one(created, "aws:eks/accessEntry:AccessEntry").inputs
    assert entry["type"] == "EC2_LINUX"


def test_eks_add_ons_and_the_system_node_group(created):
    addons = {r.inputs["addonName"]: r for r in resources_of(created, "aws:eks/addon:Addon")}
    assert set(addons) == {"vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent"}
    nodes = one(created, "aws:eks/nodeGroup:NodeGroup")
    assert nodes.inputs["instanceTypes"] == ["m6i.large"] and nodes.inputs["capacityType"] == "ON_DEMAND"
    assert nodes.inputs["scalingConfig"] == {"minSize": 2, "maxSize": 3, "desiredSize": 2}
    assert nodes.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert nodes.urn in addons["coredns"].dependencies  # coredns needs nodes
    assert addons["vpc-cni"].urn in nodes.dependencies  # nodes need pod networking
    template = one(created, "aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["metadataOptions"]["httpTokens"] == "required"
    component = one(created, "sgldeploy:platform:ClusterAddons")
    assert nodes.urn in component.dependencies  # Helm releases need nodes to run on


def test_gpu_pools_use_the_created_private_subnets_and_node_role(created):
    node_class = one(created, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass").inputs["spec"]
    assert node_class["role"] == "KarpenterNodeRole-gpu"
    assert len(node_class["subnetSelectorTerms"]) == 2  # the private subnets, ids known after apply


def test_outputs_name_the_cluster_keep_the_kubeconfig_secret_and_name_node_pools(created):
    outputs = created.recording.outputs
    assert outputs["kubeconfig"] == "[secret]"
    assert outputs["deployments"]["qwen"]["nodePool"] == "llm-qwen"
    assert "clusterName" in outputs


def test_existing_cluster_is_read_and_nothing_about_it_created(tmp_path):
    plan = render_stack(write_stack(tmp_path, deployments=[deployment()]))
    types = {r.type for r in plan.recording.resources}
    assert not any(
        t.startswith(
            (
                "aws:ec2/vpc",
                "aws:ec2/subnet",
                "aws:eks/cluster",
                "aws:kms",
                "aws:ec2/natGateway",
                "aws:eks/addon",
                "aws:eks/accessEntry",
            )
        )
        for t in types
    )
    assert "sgldeploy:platform:EksCluster" not in types
    assert plan.recording.outputs["kubeconfig"] == "[secret]"
