"""The sgldeploy CrossGuard policy pack: `pulumi preview --policy-pack policies [--policy-pack-config FILE]`.

Each policy wraps a pure rule of `sgldeploy.policy.rules`, configured from `sgldeploy.policy.pack.POLICIES`
(names, descriptions, enforcement levels, config schemas with safe defaults); `sgldeploy plan` runs the
same rules over its recorded resources, so the offline plan and the preview agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from sgldeploy.policy.pack import PACK_NAME, POLICIES, PolicyDef
from sgldeploy.policy.rules import Resource

LEVEL = {
    "advisory": EnforcementLevel.ADVISORY,
    "mandatory": EnforcementLevel.MANDATORY,
    "remediate": EnforcementLevel.REMEDIATE,
    "disabled": EnforcementLevel.DISABLED,
}


def plain(value: Any) -> Any:
    """The engine's property proxies as plain dicts and lists, as the rules expect."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value


def _config(policy: PolicyDef, args) -> dict[str, Any]:
    return {**policy.defaults(), **{k: v for k, v in plain(args.get_config()).items() if k in policy.config}}


def _resource_validation(policy: PolicyDef):
    def validate(args, report_violation) -> None:
        resource = Resource(type=args.resource_type, name=args.name, urn=args.urn, props=plain(args.props))
        for message in policy.check(resource, _config(policy, args)):
            report_violation(message)

    return validate


def _stack_validation(policy: PolicyDef):
    def validate(args, report_violation) -> None:
        resources = [
            Resource(
                type=r.resource_type,
                name=r.name,
                urn=r.urn,
                props=plain(r.props),
                parent=r.parent.urn if r.parent is not None else None,
            )
            for r in args.resources
        ]
        for urn, message in policy.check(resources, _config(policy, args)):
            report_violation(message, urn or None)

    return validate


def build_policies() -> list:
    policies = []
    for p in POLICIES:
        schema = PolicyConfigSchema(properties=p.config) if p.config else None
        kind, validate = (
            (StackValidationPolicy, _stack_validation(p))
            if p.stack
            else (ResourceValidationPolicy, _resource_validation(p))
        )
        policies.append(
            kind(
                name=p.name,
                description=p.description,
                validate=validate,
                enforcement_level=LEVEL[p.level],
                config_schema=schema,
            )
        )
    return policies


if __name__ == "__main__":  # the Pulumi CLI runs the pack; importing it (tests) starts no server
    PolicyPack(name=PACK_NAME, policies=build_policies())
