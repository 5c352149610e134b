"""AWS's own API models (botocore's service-2.json files) as the engine that checks what sgldeploy sends AWS.

`SENT` maps each AWS resource type sgldeploy declares to the API members its Pulumi inputs become: a Pulumi
input path (`a.b`, `[]` for list elements, `{key}` / `{value}` for the keys and values of a map) to a member
path in an operation's input (`service.Operation.Member…`, with the same suffixes, and `{NAME}` for the value
a map holds under NAME). `check(type, inputs)` walks every recorded value to its member's shape and reports
what the model refuses: type, enum, pattern, length, range, and the constraints AWS writes only in a
member's documentation (`DOCUMENTED`, each parsed from the model's own text). Values the engine learns only
at apply time, and secrets, are skipped.

Patterns are Java regular expressions, matched against the whole value (as AWS's services validate them);
`\\p{L}`, `\\p{N}` and `\\p{Z}` are expanded from Python's Unicode database.
"""

from __future__ import annotations

import functools
import html
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.model import Shape

from sgldeploy.offline.engine import SECRET, UNKNOWN

BOTOCORE_VERSION = "1.44.5"  # pinned in pyproject.toml; the models below are that release's

EC2_TAGS = {"tags{key}": "ec2.CreateTags.Tags[].Key", "tags{value}": "ec2.CreateTags.Tags[].Value"}
EKS_TAGS = {"tags{key}": "eks.CreateCluster.tags{key}", "tags{value}": "eks.CreateCluster.tags{value}"}

