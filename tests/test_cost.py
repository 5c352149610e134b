"""Cost lines against hand computation from the catalog (sgldeploy/data, us-east-1, 730 h/month).

Prices used by hand below: g6.xlarge $0.8048/h (spot upper bound $0.4386), g6e.xlarge $1.861/h,
p5.48xlarge $55.04/h, m6i.large $0.096/h, gp3 $0.08/GB-month, EFS $0.30/GB-month, FSx Lustre
$0.145/GB-month, ALB $0.0225/h + $0.008/LCU-h, NLB $0.0225/h + $0.006/NLCU-h, NAT $0.045/h + $0.045/GB,
transfer out $0.09/GB, EKS $0.10/h in standard support and $0.60/h in extended support.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import date, timedelta

import jsonschema
import pytest

from sgldeploy import cost
from sgldeploy.catalog import DATA, TODAY_ENV
from sgldeploy.cli import main
from sgldeploy.offline.plan_json import plan_json
from sgldeploy.offline.plan_text import summary
from sgldeploy.offline.render import policy_resources, render
from sgldeploy.spec import ClusterSpec
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.stackfile import read_stack_file
from sgldeploy.stack import load

from .conftest import (
    COMMITTED_STACKS,
    LLAMA_70B,
    LOCK,
    QWEN,
    ROOT,
    deployment,
    render_stack,
    with_secret,
    write_stack,
)

PLATFORM = {"cluster": {"name": "test"}, "namespace": "llm"}
# The EKS Kubernetes release calendar, by hand from
# https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html#kubernetes-release-calendar
# (awsdocs/amazon-eks-user-guide latest/ug/versioning/kubernetes-versions.adoc @01385604 for 1.29-1.34):
# (EKS release, end of standard support, end of extended support).
CALENDAR = {
    "1.31": (date(2024, 9, 26), date(2025, 11, 26), date(2026, 11, 26)),
    "1.33": (date(2025, 5, 29), date(2026, 7, 29), date(2027, 7, 29)),
    "1.34": (date(2025, 10, 2), date(2026, 12, 2), date(2027, 12, 2)),
    "1.35": (date(2026, 1, 27), date(2027, 3, 27), date(2028, 3, 27)),
}
PLAN_DAY = date(2026, 12, 1)  # the day these tests price stacks at, whatever the clock says
STANDARD_USD_H, EXTENDED_USD_H = 0.10, 0.60  # EKS per cluster-hour, us-east-1 (AWS EKS pricing)
VERSION_PATH = "sgldeploy:platform.cluster.kubernetes_version"


@pytest.fixture(autouse=True)
def plan_day(monkeypatch):
    """Every plan and estimate here reads the EKS calendar on PLAN_DAY, so no figure drifts with the date."""
    monkeypatch.setenv(TODAY_ENV, PLAN_DAY.isoformat())


def estimate(*deployments, platform=None, region="us-east-1", usage=None, secrets=(), today=None):
    stack = load(platform or PLATFORM, list(deployments), LOCK, set(secrets), today=today)
    return cost.estimate(stack, region, usage, today=today)


def lines(est) -> dict:
    return {i.resource: (cost.monthly(i.hourly_usd_min), cost.monthly(i.hourly_usd_max)) for i in est.items}


def test_gpu_nodes_and_disks_at_min_and_max_replicas():
    est = estimate(deployment(scaling={"min_replicas": 1, "max_replicas": 3}))
    assert lines(est) == {
        "qwen/gpu-nodes": (round(0.8048 * 730, 2), round(3 * 0.8048 * 730, 2)),  # 587.50, 1762.51
        "qwen/node-disks": (12.0, 36.0),  # 150 GiB × $0.08 per node
    }
    totals = est.stack_totals()
    assert totals["monthly_usd_min"] == round((0.8048 + 150 * 0.08 / 730) * 730, 2) == 599.50
    assert totals["monthly_usd_max"] == round(3 * (0.8048 * 730 + 12), 2)
    assert totals["usage_monthly_usd_max"] == 0 and totals["unpriced"] == []


def test_min_zero_costs_nothing_when_idle_if_it_can_scale_from_zero():
    est = estimate(deployment(scaling={"min_replicas": 0, "max_replicas": 2}))
    gpu = est.of("qwen")[0]
    assert gpu.drivers["nodes_min"] == 0 and "0–2 replicas" in gpu.description
    assert cost.monthly(gpu.hourly_usd_min) == 0 and cost.monthly(gpu.hourly_usd_max) == round(
        2 * 0.8048 * 730, 2
    )
    # Without the KEDA HTTP add-on nothing can wake it: one replica stays up, and is paid for.
    est = estimate(
        deployment(scaling={"min_replicas": 0, "max_replicas": 2}),
        platform={**PLATFORM, "addons": {"keda_http": False}},
    )
    gpu = est.of("qwen")[0]
    assert gpu.drivers["nodes_min"] == 1 and cost.monthly(gpu.hourly_usd_min) == 587.50


def test_stopped_costs_nothing_but_its_shared_cache():
    est = estimate(
        deployment(state="stopped", cache={"storage": "efs", "prefetch_image": "r/p:1"}),
        platform={**PLATFORM, "addons": {"efs_csi": True}},
    )
    got = lines(est)
    assert got["qwen/gpu-nodes"] == (0, 0) and got["qwen/node-disks"] == (0, 0)
    assert got["qwen/cache"][0] == got["qwen/cache"][1] > 0


def test_spot_uses_the_highest_spot_price_seen_and_says_so():
    est = estimate(
        deployment(
            resources={"gpu": "L4", "gpu_count": 1, "capacity": "spot"},
            scaling={"min_replicas": 1, "max_replicas": 2},
        )
    )
    gpu = est.of("qwen")[0]
    assert gpu.drivers["price_basis"] == "spot" and gpu.drivers["usd_per_node_hour"] == 0.4386
    assert (cost.monthly(gpu.hourly_usd_min), cost.monthly(gpu.hourly_usd_max)) == (
        round(0.4386 * 730, 2),
        round(2 * 0.4386 * 730, 2),
    )
    assert "spot prices move" in gpu.description


def test_multi_node_replica_prices_every_node():
    raw = deployment(
        model=dict(LLAMA_70B),
        resources={"gpu": "H100", "gpu_count": 16},
        scaling={"min_replicas": 1, "max_replicas": 2},
        serving={"context_length": 16384, "max_concurrency": 8},
    )
    est = estimate(raw, platform={**PLATFORM, "addons": {"leader_worker_set": True}}, secrets={"hfToken"})
    gpu, disks = est.of("qwen")[:2]
    assert gpu.drivers["instance_type"] == "p5.48xlarge"
    assert gpu.drivers["nodes_min"] == 2 and gpu.drivers["nodes_max"] == 4
    assert cost.monthly(gpu.hourly_usd_min) == round(2 * 55.04 * 730, 2)
    assert cost.monthly(gpu.hourly_usd_max) == round(4 * 55.04 * 730, 2)
    assert disks.drivers["nodes_max"] == 4


def test_shared_caches_priced_per_gib_month():
    platform = {**PLATFORM, "addons": {"efs_csi": True, "fsx_csi": True}}
    efs = estimate(deployment(cache={"storage": "efs", "prefetch_image": "r/p:1"}), platform=platform)
    cache_line = efs.of("qwen")[2]
    gib = cache_line.drivers["size_gib"]
    assert cache_line.resource == "qwen/cache" and 14 < gib < 15  # one commit of Qwen 7B in bf16
    assert cost.monthly(cache_line.hourly_usd_max) == round(gib * 0.30, 2)
    fsx = estimate(deployment(cache={"storage": "fsx-lustre", "prefetch_image": "r/p:1"}), platform=platform)
    cache_line = fsx.of("qwen")[2]
    assert cache_line.drivers["size_gib"] == 1200
    assert cost.monthly(cache_line.hourly_usd_min) == cost.monthly(cache_line.hourly_usd_max) == 1200 * 0.145


def test_node_local_and_no_cache_add_no_line():
    for storage in ("none", "node-local"):
        est = estimate(deployment(cache={"storage": storage, "prefetch_image": "r/p:1"}))
        assert [i.resource for i in est.items] == ["qwen/gpu-nodes", "qwen/node-disks"]


def test_public_endpoint_load_balancer_and_usage_lines_kept_apart(tmp_path):
    est = estimate(
        deployment(
            endpoint={
                "exposure": "public",
                "load_balancer": "nlb",
                "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
            },
            scaling={"min_replicas": 1, "max_replicas": 2},
        )
    )
    got = {i.resource: i for i in est.items}
    assert cost.monthly(got["qwen/load-balancer"].hourly_usd_max) == round(0.0225 * 730, 2)
    capacity = got["qwen/load-balancer-capacity"]
    assert capacity.usage_based and cost.monthly(capacity.hourly_usd_max) == round(0.006 * 730, 2)
    transfer = got["qwen/data-transfer-out"]
    assert transfer.usage_based and cost.monthly(transfer.hourly_usd_max) == 50 * 0.09
    totals = est.stack_totals()
    assert totals["usage_monthly_usd_max"] == round(0.006 * 730 + 50 * 0.09, 2)

    usage_file = tmp_path / "usage.yaml"
    usage_file.write_text("load_balancer_capacity_units_per_hour: 3\ndata_transfer_out_gb_per_month: 1000\n")
    est = estimate(
        deployment(
            endpoint={
                "exposure": "public",
                "load_balancer": "alb",
                "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
                "hostname": "llm.example.com",
            }
        ),
        usage=cost.Usage.read(usage_file),
    )
    got = {i.resource: i for i in est.items}
    assert cost.monthly(got["qwen/load-balancer-capacity"].hourly_usd_max) == round(3 * 0.008 * 730, 2)
    assert cost.monthly(got["qwen/data-transfer-out"].hourly_usd_max) == 1000 * 0.09


def test_cluster_endpoint_has_no_load_balancer():
    assert not any("load-balancer" in i.resource for i in estimate(deployment()).items)


def test_created_cluster_adds_control_plane_system_nodes_and_nat():
    est = estimate(deployment(), platform={**PLATFORM, "cluster": {"name": "c", "create": True}})
    platform = {i.resource: i for i in est.of(None)}
    assert cost.monthly(platform["platform/eks-control-plane"].hourly_usd_max) == 73.0
    assert cost.monthly(platform["platform/system-nodes"].hourly_usd_max) == round(
        2 * (0.096 * 730 + 50 * 0.08), 2
    )
    assert cost.monthly(platform["platform/nat-gateways"].hourly_usd_max) == round(2 * 0.045 * 730, 2)
    nat_data = platform["platform/nat-data"]
    assert nat_data.usage_based and cost.monthly(nat_data.hourly_usd_max) == 100 * 0.045
    assert estimate(deployment()).of(None) == []  # an existing cluster's costs are not this stack's


def test_other_regions_are_unpriced_never_zero():
    est = estimate(deployment(), region="eu-west-1")
    assert all(i.hourly_usd_min is None and "no price for eu-west-1" in i.description for i in est.items)
    totals = est.stack_totals()
    assert totals["monthly_usd_min"] is None and totals["unpriced"] == ["qwen/gpu-nodes", "qwen/node-disks"]
    assert "unpriced: qwen/gpu-nodes" in cost.one_line("stack", totals)


def test_usage_file_problems_are_reported_one_line_each(tmp_path):
    bad = tmp_path / "usage.yaml"
    bad.write_text("lcu: 3\ndata_transfer_out_gb_per_month: -1\nnat_gateway_gb_per_month: lots\n")
    with pytest.raises(InvalidInput) as err:
        cost.Usage.read(bad)
    lines_ = [p.line() for p in err.value.problems]
    assert len(lines_) == 3
    assert lines_[0].startswith(f"error: {bad}: lcu: is not a usage assumption")
    assert "must be a number ≥ 0 (got -1)" in lines_[1] and "(got 'lots')" in lines_[2]


def test_one_number_only_where_min_equals_max():
    assert cost.span(10.0, 10.0) == "$10.00" and cost.span(1.0, 2.5) == "$1.00–$2.50"
    assert cost.span(None, None) == "unpriced"


def test_committed_stacks_price_every_line_and_preview_outputs_agree(tmp_path):
    for name in COMMITTED_STACKS:
        path = with_secret(LOCK.parent / f"Pulumi.{name}.yaml", tmp_path)
        plan = render_stack(path)
        totals = plan.estimate.stack_totals()
        assert totals["unpriced"] == [] and totals["monthly_usd_min"] <= totals["monthly_usd_max"]
        outputs = plan.recording.outputs
        assert outputs["estimatedMonthlyCostMin"] == totals["monthly_usd_min"]
        assert outputs["estimatedMonthlyCostMax"] == totals["monthly_usd_max"]
        for d in plan.loaded.deployments:
            per = plan.estimate.deployment_totals(d.spec.name)
            assert outputs["deployments"][d.spec.name]["estimatedMonthlyCostMax"] == per["monthly_usd_max"]
        assert (
            sum(1 for level, msg in plan.recording.log if level == "info" and msg.startswith("cost "))
            == len(plan.loaded.deployments) + 1
        )


def test_dev_stack_hand_computed(tmp_path):
    plan = render_stack(
        write_stack(tmp_path, deployments=[deployment(scaling={"min_replicas": 0, "max_replicas": 2})])
    )
    assert plan.recording.outputs["estimatedMonthlyCostMin"] == 0  # asleep at zero when idle
    assert plan.recording.outputs["estimatedMonthlyCostMax"] == round(2 * (0.8048 * 730 + 12), 2)


def test_staging_stack_hand_computed(tmp_path):
    """g6e.xlarge 1–3 replicas, 150 GiB disks, an internal ALB with 1 LCU/h assumed."""
    plan = render_stack(with_secret(LOCK.parent / "Pulumi.staging.yaml", tmp_path))
    per_node = 1.861 * 730 + 150 * 0.08
    alb = 0.0225 * 730 + 0.008 * 730
    totals = plan.estimate.stack_totals()
    assert totals["monthly_usd_min"] == pytest.approx(per_node + alb, abs=0.006)  # $1,392.795, to the cent
    assert totals["monthly_usd_max"] == pytest.approx(3 * per_node + alb, abs=0.006)
    assert totals["usage_monthly_usd_min"] == round(0.008 * 730, 2)


def test_prod_stack_hand_computed(tmp_path):
    """A created cluster; Llama 8B on g6e.xlarge (2–6, 150 GiB disks) and 70B on p4d.24xlarge (1–2, 400 GiB
    disks), each behind an internal ALB with 1 LCU/h assumed."""
    plan = render_stack(with_secret(LOCK.parent / "Pulumi.prod.yaml", tmp_path))
    alb = 0.0225 * 730 + 0.008 * 730
    small = 1.861 * 730 + 150 * 0.08
    large = 21.957642 * 730 + 400 * 0.08
    platform = 0.10 * 730 + 2 * (0.096 * 730 + 50 * 0.08) + 2 * 0.045 * 730 + 100 * 0.045
    totals = plan.estimate.stack_totals()
    assert totals["monthly_usd_min"] == pytest.approx(2 * small + large + 2 * alb + platform, abs=0.02)
    assert totals["monthly_usd_max"] == pytest.approx(6 * small + 2 * large + 2 * alb + platform, abs=0.02)
    assert totals["usage_monthly_usd_max"] == pytest.approx(2 * 0.008 * 730 + 100 * 0.045, abs=0.01)
    assert plan.estimate.deployment_totals(None)["monthly_usd_max"] == pytest.approx(platform, abs=0.01)


# ---- the EKS calendar: which version, at which rate, with which warning ----------------------------------


def created(version: str, name: str = "c") -> dict:
    return {**PLATFORM, "cluster": {"name": name, "create": True, "kubernetes_version": version}}


def control_plane(est) -> cost.CostItem:
    [line] = [i for i in est.of(None) if i.resource == "platform/eks-control-plane"]
    return line


def warnings_on(version: str, day: date, create: bool = True) -> list[str]:
    platform = (
        created(version) if create else {**PLATFORM, "cluster": {"name": "x", "kubernetes_version": version}}
    )
    return [w.line() for w in load(platform, [deployment()], LOCK, set(), today=day).warnings]


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return day.replace(year=day.year + month // 12, month=month % 12 + 1)


def test_calendar_rows_have_a_source_and_the_documented_support_lengths():
    """EKS: 14 months of standard support from the EKS release, then 12 of extended support."""
    with open(DATA / "eks-versions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"1.32", "1.33", "1.34", "1.35", "1.36"} <= {r["version"] for r in rows}  # offered on 2026-12-01
    for r in rows:
        release, standard_end, extended_end = (
            date.fromisoformat(r[k])
            for k in ("eks_release", "end_of_standard_support", "end_of_extended_support")
        )
        assert standard_end == _add_months(release, 14) and extended_end == _add_months(standard_end, 12), r
        assert r["source"], r["version"]
        if r["version"] in CALENDAR:
            assert (release, standard_end, extended_end) == CALENDAR[r["version"]]


def test_the_default_version_is_in_standard_support():
    default = ClusterSpec().kubernetes_version
    assert default == "1.35"  # DESIGN.md's contract
    _, standard_end, _ = CALENDAR[default]
    assert PLAN_DAY < standard_end
    assert control_plane(estimate(deployment(), platform=created(default))).drivers["support"] == "standard"


@pytest.mark.parametrize("days_left, warned", [(91, False), (90, True), (89, True)])
def test_a_version_leaving_standard_support_within_90_days_is_warned_about(days_left, warned):
    _, standard_end, _ = CALENDAR["1.35"]
    day = standard_end - timedelta(days=days_left)
    lines = warnings_on("1.35", day)
    assert bool(lines) is warned, lines
    if warned:
        [line] = lines
        assert line.startswith(
            f"warning: {VERSION_PATH}: Kubernetes 1.35 leaves EKS standard support on 2027-03-27"
        )
        assert f"in {days_left} day(s)" in line and "$0.60/h instead of $0.10/h" in line
        assert re.fullmatch(r"warning: \S+: [^;]+; .+", line), line  # warning: <path>: <what>; <fix>
        assert line.endswith("upgrade the cluster to 1.36 (EKS upgrades one minor version at a time)")
    # Still standard support: priced at the standard rate.
    line = control_plane(estimate(deployment(), platform=created("1.35"), today=day))
    assert line.hourly_usd_max == STANDARD_USD_H and line.drivers["support"] == "standard"


@pytest.mark.parametrize("days_after", [0, 1])
def test_from_the_end_of_standard_support_the_control_plane_is_priced_at_extended_support(days_after):
    """Billing for extended support starts at the beginning of that day, UTC (the EKS calendar)."""
    _, standard_end, extended_end = CALENDAR["1.33"]
    day = standard_end + timedelta(days=days_after)
    line = control_plane(estimate(deployment(), platform=created("1.33"), today=day))
    assert line.hourly_usd_min == line.hourly_usd_max == EXTENDED_USD_H
    assert cost.monthly(line.hourly_usd_max) == round(EXTENDED_USD_H * 730, 2) == 438.0
    assert line.drivers == {"kubernetes_version": "1.33", "support": "extended"}
    assert "extended support since 2026-07-29" in line.description
    [warning] = warnings_on("1.33", day)
    assert (
        "left EKS standard support on 2026-07-29: this stack's control plane is priced at extended" in warning
    )
    assert f"until {extended_end}" in warning
    # The day before, it was still standard support.
    before = control_plane(
        estimate(deployment(), platform=created("1.33"), today=standard_end - timedelta(days=1))
    )
    assert before.hourly_usd_max == STANDARD_USD_H


def test_an_existing_cluster_is_warned_about_but_its_control_plane_is_not_this_stacks_cost():
    existing = {**PLATFORM, "cluster": {"name": "x", "kubernetes_version": "1.33"}}
    assert estimate(deployment(), platform=existing).of(None) == []  # whatever its support, not our resource
    [warning] = warnings_on("1.33", PLAN_DAY, create=False)
    assert "EKS bills the existing cluster's control plane at extended support" in warning
    assert "the cluster owner's bill, not in this plan's cost" in warning


@pytest.mark.parametrize(
    "version, day, why",
    [
        ("1.31", CALENDAR["1.31"][2], "its extended support ended on 2026-11-26"),  # the day it ended
        ("1.31", CALENDAR["1.31"][2] + timedelta(days=1), "its extended support ended on 2026-11-26"),
        ("1.37", PLAN_DAY, "not in sgldeploy/data/eks-versions.csv"),
    ],
)
def test_a_version_eks_does_not_offer_is_refused_with_the_versions_it_offers(version, day, why):
    with pytest.raises(InvalidInput) as err:
        load(created(version), [deployment()], LOCK, set(), today=day)
    [line] = [p.line() for p in err.value.problems]
    assert line.startswith(f"error: {VERSION_PATH}: is not a Kubernetes version EKS offers on {day}")
    assert why in line and f"(got '{version}')" in line
    # Offered on both days: 1.32 (extended until 2027-03-23) to 1.36; standard: 1.34 (to 2026-12-02) to 1.36.
    assert line.endswith("; use one of 1.32, 1.33, 1.34, 1.35, 1.36 (in standard support: 1.34, 1.35, 1.36)")


def test_the_last_day_of_extended_support_is_still_offered():
    _, _, extended_end = CALENDAR["1.31"]
    stack = load(created("1.31"), [deployment()], LOCK, set(), today=extended_end - timedelta(days=1))
    assert "left EKS standard support on 2025-11-26" in stack.warnings[0].line()


def test_the_plan_prices_extended_support_and_the_cli_warns_without_failing(tmp_path, capsys):
    path = write_stack(tmp_path, platform=created("1.33"), deployments=[deployment()])
    plan = render_stack(path)
    items = {i["resource"]: i for i in plan_json(plan)["cost"]["items"]}
    control = items["platform/eks-control-plane"]
    assert control["hourly_usd_max"] == EXTENDED_USD_H and control["monthly_usd_max"] == 438.0
    assert control["drivers"] == {"kubernetes_version": "1.33", "support": "extended"}
    assert plan.estimate.deployment_totals(None)["monthly_usd_max"] == pytest.approx(
        EXTENDED_USD_H * 730 + 2 * (0.096 * 730 + 50 * 0.08) + 2 * 0.045 * 730 + 100 * 0.045, abs=0.01
    )
    # The program logs the warning as `pulumi preview` would show it.
    assert [m for level, m in plan.recording.log if level == "warning" and m.startswith(VERSION_PATH)]

    assert main(["validate", "--config", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {VERSION_PATH}: Kubernetes 1.33 left EKS standard")
    assert main(["plan", "--config", str(path)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and err[0].startswith(f"warning: {VERSION_PATH}: Kubernetes 1.33 left EKS standard")


def test_a_bad_calendar_date_is_one_problem_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(TODAY_ENV, "next tuesday")
    assert main(["validate", "--config", str(write_stack(tmp_path))]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {TODAY_ENV}: must be a date as YYYY-MM-DD (got 'next tuesday'); "
        "e.g. 2026-12-01, or unset it for today"
    )


# ---- one estimate: the plan's summary, its JSON, the program's outputs and the policies' facts ----------

# A public ALB deployment, 1–2 replicas of g6.xlarge, priced with 3 LCU/h and 1,000 GB/month out.
PUBLIC_ALB = deployment(
    endpoint={
        "exposure": "public",
        "load_balancer": "alb",
        "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
    },
    scaling={"min_replicas": 1, "max_replicas": 2},
)
USAGE_3_LCU = "load_balancer_capacity_units_per_hour: 3\ndata_transfer_out_gb_per_month: 1000\n"
USAGE_5_LCU = "load_balancer_capacity_units_per_hour: 5\n"
# By hand: per node $0.8048/h and 150 GiB × $0.08/GB-month; ALB $0.0225/h, 3 LCU × $0.008/h; 1,000 GB × $0.09.
BY_HAND_MIN = round(1 * 0.8048 * 730 + 1 * 150 * 0.08 + 0.0225 * 730 + 3 * 0.008 * 730 + 1000 * 0.09, 2)
BY_HAND_MAX = round(2 * 0.8048 * 730 + 2 * 150 * 0.08 + 0.0225 * 730 + 3 * 0.008 * 730 + 1000 * 0.09, 2)


def every_figure_of(plan) -> dict[str, tuple[float, float]]:
    """The stack's monthly min and max wherever a plan shows them: summary, plan JSON, the program's stack
    outputs (what `pulumi preview` diffs), its per-deployment outputs, and the facts the policies read."""
    document = plan_json(plan)
    [shown] = re.findall(r"^stack cost .*?, \$([\d,.]+)–\$([\d,.]+)/month", summary(plan), re.M)
    outputs = document["outputs"]
    [facts] = [
        r.props["cost"]
        for r in policy_resources(plan.recording)
        if r.type == "sgldeploy:serving:ModelDeployment"
    ]
    return {
        "summary": (float(shown[0].replace(",", "")), float(shown[1].replace(",", ""))),
        "plan JSON": (document["cost"]["monthly_usd_min"], document["cost"]["monthly_usd_max"]),
        "stack outputs": (outputs["estimatedMonthlyCostMin"], outputs["estimatedMonthlyCostMax"]),
        "deployment outputs": (
            outputs["deployments"]["qwen"]["estimatedMonthlyCostMin"],
            outputs["deployments"]["qwen"]["estimatedMonthlyCostMax"],
        ),
        "policy facts": (facts["monthlyUsdMin"], facts["monthlyUsdMax"]),
    }


def test_a_stack_usage_file_gives_one_total_everywhere(tmp_path):
    usage = tmp_path / "traffic.yaml"
    usage.write_text(USAGE_3_LCU)
    path = write_stack(tmp_path, deployments=[PUBLIC_ALB], extra={"sgldeploy:usageFile": str(usage)})
    figures = every_figure_of(render_stack(path))
    assert BY_HAND_MIN == 723.45 and BY_HAND_MAX == 1322.95
    assert figures == dict.fromkeys(figures, (BY_HAND_MIN, BY_HAND_MAX))


def test_a_relative_usage_file_is_read_beside_the_stack_file(tmp_path, monkeypatch):
    (tmp_path / "traffic.yaml").write_text(USAGE_3_LCU)
    path = write_stack(tmp_path, deployments=[PUBLIC_ALB], extra={"sgldeploy:usageFile": "traffic.yaml"})
    monkeypatch.chdir(tmp_path.parent)  # the path is the stack file's, not the shell's
    plan = render_stack(path)
    assert plan.usage_file == tmp_path / "traffic.yaml"
    assert set(every_figure_of(plan).values()) == {(BY_HAND_MIN, BY_HAND_MAX)}
    assert f"usage file {tmp_path / 'traffic.yaml'}" in summary(plan)


def test_usage_option_and_stack_setting_agree_and_the_option_wins(tmp_path, capsys):
    three, five = tmp_path / "three.yaml", tmp_path / "five.yaml"
    three.write_text(USAGE_3_LCU)
    five.write_text(USAGE_5_LCU)
    by_option = render(
        read_stack_file(write_stack(tmp_path / "a", deployments=[PUBLIC_ALB])), usage_file=three
    )
    assert set(every_figure_of(by_option).values()) == {(BY_HAND_MIN, BY_HAND_MAX)}

    # Both given: --usage FILE wins (5 LCU/h, the default 50 GB out), everywhere, and the CLI says so.
    both = write_stack(tmp_path / "b", deployments=[PUBLIC_ALB], extra={"sgldeploy:usageFile": str(three)})
    plan = render(read_stack_file(both), usage_file=five)
    lcu = {i.resource: i for i in plan.estimate.items}["qwen/load-balancer-capacity"]
    assert lcu.drivers == {"capacity_units_per_hour": 5.0}
    at_min = 0.8048 * 730 + 150 * 0.08 + 0.0225 * 730 + 5 * 0.008 * 730 + 50 * 0.09
    second_node = 0.8048 * 730 + 150 * 0.08
    expected = (round(at_min, 2), round(at_min + second_node, 2))
    assert set(every_figure_of(plan).values()) == {expected}
    assert main(["plan", "--config", str(both), "--usage", str(five)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "usageFile" in line]
    assert warnings == [
        f"warning: sgldeploy:usageFile: '{three}' is not used by this plan: --usage {five} wins, but `pulumi "
        f"preview` prices with '{three}'; drop one of them, or set sgldeploy:usageFile to the file passed "
        "with --usage"
    ]


def test_the_schema_accepts_the_usage_file_key():
    schema = json.loads((ROOT / "schema" / "sgldeploy.schema.json").read_text())
    stack = {"config": {"sgldeploy:usageFile": "traffic.yaml", "aws:region": "us-east-1"}}
    jsonschema.validate(stack, schema)
    for wrong in ({"sgldeploy:usagefile": "traffic.yaml"}, {"sgldeploy:usageFile": 3}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"config": wrong}, schema)


def test_a_missing_usage_file_names_what_gave_it(tmp_path, capsys):
    path = write_stack(tmp_path, extra={"sgldeploy:usageFile": "absent.yaml"})
    assert main(["plan", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'absent.yaml'}: cannot be read as YAML (FileNotFoundError); pass a YAML file of "
        "usage assumptions (the path sgldeploy:usageFile gives, a relative one read from the stack file's "
        "directory)"
    ]
    assert main(["plan", "--config", str(path), "--usage", str(tmp_path / "gone.yaml")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'gone.yaml'}: cannot be read as YAML (FileNotFoundError); pass a YAML file of "
        "usage assumptions"
    ]


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            None,
            "cannot be read as YAML (FileNotFoundError); pass a YAML file of usage assumptions (the path "
            "sgldeploy:usageFile gives, a relative one read from the stack file's directory)",
        ),
        (
            "load_balancer_capacity_units_per_hour: [3\n",
            "cannot be read as YAML (ParserError); pass a YAML file of usage assumptions (the path "
            "sgldeploy:usageFile gives, a relative one read from the stack file's directory)",
        ),
        (
            "- 3\n",
            "must be a mapping of usage assumptions (got a list of 1); use keys: "
            "data_transfer_out_gb_per_month, load_balancer_capacity_units_per_hour, nat_gateway_gb_per_month",
        ),
        (
            "nat_gateway_gb_per_month: lots\n",
            "nat_gateway_gb_per_month: must be a number ≥ 0 (got 'lots'); e.g. 100",
        ),
    ],
    ids=["missing", "not YAML", "not a mapping", "not a number"],
)
def test_validate_refuses_the_usage_file_plan_refuses_with_the_same_line(tmp_path, capsys, content, expected):
    usage = tmp_path / "traffic.yaml"
    if content is not None:
        usage.write_text(content)
    path = write_stack(tmp_path, extra={"sgldeploy:usageFile": "traffic.yaml"})
    errors = {}
    for command in ("validate", "plan"):
        assert main([command, "--config", str(path)]) == 2, command
        errors[command] = capsys.readouterr().err.splitlines()
    assert errors["validate"] == errors["plan"]
    [line] = errors["validate"]
    assert line == f"error: {usage}: {expected}"


def test_the_stack_cost_line_names_the_usage_based_part(tmp_path):
    usage = tmp_path / "traffic.yaml"
    usage.write_text(USAGE_3_LCU)
    path = write_stack(tmp_path, deployments=[PUBLIC_ALB], extra={"sgldeploy:usageFile": str(usage)})
    # By hand: 3 LCU × $0.008 × 730 h = $17.52, 1,000 GB × $0.09 = $90.00; the hourly figures add the same
    # lines per hour (a month's dollars / 730).
    usage_month = round(3 * 0.008 * 730 + 1000 * 0.09, 2)
    assert usage_month == 107.52
    node_h, disk_h, fixed_h = 0.8048, 150 * 0.08 / 730, 0.0225 + 3 * 0.008 + 1000 * 0.09 / 730
    low_h, high_h = node_h + disk_h + fixed_h, 2 * (node_h + disk_h) + fixed_h
    [line] = [x for x in summary(render_stack(path)).splitlines() if x.startswith("stack cost ")]
    assert line == (
        f"stack cost ${low_h:.2f}–${high_h:.2f}/h, ${BY_HAND_MIN:,.2f}–${BY_HAND_MAX:,.2f}/month (min–max "
        f"replicas, 730 h), of which usage-based ${usage_month:.2f}/month; us-east-1 prices, usage file {usage}"
    )


def test_the_cost_line_names_no_usage_based_part_where_there_is_none():
    est = estimate(deployment(scaling={"min_replicas": 1, "max_replicas": 1}))
    month = round(0.8048 * 730 + 150 * 0.08, 2)  # one g6.xlarge and its 150 GiB disk
    assert cost.one_line("qwen", est.deployment_totals("qwen")) == (
        f"qwen: ${0.8048 + 150 * 0.08 / 730:.2f}/h, ${month:,.2f}/month (min–max replicas, 730 h)"
    )


def test_a_deployments_usage_based_part_spans_its_min_and_max():
    # Only the NAT data is usage-based on the platform: 100 GB × $0.045 = $4.50 at min and at max.
    est = estimate(deployment(), platform={**PLATFORM, "cluster": {"name": "c", "create": True}})
    text = cost.one_line("platform", est.deployment_totals(None))
    assert text.endswith(", of which usage-based $4.50/month")


@pytest.fixture
def canary_lock(tmp_path):
    """The committed lock, plus Qwen 7B at a second commit (a canary's, or one kept warm)."""
    lock = json.loads(LOCK.read_text())
    entry = lock["models"][f"{QWEN['repo']}@{QWEN['revision']}"]
    lock["models"][f"{QWEN['repo']}@{CANARY}"] = {**entry, "revision": CANARY, "sha": CANARY}
    path = tmp_path / "models.lock.json"
    path.write_text(json.dumps(lock))
    return path


CANARY = "b" * 40
INTERNAL_ALB = {"exposure": "internal", "load_balancer": "alb"}


@pytest.mark.parametrize(
    "min_replicas, percent, canaries",
    [
        # The canary is a fixed share of the first (min, at least one) replicas, rounded up: never of max.
        (2, 25, 1),  # 0.5 → 1 (at max 10 it would be 2.5 → 3)
        (3, 50, 2),  # 1.5 → 2 (at max 10: 5)
        (4, 50, 2),  # exactly 2
        (1, 99, 1),  # 0.99 → 1 (at max 10: 10)
        (5, 30, 2),  # 1.5 → 2 (at max 10: 3)
    ],
)
def test_a_canary_is_priced_at_its_fixed_count_at_min_and_at_max(
    canary_lock, min_replicas, percent, canaries
):
    raw = deployment(
        endpoint=INTERNAL_ALB,
        scaling={"min_replicas": min_replicas, "max_replicas": 10},
        rollout={"strategy": "canary", "canary_revision": CANARY, "canary_percent": percent},
    )
    stack = load(PLATFORM, [raw], canary_lock, set(), today=PLAN_DAY)
    est = cost.estimate(stack, "us-east-1", today=PLAN_DAY)
    [line] = [i for i in est.items if i.resource == "qwen/rollout-tracks"]
    assert line.drivers["extra_replicas"] == canaries
    assert (cost.monthly(line.hourly_usd_min), cost.monthly(line.hourly_usd_max)) == (
        round(canaries * 0.8048 * 730, 2),
    ) * 2
    assert f"{canaries} canary replica(s) of g6.xlarge" in line.description


@pytest.mark.parametrize("written", ["true", "false", "yes", "on"])
def test_a_yaml_boolean_is_not_a_usage_number(tmp_path, written):
    # YAML 1.1 (PyYAML) reads true/yes/on as True: Python's True == 1, but no usage is a yes or a no.
    usage = tmp_path / "usage.yaml"
    usage.write_text(f"nat_gateway_gb_per_month: {written}\n")
    with pytest.raises(InvalidInput) as err:
        cost.Usage.read(usage)
    value = "true" if written in ("true", "yes", "on") else "false"  # shown as YAML writes it
    assert [p.line() for p in err.value.problems] == [
        f"error: {usage}: nat_gateway_gb_per_month: must be a number ≥ 0 (got {value}); e.g. 100"
    ]


@pytest.mark.parametrize("written, read", [("0", 0.0), ("0.5", 0.5), ("7", 7.0)])
def test_a_usage_of_zero_or_more_is_taken(tmp_path, written, read):
    usage = tmp_path / "usage.yaml"
    usage.write_text(f"nat_gateway_gb_per_month: {written}\n")
    assert cost.Usage.read(usage).nat_gateway_gb_per_month == read
    assert cost.Usage.read(usage).data_transfer_out_gb_per_month == 50.0  # the others keep their defaults


def test_a_usage_just_below_zero_is_refused(tmp_path):
    usage = tmp_path / "usage.yaml"
    usage.write_text("load_balancer_capacity_units_per_hour: -0.01\n")
    with pytest.raises(InvalidInput) as err:
        cost.Usage.read(usage)
    assert [p.line() for p in err.value.problems] == [
        f"error: {usage}: load_balancer_capacity_units_per_hour: must be a number ≥ 0 (got -0.01); e.g. 100"
    ]


def test_a_commit_kept_warm_is_one_replica_at_min_and_at_max(canary_lock):
    # Blue-green keeps one replica of the previous commit, whatever the scaling bounds (a replica spanning
    # nodes cannot be blue-green: a LeaderWorkerSet rolls in place).
    raw = deployment(
        model={**QWEN, "revision": CANARY},
        endpoint=INTERNAL_ALB,
        scaling={"min_replicas": 3, "max_replicas": 10},
        rollout={"strategy": "blue-green", "previous_revision": QWEN["revision"]},
    )
    stack = load(PLATFORM, [raw], canary_lock, set(), today=PLAN_DAY)
    [line] = [
        i for i in cost.estimate(stack, "us-east-1", today=PLAN_DAY).items if i.resource.endswith("tracks")
    ]
    assert cost.monthly(line.hourly_usd_min) == cost.monthly(line.hourly_usd_max) == round(0.8048 * 730, 2)
    assert line.description == (
        "1 previous commit kept warm replica(s) of g6.xlarge, on-demand price, running at all times"
    )


@pytest.mark.parametrize(
    "version, day, support",
    [
        ("1.29", date(2026, 3, 22), "extended"),  # the calendar: 1.29's extended support ends 2026-03-23
        ("1.29", date(2026, 3, 23), "ended"),
        ("1.29", date(2024, 1, 22), "upcoming"),  # released on EKS 2024-01-23
        ("1.20", date(2026, 1, 1), "unknown"),  # not in the calendar at all
    ],
)
def test_a_control_plane_eks_does_not_offer_is_priced_nothing_under_its_own_name(version, day, support):
    from sgldeploy.spec import PlatformSpec

    spec = PlatformSpec.model_validate(
        {"cluster": {"name": "c", "create": True, "kubernetes_version": version}}
    )
    item = cost.control_plane(spec, "us-east-1", day)
    if support == "extended":
        assert (item.resource, item.hourly_usd_min is not None) == ("platform/eks-control-plane", True)
        return
    assert item == cost.CostItem(
        "platform/eks-control-plane",
        f"EKS control plane, Kubernetes {version}: not offered by EKS on {day.isoformat()}",
        None,
        None,
        drivers={"kubernetes_version": version, "support": support},
    )


@pytest.mark.parametrize(
    "capacity, reservation, nodes",
    [
        ("reserved", {"ids": ["cr-0a"], "instances": 2}, (2, 2)),  # committed: 2 whatever the replicas do
        ("reserved", {"ids": ["cr-0a"]}, (3, 3)),  # no count given: max replicas' nodes
        ("reserved-fallback", {"tags": {"team": "llm"}, "instances": 1}, (1, 3)),  # on demand beyond it
        ("reserved-fallback", {"tags": {"team": "llm"}, "instances": 5}, (5, 5)),
    ],
)
def test_reserved_hours_are_committed_spend_not_a_price_per_replica(capacity, reservation, nodes):
    dep = deployment(
        resources={"gpu": "L40S", "gpu_count": 1, "capacity": capacity, "reservation": reservation},
        scaling={"min_replicas": 1, "max_replicas": 3},
    )
    est = estimate(dep)
    [item] = [i for i in est.items if i.resource == "qwen/gpu-nodes"]
    g6e = 1.861  # g6e.xlarge on demand, what an On-Demand Capacity Reservation bills at
    assert lines(est)["qwen/gpu-nodes"] == (round(nodes[0] * g6e * 730, 2), round(nodes[1] * g6e * 730, 2))
    assert item.description.startswith(
        f"g6e.xlarge × {nodes[0]} reserved instance(s): committed spend, billed whether or not replicas run"
    )
    assert ("on demand beyond them, up to 3 nodes" in item.description) is (nodes[1] > nodes[0])
