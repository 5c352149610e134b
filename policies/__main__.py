"""The sgldeploy CrossGuard policy pack: `pulumi preview --policy-pack policies [--policy-pack-config FILE]`.

The Pulumi CLI starts it as `venv/bin/python -u -m pulumi.policy <engine> .` in this directory (its
`pulumi-analyzer-policy-python` plugin), then asks it over gRPC: ConfigureStack, GetAnalyzerInfo, Configure,
Analyze per resource, AnalyzeStack. Each policy wraps a pure rule of `sgldeploy.policy.rules`, configured
from `sgldeploy.policy.pack.POLICIES` (names, descriptions, enforcement levels, config schemas with safe
defaults); `sgldeploy plan` runs the same rules over its recorded resources, so the offline plan and the
preview agree.

A rule reads the values it judges and nothing else: values the engine does not know yet (a first preview's
generated API key, a created cluster's kubeconfig) are handed to it as UNKNOWN rather than read through
pulumi_policy's proxy, which would turn the whole policy into one "can't run policy" advisory.
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
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from sgldeploy.policy.pack import PACK_NAME, POLICIES, PolicyDef, undetermined_message
from sgldeploy.policy.rules import Resource
from sgldeploy.policy.values import from_engine

LEVEL = {
    "advisory": EnforcementLevel.ADVISORY,
    "mandatory": EnforcementLevel.MANDATORY,
    "remediate": EnforcementLevel.REMEDIATE,
    "disabled": EnforcementLevel.DISABLED,
}


def raw(value: Any) -> Any:
    """pulumi_policy's property proxy as the plain values the engine sent: an unknown value, which the proxy
    raises on, is kept as the engine's sentinel for it."""
    if isinstance(value, Mapping):
        out = {}
        for key in value:
            try:
                out[key] = raw(value[key])
            except UnknownValueError as unknown:
                out[key] = unknown.unknown_type_sentinel
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = []
        for i in range(len(value)):
            try:
                items.append(raw(value[i]))
            except UnknownValueError as unknown:
                items.append(unknown.unknown_type_sentinel)
        return items
    return value


def plain(value: Any) -> Any:
    """Properties as the rules read them, as `sgldeploy plan` gives them: unknowns as UNKNOWN, and numbers as
    written (the engine sends every number as a double)."""
    return from_engine(raw(value))


def _config(policy: PolicyDef, args) -> dict[str, Any]:
    return {**policy.defaults(), **{k: v for k, v in plain(args.get_config()).items() if k in policy.config}}


class Undetermined(UnknownValueError):
    """Raised after a policy reported its violations, for the values it could not judge: pulumi_policy turns
    it into one advisory ("can't run policy … during preview: <message>"), never a block."""

    def __init__(self, message: str):
        super().__init__(UNKNOWN_STRING_VALUE, [])
        self.message = message


def _report(found: list[tuple[str, Any]], report_violation) -> None:
    for urn, finding in found:
        if isinstance(finding, str):
            report_violation(finding, urn or None)
    message = undetermined_message([finding for _, finding in found])
    if message is not None:
        raise Undetermined(message)


def _resource_validation(policy: PolicyDef):
    def validate(args, report_violation) -> None:
        resource = Resource(type=args.resource_type, name=args.name, urn=args.urn, props=plain(args.props))
        _report([("", f) for f in policy.check(resource, _config(policy, args))], report_violation)

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
        _report(policy.check(resources, _config(policy, args)), report_violation)

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
