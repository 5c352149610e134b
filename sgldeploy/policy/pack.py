"""The policy pack as data: each policy's name, description, enforcement level, config schema and rule.

`policies/__main__.py` turns this table into CrossGuard policies; `sgldeploy plan` evaluates it over the
recorded resources with the same config file format as `pulumi preview --policy-pack-config`:

    {"all": "advisory", "stack-budget": {"enforcementLevel": "mandatory", "budget_usd_per_month": 5000}}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jsonschema

from sgldeploy.builders.weight_cache import NODE_CACHE_PATH
from sgldeploy.policy import rules
from sgldeploy.policy.rules import Finding, Resource, Undetermined
from sgldeploy.policy.values import as_written
from sgldeploy.spec.problems import InvalidInput, Problem

PACK_NAME = "sgldeploy"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")
# What Pulumi reports a violation at, by the policy's configured level. A policy at `remediate` that still
# finds a violation is reported `mandatory` (the pack's policies remediate nothing): pulumi_policy 1.21.0,
# _PolicyAnalyzerServicer.Analyze and .AnalyzeStack ("downgrade the level we report from remediate to
# mandatory"), and the engine does the same (pulumi/pulumi pkg/resource/deploy/step_generator.go).
REPORTED_LEVEL = {"advisory": "advisory", "mandatory": "mandatory", "remediate": "mandatory"}
# Levels that fail `pulumi preview` and stop `pulumi up` (step_generator.go: a mandatory diagnostic sets
# sawError, and makes the resource invalid outside a preview).
BLOCKING = frozenset({"mandatory", "remediate"})
# A policy that cannot judge a value before apply says so once per resource (per stack for a stack policy),
# after its violations, at this level whatever its own: the CrossGuard pack raises pulumi_policy's
# UnknownValueError, which pulumi_policy 1.21.0 reports as one advisory "can't run policy … during preview"
# with no URN (_PolicyAnalyzerServicer.Analyze, .AnalyzeStack).
UNDETERMINED_LEVEL = "advisory"


@dataclass(frozen=True)
class PolicyDef:
    name: str
    description: str
    level: str  # the default enforcement level
    check: Callable[..., list[Any]]  # rules.<fn>(resource or resources, config) → findings
    config: dict[str, dict[str, Any]]  # JSON Schema properties, each with a safe default
    stack: bool = False  # a stack rule sees every resource at once

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.config.items()}


def _strings(default: list[str], what: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "default": default, "description": what}


POLICIES: tuple[PolicyDef, ...] = (
    PolicyDef(
        "model-revision-pinned-production",
        "Production models are pinned to a 40-hex commit, so every "
        "replica and every rollback serves the same weights.",
        "mandatory",
        partial(rules.revision_pinned, production=True),
        {},
    ),
    PolicyDef(
        "model-revision-pinned",
        "Outside production, models should be pinned to a commit too; a moving "
        "branch changes what a scale-up serves.",
        "advisory",
        partial(rules.revision_pinned, production=False),
        {},
    ),
    PolicyDef(
        "weights-safetensors",
        "Weights are loaded from safetensors only, never unpickled.",
        "mandatory",
        rules.safetensors_only,
        {
            "allowed_load_formats": _strings(
                ["safetensors", "fastsafetensors", "runai_streamer"],
                "SGLang --load-format values that read safetensors only",
            )
        },
    ),
    PolicyDef(
        "trust-remote-code-allowlist",
        "Model repos may run their own Python code only when allow-listed.",
        "mandatory",
        rules.remote_code_allowed,
        {"allowed_repos": _strings([], "Hugging Face repos reviewed and allowed to run their own code")},
    ),
    PolicyDef(
        "placement-fits",
        "The model fits the GPU memory of its placement, and the GPU supports its dtype, "
        "quantization and KV cache dtype.",
        "mandatory",
        rules.placement_fits,
        {},
    ),
    PolicyDef(
        "stack-budget",
        "The stack's monthly cost at max replicas stays within the budget.",
        "mandatory",
        rules.budget,
        {
            "budget_usd_per_month": {
                "type": ["number", "null"],
                "minimum": 0,
                "default": None,
                "description": "USD per month; null uses platform.budget_usd_per_month",
            }
        },
        stack=True,
    ),
    PolicyDef(
        "public-endpoint-secured",
        "Internet-facing endpoints require an API key and TLS.",
        "mandatory",
        rules.public_endpoint_secured,
        {},
    ),
    PolicyDef(
        "production-availability",
        "Production deployments keep serving through rollouts and drains: "
        "always-ready keeps a replica, a PodDisruptionBudget guards the pods, max_unavailable is 0.",
        "mandatory",
        rules.production_availability,
        {},
        stack=True,
    ),
    PolicyDef(
        "images-pinned",
        "Container images are pinned by version tag or digest, never latest or untagged.",
        "mandatory",
        rules.images_pinned,
        {"forbidden_tags": _strings(["latest", "main", "nightly", "dev"], "tags that move")},
    ),
    PolicyDef(
        "container-resources",
        "Every container requests CPU and memory and has a memory limit, so the "
        "scheduler can place it and a leak cannot take the node.",
        "mandatory",
        rules.container_resources,
        {
            "require_cpu_limit": {
                "type": "boolean",
                "default": False,
                "description": "also require CPU limits "
                "(off: throttling SGLang's scheduler threads only adds latency)",
            }
        },
    ),
    PolicyDef(
        "no-privileged-containers",
        "No privileged containers, privilege escalation or host namespaces; "
        "host paths only under the node cache.",
        "mandatory",
        rules.no_privilege,
        {"allowed_host_paths": _strings([NODE_CACHE_PATH], "host path prefixes pods may mount")},
    ),
    PolicyDef(
        "gpu-caps",
        "GPUs at max replicas stay under a cap per deployment and per stack.",
        "mandatory",
        rules.gpu_caps,
        {
            "max_gpus_per_deployment": {
                "type": "integer",
                "minimum": 0,
                "default": 64,
                "description": "GPUs one deployment may use at max replicas",
            },
            "max_gpus_total": {
                "type": "integer",
                "minimum": 0,
                "default": 256,
                "description": "GPUs the whole stack may use at max replicas",
            },
        },
        stack=True,
    ),
    PolicyDef(
        "allowed-instances-and-regions",
        "GPU instances come from allowed families, in allowed regions.",
        "mandatory",
        rules.instances_and_regions,
        {
            "allowed_instance_families": _strings([], "EC2 instance families, e.g. g6e, p5; empty for any"),
            "allowed_regions": _strings([], "AWS regions; empty for any"),
        },
    ),
)
BY_NAME = {p.name: p for p in POLICIES}


# ---- config ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    level: str
    config: dict[str, Any]


def settings(raw: dict[str, Any] | None = None, where: str = "policy config") -> dict[str, Settings]:
    """Each policy's level and config from Pulumi's policy config format; every problem reported at once."""
    raw = raw or {}
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise InvalidInput(
            [Problem(where, "must be a JSON object of policy names", 'e.g. {"all": "advisory"}', raw)]
        )
    default_level = raw.get("all")
    if default_level is not None and default_level not in LEVELS:
        problems.append(
            Problem(
                f"{where}: all",
                "is not an enforcement level",
                f"use one of {', '.join(LEVELS)}",
                default_level,
            )
        )
    out = {}
    for name in raw:
        if name != "all" and name not in BY_NAME:
            problems.append(
                Problem(
                    f"{where}: {name}",
                    "is not a policy of this pack",
                    f"use one of: {', '.join(BY_NAME)}",
                    name,
                )
            )
    for p in POLICIES:
        level, config = default_level if default_level in LEVELS else p.level, p.defaults()
        given = raw.get(p.name)
        if isinstance(given, str):
            given = {"enforcementLevel": given}
        if given is not None and not isinstance(given, dict):
            problems.append(
                Problem(
                    f"{where}: {p.name}",
                    "must be an enforcement level or an object",
                    'e.g. "advisory" or {"enforcementLevel": "mandatory"}',
                    given,
                )
            )
            given = None
        for key, value in as_written(given or {}).items():
            if key == "enforcementLevel":
                if value not in LEVELS:
                    problems.append(
                        Problem(
                            f"{where}: {p.name}.enforcementLevel",
                            "is not an enforcement level",
                            f"use one of {', '.join(LEVELS)}",
                            value,
                        )
                    )
                else:
                    level = value
            elif key not in p.config:
                problems.append(
                    Problem(
                        f"{where}: {p.name}.{key}",
                        "is not a setting of this policy",
                        f"use one of: {', '.join(p.config) or 'none (only enforcementLevel)'}",
                        key,
                    )
                )
            else:
                try:
                    jsonschema.validate(value, {k: v for k, v in p.config[key].items() if k != "default"})
                    config[key] = value
                except jsonschema.ValidationError as err:
                    problems.append(
                        Problem(
                            f"{where}: {p.name}.{key}",
                            f"is invalid ({err.message})",
                            p.config[key]["description"],
                            value,
                        )
                    )
        out[p.name] = Settings(level, config)
    if problems:
        raise InvalidInput(problems)
    return out


def read_settings(path: Path | None) -> dict[str, Settings]:
    if path is None:
        return settings()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InvalidInput(
            [
                Problem(
                    str(path),
                    f"cannot be read as JSON ({err.__class__.__name__})",
                    "pass a policy config file as `pulumi preview --policy-pack-config` takes",
                    show_got=False,
                )
            ]
        ) from None
    return settings(raw, str(path))


# ---- evaluation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    resource: str  # URN, or "" for the stack as a whole
    message: str

    @property
    def blocking(self) -> bool:
        return self.level in BLOCKING

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "level": self.level,
            "resource": self.resource,
            "message": self.message,
        }


def undetermined_message(findings: list[Finding]) -> str | None:
    """What the values a policy could not judge yet come to, in one message; None when it judged them all."""
    messages = [f.message for f in findings if isinstance(f, Undetermined)]
    return "; ".join(messages) if messages else None


def violations(
    policy: str, level: str, found: list[tuple[str, Finding]], unknown_urn: str
) -> list[Violation]:
    """Findings as Pulumi reports them: each violation at the level reported for the policy's, then what it
    could not judge, in one advisory for `unknown_urn` (the resource judged, or "" for the stack)."""
    out = [Violation(policy, REPORTED_LEVEL[level], urn, f) for urn, f in found if isinstance(f, str)]
    message = undetermined_message([f for _, f in found])
    if message is not None:
        out.append(Violation(policy, UNDETERMINED_LEVEL, unknown_urn, message))
    return out


def evaluate(
    resources: list[Resource],
    policy_settings: dict[str, Settings] | None = None,
    stack_resources: list[Resource] | None = None,
) -> list[Violation]:
    """Every violation of every enabled policy, in pack order then resource order.

    Resource policies judge `resources` (each resource's inputs, as Pulumi's Analyze sends them); stack
    policies judge `stack_resources` (each resource's state, as AnalyzeStack sends it), `resources` if not
    given."""
    policy_settings = policy_settings or settings()
    out = []
    for p in POLICIES:
        s = policy_settings[p.name]
        if s.level == "disabled":
            continue
        if p.stack:
            found = p.check(resources if stack_resources is None else stack_resources, s.config)
            out += violations(p.name, s.level, found, "")
        else:
            for r in resources:
                out += violations(p.name, s.level, [(r.urn, f) for f in p.check(r, s.config)], r.urn)
    return out
