"""AWS hardening over everything sgldeploy declares in AWS: the committed prod stack (a created cluster) and a
stack with each shared cache. No security group opens ingress to the internet (the load balancers' own groups
are the AWS Load Balancer Controller's, outside sgldeploy), every node is IMDSv2-only, every volume and file
system is encrypted, and Secrets are encrypted with a KMS key that rotates."""

from __future__ import annotations

import html
import re
import string

import botocore.session
import pytest

from .conftest import ROOT, deployment, render_stack, with_secret, write_stack

OPEN = {"0.0.0.0/0", "::/0"}
PLATFORM = {
    "cluster": {"name": "t", "create": True, "vpc_cidr": "10.50.0.0/16"},
    "namespace": "llm",
    "addons": {"efs_csi": True, "fsx_csi": True},
}


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    """Every recorded resource of the prod stack and of a stack with an EFS and an FSx cache."""
    prod = render_stack(with_secret(ROOT / "stacks" / "Pulumi.prod.yaml", tmp_path_factory.mktemp("prod")))
    caches = render_stack(
        write_stack(
            tmp_path_factory.mktemp("caches"),
            platform=PLATFORM,
            deployments=[
                deployment(name="efs", cache={"storage": "efs", "prefetch_image": "registry.example/sgl:1"}),
                deployment(
                    name="fsx", cache={"storage": "fsx-lustre", "prefetch_image": "registry.example/sgl:1"}
                ),
            ],
        )
    )
    return prod.recording.resources + caches.recording.resources


def of(declared, type_: str) -> list[dict]:
    return [r.inputs for r in declared if r.type == type_]


def test_no_security_group_accepts_the_internet(declared):
    groups = of(declared, "aws:ec2/securityGroup:SecurityGroup")
    rules = of(declared, "aws:ec2/securityGroupRule:SecurityGroupRule") + of(
        declared, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
    )
    assert groups  # the shared caches' groups
    for group in groups:
        for rule in group.get("ingress", []):
            assert not OPEN & set(rule.get("cidrBlocks", []) + rule.get("ipv6CidrBlocks", [])), rule
    for rule in rules:
        if rule.get("type", "ingress") == "ingress":
            assert not OPEN & {rule.get("cidrIpv4"), rule.get("cidrIpv6"), *rule.get("cidrBlocks", [])}, rule


def test_every_node_is_imdsv2_only_and_every_volume_encrypted(declared):
    templates = of(declared, "aws:ec2/launchTemplate:LaunchTemplate")
    node_classes = [r for r in of(declared, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")]
    assert templates and node_classes
    for t in templates:
        assert (
            t["metadataOptions"]["httpTokens"] == "required"
            and t["metadataOptions"]["httpPutResponseHopLimit"] == 1
        )
        assert all(d["ebs"]["encrypted"] == "true" for d in t["blockDeviceMappings"])
    for c in node_classes:
        assert c["spec"]["metadataOptions"]["httpTokens"] == "required"
        assert all(d["ebs"]["encrypted"] is True for d in c["spec"]["blockDeviceMappings"])


def test_file_systems_and_secrets_are_encrypted_at_rest(declared):
    [efs] = of(declared, "aws:efs/fileSystem:FileSystem")
    assert efs["encrypted"] is True
    # FSx for Lustre encrypts every file system at rest with KMS; there is no switch to turn it off.
    assert of(declared, "aws:fsx/lustreFileSystem:LustreFileSystem")
    clusters, keys = of(declared, "aws:eks/cluster:Cluster"), of(declared, "aws:kms/key:Key")
    assert len(clusters) == len(keys) == 2  # prod's and the caches stack's
    assert all(c["encryptionConfig"]["resources"] == ["secrets"] for c in clusters)
    assert all(k["enableKeyRotation"] is True for k in keys)


def test_security_group_descriptions_use_only_what_ec2_accepts(declared):
    """EC2's CreateSecurityGroup takes a description of up to 255 of a-z A-Z 0-9, spaces and ._-:/()#,@[]+=&;{}!$*
    (botocore's ec2 model says so in the member's documentation; the provider checks only the length)."""
    doc = html.unescape(
        botocore.session.get_session()
        .get_service_model("ec2")
        .operation_model("CreateSecurityGroup")
        .input_shape.members["Description"]
        .documentation
    )
    [extra] = re.findall(r"Valid characters: a-z, A-Z, 0-9, spaces, and (\S+?)</p>", doc)
    allowed = set(string.ascii_letters + string.digits + " " + extra)
    groups = of(declared, "aws:ec2/securityGroup:SecurityGroup")
    assert len(groups) == 2  # the EFS and the FSx cache's
    for group in groups:
        assert set(group["description"]) <= allowed, group["description"]
        assert 0 < len(group["description"]) <= 255
