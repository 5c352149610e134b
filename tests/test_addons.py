"""Cluster add-ons as rendered: pinned Helm releases, least-privilege pod identities, Karpenter's interruption
queue, `existing` add-ons referenced and never installed, and custom resources ordered after their CRDs."""

from __future__ import annotations

import json
import re

import pytest

from sgldeploy.builders import addons

from .conftest import deployment, multi_node, render_stack, resources_of, write_stack

RELEASE = "kubernetes:helm.sh/v3:Release"
ALL = {
    "karpenter": True,
    "keda": True,
    "keda_http": True,
    "aws_load_balancer_controller": True,
    "nvidia_device_plugin": True,
    "prometheus": True,
    "leader_worker_set": True,
    "efa_device_plugin": True,
    "external_secrets": True,
    "efs_csi": True,
    "fsx_csi": True,
}


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    big = multi_node()
    platform = {"cluster": {"name": "gpu"}, "namespace": "llm", "addons": ALL, "tags": {"team": "ml"}}
    return render_stack(
        write_stack(
            tmp_path_factory.mktemp("all"),
            platform=platform,
            deployments=[deployment(), big],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )


def releases(plan) -> dict[str, dict]:
    return {r.inputs["name"]: r for r in resources_of(plan, RELEASE)}


def test_every_chart_is_pinned_to_an_exact_version_with_its_source():
    for chart in addons.CHARTS:
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", chart.version), (
            chart
        )  # as the chart spells it (eks-charts: v…)
        assert chart.why and chart.source and chart.namespace
        assert chart.chart.startswith("oci://") == (chart.repository is None)
    assert {c.addon for c in addons.CHARTS} == set(ALL)


def test_installed_add_ons_are_pinned_helm_releases(everything):
    found = releases(everything)
    assert set(found) == {c.release for c in addons.CHARTS}
    for chart in addons.CHARTS:
        inputs = found[chart.release].inputs
        assert inputs["version"] == chart.version and inputs["chart"] == chart.chart
        assert inputs["namespace"] == chart.namespace and inputs["createNamespace"] is True
        assert inputs.get("repositoryOpts", {}).get("repo") == chart.repository
        assert (
            inputs["atomic"] is True
        )  # a failed upgrade rolls back instead of leaving a half-installed chart
    karpenter = found["karpenter"].inputs["values"]
    assert karpenter["settings"] == {"clusterName": "gpu", "interruptionQueue": "Karpenter-gpu"}
    plugin = found["nvidia-device-plugin"].inputs["values"]
    assert {"key": "sgldeploy.io/node-pool", "operator": "Exists", "effect": "NoSchedule"} in plugin[
        "tolerations"
    ]
    assert (
        found["kube-prometheus-stack"].inputs["values"]["prometheus"]["prometheusSpec"][
            "serviceMonitorSelectorNilUsesHelmValues"
        ]
        is False
    )
    assert found["aws-load-balancer-controller"].inputs["values"]["vpcId"] == "vpc-offline"


def statements(plan) -> dict[str, list[dict]]:
    out = {}
    for r in resources_of(plan, "aws:iam/rolePolicy:RolePolicy"):
        out[r.name] = json.loads(r.inputs["policy"])["Statement"]
    return out


def test_only_add_ons_that_call_aws_get_a_role_and_none_grants_everything(everything):
    policies = statements(everything)
    assert set(policies) == {
        "platform-addons-karpenter-policy",
        "platform-addons-aws-load-balancer-controller-policy",
        "platform-addons-external-secrets-policy",
    }
    for name, stmts in policies.items():
        for s in stmts:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), (name, s["Sid"])
            if "*" in resources:  # only read-only calls that AWS cannot scope, or with a condition
                assert (
                    all(a.split(":")[1].startswith(("Describe", "Get", "List")) for a in actions)
                    or "Condition" in s
                ), (name, s["Sid"])
    karpenter = {s["Sid"]: s for s in policies["platform-addons-karpenter-policy"]}
    assert karpenter["PassNodeRole"]["Resource"] == ["arn:aws:iam::000000000000:role/KarpenterNodeRole-gpu"]
    assert "Condition" in karpenter["TerminateOwned"]
    assert policies["platform-addons-external-secrets-policy"][0]["Resource"] == [
        "arn:aws:secretsmanager:us-east-1:000000000000:secret:sgldeploy/*"
    ]


