"""Components under the Pulumi mock engine: the inputs each child is registered with."""

from __future__ import annotations

import re

import pytest

from sgldeploy.offline.engine import SECRET, UNKNOWN

from .conftest import deployment, multi_node, render_stack, resources_of, write_stack

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource


@pytest.fixture(scope="module")
def dev_like(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    path = write_stack(
        tmp,
        deployments=[
            deployment(
                name="qwen",
                serving={"context_length": 4096, "max_concurrency": 4},
                env={"SGLANG_LOG_LEVEL": "info"},
            )
        ],
        extra={"sgldeploy:hfToken": {"secure": "v1:opaque"}},
    )
    return render_stack(path)


def one(plan, type_):
    found = resources_of(plan, type_)
    assert len(found) == 1, f"expected one {type_}, got {[r.name for r in found]}"
    return found[0]


def container(plan):
    return one(plan, DEPLOYMENT).inputs["spec"]["template"]["spec"]["containers"][0]


def test_component_tree_and_type_tokens(dev_like):
    by_name = {r.name: r for r in dev_like.recording.resources}
    assert by_name["platform"].type == "sgldeploy:platform:Platform"
    assert by_name["qwen"].type == "sgldeploy:serving:ModelDeployment"
    assert by_name["qwen-server"].type == "sgldeploy:serving:SglangServer"
    assert by_name["qwen-server"].parent == by_name["qwen"].urn
    assert by_name["qwen-server-deployment"].parent == by_name["qwen-server"].urn
    assert by_name["qwen-pdb"].parent == by_name["qwen"].urn
    for r in dev_like.recording.resources:
        if r.parent and r.parent != by_name["platform"].parent:
            parent = next(p for p in dev_like.recording.resources if p.urn == r.parent)
            assert r.name.startswith(parent.name), f"{r.urn} is not named after its parent {parent.name}"


def test_every_kubernetes_resource_uses_the_platform_provider(dev_like):
    provider = one(dev_like, "pulumi:providers:kubernetes")
    assert provider.inputs["enableServerSideApply"] in (True, "true")
    assert provider.inputs["kubeconfig"] == SECRET
    for r in dev_like.recording.resources:
        if r.type.startswith("kubernetes:"):
            assert r.provider and r.provider.startswith(provider.urn), f"{r.urn} has provider {r.provider}"


def test_deployment_runs_the_generated_command(dev_like):
    c = container(dev_like)
    assert c["image"] == "lmsysorg/sglang:v0.5.23"
    assert c["command"] == ["python3", "-m", "sglang.launch_server"]
    args = c["args"]
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert flag("--model-path") == "Qwen/Qwen2.5-7B-Instruct"
    assert flag("--revision") == "a09a35458c702b33eeacc393d103063234e8bc28"
    assert (flag("--host"), flag("--port"), flag("--tp-size")) == ("0.0.0.0", "30000", "1")
    assert (flag("--context-length"), flag("--max-running-requests")) == ("4096", "4")
    assert "--enable-metrics" in args
    assert flag("--api-key") == "$(SGLANG_API_KEY)"


def test_secrets_are_read_by_reference_never_inlined(dev_like):
    env = {e["name"]: e for e in container(dev_like)["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "qwen-hf-token", "key": "HF_TOKEN"}
    assert env["SGLANG_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "qwen-api-key", "key": "API_KEY"}
    assert env["SGLANG_LOG_LEVEL"] == {"name": "SGLANG_LOG_LEVEL", "value": "info"}
    assert "value" not in env["HF_TOKEN"] and "value" not in env["SGLANG_API_KEY"]
    secrets = {r.inputs["metadata"]["name"]: r for r in resources_of(dev_like, "kubernetes:core/v1:Secret")}
    assert set(secrets) == {"qwen-hf-token", "qwen-api-key"}
    assert secrets["qwen-hf-token"].inputs["stringData"] == {"HF_TOKEN": SECRET}
    assert secrets["qwen-api-key"].inputs["stringData"] in (SECRET, UNKNOWN)  # generated: unknown in preview
    assert "offline-opaque-secret" not in repr(dev_like.recording.resources)


def test_resources_probes_and_placement(dev_like):
    c = container(dev_like)
    assert c["resources"]["limits"][GPU_RESOURCE] == "1" and c["resources"]["requests"][GPU_RESOURCE] == "1"
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
    assert "cpu" not in c["resources"]["limits"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["timeoutSeconds"] > 20  # SGLang's own health check waits 20 s
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    pod = one(dev_like, DEPLOYMENT).inputs["spec"]["template"]["spec"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    types = term[0]["matchExpressions"][0]["values"]
    assert types[0] == "g6.xlarge" and all(t.startswith(("g6.", "gr6.")) for t in types)  # L4 instances only
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]


def server_service(plan):
    """The model's own Service (an autoscaled deployment at zero also has a `-proxy` one)."""
    return next(
        r for r in resources_of(plan, "kubernetes:core/v1:Service") if r.name.endswith("-server-service")
    )


def test_service_and_disruption_budget(dev_like):
    service = server_service(dev_like).inputs
    deployment_ = one(dev_like, DEPLOYMENT).inputs
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment_["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one(dev_like, "kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]
    assert pdb["selector"]["matchLabels"] == deployment_["spec"]["selector"]["matchLabels"]
    assert pdb["maxUnavailable"] == 1  # readiness fast


def test_always_ready_keeps_its_minimum_through_drains(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[
                deployment(readiness="always-ready", scaling={"min_replicas": 2, "max_replicas": 4})
            ],
        )
    )
    assert one(plan, "kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["minAvailable"] == 2
    assert one(plan, DEPLOYMENT).inputs["spec"]["replicas"] == 2


def test_given_api_key_is_used_and_no_password_generated(tmp_path):
    plan = render_stack(write_stack(tmp_path, extra={"sgldeploy:apiKey": {"secure": "v1:opaque"}}))
    assert resources_of(plan, "random:index/randomPassword:RandomPassword") == []
    secret = next(
        r
        for r in resources_of(plan, "kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == "qwen-api-key"
    )
    assert secret.inputs["stringData"] == {"API_KEY": SECRET}


def test_no_auth_no_api_key_secret_and_stopped_runs_nothing(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[
                deployment(
                    endpoint={"auth": "none"}, state="stopped", scaling={"min_replicas": 0, "max_replicas": 0}
                )
            ],
        )
    )
    assert resources_of(plan, "kubernetes:core/v1:Secret") == []
    assert one(plan, DEPLOYMENT).inputs["spec"]["replicas"] == 0
    assert "--api-key" not in container(plan)["args"]


def test_multi_gpu_replica_gets_all_gpus_and_shared_memory(tmp_path, lock):
    from .conftest import LLAMA_70B

    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[
                {
                    "name": "big",
                    "model": dict(LLAMA_70B),
                    "serving": {"context_length": 16384, "max_concurrency": 8},
                    "cache": {"storage": "none"},
                    "resources": {"gpu": "H100"},
                }
            ],
            extra={"sgldeploy:hfToken": {"secure": "v1:opaque"}},
        )
    )
    c = container(plan)
    assert c["resources"]["limits"][GPU_RESOURCE] == "8"
    assert c["args"][c["args"].index("--tp-size") + 1] == "8"
    pod = one(plan, DEPLOYMENT).inputs["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert int(shm["emptyDir"]["sizeLimit"].rstrip("Gi")) >= 2


def test_stack_outputs_summarise_and_keep_keys_secret(dev_like):
    out = dev_like.recording.outputs
    assert out["namespace"] == "llm" and out["clusterName"] == "test"
    assert out["deployments"]["qwen"]["instanceType"] == "g6.xlarge"
    assert out["deployments"]["qwen"]["serviceName"] == "qwen.llm.svc"
    assert out["apiKeys"] == SECRET


def test_a_replica_spanning_nodes_is_a_leader_worker_set(tmp_path):
    from . import k8s_schemas

    big = multi_node()
    platform = {"cluster": {"name": "test"}, "namespace": "llm", "addons": {"leader_worker_set": True}}
    plan = render_stack(
        write_stack(
            tmp_path,
            platform=platform,
            deployments=[big],
            extra={"sgldeploy:hfToken": {"secure": "v1:opaque"}},
        )
    )
    assert resources_of(plan, DEPLOYMENT) == []
    lws = one(plan, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs
    k8s_schemas.validate(lws, "1.33")
    # The spec's defaults, max_surge 1 and max_unavailable 0, each in its own place.
    assert lws["spec"]["rolloutStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": 0},
    }
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    # The leader is ready only once every rank has joined it: workers that waited for a ready leader
    # (LeaderReady) would never start, so they start as soon as it is created.
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    for c in (leader, worker):
        args = c["args"]
        assert args[args.index("--tp-size") + 1] == "16"
        assert args[args.index("--nnodes") + 1] == "$(LWS_GROUP_SIZE)"
        assert args[args.index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
        # SGLang's --dist-init-addr is host:port: rank 0's address and the rendezvous port, for every rank.
        assert re.fullmatch(r"\$\(LWS_LEADER_ADDRESS\):\d+", args[args.index("--dist-init-addr") + 1])
        assert c["resources"]["limits"][GPU_RESOURCE] == "8"
    assert "readinessProbe" in leader and "readinessProbe" not in worker  # workers serve no HTTP
    service = server_service(plan).inputs["spec"]
    assert service["selector"]["sgldeploy.io/role"] == "leader"
    assert template["leaderTemplate"]["metadata"]["labels"]["sgldeploy.io/role"] == "leader"


def test_multi_node_placement_needs_the_leader_worker_set_addon(tmp_path):
    from sgldeploy.spec.problems import InvalidInput

    big = multi_node()
    with pytest.raises(InvalidInput) as err:
        render_stack(write_stack(tmp_path, deployments=[big], extra={"sgldeploy:hfToken": {"secure": "x"}}))
    assert err.value.problems[0].path == "sgldeploy:platform.addons.leader_worker_set"


def test_a_program_that_never_finishes_fails_cleanly(tmp_path):
    import pulumi

    from sgldeploy.offline.engine import run_program

    program = tmp_path / "__main__.py"
    program.write_text(
        "import pulumi, pulumi_kubernetes as k8s\n"
        "class C(pulumi.ComponentResource):\n"
        "    def __init__(self, name, deps):\n"
        "        super().__init__('test:index:C', name, None, pulumi.ResourceOptions(depends_on=deps))\n"
        "        self.child = k8s.core.v1.ConfigMap(f'{name}-child', data={'a': 'b'},\n"
        "                                           opts=pulumi.ResourceOptions(parent=self))\n"
        "deps = []\n"
        "deps.append(C('c', deps).child)  # the component waits on its own child\n"
    )
    with pytest.raises(pulumi.RunError) as err:
        run_program(program, "sgldeploy", "test", {}, [], timeout=3)
    assert "did not finish within 3 s" in str(err.value) and "depends_on cycle" in str(err.value)
    # The engine recovers: the next program in the same process renders normally.
    plan = render_stack(write_stack(tmp_path))
    assert resources_of(plan, DEPLOYMENT)


PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def test_the_rolling_update_puts_the_specs_surge_and_unavailability_in_their_places(dev_like, tmp_path):
    # The spec's documented defaults (max_surge 1, max_unavailable 0), then two other values, so that neither a
    # swap nor a hard-coded pair can render them.
    assert one(dev_like, DEPLOYMENT).inputs["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    plan = render_stack(
        write_stack(tmp_path, deployments=[deployment(rollout={"max_surge": 0, "max_unavailable": 2})])
    )
    assert one(plan, DEPLOYMENT).inputs["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 2},
    }


@pytest.mark.parametrize(
    "readiness, state, min_replicas, budget",
    [
        # always-ready keeps min_replicas through drains: one replica is never drained to none (the boundary).
        ("always-ready", "running", 1, {"minAvailable": 1}),
        ("always-ready", "running", 3, {"minAvailable": 3}),
        # one below: an always-ready deployment stopped at zero has no minimum to keep, one pod at a time.
        ("always-ready", "stopped", 0, {"maxUnavailable": 1}),
        # the other readiness levels allow one replica at a time, whatever their minimum.
        ("fast", "running", 1, {"maxUnavailable": 1}),
        ("cold-start", "running", 2, {"maxUnavailable": 1}),
    ],
)
def test_the_disruption_budget_at_and_around_its_boundaries(tmp_path, readiness, state, min_replicas, budget):
    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[
                deployment(
                    readiness=readiness,
                    state=state,
                    scaling={"min_replicas": min_replicas, "max_replicas": 4},
                )
            ],
        )
    )
    pdb = one(plan, PDB).inputs["spec"]
    assert pdb == {
        "selector": {"matchLabels": one(plan, DEPLOYMENT).inputs["spec"]["selector"]["matchLabels"]},
        # Kubernetes' default (IfHealthyBudget) lets a crash-looping pod that is never ready block every drain
        # of its node while the budget is short; AlwaysAllow evicts unhealthy pods regardless.
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        **budget,
    }


def test_a_terminating_pod_outlives_the_load_balancers_deregistration_delay(tmp_path):
    """The ALB keeps a deregistering target's requests in flight for its deregistration delay; the pod must not
    be killed before they finish (README: a 120 s grace period, the ALB's 120 s deregistration delay)."""
    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[
                deployment(
                    endpoint={"exposure": "internal", "load_balancer": "alb"},
                    scaling={"min_replicas": 1, "max_replicas": 2},
                )
            ],
        )
    )
    [ingress] = resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress")
    annotation = ingress.inputs["metadata"]["annotations"][
        "alb.ingress.kubernetes.io/target-group-attributes"
    ]
    attributes = dict(pair.split("=") for pair in annotation.split(","))
    delay = int(attributes["deregistration_delay.timeout_seconds"])
    grace = one(plan, DEPLOYMENT).inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert delay == 120 and grace == 120 and grace >= delay


def test_every_startup_probe_covers_its_budget_with_less_than_one_period_to_spare():
    """failureThreshold × periodSeconds is the time a pod has to open its port: at least the startup budget,
    and less than one period more (a floor would cut the budget short wherever it is not a multiple of 10)."""
    from sgldeploy.offline.plan_json import plan_json

    from .variants import rendered_variants

    checked = 0
    for variant, plan in rendered_variants().items():
        budgets = {d["name"]: d["startup_budget_seconds"] for d in plan_json(plan)["deployments"]}
        for r in plan.recording.resources:
            spec = r.inputs.get("spec") if r.custom and isinstance(r.inputs, dict) else None
            if r.type == DEPLOYMENT:
                templates = [spec["template"]]
            elif r.type == "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet":
                templates = [spec["leaderWorkerTemplate"]["leaderTemplate"]]
            else:
                continue
            for template in templates:
                labels = template["metadata"]["labels"]
                if labels["app.kubernetes.io/component"] != "server":
                    continue
                budget = budgets[labels["app.kubernetes.io/instance"]]
                probe = template["spec"]["containers"][0]["startupProbe"]
                covered = probe["failureThreshold"] * probe["periodSeconds"]
                assert budget <= covered < budget + probe["periodSeconds"], (variant, budget, probe)
                checked += budget % probe["periodSeconds"] != 0
    assert checked >= 5  # budgets that are not a multiple of the period: where ceil and floor differ


def test_pods_over_efa_tell_nccl_to_use_it_and_no_others_do():
    """README: pods request every Elastic Fabric Adapter their instance types share, with FI_PROVIDER=efa."""
    from .variants import rendered_variants

    with_efa = 0
    for variant, plan in rendered_variants().items():
        for r in plan.recording.resources:
            if r.type not in (DEPLOYMENT, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"):
                continue
            spec = r.inputs["spec"]
            group = spec.get("leaderWorkerTemplate")
            templates = [group["leaderTemplate"], group["workerTemplate"]] if group else [spec["template"]]
            for template in templates:
                for c in template["spec"]["containers"]:
                    efa = int(c["resources"]["limits"].get("vpc.amazonaws.com/efa", "0"))
                    provider = [e.get("value") for e in c["env"] if e["name"] == "FI_PROVIDER"]
                    assert provider == (["efa"] if efa else []), (variant, r.name, c["name"])
                    with_efa += efa > 0
    assert with_efa >= 2  # the multi-node variant's leader and worker
