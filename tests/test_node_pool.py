"""GPU node pools as rendered: Karpenter NodePool + EC2NodeClass against the upstream CRDs, managed node groups,
and a scheduling check that every serving pod lands on its own pool and nowhere else."""

from __future__ import annotations

import subprocess

import pytest

from sgldeploy.builders import node_pool
from sgldeploy.spec import DeploymentSpec

from . import k8s_schemas
from .conftest import LLAMA_70B, deployment, render_stack, resources_of, write_stack

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
IMAGE = "registry.example/sgldeploy/sglang:v0.5.23"
PLATFORM = {"cluster": {"name": "test"}, "namespace": "llm", "addons": {"leader_worker_set": True}}


def small(**kw):
    return deployment(**kw)


def four_gpu():
    return {
        "name": "four",
        "model": dict(LLAMA_70B),
        "serving": {"context_length": 4096, "max_concurrency": 4},
        "resources": {"gpu": "L40S", "gpu_count": 4, "capacity": "spot-fallback"},
        "cache": {"storage": "none"},
        "scaling": {"min_replicas": 1, "max_replicas": 2},
    }


def multi_node():
    return {
        "name": "big",
        "model": dict(LLAMA_70B),
        "serving": {"context_length": 16384, "max_concurrency": 8},
        "resources": {"gpu": "H100", "gpu_count": 16, "capacity": "spot"},
        "cache": {"storage": "none"},
        "scaling": {"min_replicas": 1, "max_replicas": 1},
    }


@pytest.fixture(scope="module")
def karpenter(tmp_path_factory):
    """Three placements in one stack: 1× L4 with a node-local cache, 4× L40S, 2 nodes × 8× H100."""
    tmp = tmp_path_factory.mktemp("karpenter")
    deployments = [small(readiness="fast", cache={"prefetch_image": IMAGE}), four_gpu(), multi_node()]
    return render_stack(
        write_stack(
            tmp, platform=PLATFORM, deployments=deployments, extra={"sgldeploy:hfToken": {"secure": "v1:x"}}
        )
    )


def by_name(plan, type_):
    return {r.inputs["metadata"]["name"]: r.inputs for r in resources_of(plan, type_)}


def test_a_pool_and_node_class_per_deployment_valid_against_the_crds(karpenter):
    pools, classes = by_name(karpenter, NODE_POOL), by_name(karpenter, NODE_CLASS)
    assert set(pools) == set(classes) == {"llm-qwen", "llm-four", "llm-big"}
    for obj in [*pools.values(), *classes.values()]:
        assert k8s_schemas.validate(obj, "1.33").startswith("crd ")
    for name, pool in pools.items():
        spec = pool["spec"]["template"]["spec"]
        assert spec["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name}
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in spec["taints"]
        assert {"key": node_pool.POOL_LABEL, "value": name, "effect": "NoSchedule"} in spec["taints"]
        assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"
        assert spec["expireAfter"] == "720h" and spec["terminationGracePeriod"] == "2h"
        node_class = classes[name]["spec"]
        assert node_class["amiSelectorTerms"] == [{"alias": node_pool.AMI_ALIAS}]
        assert "@latest" not in node_class["amiSelectorTerms"][0]["alias"]
        assert node_class["metadataOptions"]["httpTokens"] == "required"
        assert node_class["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert node_class["blockDeviceMappings"][0]["ebs"]["encrypted"] is True
        assert node_class["role"] == "KarpenterNodeRole-test"
        zones = ["a"] if name == "llm-big" else ["a", "b"]  # a cluster placement group lives in one zone
        assert node_class["subnetSelectorTerms"] == [{"id": f"subnet-0000000000000000{z}"} for z in zones]
        assert node_class["securityGroupSelectorTerms"] == [{"id": "sg-offline-cluster"}]


def requirement(pool, key):
    return next(r["values"] for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key)


def test_one_gpu_pool_fits_the_placement_and_prepares_the_nvme_cache(karpenter):
    pool, node_class = by_name(karpenter, NODE_POOL)["llm-qwen"], by_name(karpenter, NODE_CLASS)["llm-qwen"]
    assert requirement(pool, "node.kubernetes.io/instance-type")[0] == "g6.xlarge"
    assert requirement(pool, "karpenter.sh/capacity-type") == ["on-demand"]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "2"}  # max 1 replica + 1 surge, 1 GPU each
    assert pool["spec"]["template"]["metadata"]["labels"] == {
        node_pool.POOL_LABEL: "llm-qwen",
        node_pool.GPU_LABEL: "L4",
        "nvidia.com/gpu.present": "true",
    }
    user_data = node_class["spec"]["userData"]
    assert user_data.startswith("MIME-Version: 1.0") and "/mnt/sgldeploy-cache" in user_data
    checked = subprocess.run(
        ["bash", "-n"], input=node_pool.NODE_CACHE_SCRIPT, text=True, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


def test_four_gpu_pool_prefers_spot_with_on_demand_fallback(karpenter):
    pool = by_name(karpenter, NODE_POOL)["llm-four"]
    assert requirement(pool, "karpenter.sh/capacity-type") == ["spot", "on-demand"]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "12"}  # (2 replicas + 1 surge) × 4 GPUs
    assert all(t.startswith("g6e.") for t in requirement(pool, "node.kubernetes.io/instance-type"))
    assert "userData" not in by_name(karpenter, NODE_CLASS)["llm-four"]["spec"]  # no node-local cache


def test_multi_node_pool_gets_a_cluster_placement_group(karpenter):
    pool, node_class = by_name(karpenter, NODE_POOL)["llm-big"], by_name(karpenter, NODE_CLASS)["llm-big"]
    assert requirement(pool, "karpenter.sh/capacity-type") == ["spot"]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "32"}  # (1 + 1 surge) replicas × 2 nodes × 8 GPUs
    assert node_class["spec"]["placementGroupSelector"] == {"name": "llm-big"}
    [group] = resources_of(karpenter, "aws:ec2/placementGroup:PlacementGroup")
    assert group.inputs["strategy"] == "cluster" and group.inputs["name"] == "llm-big"