SENT: dict[str, dict[str, str]] = {
    # ---- VPC
    "aws:ec2/vpc:Vpc": {
        "cidrBlock": "ec2.CreateVpc.CidrBlock",
        "enableDnsHostnames": "ec2.ModifyVpcAttribute.EnableDnsHostnames.Value",
        "enableDnsSupport": "ec2.ModifyVpcAttribute.EnableDnsSupport.Value",
        **EC2_TAGS,
    },
    "aws:ec2/subnet:Subnet": {
        "vpcId": "ec2.CreateSubnet.VpcId",
        "cidrBlock": "ec2.CreateSubnet.CidrBlock",
        "availabilityZone": "ec2.CreateSubnet.AvailabilityZone",
        "mapPublicIpOnLaunch": "ec2.ModifySubnetAttribute.MapPublicIpOnLaunch.Value",
        **EC2_TAGS,
    },
    "aws:ec2/internetGateway:InternetGateway": {"vpcId": "ec2.AttachInternetGateway.VpcId", **EC2_TAGS},
    "aws:ec2/eip:Eip": {"domain": "ec2.AllocateAddress.Domain", **EC2_TAGS},
    "aws:ec2/natGateway:NatGateway": {
        "allocationId": "ec2.CreateNatGateway.AllocationId",
        "subnetId": "ec2.CreateNatGateway.SubnetId",
        **EC2_TAGS,
    },
    "aws:ec2/routeTable:RouteTable": {
        "vpcId": "ec2.CreateRouteTable.VpcId",
        "routes[].cidrBlock": "ec2.CreateRoute.DestinationCidrBlock",
        "routes[].gatewayId": "ec2.CreateRoute.GatewayId",
        "routes[].natGatewayId": "ec2.CreateRoute.NatGatewayId",
        **EC2_TAGS,
    },
    "aws:ec2/routeTableAssociation:RouteTableAssociation": {
        "subnetId": "ec2.AssociateRouteTable.SubnetId",
        "routeTableId": "ec2.AssociateRouteTable.RouteTableId",
    },
    # ---- security groups
    "aws:ec2/securityGroup:SecurityGroup": {
        "name": "ec2.CreateSecurityGroup.GroupName",
        "description": "ec2.CreateSecurityGroup.Description",
        "vpcId": "ec2.CreateSecurityGroup.VpcId",
        **{
            f"{way}[].{pulumi}": f"ec2.AuthorizeSecurityGroup{api_way}.IpPermissions[].{api}"
            for way, api_way in (("ingress", "Ingress"), ("egress", "Egress"))
            for pulumi, api in (
                ("protocol", "IpProtocol"),
                ("fromPort", "FromPort"),
                ("toPort", "ToPort"),
                ("cidrBlocks[]", "IpRanges[].CidrIp"),
                ("ipv6CidrBlocks[]", "Ipv6Ranges[].CidrIpv6"),
                ("securityGroups[]", "UserIdGroupPairs[].GroupId"),
                ("description", "UserIdGroupPairs[].Description"),
            )
        },
        **EC2_TAGS,
    },
    # ---- nodes
    "aws:ec2/placementGroup:PlacementGroup": {
        "name": "ec2.CreatePlacementGroup.GroupName",
        "strategy": "ec2.CreatePlacementGroup.Strategy",
        **EC2_TAGS,
    },
    "aws:ec2/launchTemplate:LaunchTemplate": {
        **{
            f"blockDeviceMappings[].{pulumi}": f"ec2.CreateLaunchTemplate.LaunchTemplateData.BlockDeviceMappings[].{api}"
            for pulumi, api in (
                ("deviceName", "DeviceName"),
                ("ebs.deleteOnTermination", "Ebs.DeleteOnTermination"),
                ("ebs.encrypted", "Ebs.Encrypted"),
                ("ebs.volumeSize", "Ebs.VolumeSize"),
                ("ebs.volumeType", "Ebs.VolumeType"),
            )
        },
        **{
            f"metadataOptions.{pulumi}": f"ec2.CreateLaunchTemplate.LaunchTemplateData.MetadataOptions.{api}"
            for pulumi, api in (
                ("httpEndpoint", "HttpEndpoint"),
                ("httpPutResponseHopLimit", "HttpPutResponseHopLimit"),
                ("httpTokens", "HttpTokens"),
            )
        },
        "placement.groupName": "ec2.CreateLaunchTemplate.LaunchTemplateData.Placement.GroupName",
        "capacityReservationSpecification.capacityReservationTarget.capacityReservationId": (
            "ec2.CreateLaunchTemplate.LaunchTemplateData.CapacityReservationSpecification"
            ".CapacityReservationTarget.CapacityReservationId"
        ),
        "instanceMarketOptions.marketType": "ec2.CreateLaunchTemplate.LaunchTemplateData.InstanceMarketOptions.MarketType",
        "userData": "ec2.CreateLaunchTemplate.LaunchTemplateData.UserData",
        "tagSpecifications[].resourceType": "ec2.CreateLaunchTemplate.LaunchTemplateData.TagSpecifications[].ResourceType",
        "tagSpecifications[].tags{key}": "ec2.CreateLaunchTemplate.LaunchTemplateData.TagSpecifications[].Tags[].Key",
        "tagSpecifications[].tags{value}": "ec2.CreateLaunchTemplate.LaunchTemplateData.TagSpecifications[].Tags[].Value",
        **EC2_TAGS,
    },
    # ---- EKS
    "aws:eks/cluster:Cluster": {
        "name": "eks.CreateCluster.name",
        "version": "eks.CreateCluster.version",
        "roleArn": "eks.CreateCluster.roleArn",
        "vpcConfig.subnetIds[]": "eks.CreateCluster.resourcesVpcConfig.subnetIds[]",
        "vpcConfig.endpointPrivateAccess": "eks.CreateCluster.resourcesVpcConfig.endpointPrivateAccess",
        "vpcConfig.endpointPublicAccess": "eks.CreateCluster.resourcesVpcConfig.endpointPublicAccess",
        "encryptionConfig.resources[]": "eks.CreateCluster.encryptionConfig[].resources[]",
        "encryptionConfig.provider.keyArn": "eks.CreateCluster.encryptionConfig[].provider.keyArn",
        "enabledClusterLogTypes[]": "eks.CreateCluster.logging.clusterLogging[].types[]",
        "accessConfig.authenticationMode": "eks.CreateCluster.accessConfig.authenticationMode",
        "accessConfig.bootstrapClusterCreatorAdminPermissions": (
            "eks.CreateCluster.accessConfig.bootstrapClusterCreatorAdminPermissions"
        ),
        **EKS_TAGS,
    },
    "aws:eks/nodeGroup:NodeGroup": {
        "clusterName": "eks.CreateNodegroup.clusterName",
        "nodeGroupName": "eks.CreateNodegroup.nodegroupName",
        "nodeRoleArn": "eks.CreateNodegroup.nodeRole",
        "subnetIds[]": "eks.CreateNodegroup.subnets[]",
        "instanceTypes[]": "eks.CreateNodegroup.instanceTypes[]",
        "amiType": "eks.CreateNodegroup.amiType",
        "capacityType": "eks.CreateNodegroup.capacityType",
        "scalingConfig.minSize": "eks.CreateNodegroup.scalingConfig.minSize",
        "scalingConfig.maxSize": "eks.CreateNodegroup.scalingConfig.maxSize",
        "scalingConfig.desiredSize": "eks.CreateNodegroup.scalingConfig.desiredSize",
        "labels{key}": "eks.CreateNodegroup.labels{key}",
        "labels{value}": "eks.CreateNodegroup.labels{value}",
        "taints[].key": "eks.CreateNodegroup.taints[].key",
        "taints[].value": "eks.CreateNodegroup.taints[].value",
        "taints[].effect": "eks.CreateNodegroup.taints[].effect",
        "launchTemplate.id": "eks.CreateNodegroup.launchTemplate.id",
        "launchTemplate.version": "eks.CreateNodegroup.launchTemplate.version",
        "updateConfig.maxUnavailable": "eks.CreateNodegroup.updateConfig.maxUnavailable",
        "tags{key}": "eks.CreateNodegroup.tags{key}",
        "tags{value}": "eks.CreateNodegroup.tags{value}",
    },
    "aws:eks/addon:Addon": {
        "clusterName": "eks.CreateAddon.clusterName",
        "addonName": "eks.CreateAddon.addonName",
        "resolveConflictsOnCreate": "eks.CreateAddon.resolveConflicts",
        "configurationValues": "eks.CreateAddon.configurationValues",
        **EKS_TAGS,
    },
    "aws:eks/accessEntry:AccessEntry": {
        "clusterName": "eks.CreateAccessEntry.clusterName",
        "principalArn": "eks.CreateAccessEntry.principalArn",
        "type": "eks.CreateAccessEntry.type",
        **EKS_TAGS,
    },
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": {
        "clusterName": "eks.CreatePodIdentityAssociation.clusterName",
        "namespace": "eks.CreatePodIdentityAssociation.namespace",
        "serviceAccount": "eks.CreatePodIdentityAssociation.serviceAccount",
        "roleArn": "eks.CreatePodIdentityAssociation.roleArn",
        **EKS_TAGS,
    },
    # ---- IAM, KMS, logs
    "aws:iam/role:Role": {
        "name": "iam.CreateRole.RoleName",
        "description": "iam.CreateRole.Description",
        "assumeRolePolicy": "iam.CreateRole.AssumeRolePolicyDocument",
        "tags{key}": "iam.CreateRole.Tags[].Key",
        "tags{value}": "iam.CreateRole.Tags[].Value",
    },
    "aws:iam/rolePolicy:RolePolicy": {
        "name": "iam.PutRolePolicy.PolicyName",
        "role": "iam.PutRolePolicy.RoleName",
        "policy": "iam.PutRolePolicy.PolicyDocument",
    },
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": {
        "role": "iam.AttachRolePolicy.RoleName",
        "policyArn": "iam.AttachRolePolicy.PolicyArn",
    },
    "aws:kms/key:Key": {
        "description": "kms.CreateKey.Description",
        "deletionWindowInDays": "kms.ScheduleKeyDeletion.PendingWindowInDays",
        "tags{key}": "kms.CreateKey.Tags[].TagKey",
        "tags{value}": "kms.CreateKey.Tags[].TagValue",
    },
    "aws:cloudwatch/logGroup:LogGroup": {
        "name": "logs.CreateLogGroup.logGroupName",
        "retentionInDays": "logs.PutRetentionPolicy.retentionInDays",
        "tags{key}": "logs.CreateLogGroup.tags{key}",
        "tags{value}": "logs.CreateLogGroup.tags{value}",
    },
    # ---- Karpenter's interruption queue and its events
    "aws:sqs/queue:Queue": {
        "name": "sqs.CreateQueue.QueueName",
        "messageRetentionSeconds": "sqs.CreateQueue.Attributes{MessageRetentionPeriod}",
        "sqsManagedSseEnabled": "sqs.CreateQueue.Attributes{SqsManagedSseEnabled}",
        "tags{key}": "sqs.CreateQueue.tags{key}",
        "tags{value}": "sqs.CreateQueue.tags{value}",
    },
    "aws:sqs/queuePolicy:QueuePolicy": {
        "queueUrl": "sqs.SetQueueAttributes.QueueUrl",
        "policy": "sqs.SetQueueAttributes.Attributes{Policy}",
    },
    "aws:cloudwatch/eventRule:EventRule": {
        "name": "events.PutRule.Name",
        "eventPattern": "events.PutRule.EventPattern",
        "tags{key}": "events.PutRule.Tags[].Key",
        "tags{value}": "events.PutRule.Tags[].Value",
    },
    "aws:cloudwatch/eventTarget:EventTarget": {
        "rule": "events.PutTargets.Rule",
        "arn": "events.PutTargets.Targets[].Arn",
        "targetId": "events.PutTargets.Targets[].Id",
    },
    # ---- shared weight caches
    "aws:efs/fileSystem:FileSystem": {
        "encrypted": "efs.CreateFileSystem.Encrypted",
        "performanceMode": "efs.CreateFileSystem.PerformanceMode",
        "throughputMode": "efs.CreateFileSystem.ThroughputMode",
        "tags{key}": "efs.CreateFileSystem.Tags[].Key",
        "tags{value}": "efs.CreateFileSystem.Tags[].Value",
    },
    "aws:efs/mountTarget:MountTarget": {
        "fileSystemId": "efs.CreateMountTarget.FileSystemId",
        "subnetId": "efs.CreateMountTarget.SubnetId",
        "securityGroups[]": "efs.CreateMountTarget.SecurityGroups[]",
    },
    "aws:fsx/lustreFileSystem:LustreFileSystem": {
        "storageCapacity": "fsx.CreateFileSystem.StorageCapacity",
        "subnetIds": "fsx.CreateFileSystem.SubnetIds[]",  # one subnet, as a string, in the provider
        "securityGroupIds[]": "fsx.CreateFileSystem.SecurityGroupIds[]",
        "deploymentType": "fsx.CreateFileSystem.LustreConfiguration.DeploymentType",
        "perUnitStorageThroughput": "fsx.CreateFileSystem.LustreConfiguration.PerUnitStorageThroughput",
        "dataCompressionType": "fsx.CreateFileSystem.LustreConfiguration.DataCompressionType",
        "tags{key}": "fsx.CreateFileSystem.Tags[].Key",
        "tags{value}": "fsx.CreateFileSystem.Tags[].Value",
    },
}

