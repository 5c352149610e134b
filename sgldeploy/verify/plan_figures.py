"""What `sgldeploy verify` measures a deployment with, and against: its workload, targets, admission and the plan's
modelled figures and price, from the loaded stack (the same load `sgldeploy plan` does)."""

from __future__ import annotations

from sgldeploy import cost
from sgldeploy.builders import autoscaler, router
from sgldeploy.builders.verify_job import Verification
from sgldeploy.models import cold_start
from sgldeploy.spec import AddonsSpec, DeploymentSpec
from sgldeploy.spec.problems import Problem
from sgldeploy.stack import LoadedDeployment, LoadedStack
from sgldeploy.verify.measure import Plan, Settings, Targets

MIN_REQUESTS = 20
REQUESTS_PER_SLOT = 4  # each of `concurrency` slots sends this many: p95 from enough requests


def units_of(loaded: LoadedStack, name: str) -> list[LoadedDeployment]:
    """The loaded deployments that serve `name`: itself, or its two roles."""
    return [
        d
        for d in loaded.deployments
        if d.spec.name == name or (d.spec.serving_role and d.spec.serving_role.deployment == name)
    ]


def load_shape(
    dep: DeploymentSpec, concurrency: int | None = None, requests: int | None = None
) -> tuple[int, int]:
    """Requests in flight and in all: the command line's, else `verify`'s, else one replica's batch, four times."""
    c = concurrency or dep.verify.concurrency or dep.serving.max_concurrency
    return c, requests or dep.verify.requests or max(MIN_REQUESTS, REQUESTS_PER_SLOT * c)


def job_verification(loaded: LoadedStack, dep: DeploymentSpec, region: str) -> Verification | None:
    """What the in-cluster Job measures (`verify.job`); None without one, or while stopped."""
    if not dep.verify.job or dep.state != "running":
        return None
    return verification(units_of(loaded, dep.name), dep, loaded.spec.platform.addons, region)


def choose(loaded: LoadedStack, name: str | None) -> tuple[DeploymentSpec | None, list[Problem]]:
    specs = loaded.spec.deployments
    names = ", ".join(d.name for d in specs)
    if name is None:
        if len(specs) == 1:
            return specs[0], []
        return None, [
            Problem(
                "--deployment", "is required: the stack has several", f"pass one of {names}", show_got=False
            )
        ]
    found = [d for d in specs if d.name == name]
    if not found:
        return None, [
            Problem("--deployment", "is not a deployment of the stack", f"pass one of {names}", name)
        ]
    return found[0], []


def verification(
    units: list[LoadedDeployment],
    dep: DeploymentSpec,
    addons: AddonsSpec,
    region: str,
    concurrency: int | None = None,
    requests: int | None = None,
) -> Verification:
    """`units`: the loaded deployments serving `dep` (units_of)."""
    running = [u for u in units if not u.spec.serving_role or u.spec.serving_role.role == "decode"]
    [front] = running  # the unit whose replicas answer: the deployment, or its decode role
    c, n = load_shape(dep, concurrency, requests)
    from_zero = autoscaler.replicas_when_idle(front.spec, addons) == 0
    settings = Settings(
        input_tokens=dep.workload.input_tokens,
        output_tokens=dep.workload.output_tokens,
        concurrency=c,
        requests=n,
        targets=Targets(dep.slo.ttft_p95_seconds, dep.slo.itl_p95_seconds),
        admitted=router.admitted(front.spec),
        from_zero=from_zero,
    )
    return Verification(dep, dep.served_name, settings, _plan(units, front, region, from_zero))


def _plan(units: list[LoadedDeployment], front: LoadedDeployment, region: str, from_zero: bool) -> Plan:
    """The modelled figures at full batch, and the price of the replicas that run when idle (one, from zero)."""
    pd, t = front.disaggregation, front.sizing.throughput
    replicas = {u.spec.name: max(1, u.spec.initial_replicas) for u in units}
    prices = [cost.node_price(u, region) for u in units]
    hourly = (
        None
        if any(p is None for p in prices)
        else sum(
            (p or 0) * u.sizing.placement.nodes_per_replica * replicas[u.spec.name]
            for p, u in zip(prices, units, strict=True)
        )
    )
    start = cold_start.from_zero(front.spec, front.sizing, warm_node=False)
    ttft: float | None
    itl: float | None
    usd: float | None
    if pd is not None:
        ttft, itl, usd = pd.ttft_seconds, pd.itl_seconds, pd.usd_per_million_output_tokens
    elif t is not None:
        ttft, itl, usd = t.estimate.ttft_seconds, t.estimate.itl_seconds, t.usd_per_million_output_tokens
    else:
        ttft = itl = usd = None
    return Plan(
        ttft_seconds=ttft,
        itl_seconds=itl,
        # After the first token, one per decode step: what verify measures per request (1 / TPOT).
        output_tokens_per_second_per_request=None if itl is None else 1 / itl,
        hourly_usd=hourly,
        replicas=sum(replicas.values()),
        usd_per_million_output_tokens=usd if hourly is not None else None,
        cold_start_seconds=start.total_s if from_zero else None,
    )