def test_roles_are_assumed_through_pod_identity_by_the_chart_service_accounts(everything):
    roles = resources_of(everything, "aws:iam/role:Role")
    assert len(roles) == 3
    for role in roles:
        trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
        assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    found = {
        r.inputs["serviceAccount"]: r.inputs
        for r in resources_of(everything, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    assert set(found) == {"karpenter", "aws-load-balancer-controller", "external-secrets"}
    for chart in addons.CHARTS:
        if chart.service_account:
            assert found[chart.service_account]["namespace"] == chart.namespace
            assert found[chart.service_account]["clusterName"] == "gpu"


def test_karpenter_interruption_queue_receives_the_four_event_kinds(everything):
    [queue] = resources_of(everything, "aws:sqs/queue:Queue")
    assert queue.inputs["name"] == "Karpenter-gpu" and queue.inputs["sqsManagedSseEnabled"] is True
    patterns = [
        json.loads(r.inputs["eventPattern"])
        for r in resources_of(everything, "aws:cloudwatch/eventRule:EventRule")
    ]
    assert sorted(p["detail-type"][0] for p in patterns) == [
        "AWS Health Event",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "EC2 Spot Instance Interruption Warning",
    ]
    assert len(resources_of(everything, "aws:cloudwatch/eventTarget:EventTarget")) == 4


def test_custom_resources_wait_for_the_release_that_installs_their_crds(everything):
    by_name = {r.name: r for r in everything.recording.resources}
    karpenter, lws = by_name["platform-addons-karpenter"].urn, by_name["platform-addons-lws"].urn
    for name in ("qwen-nodes-node-class", "qwen-nodes-node-pool", "big-nodes-node-pool"):
        assert karpenter in by_name[name].dependencies, name
    assert lws in by_name["big-server"].dependencies  # the LeaderWorkerSet's component
    releases_ = {r.name for r in resources_of(everything, RELEASE)}
    pod_identity = {
        r.urn for r in resources_of(everything, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    for name in ("platform-addons-karpenter", "platform-addons-aws-load-balancer-controller"):
        assert name in releases_ and set(by_name[name].dependencies) & pod_identity  # credentials first


def test_existing_add_ons_are_referenced_not_installed(tmp_path):
    platform = {
        "cluster": {"name": "gpu"},
        "namespace": "llm",
        "addons": {**{k: "existing" for k in ALL}, "external_secrets": False},
    }
    plan = render_stack(write_stack(tmp_path, platform=platform, deployments=[deployment()]))
    assert resources_of(plan, RELEASE) == []
    assert resources_of(plan, "aws:iam/role:Role") == [] and resources_of(plan, "aws:sqs/queue:Queue") == []
    [component] = resources_of(plan, "sgldeploy:platform:ClusterAddons")
    assert resources_of(plan, "kubernetes:karpenter.sh/v1:NodePool")[0].dependencies == [
        r.urn for r in resources_of(plan, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")
    ]
    assert component.type == "sgldeploy:platform:ClusterAddons"


def test_replicas_spanning_nodes_use_every_efa_interface_when_the_plugin_runs(everything, tmp_path):
    lws = next(r.inputs for r in everything.recording.resources if r.inputs.get("kind") == "LeaderWorkerSet")
    for role in ("leaderTemplate", "workerTemplate"):
        container = lws["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]
        assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "32"  # p5.48xlarge
        assert {"name": "FI_PROVIDER", "value": "efa"} in container["env"]
    plugin = releases(everything)["aws-efa-k8s-device-plugin"].inputs["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plugin["tolerations"]
    one_node = resources_of(everything, "kubernetes:apps/v1:Deployment")[0].inputs
    assert (
        "vpc.amazonaws.com/efa"
        not in one_node["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )

    big = multi_node()
    plain = render_stack(
        write_stack(
            tmp_path,
            platform={"cluster": {"name": "gpu"}, "namespace": "llm", "addons": {"leader_worker_set": True}},
            deployments=[big],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )
    lws = next(r.inputs for r in plain.recording.resources if r.inputs.get("kind") == "LeaderWorkerSet")
    container = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert "vpc.amazonaws.com/efa" not in container["resources"]["limits"]  # no plugin: NCCL over TCP


def test_efa_table_covers_the_catalog():
    from sgldeploy.catalog import instance_types

    types = instance_types()
    assert types["p5.48xlarge"].efa_interfaces == 32 and types["p4d.24xlarge"].efa_interfaces == 4
    assert types["g6.xlarge"].efa_interfaces == 0
    no_efa = [t.name for t in types.values() if t.gpu_count == 8 and t.efa_interfaces == 0]
    assert no_efa == ["p3.16xlarge"]  # a pool holding it requests no EFA (efa_interfaces takes the minimum)


def test_only_pods_over_efa_keep_ipc_lock(everything):
    lws = next(r.inputs for r in everything.recording.resources if r.inputs.get("kind") == "LeaderWorkerSet")
    ctx = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}


def tolerates(toleration: dict, taint: dict) -> bool:
    """Kubernetes' rule (k8s.io/api/core/v1 Toleration.ToleratesTaint): an empty effect matches every effect,
    an empty key every key; then Exists matches any value, Equal (the default) the same value."""
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if toleration.get("key") and toleration["key"] != taint["key"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("operator", "Equal") == "Equal" and toleration.get("value", "") == taint.get(
        "value", ""
    )


def node_agent_tolerations(chart: str, values: dict) -> list[dict]:
    """The tolerations each node agent's DaemonSet gets from its values (the charts' templates at the pinned
    versions: fsx node-daemonset.yaml reads node.tolerateAllTaints, efs node.tolerations, the device plugins
    tolerations)."""
    if chart == "aws-fsx-csi-driver":
        node = values["node"]
        return [{"operator": "Exists"}] if node.get("tolerateAllTaints") else node["tolerations"]
    if chart == "aws-efs-csi-driver":
        return values["node"]["tolerations"]
    return values["tolerations"]


def test_node_agents_tolerate_every_taint_of_the_gpu_pools():
    import yaml

    from .test_helm_values import chart_dir, coalesce
    from .variants import rendered_variants

    plan = rendered_variants()["every-add-on"]
    [pool] = resources_of(plan, "kubernetes:karpenter.sh/v1:NodePool")
    taints = pool.inputs["spec"]["template"]["spec"]["taints"]
    assert {t["key"] for t in taints} == {"nvidia.com/gpu", "sgldeploy.io/node-pool"}
    agents = ("nvidia-device-plugin", "aws-efa-k8s-device-plugin", "aws-efs-csi-driver", "aws-fsx-csi-driver")
    found = {r.inputs["chart"]: r.inputs for r in resources_of(plan, RELEASE)}
    for chart in agents:
        defaults = yaml.safe_load((chart_dir(chart, found[chart]["version"]) / "values.yaml").read_text())
        tolerations = node_agent_tolerations(chart, coalesce(defaults, found[chart]["values"]))
        for taint in taints:
            assert any(tolerates(t, taint) for t in tolerations), (chart, taint, tolerations)
    assert not tolerates({"key": "other", "operator": "Exists"}, taints[0])  # the matcher can say no