NOT_SENT: dict[str, dict[str, str]] = {
    "aws:ec2/securityGroup:SecurityGroup": {
        "ingress[].self": "the provider sends the group's own id as a UserIdGroupPair (checked as GroupId)",
        "egress[].self": "the provider sends the group's own id as a UserIdGroupPair (checked as GroupId)",
    },
    "aws:kms/key:Key": {
        "enableKeyRotation": "chooses whether the provider calls EnableKeyRotation; no value"
    },
}
"""Recorded inputs that reach no API member as a value, with why."""

TEXT_MEMBERS = {
    "sqs.CreateQueue.Attributes{MessageRetentionPeriod}",
    "sqs.CreateQueue.Attributes{SqsManagedSseEnabled}",
}
"""Members the provider fills with the text of a number or boolean input (SQS attributes are strings)."""


# ---- the models ------------------------------------------------------------------------------------


@functools.cache
def _session() -> botocore.session.Session:
    session = botocore.session.get_session()
    assert session.user_agent_version == BOTOCORE_VERSION, session.user_agent_version
    return session


@functools.cache
def service(name: str) -> Any:
    return _session().get_service_model(name)


_STEP = re.compile(r"([A-Za-z0-9]+)((?:\[\]|\{[A-Za-z0-9]+\})*)")


