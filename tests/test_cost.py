"""Cost lines against hand computation from the catalog (sgldeploy/data, us-east-1, 730 h/month).

Prices used by hand below: g6.xlarge $0.8048/h (spot upper bound $0.4386), g6e.xlarge $1.861/h,
p5.48xlarge $55.04/h, m6i.large $0.096/h, gp3 $0.08/GB-month, EFS $0.30/GB-month, FSx Lustre
$0.145/GB-month, ALB $0.0225/h + $0.008/LCU-h, NLB $0.0225/h + $0.006/NLCU-h, NAT $0.045/h + $0.045/GB,
transfer out $0.09/GB, EKS $0.10/h.
"""

from __future__ import annotations

import pytest

from sgldeploy import cost
from sgldeploy.problems import InvalidInput
from sgldeploy.stack import resolve

from .conftest import LLAMA_70B, LOCK, deployment, render_stack, with_secret, write_stack

PLATFORM = {"cluster": {"name": "test"}, "namespace": "llm"}


def estimate(*deployments, platform=None, region="us-east-1", usage=None, secrets=()):
    stack = resolve(platform or PLATFORM, list(deployments), LOCK, set(secrets))
    return cost.estimate(stack, region, usage)


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
    for name in ("dev", "staging", "prod"):
        path = with_secret(LOCK.parent / f"Pulumi.{name}.yaml", tmp_path)
        plan = render_stack(path)
        totals = plan.estimate.stack_totals()
        assert totals["unpriced"] == [] and totals["monthly_usd_min"] <= totals["monthly_usd_max"]
        outputs = plan.recording.outputs
        assert outputs["estimatedMonthlyCostMin"] == totals["monthly_usd_min"]
        assert outputs["estimatedMonthlyCostMax"] == totals["monthly_usd_max"]
        for d in plan.resolved.deployments:
            per = plan.estimate.deployment_totals(d.spec.name)
            assert outputs["deployments"][d.spec.name]["estimatedMonthlyCostMax"] == per["monthly_usd_max"]
        assert (
            sum(1 for level, msg in plan.recording.log if level == "info" and msg.startswith("cost "))
            == len(plan.resolved.deployments) + 1
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
