"""Every IAM document sgldeploy declares, linted with parliament and checked for tags that widen a tag-scoped
statement: the add-on policies (as written for any cluster, and as recorded in every variant), the trust
policies of every role, and Karpenter's interruption queue policy. See tests/iam_lint.py for which findings
are errors and why."""

from __future__ import annotations

import json

import pytest

from sgldeploy.builders import addons

from . import iam_lint
from .variants import rendered_variants

FACTS = addons.ClusterFacts(
    name="gpu",
    region="us-east-1",
    account="123456789012",
    vpc_id="vpc-0123456789abcdef0",
    node_role_name="KarpenterNodeRole-gpu",
    interruption_queue="Karpenter-gpu",
)
WITH_POLICY = [c for c in addons.CHARTS if addons.policy(c, FACTS) is not None]

REVIEWED = {
    "karpenter": {
        # Karpenter creates and deletes the instance profiles of its node classes, and passes the node role to
        # EC2: tag-scoped to its own profiles, PassRole to the one node role for ec2.amazonaws.com only.
        (
            "PERMISSIONS_MANAGEMENT_ACTIONS",
            "iam:addroletoinstanceprofile iam:createinstanceprofile "
            "iam:deleteinstanceprofile iam:passrole iam:removerolefrominstanceprofile",
        ),
        # Launching instances with a role is what Karpenter does; the role is the node role alone.
        ("PRIVILEGE_ESCALATION", "ec2:runinstances iam:passrole"),
        # An EKS cluster is not among the resource types of GetManagedResource in parliament's database (ALB,
        # NLB); upstream grants "*" with the cluster's ARN as arc-zonal-shift:ResourceIdentifier, as here.
        ("RESOURCE_STAR", "arc-zonal-shift:GetManagedResource"),
    },
    "aws_load_balancer_controller": {
        # Only the Elastic Load Balancing service-linked role (iam:AWSServiceName condition).
        ("PERMISSIONS_MANAGEMENT_ACTIONS", "iam:createservicelinkedrole"),
        ("RESOURCE_STAR", "iam:CreateServiceLinkedRole"),
        # The controller finds certificates by the Ingress's hostname, and reads security groups of any VPC
        # it is given: upstream grants these on "*".
        ("RESOURCE_STAR", "acm:DescribeCertificate ec2:GetSecurityGroupsForVpc iam:GetServerCertificate"),
    },
    "external_secrets": set(),
}
"""Non-error findings accepted per add-on, with why; any other fails."""


def _summary(finding: iam_lint.Finding) -> tuple[str, str]:
    detail = finding.detail
    if isinstance(detail, dict):
        detail = detail.get("actions", detail)
    return finding.issue, " ".join(sorted(detail)) if isinstance(detail, list) else str(detail)


def recorded_policies():
    """(variant, resource name, document) of every inline role policy the variants record with a known value."""
    for variant, plan in rendered_variants().items():
        for r in plan.recording.resources:
            if r.type == "aws:iam/rolePolicy:RolePolicy" and r.inputs["policy"].startswith("{"):
                yield variant, r.name, json.loads(r.inputs["policy"])


def test_the_variants_record_add_on_policies_to_lint():
    assert {name for _, name, _ in recorded_policies()} >= {
        "platform-addons-karpenter-policy",
        "platform-addons-aws-load-balancer-controller-policy",
    }


@pytest.mark.parametrize("chart", WITH_POLICY, ids=lambda c: c.addon)
def test_add_on_policies_have_no_parliament_errors(chart):
    assert iam_lint.errors(addons.policy(chart, FACTS)) == []


def test_recorded_policies_have_no_parliament_errors():
    found = {(v, n): iam_lint.errors(doc) for v, n, doc in recorded_policies()}
    assert {k: [str(f) for f in v] for k, v in found.items() if v} == {}


@pytest.mark.parametrize("chart", WITH_POLICY, ids=lambda c: c.addon)
def test_other_findings_are_only_the_reviewed_ones(chart):
    assert {_summary(f) for f in iam_lint.reviewed(addons.policy(chart, FACTS))} == REVIEWED[chart.addon]


