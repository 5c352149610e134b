"""What a stack costs to run, line by line, at minimum and at full scale-out, from the catalog's prices.

Provisioned lines (GPU nodes, their disks, caches, load balancers, the cluster) are priced from the spec and
sizing; usage-based lines (load balancer capacity units, NAT data, data transfer) from a usage file with
documented defaults, and are kept apart, as Infracost does. Monthly figures are hourly × 730. Prices are
us-east-1 (sgldeploy/data, each with its source); another region, or an instance without a confirmed price,
is reported as unpriced rather than as zero. Pure: no Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from sgldeploy.builders import rollout, weight_cache
from sgldeploy.builders.autoscaler import replicas_when_idle
from sgldeploy.builders.network import SYSTEM_NODE_DISK_GIB, SYSTEM_NODE_INSTANCE
from sgldeploy.builders.network import SYSTEM_NODES as SYSTEM_NODE_COUNT
from sgldeploy.builders.network import ZONES as NAT_GATEWAYS
from sgldeploy.catalog import HOURS_PER_MONTH, PRICED_REGION, calendar_date, eks_versions, service_prices
from sgldeploy.spec import USAGE_FILE_KEY, PlatformSpec
from sgldeploy.spec.problems import InvalidInput, Problem
from sgldeploy.stack import LoadedDeployment, LoadedStack


def usage_file(setting: str | None, stack_dir: Path, override: Path | None = None) -> Path | None:
    """The usage file a stack is priced with, by the program (its outputs and the policies' facts) and by the
    plan's summary alike: `--usage FILE` when given (the command line wins over the stack's setting), else
    the stack config `sgldeploy:usageFile`, a relative path read from the stack file's directory, as its
    lock is; None: the default assumptions."""
    if override is not None:
        return override
    if not setting:
        return None
    path = Path(setting)
    return path if path.is_absolute() else stack_dir / path


@dataclass(frozen=True)
class Usage:
    """Assumed usage for the usage-based lines; a usage file (`--usage FILE`) overrides any of them."""

    load_balancer_capacity_units_per_hour: float = 1.0  # ALB LCUs or NLB NLCUs consumed on average
    data_transfer_out_gb_per_month: float = 50.0  # per public endpoint: responses to clients on the internet
    nat_gateway_gb_per_month: float = 100.0  # per created VPC: image pulls, Hub downloads, AWS APIs

    @classmethod
    def read(cls, path: Path | None, named_by: str | None = None) -> Usage:
        """The defaults, overridden by a YAML mapping of the same keys; every problem reported at once.
        `named_by`: the option or config key that gave the path, named when the file cannot be read."""
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: a NUL in the path
            raise InvalidInput(
                [
                    Problem(
                        str(path),
                        f"cannot be read as YAML ({err.__class__.__name__})",
                        "pass a YAML file of usage assumptions"
                        + (
                            f" (the path {named_by} gives, a relative one read from the stack file's directory)"
                            if named_by == USAGE_FILE_KEY
                            else ""
                        ),
                        show_got=False,
                    )
                ]
            ) from None
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict):
            raise InvalidInput(
                [
                    Problem(
                        str(path),
                        "must be a mapping of usage assumptions",
                        f"use keys: {', '.join(sorted(known))}",
                        raw,
                    )
                ]
            )
        problems = []
        for key, value in raw.items():
            if key not in known:
                problems.append(
                    Problem(
                        f"{path}: {key}",
                        "is not a usage assumption",
                        f"use one of: {', '.join(sorted(known))}",
                        key,
                    )
                )
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                problems.append(Problem(f"{path}: {key}", "must be a number ≥ 0", "e.g. 100", value))
        if problems:
            raise InvalidInput(problems)
        return cls(**{k: float(v) for k, v in raw.items()})


@dataclass(frozen=True)
class CostItem:
    resource: str  # `<deployment>/<part>` or `platform/<part>`
    description: str  # what is priced and what it assumes
    hourly_usd_min: float | None  # None: no price (named in the description), never a silent zero
    hourly_usd_max: float | None
    deployment: str | None = None  # None for the platform's own lines
    usage_based: bool = False
    drivers: dict[str, Any] = field(default_factory=dict)  # the inputs the price follows, for cost diffs

    def as_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "description": self.description,
            "hourly_usd_min": _round(self.hourly_usd_min),
            "hourly_usd_max": _round(self.hourly_usd_max),
            "monthly_usd_min": monthly(self.hourly_usd_min),
            "monthly_usd_max": monthly(self.hourly_usd_max),
            "deployment": self.deployment,
            "usage_based": self.usage_based,
            "drivers": self.drivers,
        }


def monthly(hourly: float | None) -> float | None:
    """Monthly USD, to the cent, from an unrounded hourly figure."""
    return None if hourly is None else round(hourly * HOURS_PER_MONTH, 2)


def _round(hourly: float | None) -> float | None:
    return None if hourly is None else round(hourly, 4)


def _price(item: str, region: str) -> float | None:
    price = service_prices()[item]
    return price.usd if price.region == region else None


def _line(
    resource: str, what: str, unit_usd: float | None, low: float, high: float, region: str, **kw: Any
) -> CostItem:
    """A line of `low`–`high` units at `unit_usd` per unit-hour, or unpriced with the reason named."""
    if unit_usd is None:
        why = f"no price for {region}" if region != PRICED_REGION else "no confirmed price"
        return CostItem(resource, f"{what}; {why}", None, None, **kw)
    return CostItem(resource, what, unit_usd * low, unit_usd * high, **kw)  # rounded only when shown


# ---- one deployment ------------------------------------------------------------------------------


def node_price(item: LoadedDeployment, region: str) -> float | None:
    """One GPU node of the placement, per hour; None where the catalog has no price."""
    p = item.sizing.placement
    if region != PRICED_REGION or p.hourly_usd_per_replica is None:
        return None
    return p.hourly_usd_per_replica / p.nodes_per_replica


def gpu_nodes(item: LoadedDeployment, region: str, idle: int) -> CostItem:
    """`idle`: replicas running with no traffic (0 when the deployment scales to zero)."""
    p, spec = item.sizing.placement, item.spec
    low = idle
    nodes_min, nodes_max = low * p.nodes_per_replica, spec.max_replicas * p.nodes_per_replica
    what = (
        f"{p.instance_type} × {p.nodes_per_replica} node(s) per replica, {low}–{spec.max_replicas} "
        f"replicas, {p.price_basis} price"
    )
    if spec.resources.capacity != "on-demand" and p.price_basis == "on-demand":
        what += f" (no spot price known; capacity {spec.resources.capacity} may cost less)"
    if p.price_basis == "spot":
        what += " (the highest per-zone spot price seen; spot prices move)"
    reservation = spec.resources.reservation if spec.resources.capacity.startswith("reserved") else None
    if reservation is not None:
        # Reserved hours are committed spend: billed whether or not replicas run, not a price per replica.
        reserved = reservation.instances or nodes_max
        fallback = spec.resources.capacity == "reserved-fallback"
        nodes_min, nodes_max = reserved, max(reserved, nodes_max) if fallback else reserved
        what = (
            f"{p.instance_type} × {reserved} reserved instance(s): committed spend, billed whether or not "
            "replicas run"
            + (f"; on demand beyond them, up to {nodes_max} nodes" if nodes_max > reserved else "")
            + (
                "; a Capacity Block has a price of its own: the on-demand rate is shown"
                if reservation.capacity_block
                else ""
            )
        )
    price = node_price(item, region)
    drivers = {
        "instance_type": p.instance_type,
        "price_basis": p.price_basis,
        "usd_per_node_hour": None if price is None else round(price, 6),
        "nodes_min": nodes_min,
        "nodes_max": nodes_max,
    }
    return _line(
        f"{spec.name}/gpu-nodes",
        what,
        price,
        nodes_min,
        nodes_max,
        region,
        deployment=spec.name,
        drivers=drivers,
    )


def node_disks(item: LoadedDeployment, region: str, idle: int) -> CostItem:
    p, spec = item.sizing.placement, item.spec
    nodes_min, nodes_max = idle * p.nodes_per_replica, spec.max_replicas * p.nodes_per_replica
    gib = item.sizing.disk_gib
    gp3 = _price("ebs_gp3", region)
    return _line(
        f"{spec.name}/node-disks",
        f"{gib} GiB gp3 root volume per GPU node, {nodes_min}–{nodes_max} nodes",
        None if gp3 is None else gp3 * gib / HOURS_PER_MONTH,
        nodes_min,
        nodes_max,
        region,
        deployment=spec.name,
        drivers={"disk_gib": gib, "nodes_min": nodes_min, "nodes_max": nodes_max},
    )


def cache_storage(item: LoadedDeployment, region: str) -> CostItem | None:
    """Shared caches cost whether or not replicas run; node-local NVMe is part of the instance price."""
    spec = item.spec
    storage = spec.cache_storage
    if storage == "efs":
        gib = round(item.sizing.memory.weights_gib, 1)  # EFS bills the bytes stored: one commit's weights
        what = f"EFS Standard, {gib:g} GiB stored (one commit's weights; two during a rollout)"
        unit = _price("efs_standard", region)
    elif storage == "fsx-lustre":
        gib = weight_cache.shared_size_gib(spec, item.sizing.memory.weights_gib)  # FSx bills provisioned size
        what = f"FSx for Lustre PERSISTENT_2 125 MB/s/TiB, {gib} GiB provisioned (price approximate, see catalog)"
        unit = _price("fsx_lustre_persistent_125", region)
    else:
        return None
    return _line(
        f"{spec.name}/cache",
        what,
        None if unit is None else unit * gib / HOURS_PER_MONTH,
        1,
        1,
        region,
        deployment=spec.name,
        drivers={"storage": storage, "size_gib": gib},
    )


def endpoint(item: LoadedDeployment, region: str, usage: Usage) -> list[CostItem]:
    """The load balancer the AWS Load Balancer Controller creates for a public or internal endpoint. A
    disaggregated deployment has one, in front of its router, priced with its decode role."""
    spec, ep = item.spec, item.spec.endpoint
    if ep.exposure == "cluster" or (spec.serving_role and spec.serving_role.role == "prefill"):
        return []
    kind = ep.load_balancer
    units = usage.load_balancer_capacity_units_per_hour
    lines = [
        _line(
            f"{spec.name}/load-balancer",
            f"{ep.exposure} {kind.upper()}, hourly charge (it runs even at zero replicas)",
            _price(kind, region),
            1,
            1,
            region,
            deployment=spec.name,
            drivers={"load_balancer": kind, "exposure": ep.exposure},
        ),
        _line(
            f"{spec.name}/load-balancer-capacity",
            f"{units:g} {'LCU' if kind == 'alb' else 'NLCU'}/h assumed "
            "(usage file: load_balancer_capacity_units_per_hour)",
            _price("alb_lcu" if kind == "alb" else "nlb_nlcu", region),
            units,
            units,
            region,
            deployment=spec.name,
            usage_based=True,
            drivers={"capacity_units_per_hour": units},
        ),
    ]
    if ep.exposure == "public":
        gb = usage.data_transfer_out_gb_per_month
        unit = _price("data_transfer_out_first_10tb", region)
        lines.append(
            _line(
                f"{spec.name}/data-transfer-out",
                f"{gb:g} GB/month to the internet assumed (usage file: data_transfer_out_gb_per_month)",
                None if unit is None else unit * gb / HOURS_PER_MONTH,
                1,
                1,
                region,
                deployment=spec.name,
                usage_based=True,
                drivers={"gb_per_month": gb},
            )
        )
    return lines


def rollout_tracks(item: LoadedDeployment, region: str) -> CostItem | None:
    """A blue-green previous commit kept warm, or a canary: replicas beyond the autoscaled ones, always on."""
    p, spec = item.sizing.placement, item.spec
    extra = rollout.extra_replicas(spec, spec.initial_replicas)
    if not extra:
        return None
    role = "canary" if spec.rollout.strategy == "canary" else "previous commit kept warm"
    nodes = extra * p.nodes_per_replica
    return _line(
        f"{spec.name}/rollout-tracks",
        f"{extra} {role} replica(s) of {p.instance_type}, {p.price_basis} price, running at all times",
        node_price(item, region),
        nodes,
        nodes,
        region,
        deployment=spec.name,
        drivers={
            "strategy": spec.rollout.strategy,
            "extra_replicas": extra,
            "instance_type": p.instance_type,
        },
    )


def deployment_items(item: LoadedDeployment, region: str, usage: Usage, idle: int) -> list[CostItem]:
    cache = cache_storage(item, region)
    tracks = rollout_tracks(item, region)
    return [
        gpu_nodes(item, region, idle),
        node_disks(item, region, idle),
        *([tracks] if tracks else []),
        *([cache] if cache else []),
        *endpoint(item, region, usage),
    ]


# ---- the platform --------------------------------------------------------------------------------


def control_plane(platform: PlatformSpec, region: str, day: date) -> CostItem:
    """The EKS control plane at the rate of its version's support on `day`: standard, or extended once the
    version has left standard support (the EKS calendar, sgldeploy/data/eks-versions.csv)."""
    version = platform.cluster.kubernetes_version
    release = eks_versions().get(version)
    support = release.support(day) if release else "unknown"
    if release is not None and support == "extended":
        what = (
            f"EKS control plane, Kubernetes {version} in extended support since "
            f"{release.end_of_standard_support} (until {release.end_of_extended_support})"
        )
    elif release is not None and support == "standard":
        what = (
            f"EKS control plane, Kubernetes {version} in standard support until "
            f"{release.end_of_standard_support}"
        )
    else:  # load() refuses such a version; priced nothing rather than a guess
        return CostItem(
            "platform/eks-control-plane",
            f"EKS control plane, Kubernetes {version}: not offered by EKS on {day}",
            None,
            None,
            drivers={"kubernetes_version": version, "support": support},
        )
    item = "eks_cluster_extended_support" if support == "extended" else "eks_cluster_standard_support"
    return _line(
        "platform/eks-control-plane",
        what,
        _price(item, region),
        1,
        1,
        region,
        drivers={"kubernetes_version": version, "support": support},
    )


def platform_items(platform: PlatformSpec, region: str, usage: Usage, day: date) -> list[CostItem]:
    """What the stack itself runs; an existing cluster's own costs (its control plane too, whatever its
    version's support) belong to whoever created it."""
    if not platform.cluster.create:
        return []
    gp3 = _price("ebs_gp3", region)
    system_node = _price("ec2_m6i_large", region)
    nat = NAT_GATEWAYS
    nat_gb = usage.nat_gateway_gb_per_month
    nat_data = _price("nat_gateway_data", region)
    return [
        control_plane(platform, region, day),
        _line(
            "platform/system-nodes",
            f"{SYSTEM_NODE_COUNT} × {SYSTEM_NODE_INSTANCE} on-demand for controllers and "
            "add-ons, with 50 GiB gp3 each",
            None
            if gp3 is None or system_node is None
            else system_node + gp3 * SYSTEM_NODE_DISK_GIB / HOURS_PER_MONTH,
            SYSTEM_NODE_COUNT,
            SYSTEM_NODE_COUNT,
            region,
            drivers={"instance_type": SYSTEM_NODE_INSTANCE, "nodes": SYSTEM_NODE_COUNT},
        ),
        _line(
            "platform/nat-gateways",
            f"{nat} NAT gateways, one per availability zone",
            _price("nat_gateway", region),
            nat,
            nat,
            region,
            drivers={"nat_gateways": nat},
        ),
        _line(
            "platform/nat-data",
            f"{nat_gb:g} GB/month through NAT assumed (usage file: nat_gateway_gb_per_month)",
            None if nat_data is None else nat_data * nat_gb / HOURS_PER_MONTH,
            1,
            1,
            region,
            usage_based=True,
            drivers={"gb_per_month": nat_gb},
        ),
    ]


