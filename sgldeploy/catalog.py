"""Hardware, prices and the EKS calendar as data: EC2 GPU instances, GPU models, AWS service prices and the
Kubernetes versions EKS offers.

The tables live in `sgldeploy/data/*.csv`, each row with its source; this module only reads them.
Prices are us-east-1 on-demand; another region has no price rather than a wrong one.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

from sgldeploy.spec.problems import InvalidInput, Problem

DATA = Path(__file__).parent / "data"
PRICED_REGION = "us-east-1"
HOURS_PER_MONTH = 730  # the convention of cost tools (Infracost): 365 × 24 / 12


@dataclass(frozen=True)
class GpuModel:
    name: str  # the spec's spelling: A100-40GB, H100, …
    architecture: str
    compute_capability: float
    memory_gib: float
    bf16: bool
    fp8: bool  # native FP8 compute (W8A8), not weight-only
    karpenter_gpu_name: str  # value of the karpenter.k8s.aws/instance-gpu-name label
    source: str
    memory_bandwidth_gbs: float = 0.0  # peak HBM/GDDR bandwidth
    # Peak dense tensor TFLOPS by the precision the GEMMs run in (fp16 also where a GPU has no bf16); a
    # precision the GPU has no tensor cores for is absent.
    dense_tflops: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float
    vcpu: int
    memory_gib: float
    local_nvme_gb: int
    network_gbps: float
    on_demand_usd_per_hour: float | None  # us-east-1; None where no price was confirmed
    spot_usd_per_hour: float | None  # us-east-1, the highest per-AZ price seen; None where unknown
    source: str
    efa_interfaces: int = 0  # Elastic Fabric Adapter interfaces the type supports (aws-gpu-efa.csv)
    gpu_link: str = "pcie"  # how the instance's GPUs reach each other: nvlink or pcie (gpu-interconnect.csv)
    gpu_link_gbs: float = 0.0  # per GPU, each way

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    def hourly_usd(self, spot: bool) -> float | None:
        """Spot where asked and known (upper bound), else on-demand."""
        return (
            self.spot_usd_per_hour
            if spot and self.spot_usd_per_hour is not None
            else self.on_demand_usd_per_hour
        )


_SPOT_RANGE = re.compile(r"spot ([0-9.]+)-([0-9.]+) USD/h")


def _spot_upper_bound(hint: str) -> float | None:
    match = _SPOT_RANGE.search(hint or "")
    return float(match.group(2)) if match else None


def _spec_name(csv_name: str) -> str:
    return csv_name.replace(" ", "-")


@cache
def gpu_models() -> dict[str, GpuModel]:
    with open(DATA / "gpu-models.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        _spec_name(r["gpu_model"]): GpuModel(
            name=_spec_name(r["gpu_model"]),
            architecture=r["architecture"],
            compute_capability=float(r["compute_capability"]),
            memory_gib=float(r["memory_gib"]),
            bf16=r["bf16"].startswith("yes"),
            fp8=r["fp8"].startswith("yes"),
            karpenter_gpu_name=r["gpu_model"].split()[0].lower(),
            source=r["source"],
            memory_bandwidth_gbs=float(r["memory_bandwidth_gbs"]),
            dense_tflops=tuple(
                (precision, float(r[f"dense_{precision}_tflops"]))
                for precision in ("bf16", "fp16", "fp8")
                if r[f"dense_{precision}_tflops"]
            ),
        )
        for r in rows
    }


@cache
def gpu_links() -> dict[str, tuple[str, float]]:
    """How the GPUs of each instance family reach each other: (nvlink or pcie, GB/s per GPU each way)."""
    with open(DATA / "gpu-interconnect.csv", newline="") as f:
        return {r["family"]: (r["link"], float(r["link_gbs_per_gpu"])) for r in csv.DictReader(f)}


@cache
def instance_types() -> dict[str, InstanceType]:
    with open(DATA / "aws-gpu-instances.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(DATA / "aws-gpu-efa.csv", newline="") as f:
        efa = {r["instance_type"]: int(r["efa_interfaces"]) for r in csv.DictReader(f)}
    links = gpu_links()
    return {
        r["instance_type"]: InstanceType(
            name=r["instance_type"],
            gpu=_spec_name(r["gpu_model"]),
            gpu_count=int(r["gpu_count"]),
            gpu_memory_gib=float(r["gpu_memory_gib_per_gpu"]),
            vcpu=int(r["vcpu"]),
            memory_gib=float(r["memory_gib"]),
            local_nvme_gb=int(r["local_nvme_gb"] or 0),
            network_gbps=float(r["network_gbps"]),
            on_demand_usd_per_hour=float(r["on_demand_usd_per_hour_us_east_1"])
            if r["on_demand_usd_per_hour_us_east_1"]
            else None,
            spot_usd_per_hour=_spot_upper_bound(r["spot_hint"]),
            source=r["source"],
            efa_interfaces=efa.get(r["instance_type"], 0),
            gpu_link=links[r["instance_type"].split(".")[0]][0],
            gpu_link_gbs=links[r["instance_type"].split(".")[0]][1],
        )
        for r in rows
    }


@dataclass(frozen=True)
class ServicePrice:
    item: str  # e.g. alb, nat_gateway, efs_standard
    unit: str  # hour, lcu-hour, gb-month, gb, cluster-hour, instance-hour
    usd: float
    region: str
    source: str


@cache
def service_prices() -> dict[str, ServicePrice]:
    """Prices of the non-GPU parts of a stack (control plane, load balancers, storage, NAT, transfer)."""
    with open(DATA / "aws-service-prices.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        r["item"]: ServicePrice(
            item=r["item"], unit=r["unit"], usd=float(r["usd"]), region=r["region"], source=r["source"]
        )
        for r in rows
    }


# ---- the EKS Kubernetes release calendar -----------------------------------------------------------

TODAY_ENV = "SGLDEPLOY_TODAY"
"""Set to a date (YYYY-MM-DD) to read the EKS calendar as of that day: reproducible plans in CI and tests."""


@dataclass(frozen=True)
class EksVersion:
    """One Kubernetes minor version on EKS (sgldeploy/data/eks-versions.csv, each row with its source)."""

    version: str  # "1.35"
    eks_release: date
    end_of_standard_support: date  # extended support is billed from the start of this day, UTC
    end_of_extended_support: date  # from this day EKS offers it no more and upgrades its control planes
    source: str

    def support(self, day: date) -> str:
        """`upcoming`, `standard`, `extended` or `ended` on `day` (UTC), as the EKS calendar defines them."""
        if day < self.eks_release:
            return "upcoming"
        if day < self.end_of_standard_support:
            return "standard"
        if day < self.end_of_extended_support:
            return "extended"
        return "ended"


def _minor_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@cache
def eks_versions() -> dict[str, EksVersion]:
    """Every version of the calendar, oldest first."""
    with open(DATA / "eks-versions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    found = {
        r["version"]: EksVersion(
            version=r["version"],
            eks_release=date.fromisoformat(r["eks_release"]),
            end_of_standard_support=date.fromisoformat(r["end_of_standard_support"]),
            end_of_extended_support=date.fromisoformat(r["end_of_extended_support"]),
            source=r["source"],
        )
        for r in rows
    }
    return {v: found[v] for v in sorted(found, key=_minor_key)}


def calendar_date() -> date:
    """Today in UTC (the time zone of the EKS calendar), or the day SGLDEPLOY_TODAY names."""
    text = os.environ.get(TODAY_ENV)
    if not text:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            [
                Problem(
                    TODAY_ENV, "must be a date as YYYY-MM-DD", "e.g. 2026-12-01, or unset it for today", text
                )
            ]
        ) from None
