"""Weight caches as rendered: readiness levels produce different pods; cold starts by hand."""

from __future__ import annotations

import hashlib
import re
import sys

import pytest

from sgldeploy.builders import weight_cache
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.validate import parse_stack

from .conftest import COMMITTED_STACKS, QWEN, ROOT, deployment, render_stack, resources_of, write_stack

sys.path.insert(0, str(ROOT / "sglang_image"))
import prefetch

IMAGE = "registry.example/sgldeploy/sglang:v0.5.23"


def pod_of(plan):
    deployment_ = resources_of(plan, "kubernetes:apps/v1:Deployment")[0]
    return deployment_.inputs["spec"]["template"]["spec"]


def namespace_labels(plan):
    return resources_of(plan, "kubernetes:core/v1:Namespace")[0].inputs["metadata"]["labels"]


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast")
    return render_stack(
        write_stack(
            tmp,
            deployments=[deployment(readiness="fast", cache={"prefetch_image": IMAGE})],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )


def test_fast_caches_on_the_node_behind_a_verifying_init_container(fast, lock):
    pod = pod_of(fast)
    sha = QWEN["revision"]
    init = pod["initContainers"][0]
    assert init["name"] == "prefetch" and init["image"] == IMAGE
    assert init["command"] == [weight_cache.PREFETCH_PYTHON, weight_cache.PREFETCH_TOOL]
    assert init["args"] == ["--repo", QWEN["repo"], "--revision", sha, "--dest", "/models"]
    parsed = prefetch.build_parser().parse_args(init["args"])  # the tool's own parser accepts them
    assert (parsed.repo, parsed.revision, str(parsed.dest)) == (QWEN["repo"], sha, "/models")
    assert {e["name"] for e in init["env"]} == {"HF_HUB_DISABLE_TELEMETRY", "HF_TOKEN"}
    server = pod["containers"][0]
    args = server["args"]
    assert args[args.index("--model-path") + 1] == f"/models/{QWEN['repo']}/{sha}"
    assert "--revision" not in args  # the local directory is the commit
    env = {e["name"]: e for e in server["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and "HF_TOKEN" not in env  # the server never needs the Hub
    assert env["SGLANG_CACHE_DIR"]["value"] == weight_cache.JIT_MOUNT
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["model-cache"] == {"name": "model-cache", "mountPath": "/models", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["hostPath"]["path"] == f"{weight_cache.NODE_CACHE_PATH}/models"
    assert namespace_labels(fast)["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace_labels(fast)["pod-security.kubernetes.io/warn"] == "baseline"


def test_fast_pre_pulls_the_images_on_every_gpu_node_it_may_use(fast):
    from . import k8s_schemas

    daemon_set = resources_of(fast, "kubernetes:apps/v1:DaemonSet")[0].inputs
    k8s_schemas.validate(daemon_set, "1.33")
    pod = daemon_set["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["initContainers"]] == ["lmsysorg/sglang:v0.5.23", IMAGE]
    assert pod["containers"][0]["image"] == weight_cache.PAUSE_IMAGE
    types = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"][0]["values"]
    assert (
        types
        == pod_of(fast)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][0]["matchExpressions"][0]["values"]
    )
    assert "nvidia.com/gpu" not in str(pod["containers"][0]["resources"])  # pulls images, never holds a GPU


def test_cold_start_downloads_on_every_start_and_keeps_baseline_security(tmp_path):
    plan = render_stack(write_stack(tmp_path, deployments=[deployment(readiness="cold-start", cache={})]))
    pod = pod_of(plan)
    assert "initContainers" not in pod
    server = pod["containers"][0]
    args = server["args"]
    assert args[args.index("--model-path") + 1] == QWEN["repo"] and "--revision" in args
    assert {"name": "HF_HOME", "value": "/root/.cache/huggingface"} in server["env"]
    assert not any("hostPath" in v for v in pod["volumes"])
    assert namespace_labels(plan)["pod-security.kubernetes.io/enforce"] == "baseline"
    assert plan.loaded.deployments[0].spec.min_replicas == 0
    assert resources_of(plan, "kubernetes:apps/v1:DaemonSet") == []  # nothing kept warm


def test_always_ready_keeps_a_replica_and_caches_too(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[
                deployment(
                    readiness="always-ready",
                    scaling={"min_replicas": 1, "max_replicas": 2},
                    cache={"prefetch_image": IMAGE},
                )
            ],
        )
    )
    pod = pod_of(plan)
    assert pod["initContainers"][0]["name"] == "prefetch"
    assert resources_of(plan, "kubernetes:apps/v1:Deployment")[0].inputs["spec"]["replicas"] == 1


def test_a_shared_cache_needs_its_csi_addon_but_no_image_of_its_own(tmp_path):
    with pytest.raises(InvalidInput) as err:
        render_stack(write_stack(tmp_path, deployments=[deployment(cache={"storage": "efs"})]))
    assert [p.line() for p in err.value.problems] == [  # got: the add-on as YAML writes it
        "error: sgldeploy:platform.addons.efs_csi: must be true: qwen caches weights on efs (got false); "
        "enable the efs_csi add-on, or choose another cache.storage"
    ]
    plan = render_stack(write_stack(tmp_path, deployments=[deployment(cache={})]))  # node-local, no image
    assert pod_of(plan)["initContainers"][0]["image"] == "lmsysorg/sglang:v0.5.23"


def tool_bytes() -> bytes:
    return (ROOT / "sglang_image" / "prefetch.py").read_bytes()


def tool_maps(plan) -> list:
    return [
        r for r in resources_of(plan, "kubernetes:core/v1:ConfigMap") if r.name.endswith("-prefetch-tool")
    ]


def tool_map(plan):
    found = tool_maps(plan)
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def test_the_built_in_tool_is_a_config_map_named_by_its_sha256_and_run_by_the_serving_image(tmp_path):
    from . import k8s_schemas

    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[deployment(readiness="fast", cache={})],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )
    tool = tool_map(plan)
    config_map = tool.inputs
    k8s_schemas.validate(config_map, "1.33")
    assert (
        config_map["data"]["prefetch.py"].encode("utf-8") == tool_bytes()
    )  # the committed file, byte for byte
    assert (
        config_map["metadata"]["name"]
        == f"qwen-prefetch-tool-{hashlib.sha256(tool_bytes()).hexdigest()[:10]}"
    )
    assert config_map["immutable"] is True
    pod = pod_of(plan)
    server, init = pod["containers"][0], pod["initContainers"][0]
    assert init["image"] == server["image"] == "lmsysorg/sglang:v0.5.23"  # no image to build
    assert init["command"] == ["python3", "-I", "-B", "/opt/sgldeploy-tool/prefetch.py"]
    assert server["command"][0] == "python3"  # the same Python the server runs
    assert {"name": "prefetch-tool", "mountPath": "/opt/sgldeploy-tool", "readOnly": True} in init[
        "volumeMounts"
    ]
    assert all(m["name"] != "prefetch-tool" for m in server["volumeMounts"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["prefetch-tool"]["configMap"] == {
        "name": config_map["metadata"]["name"],
        "items": [{"key": "prefetch.py", "path": "prefetch.py"}],
        "defaultMode": 0o444,
    }
    assert tool.urn in resources_of(plan, "kubernetes:apps/v1:Deployment")[0].dependencies or any(
        tool.urn in r.dependencies
        for r in plan.recording.resources
        if r.type == "sgldeploy:serving:SglangServer"
    )
    prepull = resources_of(plan, "kubernetes:apps/v1:DaemonSet")[0].inputs["spec"]["template"]["spec"]
    assert [c["image"] for c in prepull["initContainers"]] == ["lmsysorg/sglang:v0.5.23"]  # one image to pull


def test_a_changed_tool_is_a_new_config_map_and_rolls_the_pods(tmp_path, monkeypatch):
    def render() -> tuple[object, dict]:
        weight_cache.prefetch_tool_text.cache_clear()
        plan = render_stack(write_stack(tmp_path, deployments=[deployment(cache={})]))
        return tool_map(plan), resources_of(plan, "kubernetes:apps/v1:Deployment")[0]

    before_map, before_workload = render()
    changed = tmp_path / "prefetch.py"
    changed.write_bytes(tool_bytes() + b"# a changed tool\n")
    monkeypatch.setattr(weight_cache, "PREFETCH_TOOL_SOURCE", changed)
    try:
        after_map, after_workload = render()
    finally:
        weight_cache.prefetch_tool_text.cache_clear()
    assert after_map.name == before_map.name  # the same Pulumi resource, so a new name is a replacement
    new_name = f"qwen-prefetch-tool-{hashlib.sha256(changed.read_bytes()).hexdigest()[:10]}"
    assert after_map.inputs["metadata"]["name"] == new_name != before_map.inputs["metadata"]["name"]
    assert after_map.inputs["data"]["prefetch.py"].encode() == changed.read_bytes()
    template = after_workload.inputs["spec"]["template"]
    assert template != before_workload.inputs["spec"]["template"]  # the Deployment rolls its pods
    assert {v["name"]: v for v in template["spec"]["volumes"]}["prefetch-tool"]["configMap"][
        "name"
    ] == new_name


def test_an_override_image_runs_its_own_tool_and_needs_no_config_map(fast):
    assert tool_maps(fast) == []
    pod = pod_of(fast)
    assert "prefetch-tool" not in {v["name"] for v in pod["volumes"]}
    assert pod["initContainers"][0]["command"] == [weight_cache.PREFETCH_PYTHON, weight_cache.PREFETCH_TOOL]


def shared(tmp_path, storage: str):
    addon = {"efs": "efs_csi", "fsx-lustre": "fsx_csi"}[storage]
    platform = {"cluster": {"name": "test"}, "namespace": "llm", "addons": {addon: True}}
    return render_stack(
        write_stack(
            tmp_path,
            platform=platform,
            deployments=[deployment(cache={"storage": storage, "prefetch_image": IMAGE})],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )


def one(plan, type_):
    found = resources_of(plan, type_)
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def test_efs_cache_is_filled_by_a_job_before_pods_roll(tmp_path):
    from . import k8s_schemas

    plan = shared(tmp_path, "efs")
    fs = one(plan, "aws:efs/fileSystem:FileSystem").inputs
    assert fs["encrypted"] is True and fs["throughputMode"] == "elastic"
    group = one(plan, "aws:ec2/securityGroup:SecurityGroup")
    assert group.inputs["vpcId"] == "vpc-offline"
    assert [(r["fromPort"], r["toPort"], r["securityGroups"]) for r in group.inputs["ingress"]] == [
        (2049, 2049, ["sg-offline-cluster"])
    ]
    targets = resources_of(plan, "aws:efs/mountTarget:MountTarget")
    assert sorted(t.inputs["subnetId"] for t in targets) == [
        "subnet-0000000000000000a",
        "subnet-0000000000000000b",
    ]
    volume = one(plan, "kubernetes:core/v1:PersistentVolume").inputs
    assert volume["metadata"]["name"] == "llm-qwen-weights"
    assert volume["spec"]["csi"]["driver"] == "efs.csi.aws.com"
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    claim = one(plan, "kubernetes:core/v1:PersistentVolumeClaim").inputs
    assert claim["metadata"]["name"] == "qwen-weights" and claim["spec"]["volumeName"] == "llm-qwen-weights"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    job = one(plan, "kubernetes:batch/v1:Job")
    assert job.name.endswith(f"-prefetch-{QWEN['revision'][:12]}")
    container = job.inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--repo", QWEN["repo"], "--revision", QWEN["revision"], "--dest", "/models"]
    assert any(e["name"] == "HF_TOKEN" and "valueFrom" in e for e in container["env"])
    pod = pod_of(plan)
    wait = pod["initContainers"][0]
    assert wait["name"] == "wait-for-cache" and "--wait-complete" in wait["args"]
    assert wait["volumeMounts"][0]["readOnly"] is True
    assert prefetch.build_parser().parse_args(wait["args"]).wait_complete > 0
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "qwen-weights"}} in pod["volumes"]
    server = pod["containers"][0]
    assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    workload = resources_of(plan, "kubernetes:apps/v1:Deployment")[0]
    assert job.urn in workload.dependencies or any(
        job.urn in r.dependencies
        for r in plan.recording.resources
        if r.type == "sgldeploy:serving:SglangServer"
    )
    for obj in (volume, claim, job.inputs, workload.inputs):
        checked, dropped = k8s_schemas.without_markers(obj)
        assert all(d.startswith("spec.csi.") for d in dropped), dropped  # ids known only after apply
        if "spec.csi.volumeHandle" in dropped:  # the file system's id, as apply will fill it in
            checked["spec"]["csi"]["volumeHandle"] = "fs-0123456789abcdef0"
        k8s_schemas.validate(checked, "1.33")
    assert namespace_labels(plan)["pod-security.kubernetes.io/enforce"] == "baseline"  # no hostPath


def test_fsx_cache_is_sized_in_lustre_steps(tmp_path):
    plan = shared(tmp_path, "fsx-lustre")
    fs = one(plan, "aws:fsx/lustreFileSystem:LustreFileSystem").inputs
    assert fs["storageCapacity"] == 1200 and fs["deploymentType"] == "PERSISTENT_2"
    assert fs["subnetIds"] == "subnet-0000000000000000a"  # one subnet: a Lustre file system lives in one zone
    ports = sorted(
        (r["fromPort"], r["toPort"])
        for r in one(plan, "aws:ec2/securityGroup:SecurityGroup").inputs["ingress"]
    )
    assert ports == [(988, 988), (988, 988), (1018, 1023), (1018, 1023)]  # from nodes, and between servers
    assert (
        one(plan, "kubernetes:core/v1:PersistentVolume").inputs["spec"]["csi"]["driver"] == "fsx.csi.aws.com"
    )
    assert resources_of(plan, "aws:efs/mountTarget:MountTarget") == []


def test_shared_cache_size_by_hand():
    dep = parse_stack(None, [deployment(cache={"storage": "fsx-lustre"})]).deployments[0]
    assert weight_cache.shared_size_gib(dep, 600.0) == 1200 * 2  # 2 commits × 600 × 1.1 = 1,320 → 2,400
    efs = parse_stack(None, [deployment(cache={"storage": "efs"})]).deployments[0]
    assert weight_cache.shared_size_gib(efs, 14.19) == 100
    fixed = parse_stack(None, [deployment(cache={"storage": "efs", "size_gib": 64})]).deployments[0]
    assert weight_cache.shared_size_gib(fixed, 14.19) == 64


def test_startup_budget_and_rollout_deadline_follow_the_storage(fast, lock):
    sizing = fast.loaded.deployments[0].sizing
    assert (
        sizing.startup_budget_seconds == 2 * (21 + 35 + 30) + 600
    )  # load, engine, CUDA graphs (test_cold_start)
    pod_deadline = resources_of(fast, "kubernetes:apps/v1:Deployment")[0].inputs["spec"][
        "progressDeadlineSeconds"
    ]
    first_download = int(14.19 * 1073.741824 / 250)
    assert pod_deadline == 90 + 70 + first_download + sizing.startup_budget_seconds


def test_plan_explains_the_cache_and_the_cold_start(fast):
    from sgldeploy.offline.plan_json import deployment_json
    from sgldeploy.offline.plan_text import summary

    j = deployment_json(fast.loaded.deployments[0], fast.estimate, fast.loaded.spec.platform.addons)
    assert j["cache"]["storage"] == "node-local" and "auto: readiness fast" in j["cache"]["why"]
    assert j["cold_start_seconds"]["warm_node"]["total"] < j["cold_start_seconds"]["new_node"]["total"]
    text = summary(fast)
    assert re.search(r"cold start \d+ s on a new node .*, \d+ s on a warm one", text)


def test_dockerfile_pins_the_same_sglang_and_installs_the_tool():
    dockerfile = (ROOT / "sglang_image" / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^SGLANG_VERSION := (\S+)$", makefile, re.M).group(1)
    assert f"ARG SGLANG_VERSION={version}" in dockerfile
    assert "FROM lmsysorg/sglang:v${SGLANG_VERSION}" in dockerfile
    assert "COPY prefetch.py /opt/sgldeploy/prefetch.py" in dockerfile
    assert weight_cache.PREFETCH_PYTHON.startswith("/opt/sgldeploy/venv/")
    pins = (ROOT / "sglang_image" / "prefetch-requirements.txt").read_text()
    project = (ROOT / "pyproject.toml").read_text()
    for line in pins.splitlines():
        if line and not line.startswith("#"):
            assert f'"{line}"' in project or f'"{line.replace("-hub", "_hub")}"' in project, line


@pytest.mark.parametrize(
    "readiness, weights, replicas, addons, storage, fragment",
    [
        ("cold-start", 131.4, 4, {"fsx_csi": True}, "none", "keeps nothing warm"),
        ("fast", 14.2, 8, {"fsx_csi": True}, "node-local", "14 GiB on at most 8 node(s)"),
        ("always-ready", 131.4, 2, {"fsx_csi": True}, "node-local", "on at most 2 node(s)"),
        ("always-ready", 131.4, 4, {"fsx_csi": True, "efs_csi": True}, "fsx-lustre", "downloaded 4 times"),
        ("fast", 131.4, 4, {"efs_csi": True}, "efs", "one shared copy is filled once"),
        ("fast", 131.4, 4, {}, "node-local", "enable the fsx_csi or efs_csi add-on"),
    ],
)
def test_auto_cache_follows_readiness_size_and_replica_bounds(
    readiness, weights, replicas, addons, storage, fragment
):
    from sgldeploy.spec import AddonsSpec

    dep = parse_stack(
        None,
        [
            deployment(
                readiness=readiness,
                cache={},
                scaling={"min_replicas": 1 if readiness == "always-ready" else 0, "max_replicas": replicas},
            )
        ],
    ).deployments[0]
    chosen, why = weight_cache.choose(dep, AddonsSpec(**addons), weights, 1)
    assert chosen == storage and why.startswith(f"auto: readiness {readiness}") and fragment in why


def test_auto_choice_reaches_the_rendered_resources(tmp_path):
    from .conftest import LLAMA_70B

    platform = {"cluster": {"name": "test"}, "namespace": "llm", "addons": {"fsx_csi": True}}
    big = {
        "name": "big",
        "model": dict(LLAMA_70B),
        "readiness": "always-ready",
        "serving": {"context_length": 8192, "max_concurrency": 8},
        "scaling": {"min_replicas": 1, "max_replicas": 4},
        "cache": {"prefetch_image": IMAGE},
    }
    plan = render_stack(
        write_stack(
            tmp_path, platform=platform, deployments=[big], extra={"sgldeploy:hfToken": {"secure": "v1:x"}}
        )
    )
    item = plan.loaded.deployments[0]
    assert item.spec.cache_storage == "fsx-lustre" and "downloaded 4 times" in item.cache_reason
    assert resources_of(plan, "aws:fsx/lustreFileSystem:LustreFileSystem")


def test_upstream_image_serves_without_the_entrypoint(fast):
    server = pod_of(fast)["containers"][0]
    assert server["command"] == ["python3", "-m", "sglang.launch_server"]
    assert weight_cache.MODEL_DIR_ENV not in {e["name"] for e in server["env"]}


def test_sgldeploy_image_serves_through_its_cache_checking_entrypoint(tmp_path):
    raw = deployment(
        readiness="fast",
        cache={"prefetch_image": IMAGE},
        serving={"context_length": 4096, "max_concurrency": 4, "image": IMAGE},
    )
    server = pod_of(render_stack(write_stack(tmp_path, deployments=[raw])))["containers"][0]
    assert server["command"] == [weight_cache.SERVE_ENTRYPOINT, "python3", "-m", "sglang.launch_server"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    model_dir = f"/models/{QWEN['repo']}/{QWEN['revision']}"
    assert env[weight_cache.MODEL_DIR_ENV] == model_dir
    assert server["args"][server["args"].index("--model-path") + 1] == model_dir
    dockerfile = (ROOT / "sglang_image" / "Dockerfile").read_text()
    assert f'ENTRYPOINT ["{weight_cache.SERVE_ENTRYPOINT}"]' in dockerfile
    assert f"COPY serve.sh {weight_cache.SERVE_ENTRYPOINT}" in dockerfile


def _serve(model_dir, *command):
    """sglang_image/serve.sh as the image runs it, with SGLDEPLOY_MODEL_DIR set when `model_dir` is given."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != weight_cache.MODEL_DIR_ENV}
    if model_dir:
        env[weight_cache.MODEL_DIR_ENV] = str(model_dir)
    return subprocess.run(
        ["sh", str(ROOT / "sglang_image" / "serve.sh"), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_entrypoint_refuses_a_cache_without_its_complete_marker(tmp_path):
    sha = QWEN["revision"]
    model_dir = tmp_path / "models" / "Qwen" / "Qwen2.5-7B-Instruct" / sha
    model_dir.mkdir(parents=True)
    result = _serve(model_dir, "echo", "serving")
    assert result.returncode == 9 and result.stdout == ""
    assert "has no .complete: the weight cache is missing or unverified" in result.stderr

    (model_dir / ".complete").write_text('{"repo": "Qwen/Qwen2.5-7B-Instruct", "sha": "' + "0" * 40 + '"}')
    result = _serve(model_dir, "echo", "serving")
    assert result.returncode == 9 and f"does not name commit {sha}" in result.stderr

    (model_dir / ".complete").write_text(
        f'{{\n "repo": "Qwen/Qwen2.5-7B-Instruct",\n "sha": "{sha}",\n "files": []\n}}'
    )
    result = _serve(model_dir, "echo", "serving")
    assert result.returncode == 0 and result.stdout == "serving\n"


def test_entrypoint_without_a_cache_runs_the_command_as_given():
    result = _serve(None, "sh", "-c", "echo $0 $1", "a", "b")
    assert result.returncode == 0 and result.stdout == "a b\n"


# ---- FSx for Lustre sizes: PERSISTENT_2 SSD takes 1200, 2400 or a multiple of 2400 GiB ------------------
# (AWS FSx API reference, CreateFileSystem StorageCapacity; tests/test_aws_api.py reads the same sentence in
# botocore's fsx model). The valid sizes are written here from that rule, not taken from sgldeploy.

FSX_VALID = [1200, 2400, *range(4800, 48_001, 2400)]


def smallest_valid_at_least(gib: float) -> int:
    return next(size for size in FSX_VALID if size >= gib)


@pytest.mark.parametrize("need", [1, 1199, 1200, 1201, 2399, 2400, 2401, 3600, 4799, 4800, 4801, 7201])
def test_fsx_capacity_for_a_need_is_the_smallest_valid_one_that_holds_it(need):
    assert weight_cache.fsx_capacity_at_least(need) == smallest_valid_at_least(need)


@pytest.mark.parametrize(
    ("weights_gib", "size"), [(500, 1200), (545, 1200), (546, 2400), (1100, 4800), (1500, 4800)]
)
def test_auto_fsx_size_holds_two_commits_in_a_valid_size(weights_gib, size):
    dep = parse_stack(None, [deployment(cache={"storage": "fsx-lustre"})]).deployments[0]
    # Two commits with a tenth spare: 1,100 GiB of weights need 2,420 GiB, so 4,800 (3,600 is refused).
    assert (
        weight_cache.shared_size_gib(dep, weights_gib)
        == size
        == smallest_valid_at_least(2 * weights_gib * 1.1)
    )


def fsx_stack(tmp_path, size):
    platform = {"cluster": {"name": "test"}, "namespace": "llm", "addons": {"fsx_csi": True}}
    cache = {"storage": "fsx-lustre", "prefetch_image": IMAGE, "size_gib": size}
    return write_stack(tmp_path, platform=platform, deployments=[deployment(cache=cache)])


@pytest.mark.parametrize(
    ("size", "fix"),
    [
        (1199, "use 1200, or auto"),
        (1201, "use 1200 or 2400, or auto"),
        (2399, "use 1200 or 2400, or auto"),
        (2401, "use 2400 or 4800, or auto"),
        (3600, "use 2400 or 4800, or auto"),
        (4799, "use 2400 or 4800, or auto"),
        (4801, "use 4800 or 7200, or auto"),
    ],
)
def test_an_fsx_size_lustre_refuses_is_one_problem_line_with_the_nearest_valid_sizes(tmp_path, size, fix):
    with pytest.raises(InvalidInput) as err:
        render_stack(fsx_stack(tmp_path, size))
    assert [p.line() for p in err.value.problems] == [
        f"error: sgldeploy:deployments[0].cache.size_gib: is not a size FSx for Lustre PERSISTENT_2 accepts: "
        f"1200, 2400 or a multiple of 2400 GiB (got {size}); {fix}"
    ]


@pytest.mark.parametrize("size", [1200, 2400, 4800])
def test_an_fsx_size_lustre_accepts_is_the_file_systems_and_the_volumes(tmp_path, size):
    plan = render_stack(fsx_stack(tmp_path, size))
    assert one(plan, "aws:fsx/lustreFileSystem:LustreFileSystem").inputs["storageCapacity"] == size
    assert one(plan, "kubernetes:core/v1:PersistentVolume").inputs["spec"]["capacity"] == {
        "storage": f"{size}Gi"
    }


def test_an_efs_cache_takes_any_size():
    dep = parse_stack(None, [deployment(cache={"storage": "efs", "size_gib": 3600})]).deployments[0]
    assert weight_cache.size_problem(dep) is None and weight_cache.shared_size_gib(dep, 14.19) == 3600


def test_fsx_throughput_is_one_persistent_2_accepts(tmp_path):
    fs = one(shared(tmp_path, "fsx-lustre"), "aws:fsx/lustreFileSystem:LustreFileSystem").inputs
    # PERSISTENT_2 SSD: 125, 250, 500 or 1000 MB/s/TiB (CreateFileSystemLustreConfiguration).
    assert fs["deploymentType"] == "PERSISTENT_2" and fs["perUnitStorageThroughput"] in (125, 250, 500, 1000)


def pod_templates(plan) -> list[dict]:
    """Every pod template of a plan's workloads and Jobs (LeaderWorkerSets: leader and workers)."""
    out = []
    for r in plan.recording.resources:
        spec = r.inputs.get("spec") if r.custom and isinstance(r.inputs, dict) else None
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("template"), dict):
            out.append(spec["template"]["spec"])
        group = spec.get("leaderWorkerTemplate") or {}
        out += [group[k]["spec"] for k in ("leaderTemplate", "workerTemplate") if k in group]
    return [pod for pod in out if "containers" in pod]  # a NodePool's template is a node's, not a pod's


def test_every_committed_stack_and_variant_plans_without_a_prefetch_image():
    """The committed stacks set no prefetch image; wherever none is set the serving image runs the
    ConfigMap's tool (named in the same plan, with the tool's bytes); where one is set, it runs its own."""
    from .variants import PREFETCH_IMAGE, rendered_variants

    for name in COMMITTED_STACKS:
        assert "prefetch_image" not in (ROOT / "stacks" / f"Pulumi.{name}.yaml").read_text(), name
    overridden = built_in = 0
    for variant, plan in rendered_variants().items():
        maps = {r.inputs["metadata"]["name"]: r.inputs for r in tool_maps(plan)}
        for config_map in maps.values():
            assert config_map["data"]["prefetch.py"].encode() == tool_bytes(), variant
        for pod in pod_templates(plan):
            tool_containers = [
                c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] in PREFETCH_NAMES
            ]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in tool_containers:
                if container["image"] == PREFETCH_IMAGE:
                    overridden += 1
                    assert container["command"] == [weight_cache.PREFETCH_PYTHON, weight_cache.PREFETCH_TOOL]
                    continue
                built_in += 1
                assert container["image"].startswith("lmsysorg/sglang:"), (variant, container["image"])
                assert container["command"][:3] == ["python3", "-I", "-B"], variant
                assert volumes["prefetch-tool"]["configMap"]["name"] in maps, variant
    assert overridden >= 1 and built_in >= 4  # the shared-caches variant has both; committed stacks built-in


PREFETCH_NAMES = ("prefetch", "wait-for-cache")


def test_cache_and_pre_pull_pods_run_with_the_security_readme_promises(fast):
    """README: every pod sgldeploy declares (server, prefetch Job, image pre-puller) runs with the RuntimeDefault
    seccomp profile, no service account token, no privilege escalation and every Linux capability dropped
    (replicas over EFA keep IPC_LOCK); the image pre-puller runs as nobody (65534); the prefetch and pre-pull
    containers have a read-only root filesystem. Checked on every variant's pods and on `fast`'s pre-puller."""
    from .variants import rendered_variants

    plans = {"fast": fast, **rendered_variants()}
    seen: dict[str, int] = {"server": 0, "prefetch": 0, "image-prepull": 0, "read-only": 0, "efa": 0}
    for variant, plan in plans.items():
        for r in plan.recording.resources:
            spec = r.inputs.get("spec") if r.custom and isinstance(r.inputs, dict) else None
            if not isinstance(spec, dict):
                continue
            group = spec.get("leaderWorkerTemplate") or {}
            templates = [spec["template"]] if isinstance(spec.get("template"), dict) else []
            templates += [group[k] for k in ("leaderTemplate", "workerTemplate") if k in group]
            for template in templates:
                component = template.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")
                if component not in ("server", "prefetch", "image-prepull"):
                    continue  # the router reads the API (its own account); a NodePool's template is a node's
                where = (variant, r.name, component)
                seen[component] += 1
                pod = template["spec"]
                assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
                assert pod["automountServiceAccountToken"] is False, where
                if component == "image-prepull":
                    assert pod["securityContext"]["runAsNonRoot"] is True, where
                    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
                        65534,
                        65534,
                    ), where
                for c in pod.get("initContainers", []) + pod["containers"]:
                    context = c["securityContext"]
                    assert context["allowPrivilegeEscalation"] is False, (where, c["name"])
                    assert context["capabilities"]["drop"] == ["ALL"], (where, c["name"])
                    efa = "vpc.amazonaws.com/efa" in c.get("resources", {}).get("limits", {})
                    seen["efa"] += efa
                    assert context["capabilities"].get("add", []) == (["IPC_LOCK"] if efa else []), where
                    if c["name"] in ("prefetch", "wait-for-cache", "pause") or c["name"].startswith("pull-"):
                        assert context["readOnlyRootFilesystem"] is True, (where, c["name"])
                        seen["read-only"] += 1
    # Each kind was reached: node-local prefetch, shared-cache waits and Jobs, pre-pullers, EFA replicas.
    assert seen["image-prepull"] >= 5 and seen["prefetch"] >= 2 and seen["efa"] >= 2, seen
    assert seen["server"] >= 15 and seen["read-only"] >= 20, seen


def test_a_prefetch_image_that_is_also_the_serving_image_is_pulled_once(tmp_path):
    plan = render_stack(
        write_stack(
            tmp_path,
            deployments=[deployment(readiness="fast", serving__image=IMAGE, cache={"prefetch_image": IMAGE})],
            extra={"sgldeploy:hfToken": {"secure": "v1:x"}},
        )
    )
    [daemon_set] = resources_of(plan, "kubernetes:apps/v1:DaemonSet")
    assert [c["image"] for c in daemon_set.inputs["spec"]["template"]["spec"]["initContainers"]] == [IMAGE]
