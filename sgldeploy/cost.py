"""What a stack costs to run: GPU nodes at minimum and at full scale-out, from the catalog's prices.

Monthly figures are hourly × 730. Prices are us-east-1, on-demand or spot as sizing chose them
(sgldeploy/data); another region, or an instance without a confirmed price, is reported as unpriced rather
than as zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .catalog import HOURS_PER_MONTH, PRICED_REGION
from .serving import initial_replicas
from .stack import ResolvedDeployment


@dataclass(frozen=True)
class CostItem:
    resource: str
    description: str
    hourly_usd_min: Optional[float]
    hourly_usd_max: Optional[float]

    def as_json(self) -> dict:
        return {"resource": self.resource, "description": self.description,
                "hourly_usd_min": self.hourly_usd_min, "hourly_usd_max": self.hourly_usd_max}


def gpu_nodes(item: ResolvedDeployment, region: str) -> CostItem:
    p = item.sizing.placement
    spec = item.spec
    low = initial_replicas(spec)  # what runs when idle: the Deployment's own replica count
    nodes_min, nodes_max = low * p.nodes_per_replica, spec.max_replicas * p.nodes_per_replica
    what = f"{p.instance_type} × {p.nodes_per_replica} node(s) per replica, {low}–{spec.max_replicas} " \
           f"replicas, {p.price_basis} price"
    if spec.resources.capacity != "on-demand" and p.price_basis == "on-demand":
        what += f" (no spot price known; capacity {spec.resources.capacity} may cost less)"
    price = p.hourly_usd_per_replica / p.nodes_per_replica if p.hourly_usd_per_replica is not None else None
    if region != PRICED_REGION or price is None:
        why = f"no price for {region}" if region != PRICED_REGION else f"no confirmed price for {p.instance_type}"
        return CostItem(f"{spec.name}/gpu-nodes", f"{what}; {why}", None, None)
    return CostItem(f"{spec.name}/gpu-nodes", what, round(price * nodes_min, 4), round(price * nodes_max, 4))


def monthly(hourly: Optional[float]) -> Optional[float]:
    return None if hourly is None else round(hourly * HOURS_PER_MONTH, 2)


def totals(items: list[CostItem]) -> dict:
    def total(attr: str) -> Optional[float]:
        values = [getattr(i, attr) for i in items]
        return None if any(v is None for v in values) else round(sum(values), 4)

    lo, hi = total("hourly_usd_min"), total("hourly_usd_max")
    return {"hourly_usd_min": lo, "hourly_usd_max": hi, "monthly_usd_min": monthly(lo),
            "monthly_usd_max": monthly(hi)}