# ---- totals --------------------------------------------------------------------------------------


def totals(items: list[CostItem]) -> dict[str, Any]:
    """Hourly and monthly at min and max; None when any line is unpriced (a partial sum would mislead)."""

    def total(attr: str, subset: list[CostItem]) -> float | None:
        values = [getattr(i, attr) for i in subset]
        return None if any(v is None for v in values) else sum(values)

    lo, hi = total("hourly_usd_min", items), total("hourly_usd_max", items)
    usage = [i for i in items if i.usage_based]
    return {
        "hourly_usd_min": _round(lo),
        "hourly_usd_max": _round(hi),
        "monthly_usd_min": monthly(lo),
        "monthly_usd_max": monthly(hi),
        "usage_monthly_usd_min": monthly(total("hourly_usd_min", usage)),
        "usage_monthly_usd_max": monthly(total("hourly_usd_max", usage)),
        "unpriced": [i.resource for i in items if i.hourly_usd_min is None],
    }


@dataclass(frozen=True)
class Estimate:
    region: str
    items: tuple[CostItem, ...]
    usage: Usage

    def of(self, deployment: str | None) -> list[CostItem]:
        """The lines of one deployment, or the platform's own (None)."""
        return [i for i in self.items if i.deployment == deployment]

    def deployment_totals(self, name: str | None) -> dict[str, Any]:
        """Totals of one deployment, or of the platform's own lines (None)."""
        return totals(self.of(name))

    def stack_totals(self) -> dict[str, Any]:
        return totals(list(self.items))


