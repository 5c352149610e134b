"""What sgldeploy sends AWS, checked against AWS's own API models (botocore's) over every stack variant: each
recorded value against the constraints of the API member it becomes (tests/aws_api.py maps them), and the
rules the models state only in prose (FSx for Lustre sizes, a cluster placement group in one zone), read from
the same models' documentation."""

from __future__ import annotations

import re

import pytest

from sgldeploy.spec import aws_text
from sgldeploy.spec.problems import InvalidInput

from . import aws_api
from .conftest import deployment, render_stack, write_stack
from .variants import rendered_variants

VARIANTS = sorted(rendered_variants())


def aws_resources(plan):
    return [r for r in plan.recording.resources if r.type.startswith("aws:")]


def test_every_declared_aws_type_is_mapped_to_its_api():
    declared = {r.type for plan in rendered_variants().values() for r in aws_resources(plan)}
    assert declared, "the variants declare AWS resources"
    assert sorted(declared - set(aws_api.SENT)) == []  # add the new type to tests/aws_api.py SENT


def test_every_mapped_member_exists_in_the_models():
    for type_, sent in aws_api.SENT.items():
        for path, target in sent.items():
            shape = aws_api.member(target)
            assert shape.type_name not in ("structure", "list"), (type_, path, target)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_value_sent_is_one_the_api_accepts(variant):
    problems = [
        f"{r.name}: {problem}"
        for r in aws_resources(rendered_variants()[variant])
        for problem in aws_api.check(r.type, r.inputs)
    ]
    assert problems == []


def test_the_engine_refuses_what_aws_refuses():
    """Known refusals, one per kind of constraint, so a checker that checks nothing cannot pass."""
    refused = {
        "ec2.CreateSecurityGroup.Description": "efs weight cache of qwen: reachable from the cluster's nodes only",
        "ec2.CreateTags.Tags[].Key": "aws:reserved",
        "iam.CreateRole.Tags[].Value": "R&D",
        "iam.CreateRole.RoleName": "has space",
        "eks.CreateNodegroup.capacityType": "on-demand",
        "eks.CreateNodegroup.labels{key}": "k" * 64,
        "eks.CreateNodegroup.scalingConfig.maxSize": 0,
        "eks.CreateAccessEntry.type": "EC2_LINUX_X",
        "logs.PutRetentionPolicy.retentionInDays": 31,
        "sqs.CreateQueue.QueueName": "a.b",
        "sqs.CreateQueue.Attributes{MessageRetentionPeriod}": 59,
        "kms.ScheduleKeyDeletion.PendingWindowInDays": 6,
        "ec2.CreateLaunchTemplate.LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit": 65,
        "fsx.CreateFileSystem.LustreConfiguration.PerUnitStorageThroughput": 1001,
        "ec2.CreatePlacementGroup.GroupName": "grüppe",
    }
    for target, value in refused.items():
        assert aws_api.value_problems(target, value), (target, value)
    accepted = {
        "ec2.CreateSecurityGroup.Description": "efs weight cache of qwen, reachable from cluster nodes only",
        "logs.PutRetentionPolicy.retentionInDays": 30.0,
        "sqs.CreateQueue.Attributes{MessageRetentionPeriod}": 60,
        "iam.CreateRole.Tags[].Value": "ml platform/é",
        "eks.CreateAccessEntry.type": "EC2_LINUX",
    }
    for target, value in accepted.items():
        assert aws_api.value_problems(target, value) == [], (target, value)


def test_constraints_stated_in_prose_are_still_read_from_the_models():
    """The documented rules the checks rely on are found in these models; a reworded model fails here."""
    expected = {
        "ec2.CreateSecurityGroup.Description": {"charset", "length"},
        "ec2.CreateTags.Tags[].Key": {"length", "prefix"},
        "ec2.CreatePlacementGroup.GroupName": {"ASCII length"},
        "eks.CreateAccessEntry.type": {"allowed values"},
        "logs.PutRetentionPolicy.retentionInDays": {"allowed numbers"},
        "sqs.CreateQueue.QueueName": {"queue name"},
        "kms.ScheduleKeyDeletion.PendingWindowInDays": {"range"},
        "ec2.CreateLaunchTemplate.LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit": {"range"},
    }
    for target, rules in expected.items():
        assert {rule.what for rule, _ in aws_api.documented(target)} >= rules, target
    retention = "sqs.CreateQueue.Attributes{MessageRetentionPeriod}"
    assert aws_api._map_key_range(retention, 59) and aws_api._map_key_range(retention, 1_209_600) is None


# ---- FSx for Lustre: sizes and throughput by deployment type (documentation of CreateFileSystem) ---------