def _steps(path: str) -> Iterator[tuple[str, list[str]]]:
    for part in path.split("."):
        match = _STEP.fullmatch(part)
        assert match, f"bad path part {part!r} in {path}"
        yield match.group(1), re.findall(r"\[\]|\{[A-Za-z0-9]+\}", match.group(2))


@functools.cache
def member(target: str) -> Shape:
    """The shape of `service.Operation.Member…` (see the module docstring for the suffixes)."""
    name, operation, *path = target.split(".")
    shape = service(name).operation_model(operation).input_shape
    for field, suffixes in _steps(".".join(path)):
        shape = shape.members[field]
        for suffix in suffixes:
            if suffix == "[]":
                shape = shape.member
            elif suffix == "{key}":
                shape = shape.key
            else:  # {value}, or the value under one key
                shape = shape.value
    return shape


@functools.cache
def _documentation(target: str) -> str:
    """A member's documentation as plain text: its own, else its shape's (the nearer one says more)."""
    shape = member(target)
    return html.unescape(re.sub(r"<[^>]+>", "", shape.documentation or "")).replace("\u00a0", " ")


@functools.cache
def _map_documentation(target: str) -> str:
    """For `…Map{NAME}`: the map member's documentation, where AWS describes each NAME."""
    return _documentation(target.rsplit("{", 1)[0])


