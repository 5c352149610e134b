"""What the EKS calendar (catalog.eks_versions) says about a stack's Kubernetes version on a given day:
whether EKS offers it, and whether its control plane is, or is about to be, billed at the extended-support
rate. Pure: no Pulumi.

EKS offers a version from its EKS release until its end of extended support; from its end of standard support
the control plane is billed at the extended-support rate (from the start of that day, UTC), and at its end of
extended support EKS upgrades the control plane itself
(https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html).
"""

from __future__ import annotations

from datetime import date

from sgldeploy.catalog import PRICED_REGION, EksVersion, eks_versions, service_prices
from sgldeploy.spec import ClusterSpec
from sgldeploy.spec.problems import ConfigWarning, Problem, config_path

WARN_WITHIN_DAYS = 90
"""A version leaving standard support within this many days (or already out of it) is warned about."""

VERSION_PATH = config_path("platform", ("cluster", "kubernetes_version"))


def offered(day: date) -> list[EksVersion]:
    """The versions a cluster can run on `day`, oldest first."""
    return [v for v in eks_versions().values() if v.support(day) in ("standard", "extended")]


def in_standard_support(day: date) -> list[EksVersion]:
    return [v for v in offered(day) if v.support(day) == "standard"]


def version_problems(cluster: ClusterSpec, day: date) -> list[Problem]:
    """One problem when EKS does not offer the version on `day`, naming the versions it does offer."""
    wanted = cluster.kubernetes_version
    release = eks_versions().get(wanted)
    if release is not None and release.support(day) in ("standard", "extended"):
        return []
    if release is None:
        what = f"is not a Kubernetes version EKS offers on {day} (not in sgldeploy/data/eks-versions.csv)"
    elif release.support(day) == "ended":
        what = (
            f"is not a Kubernetes version EKS offers on {day}: its extended support ended on "
            f"{release.end_of_extended_support}, and EKS upgrades such clusters itself"
        )
    else:
        what = f"is not a Kubernetes version EKS offers on {day}: EKS releases it on {release.eks_release}"
    standard = ", ".join(v.version for v in in_standard_support(day)) or "none"
    return [
        Problem(
            VERSION_PATH,
            what,
            f"use one of {', '.join(v.version for v in offered(day))} (in standard support: {standard})",
            wanted,
        )
    ]


def _rates() -> tuple[float, float]:
    prices = service_prices()
    return prices["eks_cluster_standard_support"].usd, prices["eks_cluster_extended_support"].usd


def _upgrade_to(current: EksVersion, day: date) -> str:
    newer = [
        v for v in in_standard_support(day) if v.end_of_standard_support > current.end_of_standard_support
    ]
    if not newer:
        return "plan the upgrade to the next version EKS releases"
    return f"upgrade the cluster to {newer[-1].version} (EKS upgrades one minor version at a time)"


def _billed(cluster: ClusterSpec, rates: str, future: bool) -> str:
    """Who pays the extended-support rate: this stack (priced in the plan) or an existing cluster's owner."""
    if cluster.create:
        return (
            f"this stack's control plane {'will be' if future else 'is'} priced at extended support, {rates}"
        )
    bills = "will bill" if future else "bills"
    return f"EKS {bills} the existing cluster's control plane at extended support, {rates}"


def _owner(cluster: ClusterSpec) -> str:
    return "" if cluster.create else " (the cluster owner's bill, not in this plan's cost)"


def version_warnings(cluster: ClusterSpec, day: date) -> list[ConfigWarning]:
    """A warning when the version leaves standard support within WARN_WITHIN_DAYS days, or has left it."""
    release = eks_versions().get(cluster.kubernetes_version)
    if release is None:
        return []
    standard, extended = _rates()
    rates = f"${extended:.2f}/h instead of ${standard:.2f}/h in {PRICED_REGION}"
    left = (release.end_of_standard_support - day).days
    support = release.support(day)
    if support == "standard" and left <= WARN_WITHIN_DAYS:
        what = (
            f"Kubernetes {release.version} leaves EKS standard support on {release.end_of_standard_support}, "
            f"in {left} day(s): from that day {_billed(cluster, rates, future=True)}{_owner(cluster)}"
        )
    elif support == "extended":
        what = (
            f"Kubernetes {release.version} left EKS standard support on {release.end_of_standard_support}: "
            f"{_billed(cluster, rates, future=False)}, until {release.end_of_extended_support}, when EKS "
            f"upgrades it itself{_owner(cluster)}"
        )
    else:
        return []
    return [ConfigWarning(VERSION_PATH, what, _upgrade_to(release, day))]
