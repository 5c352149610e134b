"""Render a stack offline: validate it, run the real program under the mock engine, price what it declares
and run the policy pack over it, as `pulumi preview --policy-pack` would. The rendered `Plan` is what the plan
JSON (plan_json), the manifests (manifests) and the text for people (plan_text) are made from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sgldeploy import cost
from sgldeploy.models.lock import lock_path_for
from sgldeploy.offline.engine import Recording, Registration, normalize, run_program
from sgldeploy.policy import pack
from sgldeploy.policy.rules import Resource
from sgldeploy.policy.values import from_engine
from sgldeploy.spec import USAGE_FILE_KEY
from sgldeploy.spec.problems import ConfigWarning
from sgldeploy.spec.region import REGION_KEY, stack_region
from sgldeploy.spec.stackfile import OPAQUE_SECRET, StackFile
from sgldeploy.stack import LoadedStack, load, secrets_of

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROGRAM = PROJECT_ROOT / "__main__.py"
PROJECT = "sgldeploy"


@dataclass
class Plan:
    stack: StackFile
    loaded: LoadedStack
    recording: Recording
    estimate: cost.Estimate
    violations: list[pack.Violation] = field(default_factory=list)
    usage_file: Path | None = None  # the usage assumptions priced with; None: the defaults
    warnings: list[ConfigWarning] = field(default_factory=list)  # valid, but worth saying (CLI: stderr)

    @property
    def region(self) -> str:
        return self.estimate.region

    @property
    def mandatory_violations(self) -> list[pack.Violation]:
        """The violations that fail `pulumi preview` (mandatory, and remediate, which Pulumi enforces)."""
        return [v for v in self.violations if v.blocking]

    @property
    def resources_in_urn_order(self) -> list[Registration]:
        """The recorded registrations in an order that does not depend on how the program ran."""
        return sorted(self.recording.resources, key=lambda r: r.urn)


def load_offline(stack: StackFile) -> LoadedStack:
    """A stack file's spec, locked models and sizing as the offline commands read them (`validate`, `plan`):
    with the lock beside the file, and each secret the stack lacks noted as stood in (raising InvalidInput)."""
    secrets, plaintext = secrets_of(stack)
    return load(
        stack.object(f"{PROJECT}:platform"),
        stack.object(f"{PROJECT}:deployments"),
        lock_path_for(stack.path),
        secrets,
        plaintext_secrets=plaintext,
        offline=True,
    )


def render(
    stack: StackFile,
    usage_file: Path | None = None,
    policy_settings: dict[str, pack.Settings] | None = None,
) -> Plan:
    """Validate (raising InvalidInput), run the program under the mock engine (raising pulumi.RunError), then
    price it and run the policy pack over what it declared."""
    lock_file = lock_path_for(stack.path)
    loaded = load_offline(stack)
    usage_path, usage = cost.stack_usage(stack.config.get(USAGE_FILE_KEY), stack.path.parent, usage_file)
    estimate = cost.estimate(loaded, stack_region(stack.config.get(REGION_KEY)), usage)
    config = {**stack.config, f"{PROJECT}:lockFile": str(lock_file)}
    if usage_path is not None:  # the program prices with the very file priced here, whichever gave it
        config[USAGE_FILE_KEY] = str(usage_path.absolute())
    config, secret_keys = with_stand_ins(config, stack.secret_keys, loaded.stand_in_secrets)
    recording = run_program(PROGRAM, PROJECT, stack.stack, config, secret_keys)
    plan = Plan(
        stack=stack,
        loaded=loaded,
        recording=recording,
        estimate=estimate,
        usage_file=usage_path,
        warnings=_usage_warnings(stack, usage_file),
    )
    plan.violations = policy_violations(recording, policy_settings)
    return plan


def _usage_warnings(stack: StackFile, override: Path | None) -> list[ConfigWarning]:
    """`--usage FILE` wins over the stack's `sgldeploy:usageFile`; `pulumi preview` reads only the latter."""
    setting = stack.config.get(USAGE_FILE_KEY)
    if override is None or not setting:
        return []
    return [
        ConfigWarning(
            USAGE_FILE_KEY,
            f"{setting!r} is not used by this plan: --usage {override} wins, but `pulumi preview` prices with "
            f"{setting!r}",
            "drop one of them, or set sgldeploy:usageFile to the file passed with --usage",
        )
    ]


def with_stand_ins(
    config: dict[str, str], secret_keys: list[str], stand_ins: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """The program's config with each secret the stack lacks set to the stand-in a `secure:` value gets, and
    marked secret: the program renders it as set (the plan shows `[secret]`). Only the offline plan does this;
    under `pulumi preview` the secret is absent and the program refuses to run."""
    missing = [key for key in stand_ins if key not in config]
    return {**config, **dict.fromkeys(missing, OPAQUE_SECRET)}, [*secret_keys, *missing]


def policy_violations(
    recording: Recording, policy_settings: dict[str, pack.Settings] | None = None
) -> list[pack.Violation]:
    """The pack's verdicts on what the program declared, as `pulumi preview --policy-pack` gives them."""
    return pack.evaluate(
        policy_resources(recording), policy_settings, stack_resources=policy_resources(recording, state=True)
    )


def policy_resources(recording: Recording, state: bool = False) -> list[Resource]:
    """The recorded resources as a policy sees them under `pulumi preview`: type, name, URN, parent, and the
    inputs (Analyze), or with `state` the outputs (AnalyzeStack), values unknown until apply as UNKNOWN. In URN
    order: the mock engine records concurrent registrations (a disaggregated deployment's two roles) in whichever
    order they complete, and the policy report must not follow it."""
    return [
        Resource(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props=normalize(from_engine(r.wire_state if state else r.wire_inputs)),
            parent=r.parent,
        )
        for r in sorted(recording.resources, key=lambda r: r.urn)
    ]