# ---- scheduling: every pod on its own pool, nothing else there -----------------------------------


def tolerates(tolerations, taint) -> bool:
    for t in tolerations or []:
        if t.get("effect") not in (None, taint["effect"]) or t.get("key") not in (None, taint["key"]):
            continue
        if t.get("operator") == "Exists" or t.get("value") == taint["value"]:
            return True
    return False


def can_land(pod: dict, pool: dict) -> bool:
    """The scheduler's filters that matter here: taints, the node selector, required node affinity."""
    template = pool["spec"]["template"]
    labels = dict(template["metadata"]["labels"])
    types = requirement(pool, "node.kubernetes.io/instance-type")
    if not all(tolerates(pod.get("tolerations"), taint) for taint in template["spec"]["taints"]):
        return False
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    terms = (
        ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    for term in terms:
        for expr in term["matchExpressions"]:
            if expr["key"] == "node.kubernetes.io/instance-type" and not set(types) & set(expr["values"]):
                return False
    return True


def pods(plan) -> dict[str, list[dict]]:
    """Every pod template of every workload, by deployment name."""
    out: dict[str, list[dict]] = {}
    for r in plan.recording.resources:
        kind, inputs = r.inputs.get("kind"), r.inputs
        if kind in ("Deployment", "DaemonSet"):
            name = inputs["metadata"]["labels"]["app.kubernetes.io/instance"]
            out.setdefault(name, []).append(inputs["spec"]["template"]["spec"])
        elif kind == "LeaderWorkerSet":
            template = inputs["spec"]["leaderWorkerTemplate"]
            out.setdefault(inputs["metadata"]["name"], []).extend(
                [template["leaderTemplate"]["spec"], template["workerTemplate"]["spec"]]
            )
    return out


def test_every_serving_pod_lands_on_its_pool_and_nothing_else_can(karpenter):
    pools = by_name(karpenter, NODE_POOL)
    workloads = pods(karpenter)
    assert set(workloads) == {"qwen", "four", "big"} and len(workloads["qwen"]) == 2  # server and pre-puller
    for name, specs in workloads.items():
        for spec in specs:
            assert [p for p, pool in pools.items() if can_land(spec, pool)] == [f"llm-{name}"]
    plain = {"containers": [{"name": "x", "image": "busybox:1"}]}
    gpu_anywhere = {
        **plain,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    assert not any(can_land(p, pool) for p in (plain, gpu_anywhere) for pool in pools.values())


def test_serving_pods_are_never_disrupted_voluntarily(karpenter):
    deployment_ = resources_of(karpenter, "kubernetes:apps/v1:Deployment")[0].inputs
    assert deployment_["spec"]["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"


def test_pool_names_stay_valid_labels():
    dep = DeploymentSpec.model_validate(deployment(name="a" * 40))
    name = node_pool.pool_id("n" * 63, dep)
    assert len(name) == 63 and name == node_pool.pool_id("n" * 63, dep)
    assert name != node_pool.pool_id("n" * 62 + "m", dep)
    assert node_pool.pool_id("llm", dep) == "llm-" + "a" * 40


# ---- managed node groups ----------------------------------------------------------------------------


def test_managed_node_group_mode(tmp_path):
    platform = {**PLATFORM, "node_provisioner": "managed-node-group", "node_role": "gpu-nodes"}
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=platform,
            deployments=[
                small(
                    readiness="fast",
                    cache={"prefetch_image": IMAGE},
                    resources={"gpu": "L4", "gpu_count": 1, "capacity": "spot"},
                )
            ],
        )
    )
    assert resources_of(plan, NODE_POOL) == [] and resources_of(plan, NODE_CLASS) == []
    [group] = resources_of(plan, "aws:eks/nodeGroup:NodeGroup")
    g = group.inputs
    assert g["amiType"] == "AL2023_x86_64_NVIDIA" and g["capacityType"] == "SPOT"
    assert g["nodeGroupName"] == "llm-qwen" and g["clusterName"] == "test"
    assert g["nodeRoleArn"] == "arn:aws:iam::000000000000:role/gpu-nodes"
    assert g["scalingConfig"] == {"minSize": 0, "maxSize": 2, "desiredSize": 0}
    assert g["instanceTypes"][0] == "g6.xlarge"
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in g["taints"]
    assert {"key": node_pool.POOL_LABEL, "value": "llm-qwen", "effect": "NO_SCHEDULE"} in g["taints"]
    assert g["labels"][node_pool.POOL_LABEL] == "llm-qwen"
    tags = g["tags"]
    assert (
        tags["k8s.io/cluster-autoscaler/enabled"] == "true"
        and tags["k8s.io/cluster-autoscaler/test"] == "owned"
    )
    assert (
        tags[f"k8s.io/cluster-autoscaler/node-template/taint/{node_pool.POOL_LABEL}"] == "llm-qwen:NoSchedule"
    )
    [template] = resources_of(plan, "aws:ec2/launchTemplate:LaunchTemplate")
    t = template.inputs
    assert (
        t["metadataOptions"]["httpTokens"] == "required"
        and t["metadataOptions"]["httpPutResponseHopLimit"] == 1
    )
    assert t["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    import base64

    assert "/mnt/sgldeploy-cache" in base64.b64decode(t["userData"]).decode()
    pod = resources_of(plan, "kubernetes:apps/v1:Deployment")[0].inputs["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {node_pool.POOL_LABEL: "llm-qwen"}


# ---- a cluster placement group lives in one Availability Zone: one subnet per multi-node pool -----------
# Auto Scaling refuses a cluster placement group with subnets in several zones (CreateAutoScalingGroup,
# PlacementGroup), and Karpenter offers every zone of its node class's subnets whatever the group. The
# offline cluster has two subnets, subnet-0000000000000000a and …b (sgldeploy/offline/engine.py), one per zone.


def subnet_ids(node_class: dict) -> list[str]:
    return [term["id"] for term in node_class["spec"]["subnetSelectorTerms"]]


def test_a_multi_node_karpenter_pool_launches_in_one_subnet_and_others_in_all(karpenter):
    classes = by_name(karpenter, NODE_CLASS)
    assert classes["llm-big"]["spec"]["placementGroupSelector"] == {"name": "llm-big"}
    assert subnet_ids(classes["llm-big"]) == ["subnet-0000000000000000a"]
    for name in ("llm-qwen", "llm-four"):  # no placement group: every zone the cluster has
        assert "placementGroupSelector" not in classes[name]["spec"]
        assert subnet_ids(classes[name]) == ["subnet-0000000000000000a", "subnet-0000000000000000b"]


def test_a_multi_node_managed_node_group_launches_in_one_subnet(tmp_path):
    platform = {**PLATFORM, "node_provisioner": "managed-node-group"}
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=platform,
            deployments=[small(), multi_node()],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )
    groups = {r.inputs["nodeGroupName"]: r for r in resources_of(plan, "aws:eks/nodeGroup:NodeGroup")}
    [placement_group] = resources_of(plan, "aws:ec2/placementGroup:PlacementGroup")
    templates = {r.urn: r for r in resources_of(plan, "aws:ec2/launchTemplate:LaunchTemplate")}
    [big_template] = [templates[u] for u in groups["llm-big"].dependencies if u in templates]
    assert (
        placement_group.urn in big_template.dependencies and placement_group.inputs["strategy"] == "cluster"
    )
    assert groups["llm-big"].inputs["subnetIds"] == ["subnet-0000000000000000a"]
    assert groups["llm-qwen"].inputs["subnetIds"] == ["subnet-0000000000000000a", "subnet-0000000000000000b"]
