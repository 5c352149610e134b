"""IAM documents linted with parliament (duo-labs, 1.6.4, action database of 2025-04), and a tag-scope check.

Which of parliament's findings fail a test, and why:
- errors, always: a document AWS would refuse or misread (MALFORMED*, EXCEPTION, DUPLICATE_SID, INVALID_*,
  NO_VERSION, OLD_VERSION, UNKNOWN_ACTION / _PREFIX / _PRINCIPAL / _OPERATOR / _FEDERATION_SOURCE,
  MISMATCHED_TYPE*, BAD_PATTERN_FOR_MFA, RESOURCE_POLICY_PRIVILEGE_ESCALATION) and
  - RESOURCE_MISMATCH, an action granted on resources it does not take (AWS then denies it): parliament
    judges one statement at a time, while AWS authorizes each resource of a call against every statement, so a
    required resource type another statement of the same document grants for that action is covered; AWS's
    public SSM parameters have no account in their ARN (arn:aws:ssm:REGION::parameter/aws/service/…,
    https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-public-parameters.html),
    which parliament's matcher cannot express, so they match `arn:*:ssm:*:*:parameter/*`;
  - UNKNOWN_CONDITION_FOR_ACTION, a condition the action never evaluates (the statement then never matches,
    or matches too much): unless parliament's own database lists the key for that action under another entry
    of the same service prefix (it holds two Elastic Load Balancing V2 entries, and reads the older one, which
    lacks elasticloadbalancing:CreateAction on AddTags);
- reviewed: RESOURCE_STAR (an action that could be scoped is granted on "*"), and the community auditors'
  PERMISSIONS_MANAGEMENT_ACTIONS, PRIVILEGE_ESCALATION, CREDENTIALS_EXPOSURE, SENSITIVE_ACCESS: each is accepted
  only where tests/test_iam.py lists it with the reason, so a new one fails until someone reviews it.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports pkg_resources, deprecated
    import parliament

PARLIAMENT_VERSION = "1.6.4"
ERRORS = {
    "EXCEPTION",
    "MALFORMED_JSON",
    "MALFORMED",
    "DUPLICATE_SID",
    "INVALID_SID",
    "INVALID_ARN",
    "INVALID_VERSION",
    "NO_VERSION",
    "OLD_VERSION",
    "UNKNOWN_ACTION",
    "UNKNOWN_PREFIX",
    "UNKNOWN_PRINCIPAL",
    "UNKNOWN_FEDERATION_SOURCE",
    "UNKNOWN_OPERATOR",
    "UNKNOWN_CONDITION_FOR_ACTION",
    "MISMATCHED_TYPE",
    "MISMATCHED_TYPE_BUT_USABLE",
    "MISMATCHED_TYPE_OPERATION_TO_NULL",
    "BAD_PATTERN_FOR_MFA",
    "RESOURCE_MISMATCH",
    "RESOURCE_POLICY_PRIVILEGE_ESCALATION",
}
PUBLIC_SSM_PARAMETER = re.compile(r"arn:aws[\w-]*:ssm:[a-z0-9-]+::parameter/aws/service/.*")
_UNKNOWN_CONDITION = re.compile(r"Unknown condition (\S+) for action (\S+)")


@dataclass(frozen=True)
class Finding:
    issue: str
    detail: Any

    def __str__(self) -> str:
        return f"{self.issue}: {self.detail}"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(document["Statement"])


def actions_of(statement: dict[str, Any]) -> set[str]:
    """The statement's actions, wildcards expanded with parliament's database, lower-cased."""
    out = set()
    for action in _as_list(statement.get("Action", [])):
        for expanded in parliament.expand_action(action, raise_exceptions=False) or []:
            out.add(f"{expanded['service']}:{expanded['action']}".lower())
    return out


def _covered(document: dict[str, Any], action: str, required: str) -> bool:
    """Another Allow statement of the document grants `action` on a resource of the required format."""
    for statement in statements(document):
        if statement.get("Effect") != "Allow" or action.lower() not in actions_of(statement):
            continue
        for resource in _as_list(statement.get("Resource", [])):
            if resource == "*":
                return True
            if required != "*" and parliament.is_arn_strictly_valid("", required, resource):
                return True
            if required.startswith("arn:*:ssm:") and PUBLIC_SSM_PARAMETER.fullmatch(resource):
                return True
    return False


def _condition_known(key: str, action: str) -> bool:
    """Does any of parliament's database entries for the action's service list `key` for it?"""
    prefix, name = action.split(":", 1)
    for service in parliament.iam_definition:
        if service["prefix"] != prefix:
            continue
        for privilege in service["privileges"]:
            if privilege["privilege"].lower() != name.lower():
                continue
            if any(key in r["condition_keys"] for r in privilege["resource_types"]):
                return True
    return False


def _mismatches_left(document: dict[str, Any], detail: list[dict[str, str]]) -> list[dict[str, str]]:
    return [d for d in detail if not _covered(document, d["action"], d["required_format"])]


def findings(document: dict[str, Any]) -> list[Finding]:
    """parliament's findings on an identity or resource policy, with the two corrections explained above."""
    linted = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
    out = []
    for found in linted.findings:
        detail = found.detail if found.detail not in (None, "") else found.location
        if found.issue == "RESOURCE_MISMATCH":
            detail = _mismatches_left(document, found.detail)
            if not detail:
                continue
        if found.issue == "UNKNOWN_CONDITION_FOR_ACTION":
            match = _UNKNOWN_CONDITION.search(str(found.detail))
            if match and _condition_known(match.group(1), match.group(2)):
                continue
        out.append(Finding(found.issue, detail))
    return _unique(out)


