"""Free text sgldeploy sends AWS that a user decides: the tags of `platform.tags`, and the names derived from
the cluster's. AWS refuses what its APIs do not accept only at `pulumi up`, so they are checked with the spec.

The limits are the strictest of the APIs these reach, as botocore 1.44.5's models state them (tests/test_aws_api.py
checks these against every tagged API member sgldeploy maps).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from sgldeploy.spec import PlatformSpec
from sgldeploy.spec.problems import Problem, config_path

TAG_KEY_MAX = 127  # EC2 Tag.Key: "accept a maximum of 127 Unicode characters" (IAM, EKS and the others: 128)
TAG_VALUE_MAX = 256  # EC2 Tag.Value and every other service
TAG_PUNCTUATION = "_.:/=+-@"
"""Besides Unicode letters, digits and spaces: IAM's tagKeyType and tagValueType (also EFS, FSx, CloudWatch
Logs, EventBridge) are [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]."""
RESERVED_TAG_PREFIX = "aws:"  # EC2 Tag.Key: "May not begin with aws:"; EFS's pattern refuses it too
TAGS_PER_RESOURCE = 50  # IAM tagListType and EKS TagMap: at most 50
SGLDEPLOY_TAGS_AT_MOST = 8  # a managed node group's own: its pool's and seven Cluster Autoscaler tags
MAX_USER_TAGS = TAGS_PER_RESOURCE - SGLDEPLOY_TAGS_AT_MOST

ROLE_NAME_MAX = 64  # IAM roleNameType
QUEUE_NAME_MAX = 80  # SQS CreateQueue QueueName: "A queue name can have up to 80 characters"
NODE_ROLE_PREFIX = "KarpenterNodeRole-"  # Karpenter's convention for the node role
INTERRUPTION_QUEUE_PREFIX = "Karpenter-"


def default_node_role(cluster: str) -> str:
    return f"{NODE_ROLE_PREFIX}{cluster}"


def interruption_queue(cluster: str) -> str:
    """The SQS queue Karpenter reads interruption events from."""
    return f"{INTERRUPTION_QUEUE_PREFIX}{cluster}"


def tag_text_ok(text: str) -> bool:
    return all(unicodedata.category(c)[0] in "LNZ" or c in TAG_PUNCTUATION for c in text)


def tag_problems(tags: Mapping[str, str]) -> list[tuple[str | None, str, str, object]]:
    """(tag key or None for the whole map, what, fix, got) for each tag AWS would refuse."""
    out: list[tuple[str | None, str, str, object]] = []
    if len(tags) > MAX_USER_TAGS:
        out.append(
            (
                None,
                f"has more tags than AWS allows with sgldeploy's own ({TAGS_PER_RESOURCE} per resource, "
                f"{SGLDEPLOY_TAGS_AT_MOST} of them sgldeploy's)",
                f"keep at most {MAX_USER_TAGS}",
                len(tags),
            )
        )
    allowed = f"letters, digits, spaces and {TAG_PUNCTUATION}"
    for key, value in tags.items():
        if not 1 <= len(key) <= TAG_KEY_MAX or not tag_text_ok(key):
            out.append((key, f"is not a tag key AWS accepts: 1–{TAG_KEY_MAX} of {allowed}", "rename it", key))
        elif key.lower().startswith(RESERVED_TAG_PREFIX):
            out.append((key, f"starts with {RESERVED_TAG_PREFIX}, which AWS reserves", "rename it", key))
        if len(value) > TAG_VALUE_MAX or not tag_text_ok(value):
            out.append(
                (
                    key,
                    f"is not a tag value AWS accepts: up to {TAG_VALUE_MAX} of {allowed}",
                    "change it",
                    value,
                )
            )
    return out


def cluster_name_problems(
    cluster: str, node_role_set: bool, karpenter_installed: bool
) -> list[tuple[str, str]]:
    """(what, fix) for each AWS name the cluster's name would make too long."""
    out = []
    role = default_node_role(cluster)
    if not node_role_set and len(role) > ROLE_NAME_MAX:
        out.append(
            (
                f"makes the default node role name {role} {len(role)} characters, over IAM's {ROLE_NAME_MAX}",
                f"set platform.node_role to a name of at most {ROLE_NAME_MAX} characters, or shorten the cluster "
                "name",
            )
        )
    queue = interruption_queue(cluster)
    if karpenter_installed and len(queue) > QUEUE_NAME_MAX:
        out.append(
            (
                f"makes Karpenter's interruption queue name {queue} {len(queue)} characters, over SQS's "
                f"{QUEUE_NAME_MAX}",
                f"shorten the cluster name to at most {QUEUE_NAME_MAX - len(INTERRUPTION_QUEUE_PREFIX)} characters",
            )
        )
    return out


def platform_problems(platform: PlatformSpec) -> list[Problem]:
    """`platform.tags` and the names derived from `platform.cluster.name`, as problem lines."""
    out = [
        Problem(config_path("platform", ("tags",) if key is None else ("tags", key)), what, fix, got)
        for key, what, fix, got in tag_problems(platform.tags)
    ]
    name = platform.cluster.name
    for what, fix in cluster_name_problems(
        name, platform.node_role is not None, platform.addons.karpenter is True
    ):
        out.append(Problem(config_path("platform", ("cluster", "name")), what, fix, name))
    return out