def estimate(
    stack: LoadedStack, region: str, usage: Usage | None = None, today: date | None = None
) -> Estimate:
    """`today` (default: catalog.calendar_date()) decides the control plane's rate."""
    usage = usage or Usage()
    items = platform_items(stack.spec.platform, region, usage, today or calendar_date())
    for item in stack.deployments:
        items += deployment_items(
            item, region, usage, replicas_when_idle(item.spec, stack.spec.platform.addons)
        )
    return Estimate(region=region, items=tuple(items), usage=usage)


def stack_usage(
    setting: str | None, stack_dir: Path, override: Path | None = None
) -> tuple[Path | None, Usage]:
    """The usage file a stack is priced with (usage_file) and its assumptions, read (raising InvalidInput)
    one way for the program (its outputs and facts), `sgldeploy plan` (its summary) and `sgldeploy validate`."""
    path = usage_file(setting, stack_dir, override)
    return path, Usage.read(path, "--usage" if override is not None else USAGE_FILE_KEY)


def money(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.2f}"


def span(low: float | None, high: float | None) -> str:
    """Never one number where min and max differ."""
    return money(low) if low == high else f"{money(low)}–{money(high)}"


def one_line(name: str, t: dict[str, Any]) -> str:
    """The summary `pulumi preview` logs and the plan prints, per deployment or stack."""
    text = (
        f"{name}: {span(t['hourly_usd_min'], t['hourly_usd_max'])}/h, "
        f"{span(t['monthly_usd_min'], t['monthly_usd_max'])}/month (min–max replicas, 730 h)"
    )
    if t["usage_monthly_usd_max"]:
        text += f", of which usage-based {span(t['usage_monthly_usd_min'], t['usage_monthly_usd_max'])}/month"
    if t["unpriced"]:
        text += f"; unpriced: {', '.join(t['unpriced'])}"
    return text