# ---- Java patterns in Python ------------------------------------------------------------------------


@functools.cache
def _category_ranges(category: str) -> str:
    """Every code point of a Unicode general category (L, N, Z), as ranges for a character class."""
    out, start, last = [], None, None
    for point in range(sys.maxunicode + 1):
        if unicodedata.category(chr(point)).startswith(category):
            if start is None:
                start = point
            last = point
        elif start is not None:
            out.append(f"\\U{start:08x}-\\U{last:08x}")
            start = None
    if start is not None:
        out.append(f"\\U{start:08x}-\\U{last:08x}")
    return "".join(out)


@functools.cache
def python_pattern(java: str) -> re.Pattern[str]:
    inside = re.sub(r"\\p\{([LNZ])\}", lambda m: _category_ranges(m.group(1)), java)
    assert "\\p{" not in inside, f"an unsupported Unicode class in {java}"
    return re.compile(inside)


# ---- constraints only the documentation states --------------------------------------------------------


@dataclass(frozen=True)
class Documented:
    """A constraint read from a member's documentation: `phrase` finds it, `check` applies it."""

    phrase: re.Pattern[str]
    check: Callable[[re.Match[str], Any], str | None]
    what: str


def _charset(match: re.Match[str], value: Any) -> str | None:
    extra = match.group(1)
    bad = sorted(
        {c for c in str(value) if not (c.isascii() and (c.isalnum() or c == " ")) and c not in extra}
    )
    return (
        f"has characters the API refuses: {''.join(bad)!r} (allowed: letters, digits, spaces, {extra})"
        if bad
        else None
    )


def _at_most(match: re.Match[str], value: Any) -> str | None:
    limit = int(match.group(1))
    return f"is {len(str(value))} characters, over {limit}" if len(str(value)) > limit else None