def _unique(found: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    for f in found:
        key = (f.issue, json.dumps(f.detail, sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def errors(document: dict[str, Any]) -> list[Finding]:
    return [f for f in findings(document) if f.issue in ERRORS]


def reviewed(document: dict[str, Any]) -> list[Finding]:
    return [f for f in findings(document) if f.issue not in ERRORS]


# ---- trust policies ------------------------------------------------------------------------------------


def trust_problems(document: dict[str, Any]) -> list[str]:
    """A role's trust policy: parliament lints identity and resource policies, and reports a trust policy as
    MALFORMED for its missing Resource, so its parts are checked here, actions against parliament's database."""
    out = []
    if document.get("Version") != "2012-10-17":
        out.append(f"Version is {document.get('Version')!r}")
    for statement in statements(document):
        if "Resource" in statement or "NotResource" in statement:
            out.append("a trust policy statement names a Resource")
        services = _as_list((statement.get("Principal") or {}).get("Service", []))
        if not services or not all(
            re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.amazonaws\.com", s) for s in services
        ):
            out.append(f"Principal is not a service principal: {statement.get('Principal')}")
        for action in _as_list(statement.get("Action", [])):
            if not action.startswith("sts:") or not parliament.expand_action(action, raise_exceptions=False):
                out.append(f"{action} is not an STS action parliament knows")
    return out


# ---- tags that widen a tag-conditioned scope -------------------------------------------------------------

TAGGING = re.compile(r"(createtags|addtags|addtagstoresource|tagresource|tag[a-z]+)")
"""Actions that put a tag on an existing resource (by name, lower-case)."""
_RESOURCE_TAG = re.compile(r"^(?:aws|[a-z0-9-]+):ResourceTag/(.+)$")
_REQUEST_TAG = re.compile(r"^aws:RequestTag/(.+)$")


def _conditions(statement: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, value in keys.items():
            yield operator, key, value


def _scoped_keys(document: dict[str, Any]) -> dict[str, set[str]]:
    """Tag keys that scope some statement (`aws:ResourceTag/K`), by the service prefix of its actions."""
    out: dict[str, set[str]] = {}
    for statement in statements(document):
        keys = {m.group(1) for _, key, _ in _conditions(statement) if (m := _RESOURCE_TAG.match(key))}
        for action in actions_of(statement):
            out.setdefault(action.split(":")[0], set()).update(keys)
    return out


def _keeps_key_in_scope(statement: dict[str, Any], key: str) -> bool:
    """The statement cannot put `key` on a resource outside the scope: it tags only at creation
    (`<service>:CreateAction`), only resources that already carry the key, or never the key itself."""
    for operator, name, value in _conditions(statement):
        if name.endswith(":CreateAction"):
            return True
        found = _RESOURCE_TAG.match(name)
        if found and found.group(1) == key and not (operator == "Null" and str(value).lower() == "true"):
            return True
        request = _REQUEST_TAG.match(name)
        if request and request.group(1) == key and operator == "Null" and str(value).lower() == "true":
            return True
        if name == "aws:TagKeys" and operator.startswith("ForAllValues:") and key not in _as_list(value):
            return True
    return False


def tag_widening(document: dict[str, Any]) -> list[str]:
    """Statements that let the role tag any resource with a key another of its statements is scoped by, so
    that statement's actions (terminate, delete, open) then reach that resource."""
    scoped = _scoped_keys(document)
    out = []
    for statement in statements(document):
        if statement.get("Effect") != "Allow":
            continue
        for action in sorted(actions_of(statement)):
            prefix, name = action.split(":", 1)
            if not TAGGING.fullmatch(name):
                continue
            for key in sorted(scoped.get(prefix, set())):
                if not _keeps_key_in_scope(statement, key):
                    out.append(f"{statement.get('Sid', '?')}: {action} can tag any resource with {key}")
    return out
