"""Offline, every value computed at apply time reads as unknown, as in a real `pulumi preview`: an output of a
resource still to be created that its inputs do not determine is never null or empty.

What AWS computes is read from AWS's own API model (botocore's EKS service model: what DescribeCluster returns
that CreateCluster does not take), and what an EC2NodeClass must hold from Karpenter's CRD rules, evaluated
with a CEL engine."""

from __future__ import annotations

import re
from pathlib import Path

import botocore.session
import pytest
import yaml
from cel_expr_python import cel

from sgldeploy.offline.engine import UNKNOWN, run_program

from .upstream import upstream
from .variants import rendered_variants

PROGRAM = """
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

cluster = aws.eks.Cluster(
    "cluster",
    name="offline",
    role_arn="arn:aws:iam::000000000000:role/eks",
    vpc_config={"subnet_ids": ["subnet-a", "subnet-b"], "endpoint_private_access": True},
)
for field in FIELDS:
    pulumi.export("vpcConfig." + field, getattr(cluster.vpc_config, field))
for attribute in ATTRIBUTES:
    pulumi.export(attribute, getattr(cluster, attribute))
namespace = k8s.core.v1.Namespace("namespace", metadata={"name": "llm"})
pulumi.export("namespaceName", namespace.metadata.apply(lambda m: m["name"]))
pulumi.export("namespaceStatus", namespace.status)
"""


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.fixture(scope="module")
def eks():
    return botocore.session.get_session().get_service_model("eks")


def test_values_aws_computes_read_as_unknown_at_any_depth(tmp_path, eks):
    computed_vpc = sorted(
        set(eks.shape_for("VpcConfigResponse").members) - set(eks.shape_for("VpcConfigRequest").members)
    )
    assert computed_vpc == ["clusterSecurityGroupId", "vpcId"]  # what EKS decides for a new cluster
    given_vpc = {"subnetIds": ["subnet-a", "subnet-b"], "endpointPrivateAccess": True}
    created = set(eks.shape_for("Cluster").members) - set(
        eks.operation_model("CreateCluster").input_shape.members
    )
    attributes = sorted(
        snake(a)
        for a in created
        & {"arn", "endpoint", "certificateAuthority", "platformVersion", "status", "createdAt"}
    )
    assert len(attributes) == 6
    program = tmp_path / "__main__.py"
    fields = [snake(f) for f in [*computed_vpc, *given_vpc]]
    program.write_text(f"FIELDS = {fields!r}\nATTRIBUTES = {attributes!r}\n{PROGRAM}")

    outputs = run_program(program, "offline", "test", {"aws:region": "us-east-1"}, []).outputs

    for field in computed_vpc:  # nested in an input the program set: still the cloud's to decide
        assert outputs.get(f"vpcConfig.{snake(field)}") == UNKNOWN, field
    for field, value in given_vpc.items():  # what the inputs determine stays known
        assert outputs.get(f"vpcConfig.{snake(field)}") == value, field
    for attribute in attributes:
        assert outputs[attribute] == UNKNOWN, attribute
    # Kubernetes previews with the inputs as they are: the namespace's name is known, its status is not
    assert outputs["namespaceName"] == "llm" and outputs["namespaceStatus"] == UNKNOWN


def _lists(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _lists(v, f"{path}.{k}")
    elif isinstance(value, list):
        yield path, value
        for i, v in enumerate(value):
            yield from _lists(v, f"{path}[{i}]")


def created_cluster(plan) -> bool:
    return any(r.type == "aws:eks/cluster:Cluster" for r in plan.recording.resources)


def test_no_list_holds_null_where_a_value_is_computed_at_apply():
    """e.g. a shared cache's security group opened to the cluster's security group, which EKS creates."""
    assert any(created_cluster(p) for p in rendered_variants().values())
    for name, plan in rendered_variants().items():
        for r in plan.recording.resources:
            for path, items in _lists(r.inputs):
                assert None not in items, f"{name}: {r.name}{path}"


def karpenter_rules(field: str) -> list[dict]:
    crd = yaml.safe_load(Path(upstream("crds", "karpenter.k8s.aws_ec2nodeclasses.yaml")).read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][field][
        "x-kubernetes-validations"
    ]


def test_node_classes_select_the_cluster_security_group_by_a_valid_term():
    env = cel.NewEnv(variables={"self": cel.Type.DYN})
    rules = [
        (env.compile(rule["rule"]), rule["message"]) for rule in karpenter_rules("securityGroupSelectorTerms")
    ]
    checked = 0
    for name, plan in rendered_variants().items():
        for r in plan.recording.resources:
            if r.type != "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
                continue
            terms = r.inputs["spec"]["securityGroupSelectorTerms"]
            # the cluster's security group: EKS creates it with a created cluster; an existing one's is read
            assert terms == [{"id": UNKNOWN if created_cluster(plan) else "sg-offline-cluster"}], name
            # a value known after apply satisfies the rules about its own field (any id will do)
            applied = [
                {k: "sg-0123456789abcdef0" if v == UNKNOWN else v for k, v in t.items()} for t in terms
            ]
            for rule, message in rules:
                assert rule.eval(data={"self": applied}).value() is True, f"{name}: {r.name}: {message}"
            checked += 1
    assert checked >= 4


def test_an_attribute_left_unset_in_a_map_of_objects_reads_as_unknown():
    """Under a map (Lex's bot version: locale → specification), each object's unset attribute is the
    cloud's to decide, as it is at the top level; a set one stays known."""
    import pulumi_aws.lex  # noqa: F401  (registers the lex resource module)

    from sgldeploy.offline.engine import preview_state
    from sgldeploy.offline.sdk_internals import WIRE_UNKNOWN

    token = "aws:lex/v2modelsBotVersion:V2modelsBotVersion"
    given = {"botId": "bot", "localeSpecification": {"en_US": {}, "de_DE": {"sourceBotVersion": "DRAFT"}}}
    state = preview_state(token, given)
    assert state["localeSpecification"] == {
        "en_US": {"sourceBotVersion": WIRE_UNKNOWN},
        "de_DE": {"sourceBotVersion": "DRAFT"},
    }
    assert state["botId"] == "bot" and state["botVersion"] == WIRE_UNKNOWN