FSX_CAPACITY = (
    "For SCRATCH_2, PERSISTENT_2, and PERSISTENT_1 deployment types using SSD storage type, the valid values "
    "are 1200 GiB, 2400 GiB, and increments of 2400 GiB."
)
FSX_THROUGHPUT = re.compile(r"For PERSISTENT_2 SSD storage: ([\d, ]+) MB/s/TiB")


def fsx_capacity_valid(gib: int) -> bool:
    """FSX_CAPACITY, as a rule: written here from the model's sentence, not taken from sgldeploy."""
    return gib in (1200, 2400) or (gib > 0 and gib % 2400 == 0)


def persistent_2_throughputs() -> set[int]:
    text = aws_api._documentation("fsx.CreateFileSystem.LustreConfiguration.PerUnitStorageThroughput")
    found = FSX_THROUGHPUT.search(text)
    assert found, text
    return {int(n) for n in found.group(1).split(",")}


def test_the_fsx_rules_are_the_models():
    assert FSX_CAPACITY in aws_api._documentation("fsx.CreateFileSystem.StorageCapacity")
    assert persistent_2_throughputs() == {125, 250, 500, 1000}
    assert [g for g in range(1100, 7300, 100) if fsx_capacity_valid(g)] == [1200, 2400, 4800, 7200]


@pytest.mark.parametrize("variant", VARIANTS)
def test_fsx_file_systems_take_a_size_and_throughput_their_type_accepts(variant):
    for r in aws_resources(rendered_variants()[variant]):
        if r.type != "aws:fsx/lustreFileSystem:LustreFileSystem":
            continue
        fs = r.inputs
        assert fs["deploymentType"] == "PERSISTENT_2" and fs.get("storageType", "SSD") == "SSD", r.name
        assert fsx_capacity_valid(int(fs["storageCapacity"])), (r.name, fs["storageCapacity"])
        assert int(fs["perUnitStorageThroughput"]) in persistent_2_throughputs(), r.name


# ---- a cluster placement group lives in one zone (Auto Scaling's and Karpenter's documentation) ----------

ONE_ZONE = "You cannot specify multiple Availability Zones and a cluster placement group."
# Karpenter (website/content/en/docs/concepts/nodeclasses.md @1d927085, spec.placementGroupSelector):
# "Cluster — instances are placed in a single AZ"; its offerings still span every zone of the node class's
# subnets, so the node class must select one subnet. A subnet lies in exactly one zone (EC2), so one subnet
# is what proves one zone offline, where subnet ids of a created VPC are not known yet.


def cluster_groups(plan) -> dict[str, str]:
    """Cluster placement groups by URN and by name."""
    out = {}
    for r in aws_resources(plan):
        if r.type == "aws:ec2/placementGroup:PlacementGroup" and r.inputs["strategy"] == "cluster":
            out[r.urn] = r.inputs["name"]
    return out


def test_auto_scaling_refuses_a_cluster_placement_group_across_zones():
    text = aws_api._documentation("autoscaling.CreateAutoScalingGroup.PlacementGroup")
    assert ONE_ZONE in text


@pytest.mark.parametrize("variant", VARIANTS)
def test_nodes_in_a_cluster_placement_group_launch_in_one_zone(variant):
    plan = rendered_variants()[variant]
    groups = cluster_groups(plan)
    by_urn = {r.urn: r for r in plan.recording.resources}
    placed = {
        r.urn
        for r in aws_resources(plan)
        if r.type == "aws:ec2/launchTemplate:LaunchTemplate"
        and (
            set(r.dependencies) & set(groups)
            or (r.inputs.get("placement") or {}).get("groupName") in groups.values()
        )
    }
    for r in aws_resources(plan):
        if r.type == "aws:eks/nodeGroup:NodeGroup" and set(r.dependencies) & placed:
            assert len(r.inputs["subnetIds"]) == 1, (r.name, r.inputs["subnetIds"])
    for r in plan.recording.resources:
        if r.type != "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
            continue
        selector = r.inputs["spec"].get("placementGroupSelector")
        if selector and (selector.get("name") in groups.values() or selector.get("id")):
            terms = r.inputs["spec"]["subnetSelectorTerms"]
            assert len(terms) == 1 and set(terms[0]) == {"id"}, (r.name, terms)
    assert all(by_urn[u].type == "aws:ec2/launchTemplate:LaunchTemplate" for u in placed)


# ---- what a user decides: tags and the cluster's name ------------------------------------------------------

TAG_TARGETS = sorted(
    {t for sent in aws_api.SENT.values() for p, t in sent.items() if p.endswith(("tags{key}", "tags{value}"))}
)


def accepted_everywhere(part: str, text: str) -> bool:
    """The models' verdict: every tagged API member sgldeploy sends this key (or value) to accepts it."""
    targets = [t for t in TAG_TARGETS if t.endswith(("Key", "{key}")) == (part == "key")]
    return all(aws_api.value_problems(t, text) == [] for t in targets)


