"""NetworkPolicies as rendered: every pod of a deployment denies ingress, and the serving pods accept only the
load balancer's path, the HTTP add-on, Prometheus and their own namespace on the SGLang port."""

from __future__ import annotations

import json

from sgldeploy.builders.sglang_args import SERVER_PORT
from sgldeploy.offline.engine import OFFLINE_VPC_CIDR

from . import k8s_schemas
from .conftest import deployment, multi_node, render_stack, resources_of, write_stack

POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm"}
ALWAYS = {"min_replicas": 1, "max_replicas": 2}


def policies(plan) -> dict[str, dict]:
    found = {r.inputs["metadata"]["name"]: r.inputs for r in resources_of(plan, POLICY)}
    for obj in found.values():
        k8s_schemas.validate(obj, "1.33")
    return found


def peers(policy: dict) -> list[dict]:
    [serving_port] = [rule for rule in policy["spec"]["ingress"] if "ports" in rule]
    assert serving_port["ports"] == [{"protocol": "TCP", "port": SERVER_PORT}]
    return serving_port["from"]


def pod_labels(plan, kind: str) -> dict[str, str]:
    [workload] = resources_of(plan, kind)
    return workload.inputs["spec"]["template"]["metadata"]["labels"]


def selects(policy: dict, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    return all(labels.get(k) == v for k, v in wanted.items())


def test_public_alb_lets_in_the_vpc_prometheus_and_the_namespace_only(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=PLATFORM,
            deployments=[deployment(scaling=ALWAYS, endpoint={"exposure": "public"})],
        )
    )
    found = policies(plan)
    assert set(found) == {"qwen-deny-ingress", "qwen-server-ingress"}
    deny, server = found["qwen-deny-ingress"], found["qwen-server-ingress"]
    assert deny["spec"]["ingress"] == [] and deny["spec"]["policyTypes"] == ["Ingress"]
    assert peers(server) == [
        {"podSelector": {}},
        {"ipBlock": {"cidr": OFFLINE_VPC_CIDR}},  # an existing cluster's VPC, read with ec2:getVpc
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    server_pods = pod_labels(plan, "kubernetes:apps/v1:Deployment")
    assert selects(server, server_pods) and selects(deny, server_pods)
    assert all(p["metadata"]["namespace"] == "llm" for p in found.values())


def test_scale_from_zero_admits_the_interceptor_instead_of_the_vpc(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=PLATFORM,
            deployments=[
                deployment(
                    readiness="fast",
                    scaling={"min_replicas": 0, "max_replicas": 2},
                    endpoint={"exposure": "public", "hostname": "llm.example.com"},
                    cache={"storage": "node-local", "prefetch_image": "registry.example/sgl:1"},
                )
            ],
        )
    )
    found = policies(plan)
    sources = peers(found["qwen-server-ingress"])
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in sources
    assert not any("ipBlock" in p for p in sources)  # the load balancer targets the interceptor, not the pods
    # The image pre-pull pods get no ingress at all.
    prepull = pod_labels(plan, "kubernetes:apps/v1:DaemonSet")
    assert selects(found["qwen-deny-ingress"], prepull)
    assert not selects(found["qwen-server-ingress"], prepull)


def test_cluster_exposure_without_prometheus_is_the_namespace_only(tmp_path):
    platform = {**PLATFORM, "addons": {"prometheus": False}}
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=platform,
            deployments=[deployment(scaling=ALWAYS, endpoint={"exposure": "cluster"})],
        )
    )
    assert peers(policies(plan)["qwen-server-ingress"]) == [{"podSelector": {}}]


def test_a_created_cluster_uses_its_cidr_and_turns_on_the_cni_policy_agent(tmp_path):
    platform = {"cluster": {"name": "t", "create": True, "vpc_cidr": "10.77.0.0/16"}, "namespace": "llm"}
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=platform,
            deployments=[deployment(scaling=ALWAYS, endpoint={"exposure": "internal"})],
        )
    )
    assert {"ipBlock": {"cidr": "10.77.0.0/16"}} in peers(policies(plan)["qwen-server-ingress"])
    [cni] = [r for r in resources_of(plan, "aws:eks/addon:Addon") if r.inputs["addonName"] == "vpc-cni"]
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}


def test_pods_of_one_multi_node_replica_reach_each_other_on_every_port(tmp_path):
    big = multi_node(scaling={"min_replicas": 1, "max_replicas": 1})
    plan = render_stack(
        write_stack(
            tmp_path,
            platform={**PLATFORM, "addons": {"leader_worker_set": True}},
            deployments=[big],
            extra={"sgldeploy:hfToken": {"secure": "v1:opaque"}},
        )
    )
    server = policies(plan)["big-server-ingress"]
    [group] = [rule for rule in server["spec"]["ingress"] if "ports" not in rule]
    [lws] = resources_of(plan, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    template = lws.inputs["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        labels = template[role]["metadata"]["labels"]
        assert selects(server, labels)
        assert all(labels.get(k) == v for k, v in group["from"][0]["podSelector"]["matchLabels"].items())


def test_turned_off_renders_none(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            platform={**PLATFORM, "network_policies": False},
            deployments=[deployment(scaling=ALWAYS)],
        )
    )
    assert resources_of(plan, POLICY) == []