def test_karpenter_may_list_instance_profiles_and_nothing_scopes_that_action():
    # Karpenter's instance profile garbage collection calls ListInstanceProfiles, which takes Resource "*".
    [statement] = [
        s
        for s in addons.policy(next(c for c in addons.CHARTS if c.addon == "karpenter"), FACTS)["Statement"]
        if "iam:ListInstanceProfiles" in s["Action"]
    ]
    assert statement["Resource"] == ["*"]


@pytest.mark.parametrize("chart", WITH_POLICY, ids=lambda c: c.addon)
def test_no_tagging_statement_widens_a_tag_scope(chart):
    assert iam_lint.tag_widening(addons.policy(chart, FACTS)) == []


def test_recorded_policies_do_not_widen_a_tag_scope():
    found = {(v, n): iam_lint.tag_widening(doc) for v, n, doc in recorded_policies()}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_linters_catch_what_they_are_for():
    """The checks fail on the shapes of the defects they guard against (so a silent linter cannot pass)."""
    unscoped_list = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iam:ListInstanceProfiles"],
                "Resource": ["arn:aws:iam::123456789012:instance-profile/*"],
            }
        ],
    }
    assert [f.issue for f in iam_lint.errors(unscoped_list)] == ["RESOURCE_MISMATCH"]
    widening = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Tag", "Effect": "Allow", "Action": ["ec2:CreateTags"], "Resource": ["*"]},
            {
                "Sid": "Terminate",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances"],
                "Resource": ["*"],
                "Condition": {"StringEquals": {"aws:ResourceTag/owner": "me"}},
            },
        ],
    }
    assert iam_lint.tag_widening(widening) == ["Tag: ec2:createtags can tag any resource with owner"]
    widening["Statement"][0]["Condition"] = {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    assert iam_lint.tag_widening(widening) == []
    unknown = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:Nope", "Resource": "*"}],
    }
    assert [f.issue for f in iam_lint.errors(unknown)] == ["UNKNOWN_ACTION"]


IAM_QUOTAS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html"
ROLE_POLICY_CHARACTERS = 10_240  # all inline policies of a role together, whitespace not counted
TRUST_POLICY_CHARACTERS = 2_048  # the default AssumeRolePolicySizeQuota, whitespace not counted


def _characters(document: str) -> int:
    return len("".join(document.split()))


def test_policies_fit_iam_quotas_for_the_longest_cluster_name():
    longest = addons.ClusterFacts(**{**FACTS.__dict__, "name": "c" * 100, "region": "ap-southeast-2"})
    for chart in WITH_POLICY:
        size = _characters(json.dumps(addons.policy(chart, longest)))
        assert size <= ROLE_POLICY_CHARACTERS, (chart.addon, size, IAM_QUOTAS)


def roles():
    for variant, plan in rendered_variants().items():
        for r in plan.recording.resources:
            if r.type == "aws:iam/role:Role":
                yield variant, r


def test_every_trust_policy_is_a_service_trust_iam_accepts():
    checked = 0
    for variant, role in roles():
        document = role.inputs["assumeRolePolicy"]
        assert _characters(document) <= TRUST_POLICY_CHARACTERS, (variant, role.name, IAM_QUOTAS)
        assert iam_lint.trust_problems(json.loads(document)) == [], (variant, role.name)
        checked += 1
    assert checked


def test_every_role_policy_of_a_variant_fits_the_role_quota():
    for variant, name, document in recorded_policies():
        assert _characters(json.dumps(document)) <= ROLE_POLICY_CHARACTERS, (variant, name, IAM_QUOTAS)


def test_the_interruption_queue_takes_events_only_over_tls():
    document = addons.interruption_queue_policy("arn:aws:sqs:us-east-1:123456789012:Karpenter-gpu")
    assert iam_lint.errors(document) == [] and iam_lint.reviewed(document) == []
    [deny] = [s for s in document["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and deny["Principal"] == "*"