SAMPLES = [
    "team",
    "k" * 127,
    "k" * 128,
    "v" * 256,
    "v" * 257,
    "R&D",
    "cost-center/ai_serving:+=@.",
    "é ü",
    "a!",
]


def test_the_tag_rules_are_what_every_tagged_api_accepts():
    for text in SAMPLES:
        key_ok = 1 <= len(text) <= aws_text.TAG_KEY_MAX and aws_text.tag_text_ok(text)
        value_ok = len(text) <= aws_text.TAG_VALUE_MAX and aws_text.tag_text_ok(text)
        assert key_ok == accepted_everywhere("key", text), text
        assert value_ok == accepted_everywhere("value", text), text
    assert accepted_everywhere("key", "aws:x") is False  # the reserved prefix


def problem_lines(tmp_path, platform):
    with pytest.raises(InvalidInput) as err:
        render_stack(
            write_stack(tmp_path, platform={"namespace": "llm", **platform}, deployments=[deployment()])
        )
    return [p.line() for p in err.value.problems]


@pytest.mark.parametrize(
    ("tags", "line"),
    [
        ({"k" * 128: "x"}, "error: sgldeploy:platform.tags." + "k" * 128 + ": is not a tag key AWS accepts"),
        ({"team": "v" * 257}, "error: sgldeploy:platform.tags.team: is not a tag value AWS accepts"),
        (
            {"team": "R&D"},
            "error: sgldeploy:platform.tags.team: is not a tag value AWS accepts: up to 256 of",
        ),
        ({"aws:team": "x"}, "error: sgldeploy:platform.tags.aws:team: starts with aws:, which AWS reserves"),
        ({f"t{i}": "x" for i in range(43)}, "error: sgldeploy:platform.tags: has more tags than AWS allows"),
    ],
)
def test_tags_aws_refuses_are_problem_lines(tmp_path, tags, line):
    lines = problem_lines(tmp_path, {"cluster": {"name": "test"}, "tags": tags})
    assert len(lines) == 1 and lines[0].startswith(line), lines


def test_tags_at_the_limits_render_and_pass_the_models(tmp_path):
    tags = {"k" * 127: "v" * 256, **{f"t{i}": "é ü/+=@:._-" for i in range(41)}}
    assert len(tags) == 42
    # A managed node group carries the most tags of sgldeploy's own: with these, exactly EKS's 50.
    platform = {
        "cluster": {"name": "c" * 46, "create": True},
        "namespace": "llm",
        "node_provisioner": "managed-node-group",
        "tags": tags,
    }
    plan = render_stack(write_stack(tmp_path, platform=platform, deployments=[deployment()]))
    assert [p for r in aws_resources(plan) for p in aws_api.check(r.type, r.inputs)] == []
    [gpu_group] = [
        r for r in aws_resources(plan) if r.type == "aws:eks/nodeGroup:NodeGroup" and "qwen" in r.name
    ]
    assert len(gpu_group.inputs["tags"]) == 50
    gpu_group.inputs["tags"]["one-more"] = "x"
    assert aws_api.check(gpu_group.type, gpu_group.inputs) == [
        "tags: 51 entries, over 50 (eks.CreateNodegroup.tags)"
    ]


def test_the_longest_cluster_name_whose_default_node_role_iam_accepts(tmp_path):
    name = "c" * 47
    assert problem_lines(tmp_path, {"cluster": {"name": name, "create": True}}) == [
        f"error: sgldeploy:platform.cluster.name: makes the default node role name KarpenterNodeRole-{name} 65 "
        f"characters, over IAM's 64 (got '{name}'); set platform.node_role to a name of at most 64 characters, "
        "or shorten the cluster name"
    ]
    named_role = {"cluster": {"name": name, "create": True}, "node_role": "gpu-nodes", "namespace": "llm"}
    render_stack(write_stack(tmp_path / "role", platform=named_role, deployments=[deployment()]))


def test_the_longest_cluster_name_whose_interruption_queue_sqs_accepts(tmp_path):
    platform = {"cluster": {"name": "c" * 71}, "node_role": "gpu-nodes", "addons": {"karpenter": True}}
    [line] = problem_lines(tmp_path, platform)
    assert f"interruption queue name Karpenter-{'c' * 71} 81 characters, over SQS's 80" in line
    assert line.endswith("shorten the cluster name to at most 70 characters")
    platform = {**platform, "cluster": {"name": "c" * 70}, "namespace": "llm"}
    plan = render_stack(write_stack(tmp_path / "ok", platform=platform, deployments=[deployment()]))
    [queue] = [r for r in aws_resources(plan) if r.type == "aws:sqs/queue:Queue"]
    assert aws_api.check(queue.type, queue.inputs) == [] and len(queue.inputs["name"]) == 80