def _ascii_at_most(match: re.Match[str], value: Any) -> str | None:
    return _at_most(match, value) or (None if str(value).isascii() else "is not ASCII")


def _no_prefix(match: re.Match[str], value: Any) -> str | None:
    return (
        f"starts with {match.group(1)!r}" if str(value).lower().startswith(match.group(1).lower()) else None
    )


def _one_of_numbers(match: re.Match[str], value: Any) -> str | None:
    allowed = {int(n) for n in re.findall(r"\d+", match.group(1))}
    return None if int(value) in allowed else f"is not one of {sorted(allowed)}"


def _integer_range(match: re.Match[str], value: Any) -> str | None:
    low, high = (int(g.replace(",", "")) for g in match.groups())
    return None if low <= int(value) <= high else f"is outside {low}–{high}"


def _valid_codes(match: re.Match[str], value: Any) -> str | None:
    allowed = re.findall(r"([A-Z][A-Z0-9_]+)", match.group(1))
    return None if value in allowed else f"is not one of {allowed}"


def _queue_name(match: re.Match[str], value: Any) -> str | None:
    limit = int(match.group(1))
    if len(str(value)) > limit:
        return f"is {len(str(value))} characters, over {limit}"
    return (
        None if re.fullmatch(r"[A-Za-z0-9_-]+", str(value)) else "has characters other than A-Z a-z 0-9 - _"
    )


DOCUMENTED: tuple[Documented, ...] = (
    Documented(
        re.compile(r"(?:Valid characters:|Allowed characters are) a-z, A-Z, 0-9, spaces, and (\S+)"),
        _charset,
        "charset",
    ),
    Documented(re.compile(r"Up to (\d+) characters in length"), _at_most, "length"),
    Documented(re.compile(r"accept a maximum of (\d+) Unicode characters"), _at_most, "length"),
    Documented(re.compile(r"Up to (\d+) ASCII characters"), _ascii_at_most, "ASCII length"),
    Documented(
        re.compile(r"(?:May not begin with|Can't start with) (\S+?)\.?(?:\s|$)"), _no_prefix, "prefix"
    ),
    Documented(re.compile(r"Possible values are: ([\d, and]+)\."), _one_of_numbers, "allowed numbers"),
    Documented(re.compile(r"Possible values: Integers from (\d+) to (\d+)"), _integer_range, "range"),
    Documented(re.compile(r"must be between (\d+) and (\d+), inclusive"), _integer_range, "range"),
    Documented(
        re.compile(r"Valid values are ((?:[A-Z][A-Z0-9_]+[^.]*?)+)\."), _valid_codes, "allowed values"
    ),
    Documented(re.compile(r"A queue name can have up to (\d+) characters"), _queue_name, "queue name"),
)
"""Phrases of the API documentation that state a constraint the model does not carry as one."""


def _map_key_range(target: str, value: Any) -> str | None:
    """SQS-style attribute maps: `NAME – … Valid values: An integer from X … to Y …`."""
    key = target.rsplit("{", 1)[1].rstrip("}")
    found = re.search(
        rf"{key} – .*?Valid values: An integer from ([\d,]+) [a-z]+(?: \([^)]*\))? to ([\d,]+)",
        _map_documentation(target),
    )
    if not found:
        return None
    return _integer_range(found, value)


def documented(target: str) -> list[tuple[Documented, re.Match[str]]]:
    """The documented constraints that apply to a member."""
    text = _documentation(target)
    return [(rule, m) for rule in DOCUMENTED if (m := rule.phrase.search(text))]


