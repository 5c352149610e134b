"""Every Kubernetes object of every committed stack is valid for the stack's Kubernetes version."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest

from sgldeploy.offline.manifests import kubernetes_objects

from . import k8s_schemas
from .conftest import ROOT, render_stack, with_secret

STACKS = sorted(ROOT.glob("stacks/Pulumi.*.yaml"))
# Only values that cannot be known before `pulumi up` may be left out of the check.
MAY_BE_UNKNOWN = {"stringData"}


@pytest.fixture(scope="module", params=[p.name for p in STACKS])
def stack_objects(request, tmp_path_factory):
    path = ROOT / "stacks" / request.param
    if "prod" in path.name:  # gated models: the token is set as `pulumi config set --secret` would
        path = with_secret(path, tmp_path_factory.mktemp("prod"))
    plan = render_stack(path)
    version = plan.loaded.spec.platform.cluster.kubernetes_version
    return request.param, version, kubernetes_objects(plan)


def test_committed_stacks_exist():
    assert {p.name for p in STACKS} >= {"Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"}


def test_every_object_validates(stack_objects):
    name, version, objects = stack_objects
    assert objects, f"{name} renders no Kubernetes objects"
    kinds = set()
    for obj in objects:
        checked, dropped = k8s_schemas.without_markers(obj)
        # A created cluster's subnets and security group have ids only after apply.
        dropped = [
            d
            for d in dropped
            if not (
                obj["kind"] == "EC2NodeClass"
                and d.startswith(("spec.subnetSelectorTerms[", "spec.securityGroupSelectorTerms["))
            )
        ]
        assert {d.split(".")[0] for d in dropped} <= MAY_BE_UNKNOWN, (
            f"{obj['kind']}/{obj['metadata']['name']}: unknown {dropped}"
        )
        k8s_schemas.validate(checked, version)
        kinds.add(obj["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "Namespace"} <= kinds


def test_strict_validation_catches_a_typo(stack_objects):
    _, version, objects = stack_objects
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_schemas.validate(deployment, version)


def test_crd_schemas_load_and_reject_bad_custom_resources():
    schemas = k8s_schemas.crd_schemas()
    assert ("karpenter.sh/v1", "NodePool") in schemas and ("keda.sh/v1alpha1", "ScaledObject") in schemas
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {}, "triggers": []},
    }
    with pytest.raises(jsonschema.ValidationError):
        k8s_schemas.validate(bad, "1.33")


def test_every_pod_runs_with_the_runtime_seccomp_profile_no_token_and_no_capabilities(stack_objects):
    from sgldeploy.policy.rules import containers, pod_specs

    name, _, objects = stack_objects
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet", "Job", "LeaderWorkerSet")]
    assert workloads
    for obj in workloads:
        for where, pod in pod_specs(obj):
            label = f"{name} {obj['kind']}/{obj['metadata']['name']} {where}"
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
            # Only the router talks to the Kubernetes API (it discovers the replicas by watching pods).
            talks_to_api = obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-router")
            assert pod["automountServiceAccountToken"] is talks_to_api, label
        for where, c, _ in containers(obj):
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"], where
            # IPC_LOCK only for the pods that request EFA interfaces (their registered memory stays locked).
            over_efa = any(k == "vpc.amazonaws.com/efa" for k in c["resources"].get("requests", {}))
            assert ctx["capabilities"].get("add", []) == (["IPC_LOCK"] if over_efa else []), where
