"""From raw stack config to everything the program declares: the spec, each model's locked facts, sizing.

Pure: `__main__.py` feeds it what `pulumi.Config` returns, `sgldeploy validate` what the stack file says.
All problems (spec, lock, fit, secrets) are gathered and raised once as InvalidInput.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from sgldeploy.builders import autoscaler, endpoint, rollout, router, weight_cache
from sgldeploy.catalog import calendar_date, instance_types
from sgldeploy.models import adapters, cold_start, disaggregation, weight_path
from sgldeploy.models.disaggregation import DisaggregationEstimate
from sgldeploy.models.lock import (
    NOT_LOCKED_FIX,
    SERVABLE_PIPELINES,
    LockContents,
    LockedModel,
    LockError,
    lock_key,
    read_lock_contents,
)
from sgldeploy.models.sizing import Sizing, SizingError, size
from sgldeploy.spec import SLO_KEYS, AddonsSpec, DeploymentSpec, StackSpec, eks_support, is_commit
from sgldeploy.spec.problems import ConfigWarning, InvalidInput, Problem, config_path
from sgldeploy.spec.stackfile import StackFile
from sgldeploy.spec.validate import parse_stack

SECRET_KEYS = ("hfToken", "apiKey")


@dataclass(frozen=True)
class LoadedDeployment:
    spec: DeploymentSpec  # with `cache.storage` and `cache.loader` auto replaced by what was chosen for it
    model: LockedModel
    sizing: Sizing
    cache_reason: str = ""  # how `auto` chose the cache, for the plan
    loader_reason: str = ""  # how `auto` chose the loader, for the plan
    disaggregation: DisaggregationEstimate | None = None
    """For a role of a disaggregated deployment: the figures of both roles together (the same on each)."""


@dataclass(frozen=True)
class LoadedStack:
    spec: StackSpec
    deployments: list[LoadedDeployment]
    warnings: tuple[ConfigWarning, ...] = ()  # valid, but worth acting on (e.g. the EKS version's support)
    # Offline only: the secrets the stack needs but does not set (full config key → its warning). The offline
    # plan stands each in as set, so it renders what `pulumi up` will once it is set.
    stand_in_secrets: dict[str, ConfigWarning] = field(default_factory=dict)


MissingResolver = Callable[[str, str, list[Any], Callable[..., str]], LockedModel | None]


def load(
    platform: Any,
    deployments: Any,
    lock_file: Path,
    secrets: set[str],
    resolve_missing: MissingResolver | None = None,
    plaintext_secrets: Iterable[str] = (),
    today: date | None = None,
    offline: bool = False,
) -> LoadedStack:
    """Validate and size a stack. `secrets` holds the names (not values) of the secrets that are set;
    `plaintext_secrets` those of them set without `--secret`, which are refused.

    A secret the stack needs but lacks is refused, unless `offline` (`sgldeploy plan` and `validate`, which in
    CI have no access to the stack's secrets): then it is a warning, in `stand_in_secrets`.

    A model missing from the lock is a problem, unless `resolve_missing` (used by `pulumi preview`) finds it.
    `today` (default: catalog.calendar_date()) is the day the EKS calendar is read at.
    """
    problems: list[Problem] = [plaintext_secret_problem(key) for key in sorted(plaintext_secrets)]
    try:
        spec = parse_stack(platform, deployments)
    except InvalidInput as invalid:
        raise InvalidInput(problems + invalid.problems) from None
    day = today or calendar_date()
    problems += eks_support.version_problems(spec.platform.cluster, day)
    models = _ModelSource(_read_lock(lock_file, problems), lock_file, resolve_missing)
    # Offline, a missing token is not a problem of each model but one warning for the stack (below).
    checked_secrets = secrets | {"hfToken"} if offline else secrets
    loaded = [
        _load_deployment(spec, i, unit, models, checked_secrets, problems)
        for i, dep in enumerate(spec.deployments)
        for unit in dep.serving_units()
    ]
    index = {dep.name: i for i, dep in enumerate(spec.deployments)}
    problems += _roles_problems(_roles(loaded), index)
    if problems:
        raise InvalidInput(_unique(problems))
    ready = _paired([d for d in loaded if d is not None])  # all of them: one not loaded left a problem
    warnings = tuple(eks_support.version_warnings(spec.platform.cluster, day)) + tuple(
        w
        for d in ready
        for i in [index[_role_of(d.spec) or d.spec.name]]
        for w in [
            *slo_warnings(d, i),
            *cold_start_warnings(d, i, spec.platform.addons),
            *reservation_warnings(d.spec, i, day),
            *prefill_capacity_warnings(d, i),
        ]
    )
    stand_ins = {}
    gated = list(
        dict.fromkeys(d.spec.model.repo for d in ready if d.model.gated)
    )  # in stack order, once each
    if offline and gated and "hfToken" not in secrets:
        stand_ins[config_path("hfToken")] = missing_token_warning(gated)
    return LoadedStack(spec=spec, deployments=ready, warnings=warnings, stand_in_secrets=stand_ins)


@dataclass(frozen=True)
class _ModelSource:
    """Where a deployment's model facts come from: the lock, else (`pulumi preview`) the Hub."""

    lock: LockContents
    lock_file: Path
    resolve_missing: MissingResolver | None


def _read_lock(lock_file: Path, problems: list[Problem]) -> LockContents:
    """The lock's contents; a lock that cannot be read at all ends the checks, with the problems found so far."""
    try:
        return read_lock_contents(lock_file)
    except LockError as exc:
        raise InvalidInput(
            [
                *problems,
                Problem(
                    str(lock_file),
                    f"is not a usable model lock ({exc})",
                    "re-create it with `sgldeploy lock`",
                    show_got=False,
                ),
            ]
        ) from None


def _load_deployment(
    spec: StackSpec,
    i: int,
    dep: DeploymentSpec,
    models: _ModelSource,
    secrets: set[str],
    problems: list[Problem],
) -> LoadedDeployment | None:
    """Deployment i's locked model and sizing, or None; what is wrong with it goes on `problems`."""

    def at(*loc: object) -> str:
        return config_path("deployments", (i, *dep.path(*loc)))

    key = lock_key(dep.model.repo, dep.model.revision)
    if key in models.lock.damaged:  # a hand-written or damaged entry: one line per field, naming the entry
        problems += [damage.in_lock(models.lock_file) for damage in models.lock.damaged[key]]
        return None
    model = models.lock.models.get(key)
    if model is None and models.resolve_missing is not None:
        model = models.resolve_missing(dep.model.repo, dep.model.revision, problems, at)
    problems += _model_problems(spec, dep, model, models.lock_file, secrets, at)
    problems += _rollout_lock_problems(dep, model, models, problems, at)
    production = spec.platform.environment == "production"
    locked, refused = adapters.locked_adapters(dep, model, models.lock, models.lock_file, production, at)
    problems += refused
    if model is None or refused:
        return None
    lora = adapters.load_of(dep, locked)
    try:
        sizing = size(dep, model, lora)
    except SizingError as exc:
        problems.append(_in_deployment(exc.problem, at))
        return None
    dep, sizing, reason, loader_reason = _choose_auto(spec, dep, model, sizing)
    problems += _placement_problems(spec, dep, sizing, at, model.sha)
    return LoadedDeployment(dep, model, sizing, reason, loader_reason=loader_reason)


def _roles(loaded: Sequence[LoadedDeployment | None]) -> dict[str, dict[str, LoadedDeployment]]:
    """The loaded roles of each disaggregated deployment, by its name and then by role."""
    out: dict[str, dict[str, LoadedDeployment]] = {}
    for d in loaded:
        role = d.spec.serving_role if d is not None else None
        if d is not None and role is not None:
            out.setdefault(role.deployment, {})[role.role] = d
    return out


def _roles_problems(roles: dict[str, dict[str, LoadedDeployment]], index: dict[str, int]) -> list[Problem]:
    """What each disaggregated deployment's two sized roles need together: prefill and decode never share a node
    (the pods' anti-affinity), so reservations both roles launch into must hold both roles' minimum nodes."""
    out = []
    for name, pair in roles.items():
        reserved = [
            d
            for d in pair.values()
            if d.spec.resources.capacity == "reserved" and d.spec.resources.reservation
        ]
        if len(pair) != 2 or len(reserved) != 2:
            continue
        prefill, decode = (d.spec.resources.reservation for d in reserved)
        assert prefill is not None and decode is not None
        if (prefill.ids, prefill.tags) != (decode.ids, decode.tags) or decode.instances is None:
            continue
        needed = sum(d.spec.min_replicas * d.sizing.placement.nodes_per_replica for d in reserved)
        if needed <= decode.instances:
            continue
        out.append(
            Problem(
                config_path(
                    "deployments",
                    (index[name], "disaggregation", "decode", "resources", "reservation", "instances"),
                ),
                f"is {decode.instances}, but both roles launch into this reservation and their min_replicas need "
                f"{needed} nodes: prefill and decode never share a node",
                "reserve more instances, lower min_replicas, or give one role other capacity",
                decode.instances,
            )
        )
    return out


def _paired(loaded: list[LoadedDeployment]) -> list[LoadedDeployment]:
    """Each role of a disaggregated deployment with the figures of the two together, estimated once."""
    estimates = {
        name: disaggregation.estimate(
            pair["prefill"].sizing,
            pair["decode"].sizing,
            (pair["prefill"].spec.max_replicas, pair["decode"].spec.max_replicas),
        )
        for name, pair in _roles(loaded).items()
    }
    return [
        replace(d, disaggregation=estimates[parent]) if (parent := _role_of(d.spec)) is not None else d
        for d in loaded
    ]


def _role_of(dep: DeploymentSpec) -> str | None:
    """The disaggregated deployment a spec is a role of; None for any other."""
    return dep.serving_role.deployment if dep.serving_role else None


def _choose_auto(
    spec: StackSpec, dep: DeploymentSpec, model: LockedModel, sizing: Sizing
) -> tuple[DeploymentSpec, Sizing, str, str]:
    """`cache.storage: auto` is decided by readiness, size and replica bounds, then `cache.loader: auto` by the
    storage, the image and the placement; the deployment is then sized once more with what was chosen (the startup
    budget follows both): (deployment, sizing, how auto chose the storage, how it chose the loader). Anything
    written in the spec stays as written."""
    p, cache, reasons = sizing.placement, dep.cache, ["", ""]
    if cache.storage == "auto":
        storage, reasons[0] = weight_cache.choose(
            dep, spec.platform.addons, sizing.memory.weights_gib, p.nodes_per_replica
        )
        dep = dep.model_copy(update={"cache": cache.model_copy(update={"storage": storage})})
    if cache.loader == "auto":
        loader, reasons[1] = weight_path.choose(
            dep,
            sizing.memory.weights_gib,
            instance_types()[p.instance_type],
            p.gpus_per_replica,
            p.nodes_per_replica,
        )
        dep = dep.model_copy(update={"cache": dep.cache.model_copy(update={"loader": loader})})
    if dep.cache != cache:
        sizing = size(dep, model, sizing.lora)
    return dep, sizing, reasons[0], reasons[1]


def _in_deployment(problem: Problem, at: Callable[..., str]) -> Problem:
    """A problem found inside one deployment (its path `resources.gpu`), with its full config path."""
    return replace(problem, path=at(*problem.path.split(".")))


def secrets_of(stack: StackFile) -> tuple[set[str], set[str]]:
    """The names of the secrets a stack file sets, and those of them written in plain text."""
    present = {k for k in SECRET_KEYS if f"sgldeploy:{k}" in stack.config}
    return present, {k for k in present if f"sgldeploy:{k}" not in stack.secret_keys}


def plaintext_secret_problem(key: str) -> Problem:
    """A secret in plain text would sit unencrypted in the stack file, and in git; its value is never shown."""
    return Problem(
        f"sgldeploy:{key}",
        "is a secret set in plain text, so it is stored unencrypted in the stack file",
        f"remove it from the file, then run `pulumi config set --secret sgldeploy:{key} <value>`",
        show_got=False,
    )


def missing_token_warning(gated: list[str]) -> ConfigWarning:
    """Offline, a gated model without the token plans as if it were set: `pulumi up` needs it all the same."""
    verb = "is" if len(gated) == 1 else "are"
    return ConfigWarning(
        config_path("hfToken"),
        f"is not set, and {', '.join(gated)} {verb} gated: this offline plan puts a stand-in secret in its place",
        "accept the licence on the Hub, then set it with `pulumi config set --secret sgldeploy:hfToken hf_…` "
        "before `pulumi up`",
    )


def _model_problems(
    spec: StackSpec,
    dep: DeploymentSpec,
    model: LockedModel | None,
    lock_file: Path,
    secrets: set[str],
    at: Callable[..., str],
) -> list[Problem]:
    """What the lock says about the model: pinned, servable, its code allowed, its licence accepted."""
    out = _pin_problems(spec, dep, model, lock_file, at)
    if model is not None:
        out += _locked_model_problems(dep, model, secrets, at)
    return out


def _pin_problems(
    spec: StackSpec, dep: DeploymentSpec, model: LockedModel | None, lock_file: Path, at: Callable[..., str]
) -> list[Problem]:
    """The revision is pinned where production needs it, and locked."""
    out = []
    if spec.platform.environment == "production" and not is_commit(dep.model.revision):
        locked = f"; it is locked at {model.sha}" if model else ""
        out.append(
            Problem(
                at("model", "revision"),
                "must be a 40-hex commit in a production stack",
                f"pin the commit the branch or tag resolves to{locked}",
                dep.model.revision,
            )
        )
    if model is None:
        out.append(
            Problem(
                at("model", "revision"),
                f"{dep.model.repo}@{dep.model.revision} is not in {lock_file.name}",
                NOT_LOCKED_FIX,
                dep.model.revision,
            )
        )
    return out


def _locked_model_problems(
    dep: DeploymentSpec, model: LockedModel, secrets: set[str], at: Callable[..., str]
) -> list[Problem]:
    """The locked model is servable, its code allowed, its licence accepted."""
    out = []
    if model.pipeline_tag not in SERVABLE_PIPELINES:
        out.append(
            Problem(
                at("model", "repo"),
                f"has pipeline {model.pipeline_tag or 'none'}, which SGLang does not "
                "serve as a chat/completions model",
                f"choose a model tagged {' or '.join(SERVABLE_PIPELINES)}",
                dep.model.repo,
            )
        )
    if model.custom_code and not dep.model.trust_remote_code:
        out.append(
            Problem(
                at("model", "trust_remote_code"),
                "must be true: the model ships its own Python code",
                "review the code, then allow it (platform and deployment), or choose another model",
                False,
            )
        )
    if model.gated and "hfToken" not in secrets:
        out.append(
            Problem(
                config_path("hfToken"),
                f"is required: {dep.model.repo} is gated",
                "accept the licence on the Hub, then run pulumi config set --secret sgldeploy:hfToken hf_…",
                None,
            )
        )
    return out


def _rollout_lock_problems(
    dep: DeploymentSpec,
    model: LockedModel | None,
    models: _ModelSource,
    problems: list[Problem],
    at: Callable[..., str],
) -> list[Problem]:
    """A previous or canary commit must be in the lock as model.revision must: resolved once, reviewed, and
    the same on every preview."""
    out = []
    resolve = models.resolve_missing
    for field_path, commit in dep.extra_revisions:
        if (model and commit == model.sha) or lock_key(dep.model.repo, commit) in models.lock.models:
            continue  # the active commit itself is refused by rollout.problems
        if resolve is not None and resolve(dep.model.repo, commit, problems, at):
            continue
        out.append(
            Problem(
                at(*field_path.split(".")),
                f"{dep.model.repo}@{commit} is not in {models.lock_file.name}",
                NOT_LOCKED_FIX,
                commit,
            )
        )
    return out


def _placement_problems(
    spec: StackSpec, dep: DeploymentSpec, sizing: Sizing, at: Callable[..., str], active_sha: str
) -> list[Problem]:
    """What the chosen placement and cache need from the platform."""
    out = []
    storage = dep.cache_storage
    addon = {"efs": "efs_csi", "fsx-lustre": "fsx_csi"}.get(storage)
    if addon and not getattr(spec.platform.addons, addon):
        out.append(
            Problem(
                config_path("platform", ("addons", addon)),
                f"must be true: {dep.name} caches weights on {storage}",
                f"enable the {addon} add-on, or choose another cache.storage",
                False,
            )
        )
    from_zero = autoscaler.for_stack(dep, spec.platform.addons).kind == "http"
    nodes = sizing.placement.nodes_per_replica
    found = [weight_cache.size_problem(dep), endpoint.problem(dep, from_zero), router.problem(dep)]
    found += weight_path.problems(
        dep, instance_types()[sizing.placement.instance_type], sizing.placement.gpus_per_replica, nodes
    )
    found += rollout.problems(
        dep,
        multi_node=nodes > 1,
        shared_cache=storage in weight_cache.SHARED,
        router=router.enabled(dep),
        at_zero=from_zero,
        active_sha=active_sha,
    )
    out += [_in_deployment(problem, at) for problem in found if problem]
    if nodes > 1 and not spec.platform.addons.leader_worker_set:
        out.append(
            Problem(
                config_path("platform", ("addons", "leader_worker_set")),
                f"must be true: {dep.name} spans {nodes} nodes per replica "
                f"({sizing.placement.instance_type})",
                "enable the LeaderWorkerSet add-on, or choose a placement that fits one node",
                False,
            )
        )
    return out


RESERVATION_HORIZON_DAYS = 30  # how far ahead a plan looks for the end of a reservation


def reservation_warnings(dep: DeploymentSpec, i: int, today: date) -> list[ConfigWarning]:
    """A reservation that ends within the horizon: its instances are reclaimed then (a Capacity Block's are
    terminated), and the replicas on them with them."""
    r = dep.resources.reservation
    if r is None or r.ends_at is None or not dep.resources.capacity.startswith("reserved"):
        return []
    days = (date.fromisoformat(r.ends_at) - today).days
    if days > RESERVATION_HORIZON_DAYS:
        return []
    when = f"in {days} days" if days > 1 else "tomorrow" if days == 1 else "today" if days == 0 else "already"
    return [
        ConfigWarning(
            config_path("deployments", (i, *dep.path("resources", "reservation", "ends_at"))),
            f"is {r.ends_at}: the reservation ends {when}, and its instances are reclaimed with the replicas "
            "on them",
            "extend or replace the reservation, or move the deployment to other capacity before then",
        )
    ]


def slo_warnings(item: LoadedDeployment, i: int) -> list[ConfigWarning]:
    """A latency target the placement's modelled figures miss at max_concurrency: a warning with the numbers
    (the model is an estimate; `sgldeploy verify` measures)."""
    t, slo = item.sizing.throughput, item.spec.slo
    out = []
    names = {"ttft_p95_seconds": "a time to first token", "itl_p95_seconds": "an inter-token latency"}
    for key, modelled in _modelled_latency(item).items():
        target = getattr(slo, key)
        if t is not None and target is not None and modelled > target:
            out.append(
                ConfigWarning(
                    config_path("deployments", (i, "slo", key)),
                    f"is {target:g} s, but {item.sizing.placement.instance_type} is modelled at {names[key]} of "
                    f"{modelled:.3g} s with {t.estimate.batch} requests of {t.input_tokens} + "
                    f"{t.output_tokens} tokens running",
                    "lower serving.max_concurrency, or choose a faster GPU or more GPUs per replica",
                )
            )
    return out


def cold_start_warnings(item: LoadedDeployment, i: int, addons: AddonsSpec) -> list[ConfigWarning]:
    """A time-to-first-token target that a deployment scaled to zero cannot meet: the first request after an
    idle period waits for a replica to start."""
    dep, target = item.spec, item.spec.slo.ttft_p95_seconds
    if target is None or autoscaler.replicas_when_idle(dep, addons) > 0:
        return []
    new, warm = (cold_start.from_zero(dep, item.sizing, warm_node=w).total_s for w in (False, True))
    if new <= target:
        return []
    return [
        ConfigWarning(
            config_path("deployments", (i, "slo", "ttft_p95_seconds")),
            f"is {target:g} s, but with no replica (scaled to zero after {dep.idle_timeout_seconds} s idle) the "
            f"first request waits for one to start: {new:g} s on a new node, {warm:g} s on a warm one",
            "set scaling.min_replicas to 1 to keep a replica up, or accept that requests after an idle "
            "period miss the target",
        )
    ]


def prefill_capacity_warnings(item: LoadedDeployment, i: int) -> list[ConfigWarning]:
    """On a disaggregated deployment's decode role: prefill replicas too few, at their most, to feed its decode
    replicas at theirs (the model's ratio of prefill to decode work at full batch)."""
    role, pd = item.spec.serving_role, item.disaggregation
    if role is None or role.role != "decode" or pd is None:
        return []
    have, need = pd.max_replicas[0], pd.prefill_replicas_needed
    if have >= need:
        return []
    return [
        ConfigWarning(
            config_path("deployments", (i, "disaggregation", "prefill", "scaling", "max_replicas")),
            f"is {have}, but the decode role's {pd.max_replicas[1]} replica(s) at full batch take {need} prefill "
            f"replicas (each prompt of {pd.input_tokens:,} tokens is modelled at {pd.prefill_seconds:.3g} s): past "
            f"{have}, requests wait for a prefill",
            f"raise it to {need}, or lower disaggregation.decode.scaling.max_replicas",
        )
    ]


def _modelled_latency(item: LoadedDeployment) -> dict[str, float]:
    """The modelled latencies of the SLO keys a deployment answers for (DeploymentSpec.slo_keys): its own
    figures, or, for a role of a disaggregated deployment, the two roles' together."""
    t, pd = item.sizing.throughput, item.disaggregation
    if item.spec.serving_role is None:
        found = None if t is None else (t.estimate.ttft_seconds, t.estimate.itl_seconds)
    else:
        found = None if pd is None else (pd.ttft_seconds, pd.itl_seconds)
    if found is None:
        return {}
    figures = dict(zip(SLO_KEYS, found, strict=True))
    return {key: figures[key] for key in item.spec.slo_keys}


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if p.line() not in seen:
            seen.add(p.line())
            out.append(p)
    return out