# ---- checking values ---------------------------------------------------------------------------------


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def _shape_problems(value: Any, shape: Shape) -> list[str]:
    kind, meta = shape.type_name, shape.metadata
    if kind == "string":
        if not isinstance(value, str):
            return [f"is {type(value).__name__}, not a string"]
        out = []
        if shape.enum and value not in shape.enum:
            out.append(f"is not one of {shape.enum}")
        if "min" in meta and len(value) < meta["min"]:
            out.append(f"is shorter than {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"is longer than {meta['max']}")
        if "pattern" in meta and not python_pattern(meta["pattern"]).fullmatch(value):
            out.append(f"does not match {meta['pattern']}")
        return out
    if kind in ("integer", "long"):
        if not _is_integer(value):
            return [f"is {value!r}, not an integer"]
        out = []
        if "min" in meta and value < meta["min"]:
            out.append(f"is below {meta['min']}")
        if "max" in meta and value > meta["max"]:
            out.append(f"is above {meta['max']}")
        return out
    if kind == "boolean":
        # Some provider inputs are strings the provider parses ("true"), as launch template EBS settings.
        return (
            [] if isinstance(value, bool) or value in ("true", "false") else [f"is {value!r}, not a boolean"]
        )
    return [f"is a {kind} shape: map a leaf of it"]


def value_problems(target: str, value: Any) -> list[str]:
    """What AWS refuses about `value` sent as `target`."""
    if value is None or value == UNKNOWN or value == SECRET:
        return []
    if target in TEXT_MEMBERS:
        value = (
            str(value).lower()
            if isinstance(value, bool)
            else str(int(value))
            if _is_integer(value)
            else value
        )
    out = _shape_problems(value, member(target))
    for rule, match in documented(target):
        found = rule.check(match, value)
        if found:
            out.append(f"{found} (its documentation)")
    if target.endswith("}") and not target.endswith(("{key}", "{value}")):
        found = _map_key_range(target, value)
        if found:
            out.append(f"{found} (its documentation)")
    return out


def leaves(inputs: Any, maps: set[str], path: str = "") -> Iterator[tuple[str, Any]]:
    """(input path, value) for every recorded value; `maps` names the inputs that are maps."""
    if path in maps and isinstance(inputs, dict):
        for key, value in inputs.items():
            yield f"{path}{{key}}", key
            yield f"{path}{{value}}", value
    elif isinstance(inputs, dict):
        for key, value in inputs.items():
            yield from leaves(value, maps, f"{path}.{key}" if path else key)
    elif isinstance(inputs, list):
        for value in inputs:
            yield from leaves(value, maps, f"{path}[]")
    else:
        yield path, inputs


def maps_of(type_: str) -> set[str]:
    return {p[: -len("{key}")] for p in SENT.get(type_, {}) if p.endswith("{key}")}


def _container(target: str) -> str:
    """The list or map member holding a map's keys: `…tags{key}` → `…tags`, `…Tags[].Key` → `…Tags`."""
    if target.endswith("{key}"):
        return target[: -len("{key}")]
    return target.rsplit(".", 1)[0].removesuffix("[]")


def _count_problems(type_: str, inputs: dict[str, Any]) -> list[str]:
    """How many entries a map input has, against the list or map it becomes (e.g. at most 50 tags)."""
    out = []
    for path in maps_of(type_):
        found = [v for p, v in leaves(inputs, {path}) if p == f"{path}{{key}}"]
        target = _container(SENT[type_][f"{path}{{key}}"])
        limit = member(target).metadata.get("max")
        if limit is not None and len(found) > limit:
            out.append(f"{path}: {len(found)} entries, over {limit} ({target})")
    return out


def check(type_: str, inputs: dict[str, Any]) -> list[str]:
    """Every problem of one recorded resource, `input path: problem (API member)`, or an unmapped input."""
    sent, skipped = SENT[type_], NOT_SENT.get(type_, {})
    out = _count_problems(type_, inputs)
    for path, value in leaves(inputs, maps_of(type_)):
        if path in skipped:
            continue
        target = sent.get(path)
        if target is None:
            out.append(f"{path}: no API member mapped for it in tests/aws_api.py SENT")
            continue
        out += [f"{path}: {value!r} {problem} ({target})" for problem in value_problems(target, value)]
    return out
