"""The policy pack: each rule passes on the committed stacks' real recorded resources and fails when one field
is mutated; its config; the offline plan's exit codes; the CrossGuard pack served over the analyzer protocol."""

from __future__ import annotations

import copy
import json
import runpy

import pytest

from sgldeploy.offline.render import policy_resources
from sgldeploy.policy import pack, rules
from sgldeploy.policy.facts import DEPLOYMENT_TYPE, PLATFORM_TYPE
from sgldeploy.spec.problems import InvalidInput

from .conftest import LOCK, ROOT, deployment, render_stack, with_secret, write_stack
from .test_cli import run_cli


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    """The committed production stack (with its HF token set), as a policy sees it."""
    return policy_resources(
        render_stack(with_secret(LOCK.parent / "Pulumi.prod.yaml", tmp_path_factory.mktemp("prod"))).recording
    )


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    return policy_resources(
        render_stack(with_secret(LOCK.parent / "Pulumi.dev.yaml", tmp_path_factory.mktemp("dev"))).recording
    )


def run(resources, policy: str, **config):
    settings = pack.settings({policy: {"enforcementLevel": "mandatory", **config}})
    return [v for v in pack.evaluate(resources, settings) if v.policy == policy]


def mutate(resources, match, change):
    """A deep copy with `change(props)` applied to the first resource `match` accepts."""
    out = copy.deepcopy(resources)
    target = next(r for r in out if match(r))
    change(target.props)
    return out


def of_type(t):
    return lambda r: r.type == t


def kind(k):
    return lambda r: r.props.get("kind") == k


def server(props):
    return props["spec"]["template"]["spec"]["containers"][0]


def test_committed_stacks_pass_every_policy(prod, dev):
    assert pack.evaluate(prod) == []
    assert pack.evaluate(dev) == []


def test_production_revision_must_be_a_commit(prod):
    def unpin(p):
        p["model"].update(revision="main", revisionIsCommit=False)

    [v] = run(mutate(prod, of_type(DEPLOYMENT_TYPE), unpin), "model-revision-pinned-production")
    assert "revision 'main' is a branch or tag (allowed: a 40-hex commit)" in v.message
    assert "pin model.revision: " in v.message and v.level == "mandatory"
    assert pack.BY_NAME["model-revision-pinned"].level == "advisory"


def test_outside_production_an_unpinned_revision_is_advisory(dev):
    resources = mutate(
        dev, of_type(DEPLOYMENT_TYPE), lambda p: p["model"].update(revision="main", revisionIsCommit=False)
    )
    violations = [v for v in pack.evaluate(resources) if v.policy.startswith("model-revision")]
    assert [(v.policy, v.level) for v in violations] == [("model-revision-pinned", "advisory")]


def test_weights_must_be_safetensors(dev):
    assert "--load-format" in server(next(r for r in dev if kind("Deployment")(r)).props)["args"]
    [v] = run(
        mutate(dev, of_type(DEPLOYMENT_TYPE), lambda p: p["model"].update(weightsFormat="pickle")),
        "weights-safetensors",
    )
    assert "weights are pickle (allowed: safetensors)" in v.message

    def load_pt(p):
        server(p)["args"] += ["--load-format", "pt"]

    [v] = run(mutate(dev, kind("Deployment"), load_pt), "weights-safetensors")
    assert "--load-format pt (allowed: safetensors, fastsafetensors, runai_streamer)" in v.message


def test_remote_code_needs_the_allow_list(dev):
    resources = mutate(dev, of_type(DEPLOYMENT_TYPE), lambda p: p["model"].update(trustRemoteCode=True))
    [v] = run(resources, "trust-remote-code-allowlist")
    assert "Qwen/Qwen2.5-7B-Instruct runs its own code" in v.message and "allowed: none" in v.message
    assert run(resources, "trust-remote-code-allowlist", allowed_repos=["Qwen/Qwen2.5-7B-Instruct"]) == []


def test_placement_must_fit_and_the_gpu_support_the_dtype(dev):
    [v] = run(
        mutate(dev, of_type(DEPLOYMENT_TYPE), lambda p: p["memory"].update(requiredGibPerGpu=30)),
        "placement-fits",
    )
    assert "needs 30 GiB per GPU, L4 has 22.35 GiB" in v.message

    def t4_fp8(p):
        p["placement"]["gpuModel"] = "T4"
        p["serving"].update(quantization="fp8", kvCacheDtype="fp8_e4m3")

    messages = [v.message for v in run(mutate(dev, of_type(DEPLOYMENT_TYPE), t4_fp8), "placement-fits")]
    assert any("quantization fp8 needs compute capability" in m and "T4 has 7.5" in m for m in messages)
    assert any("dtype bfloat16 on T4" in m for m in messages)
    assert any("FP8 KV cache on T4" in m for m in messages)


def test_budget_from_the_platform_or_the_policy_config(dev):
    total = sum(
        r.props["cost"].get("monthlyUsdMax") or 0 for r in dev if r.type in (DEPLOYMENT_TYPE, PLATFORM_TYPE)
    )
    assert run(dev, "stack-budget") == []  # within the dev stack's $1,500
    [v] = run(dev, "stack-budget", budget_usd_per_month=1000)
    assert f"${total:,.2f}/month at max replicas exceeds the budget of $1,000.00" in v.message
    [v] = run(mutate(dev, of_type(PLATFORM_TYPE), lambda p: p.update(budgetUsdPerMonth=100)), "stack-budget")
    assert "exceeds the budget of $100.00 (qwen-7b $" in v.message and v.resource == ""

    def unpriced(p):
        p["cost"]["unpriced"] = ["qwen-7b/gpu-nodes"]

    [v] = run(mutate(dev, of_type(DEPLOYMENT_TYPE), unpriced), "stack-budget")
    assert "cannot check the budget" in v.message and "qwen-7b/gpu-nodes" in v.message


def test_public_endpoints_need_auth_and_tls(dev):
    def public(p):
        p["endpoint"].update(exposure="public", auth="none", tls=False)

    messages = [
        v.message for v in run(mutate(dev, of_type(DEPLOYMENT_TYPE), public), "public-endpoint-secured")
    ]
    assert (
        len(messages) == 2
        and "auth 'none' (allowed: 'api-key')" in messages[0]
        and "without TLS" in messages[1]
    )

    def internet_service(p):
        p["spec"]["type"] = "LoadBalancer"
        p["metadata"]["annotations"] = {
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"
        }

    [v] = run(mutate(dev, kind("Service"), internet_service), "public-endpoint-secured")
    assert (
        "internet-facing NLB Service without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
        in v.message
    )


def test_production_keeps_a_replica_a_pdb_and_no_unavailability(prod):
    always_ready = lambda r: r.type == DEPLOYMENT_TYPE and r.props["readiness"] == "always-ready"  # noqa: E731
    [v] = run(mutate(prod, always_ready, lambda p: p["replicas"].update(min=0)), "production-availability")
    assert "always-ready with min_replicas 0 (allowed: ≥ 1)" in v.message
    [v] = run(
        mutate(prod, of_type(DEPLOYMENT_TYPE), lambda p: p["rollout"].update(maxUnavailable=1)),
        "production-availability",
    )
    assert "rollout.max_unavailable 1 (allowed: 0)" in v.message
    first_pdb = next(r for r in prod if kind("PodDisruptionBudget")(r))
    [v] = run([r for r in prod if r is not first_pdb], "production-availability")
    assert "no PodDisruptionBudget guards its pods" in v.message


def test_images_pinned_by_tag_or_digest(dev):
    for image, shown in (
        ("lmsysorg/sglang:latest", "tag 'latest'"),
        ("lmsysorg/sglang", "no tag"),
        ("registry:5000/sglang", "no tag"),
    ):
        [v] = run(
            mutate(dev, kind("Deployment"), lambda p, image=image: server(p).update(image=image)),
            "images-pinned",
        )
        assert (
            f"image {image!r} has {shown}" in v.message
            and "allowed: a version tag or @sha256 digest" in v.message
        )
    digest = "lmsysorg/sglang@sha256:" + "a" * 64
    assert (
        run(mutate(dev, kind("Deployment"), lambda p: server(p).update(image=digest)), "images-pinned") == []
    )


def test_containers_request_cpu_and_memory_and_limit_memory(dev):
    [v] = run(
        mutate(dev, kind("Deployment"), lambda p: server(p)["resources"]["requests"].pop("cpu")),
        "container-resources",
    )
    assert "containers[sglang] has no requests.cpu" in v.message
    strict = run(dev, "container-resources", require_cpu_limit=True)
    assert strict and all("limits.cpu" in v.message for v in strict)


def test_no_privilege_and_host_paths_only_under_the_node_cache(dev):
    node_local = next(r for r in dev if kind("Deployment")(r))
    volumes = node_local.props["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("hostPath", {}).get("path", "").startswith("/mnt/sgldeploy-cache/") for v in volumes)
    assert run(dev, "no-privileged-containers") == []
    [v] = run(
        mutate(dev, kind("Deployment"), lambda p: server(p)["securityContext"].update(privileged=True)),
        "no-privileged-containers",
    )
    assert "is privileged (allowed: false)" in v.message

    def docker_socket(p):
        p["spec"]["template"]["spec"]["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run"}})

    [v] = run(mutate(dev, kind("Deployment"), docker_socket), "no-privileged-containers")
    assert "mounts host path '/var/run' (allowed under: /mnt/sgldeploy-cache)" in v.message


def test_gpu_caps_per_deployment_and_total(prod):
    violations = run(prod, "gpu-caps", max_gpus_per_deployment=4, max_gpus_total=8)
    assert any("exceeds max_gpus_per_deployment 4" in v.message for v in violations)
    assert any(
        v.message.startswith("stack: ") and "exceeds max_gpus_total 8" in v.message for v in violations
    )


def test_allowed_instance_families_and_regions(dev):
    [v] = run(dev, "allowed-instances-and-regions", allowed_instance_families=["p5", "g6e"])
    assert (
        "instance type g6.xlarge" in v.message
        and "(family g6) is not allowed (allowed: p5, g6e)" in v.message
    )
    [v] = run(dev, "allowed-instances-and-regions", allowed_regions=["eu-west-1"])
    assert "region us-east-1 is not allowed (allowed: eu-west-1)" in v.message


# ---- config --------------------------------------------------------------------------------------


def test_policy_config_in_pulumi_format():
    s = pack.settings(
        {
            "all": "advisory",
            "gpu-caps": {"enforcementLevel": "mandatory", "max_gpus_total": 8},
            "images-pinned": "disabled",
        }
    )
    assert s["placement-fits"].level == "advisory" and s["images-pinned"].level == "disabled"
    assert s["gpu-caps"].level == "mandatory" and s["gpu-caps"].config == {
        "max_gpus_per_deployment": 64,
        "max_gpus_total": 8,
    }


def test_policy_config_problems_one_line_each():
    with pytest.raises(InvalidInput) as err:
        pack.settings(
            {
                "all": "loud",
                "no-such-policy": "advisory",
                "gpu-caps": {"max_gpus_total": -1, "x": 1},
                "images-pinned": {"enforcementLevel": "sometimes"},
            }
        )
    lines = [p.line() for p in err.value.problems]
    assert len(lines) == 5
    assert "policy config: all: is not an enforcement level (got 'loud')" in lines[0]
    assert any("no-such-policy: is not a policy of this pack" in line for line in lines)
    assert any("gpu-caps.max_gpus_total: is invalid" in line and "(got -1)" in line for line in lines)
    assert any("gpu-caps.x: is not a setting of this policy" in line for line in lines)
    assert any(
        "images-pinned.enforcementLevel: is not an enforcement level (got 'sometimes')" in line
        for line in lines
    )


@pytest.mark.parametrize(
    "given, message, shown",
    [
        ("org/x", "'org/x' is not of type 'array'", "'org/x'"),  # one repo, not a list of them
        (["org/x", 1], "1 is not of type 'string'", "a list of 2"),
    ],
)
def test_a_policy_config_file_is_named_in_each_line_and_list_settings_take_lists_of_text(
    tmp_path, given, message, shown
):
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"trust-remote-code-allowlist": {"allowed_repos": given}}))
    with pytest.raises(InvalidInput) as err:
        pack.read_settings(config)
    assert [p.line() for p in err.value.problems] == [
        f"error: {config}: trust-remote-code-allowlist.allowed_repos: is invalid ({message}) (got {shown}); "
        "Hugging Face repos reviewed and allowed to run their own code"
    ]
    config.write_text(json.dumps({"trust-remote-code-allowlist": {"allowed_repos": ["org/x"]}}))
    assert pack.read_settings(config)["trust-remote-code-allowlist"].config == {"allowed_repos": ["org/x"]}


def test_a_list_setting_schema_is_an_array_of_strings():
    """What the pack declares to Pulumi for a list setting (called here, not only at import)."""
    import jsonschema

    schema = pack._strings(["latest"], "tags that move")
    assert schema == {
        "type": "array",
        "items": {"type": "string"},
        "default": ["latest"],
        "description": "tags that move",
    }
    for value, valid in ((["a"], True), ([], True), ("a", False), ([1], False)):
        assert jsonschema.Draft202012Validator(schema).is_valid(value) is valid, value


def test_every_policy_is_described_with_safe_defaults():
    for p in pack.POLICIES:
        assert p.description.endswith(".") and p.level in pack.LEVELS
        for key, schema in p.config.items():
            assert "default" in schema and schema["description"], (p.name, key)


# ---- the offline plan's exit codes -----------------------------------------------------------------


def test_plan_exits_1_on_a_mandatory_violation_and_lists_all(tmp_path):
    stack = write_stack(
        tmp_path,
        platform={"cluster": {"name": "t"}, "namespace": "llm", "budget_usd_per_month": 100},
        deployments=[
            deployment(
                serving={"context_length": 4096, "max_concurrency": 4, "image": "lmsysorg/sglang:latest"}
            )
        ],
    )
    out = tmp_path / "plan.json"
    result = run_cli("plan", "--config", str(stack), "--json", str(out))
    assert result.returncode == 1, result.stderr
    assert "[mandatory]  stack-budget" in result.stdout and "[mandatory]  images-pinned" in result.stdout
    violations = json.loads(out.read_text())["policy"]["violations"]
    assert {v["policy"] for v in violations} == {"stack-budget", "images-pinned"}
    assert all(set(v) == {"policy", "level", "resource", "message"} for v in violations)

    config = tmp_path / "policy.json"
    config.write_text(json.dumps({"all": "advisory"}))
    result = run_cli("plan", "--config", str(stack), "--policy-config", str(config))
    assert result.returncode == 0 and "[advisory]  stack-budget" in result.stdout


def test_plan_exits_2_on_a_bad_policy_config(tmp_path):
    config = tmp_path / "policy.json"
    config.write_text(json.dumps({"stack-budget": {"budget": 5}}))
    result = run_cli("plan", "--stack", "dev", "--policy-config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {config}: stack-budget.budget: is not a setting of this policy" in result.stderr
    config.write_text("{not json")
    result = run_cli("plan", "--stack", "dev", "--policy-config", str(config))
    assert result.returncode == 2 and "cannot be read as JSON" in result.stderr


# ---- the CrossGuard pack ----------------------------------------------------------------------------

PACK = ROOT / "policies"


def test_pack_files_and_guarded_import():
    assert "runtime:" in (PACK / "PulumiPolicy.yaml").read_text()
    assert "pulumi-policy==1.21.0" in (PACK / "requirements.txt").read_text()
    module = runpy.run_path(str(PACK / "__main__.py"), run_name="sgldeploy_policies")  # starts no server
    policies = module["build_policies"]()
    assert [p.name for p in policies] == [p.name for p in pack.POLICIES]


def test_pack_serves_the_analyzer_protocol_and_blocks_unsafe_resources(dev):
    """Start the pack as `pulumi preview --policy-pack` does (tests/analyzer.py) and ask it over gRPC, as the
    engine would; tests/test_policy_analyzer.py drives whole stacks through it."""
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    from .analyzer import running_pack

    def struct(props):
        s = struct_pb2.Struct()
        s.update(json.loads(json.dumps(props)))
        return s

    with running_pack() as analyzer:
        analyzer.handshake()
        stub = analyzer.stub
        info = analyzer.info()
        assert info.name == "sgldeploy" and {p.name for p in info.policies} == set(pack.BY_NAME)

        workload = next(r for r in dev if kind("Deployment")(r))
        bad = copy.deepcopy(workload.props)
        server(bad)["image"] = "lmsysorg/sglang:latest"

        ok = stub.Analyze(
            analyzer_pb2.AnalyzeRequest(
                type=workload.type, properties=struct(workload.props), urn=workload.urn, name=workload.name
            ),
            timeout=30,
        )
        assert list(ok.diagnostics) == []
        response = stub.Analyze(
            analyzer_pb2.AnalyzeRequest(
                type=workload.type, properties=struct(bad), urn=workload.urn, name=workload.name
            ),
            timeout=30,
        )
        [d] = response.diagnostics
        assert d.policyName == "images-pinned" and d.enforcementLevel == analyzer_pb2.MANDATORY
        assert "'lmsysorg/sglang:latest' has tag 'latest'" in d.message

        facts = [r for r in dev if r.type in (DEPLOYMENT_TYPE, PLATFORM_TYPE)]
        over = mutate(facts, of_type(PLATFORM_TYPE), lambda p: p.update(budgetUsdPerMonth=10))
        stack = stub.AnalyzeStack(
            analyzer_pb2.AnalyzeStackRequest(
                resources=[
                    analyzer_pb2.AnalyzerResource(
                        type=r.type, properties=struct(r.props), urn=r.urn, name=r.name
                    )
                    for r in over
                ]
            ),
            timeout=30,
        )
        assert [d.policyName for d in stack.diagnostics] == ["stack-budget"]
        assert "exceeds the budget of $10.00" in stack.diagnostics[0].message


# ---- values known only after apply -------------------------------------------------------------------


def test_engine_markers_are_pulumis():
    """The sentinels and secret envelope the pack decodes are the ones the Pulumi SDKs encode."""
    from pulumi.runtime import rpc
    from pulumi_policy import proxy

    from sgldeploy.policy import values

    sentinels = {getattr(proxy, n) for n in dir(proxy) if n.startswith("UNKNOWN_") and n.endswith("_VALUE")}
    assert values.UNKNOWN_SENTINELS == sentinels and len(sentinels) == 7
    assert (values.SIG_KEY, values.SECRET_SIG) == (rpc._special_sig_key, rpc._special_secret_sig)
    assert rpc.UNKNOWN in values.UNKNOWN_SENTINELS
    secret = {values.SIG_KEY: values.SECRET_SIG, "value": {"n": 2.0, "half": 2.5, "later": rpc.UNKNOWN}}
    assert values.from_engine({"s": secret}) == {"s": {"n": 2, "half": 2.5, "later": values.UNKNOWN}}
    with pytest.raises(TypeError):
        bool(values.UNKNOWN)  # a rule cannot pass or fail an unknown by accident


def _one(resources, policy, **config):
    return [(v.level, v.message) for v in run(resources, policy, **config)]


def test_an_unknown_host_path_is_an_advisory_and_a_known_one_still_judged(dev):
    from sgldeploy.policy.values import UNKNOWN

    def unknown_path(p):
        volumes = p["spec"]["template"]["spec"]["volumes"]
        volumes.append({"name": "later", "hostPath": {"path": UNKNOWN}})
        volumes.append({"name": "docker", "hostPath": {"path": "/var/run"}})

    found = _one(mutate(dev, kind("Deployment"), unknown_path), "no-privileged-containers")
    assert [level for level, _ in found] == ["mandatory", "advisory"]
    assert "mounts host path '/var/run'" in found[0][1]
    assert "volumes[" in found[1][1] and ".hostPath.path is known only after apply" in found[1][1]


def test_an_ingress_certificate_known_after_apply_is_a_certificate(dev):
    from sgldeploy.policy.values import UNKNOWN

    ingress = {"kind": "Ingress", "metadata": {"name": "x", "annotations": {}}}
    base = [*dev, rules.Resource("kubernetes:networking.k8s.io/v1:Ingress", "x-ingress", "urn:x", ingress)]
    scheme, cert = "alb.ingress.kubernetes.io/scheme", "alb.ingress.kubernetes.io/certificate-arn"

    def annotate(**annotations):
        return mutate(
            base, lambda r: r.urn == "urn:x", lambda p: p["metadata"]["annotations"].update(annotations)
        )

    assert _one(annotate(**{scheme: "internet-facing", cert: UNKNOWN}), "public-endpoint-secured") == []
    [(level, message)] = _one(annotate(**{scheme: "internet-facing"}), "public-endpoint-secured")
    assert (level, message) == (
        "mandatory",
        "x-ingress: internet-facing ALB Ingress without alb.ingress.kubernetes.io/certificate-arn; "
        "add an ACM certificate so clients connect over HTTPS",
    )
    [(level, message)] = _one(annotate(**{scheme: UNKNOWN}), "public-endpoint-secured")
    assert level == "advisory" and f"metadata.annotations[{scheme}] is known only after apply" in message
    assert _one(annotate(**{scheme: "internal"}), "public-endpoint-secured") == []


# ---- boundaries: each rule's allowed value, and the nearest ones it must refuse ------------------------


def _escalation(value):
    def change(p):
        context = server(p)["securityContext"]
        if value is None:
            context.pop("allowPrivilegeEscalation", None)
        else:
            context["allowPrivilegeEscalation"] = value

    return change


def test_privilege_escalation_must_be_explicitly_false(dev):
    assert (
        server(next(r for r in dev if kind("Deployment")(r)).props)["securityContext"][
            "allowPrivilegeEscalation"
        ]
        is False
    )
    assert run(mutate(dev, kind("Deployment"), _escalation(False)), "no-privileged-containers") == []
    for value, shown in ((None, "unset"), (True, "True")):
        [v] = run(mutate(dev, kind("Deployment"), _escalation(value)), "no-privileged-containers")
        assert (
            f"containers[sglang] may escalate privileges (allowPrivilegeEscalation {shown}; allowed: false)"
            in (v.message)
        )


@pytest.mark.parametrize("namespace", ["hostNetwork", "hostPID", "hostIPC"])
def test_a_pod_sharing_any_host_namespace_is_refused(dev, namespace):
    def share(p):
        p["spec"]["template"]["spec"][namespace] = True

    def unshare(p):
        p["spec"]["template"]["spec"][namespace] = False

    [v] = run(mutate(dev, kind("Deployment"), share), "no-privileged-containers")
    assert "pod shares the host's network, PID or IPC namespace (allowed: none)" in v.message
    assert run(mutate(dev, kind("Deployment"), unshare), "no-privileged-containers") == []


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/mnt/sgldeploy-cache", True),
        ("/mnt/sgldeploy-cache/", True),
        ("/mnt/sgldeploy-cache/models/x", True),
        ("/mnt/sgldeploy-cache-evil", False),  # shares the prefix, not the path
        ("/mnt/sgldeploy-cache-evil/models", False),
        ("/mnt/sgldeploy-cach", False),
        ("/mnt", False),
        ("/", False),
    ],
)
def test_host_paths_are_matched_as_paths_not_prefixes(dev, path, allowed):
    def mount(p):
        p["spec"]["template"]["spec"]["volumes"].append({"name": "extra", "hostPath": {"path": path}})

    found = run(mutate(dev, kind("Deployment"), mount), "no-privileged-containers")
    if allowed:
        assert found == []
    else:
        [v] = found
        shown = path.rstrip("/") or "/"
        assert f"volume 'extra' mounts host path {shown!r} (allowed under: /mnt/sgldeploy-cache)" in v.message


def test_a_digest_is_sha256_and_exactly_64_lowercase_hex():
    hex64 = "0123456789abcdef" * 4
    assert rules.image_tag(f"lmsysorg/sglang@sha256:{hex64}") is None
    assert rules.image_tag(f"lmsysorg/sglang:v0.5.23@sha256:{hex64}") is None
    for not_a_digest in (
        f"lmsysorg/sglang@sha256:{hex64[:63]}",  # one short
        f"lmsysorg/sglang@sha256:{hex64}0",  # one long
        f"lmsysorg/sglang@sha256:{hex64.upper()}",
        f"lmsysorg/sglang@sha256:{hex64[:63]}g",
        f"lmsysorg/sglang@sha512:{hex64}",
        f"lmsysorg/sglang:sha256:{hex64}",
        "lmsysorg/sglang@sha256:",
    ):
        assert rules.image_tag(not_a_digest) is not None, not_a_digest
    assert rules.image_tag("lmsysorg/sglang:v0.5.23") == "v0.5.23"
    assert rules.image_tag("registry:5000/sglang") == ""


@pytest.mark.parametrize(
    "image",
    [
        "lmsysorg/sglang@sha256:",
        "lmsysorg/sglang@sha256:"
        + "ab" * 31
        + "a",  # 63 hex: reads as the version tag 'abab…' without the check
        "lmsysorg/sglang:v0.5.23@sha256:short",
        "lmsysorg/sglang:latest@sha256:" + "AB" * 32,
    ],
)
def test_a_malformed_digest_is_no_pin(dev, image):
    [v] = run(mutate(dev, kind("Deployment"), lambda p: server(p).update(image=image)), "images-pinned")
    assert f"image {image!r} has a malformed digest" in v.message


def test_a_full_digest_pins_with_or_without_a_tag(dev):
    for image in ("lmsysorg/sglang@sha256:" + "0a" * 32, "lmsysorg/sglang:v0.5.23@sha256:" + "0a" * 32):
        assert (
            run(
                mutate(dev, kind("Deployment"), lambda p, i=image: server(p).update(image=i)), "images-pinned"
            )
            == []
        )


def test_budget_boundary_one_cent_below_at_and_above(dev):
    parts = [r for r in dev if r.type in (DEPLOYMENT_TYPE, PLATFORM_TYPE)]
    cents = sum(round(r.props["cost"].get("monthlyUsdMax", 0) * 100) for r in parts)
    assert cents > 0
    total = cents / 100
    assert run(dev, "stack-budget", budget_usd_per_month=total) == []  # at the budget: within it
    assert run(dev, "stack-budget", budget_usd_per_month=total + 0.01) == []
    [v] = run(dev, "stack-budget", budget_usd_per_month=total - 0.01)
    assert f"${total:,.2f}/month at max replicas exceeds the budget of ${total - 0.01:,.2f}" in v.message
    # The platform's own budget is judged the same way.
    at = mutate(dev, of_type(PLATFORM_TYPE), lambda p: p.update(budgetUsdPerMonth=total))
    assert run(at, "stack-budget") == []
    below = mutate(dev, of_type(PLATFORM_TYPE), lambda p: p.update(budgetUsdPerMonth=total - 0.01))
    assert len(run(below, "stack-budget")) == 1


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A replica spanning two nodes, rendered as a LeaderWorkerSet."""
    from .conftest import multi_node

    root = tmp_path_factory.mktemp("multi")
    stack = write_stack(
        root,
        platform={"cluster": {"name": "t"}, "namespace": "llm", "addons": {"leader_worker_set": True}},
        deployments=[multi_node()],
        extra={"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}},
    )
    return policy_resources(render_stack(stack).recording)


def _worker(props):
    return props["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]


def _leader(props):
    return props["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]


WORKER = "spec.leaderWorkerTemplate.workerTemplate.spec.containers"


@pytest.mark.parametrize(
    ("policy", "change", "expected"),
    [
        ("images-pinned", lambda c: c.update(image="lmsysorg/sglang:latest"), "has tag 'latest'"),
        ("no-privileged-containers", lambda c: c["securityContext"].update(privileged=True), "is privileged"),
        (
            "no-privileged-containers",
            lambda c: c["securityContext"].pop("allowPrivilegeEscalation"),
            "may escalate privileges (allowPrivilegeEscalation unset",
        ),
        ("container-resources", lambda c: c["resources"]["requests"].pop("memory"), "has no requests.memory"),
        (
            "weights-safetensors",
            lambda c: c.update(args=[*c["args"], "--load-format=pt"]),
            "--load-format pt",
        ),
    ],
)
def test_leader_worker_set_workers_are_inspected_like_the_leader(multi, policy, change, expected):
    lws = next(r for r in multi if kind("LeaderWorkerSet")(r))
    assert _leader(lws.props)["containers"] and _worker(lws.props)["containers"]
    assert run(multi, policy) == []
    [v] = run(mutate(multi, kind("LeaderWorkerSet"), lambda p: change(_worker(p)["containers"][0])), policy)
    name = _worker(lws.props)["containers"][0]["name"]
    assert f"{WORKER}[{name}]" in v.message and expected in v.message


def test_leader_worker_set_worker_pods_are_inspected(multi):
    def share(p):
        _worker(p)["hostPID"] = True

    [v] = run(mutate(multi, kind("LeaderWorkerSet"), share), "no-privileged-containers")
    assert "pod shares the host's network, PID or IPC namespace" in v.message

    def mount(p):
        _worker(p).setdefault("volumes", []).append({"name": "root", "hostPath": {"path": "/"}})

    [v] = run(mutate(multi, kind("LeaderWorkerSet"), mount), "no-privileged-containers")
    assert "volume 'root' mounts host path '/'" in v.message


def test_containers_need_a_memory_limit(dev):
    [v] = run(
        mutate(dev, kind("Deployment"), lambda p: server(p)["resources"]["limits"].pop("memory")),
        "container-resources",
    )
    assert "containers[sglang] has no limits.memory" in v.message


def test_gpu_caps_boundary_at_the_cap_and_one_below(prod):
    per = {
        r.name: int(r.props["replicas"]["max"]) * int(r.props["placement"]["gpusPerReplica"])
        for r in prod
        if r.type == DEPLOYMENT_TYPE
    }
    most, total = max(per.values()), sum(per.values())
    assert run(prod, "gpu-caps", max_gpus_per_deployment=most, max_gpus_total=total) == []
    [v] = run(prod, "gpu-caps", max_gpus_per_deployment=most - 1, max_gpus_total=total)
    assert f"{most} GPUs at max replicas" in v.message and f"max_gpus_per_deployment {most - 1}" in v.message
    [v] = run(prod, "gpu-caps", max_gpus_per_deployment=most, max_gpus_total=total - 1)
    assert v.message.startswith(f"stack: {total} GPUs at max replicas exceeds max_gpus_total {total - 1}")


def test_placement_memory_fits_up_to_the_gpus_memory(dev):
    def need(gib):
        def change(p):
            p["memory"].update(requiredGibPerGpu=gib, gpuMemoryGib=22.35)

        return change

    assert run(mutate(dev, of_type(DEPLOYMENT_TYPE), need(22.35)), "placement-fits") == []
    [v] = run(mutate(dev, of_type(DEPLOYMENT_TYPE), need(22.36)), "placement-fits")
    assert "needs 22.36 GiB per GPU, L4 has 22.35 GiB" in v.message


@pytest.mark.parametrize(
    ("gpu", "quantization", "kv", "refused"),
    [
        # NVIDIA's compute capabilities: T4 7.5, A10G 8.6, A100 8.0, L4 8.9, H100 9.0. SGLang's fp8 and the FP8
        # KV cache kernels need 8.0 (Ampere); w8a8_fp8's kernels need 8.9 (Ada).
        ("A100-80GB", "fp8", "auto", []),  # at the threshold
        ("T4", "fp8", "auto", ["quantization fp8 needs compute capability 8.0, T4 has 7.5"]),
        ("L4", "w8a8_fp8", "auto", []),
        ("A10G", "w8a8_fp8", "auto", ["quantization w8a8_fp8 needs compute capability 8.9, A10G has 8.6"]),
        ("H100", "w8a8_fp8", "auto", []),
        ("A100-80GB", "none", "fp8_e4m3", []),
        ("A10G", "none", "fp8_e5m2", []),
        ("T4", "none", "fp8_e4m3", ["FP8 KV cache on T4 (compute capability 7.5, needs 8.0)"]),
    ],
)
def test_gpu_capability_boundaries(dev, gpu, quantization, kv, refused):
    def place(p):
        p["placement"]["gpuModel"] = gpu
        p["serving"].update(quantization=quantization, kvCacheDtype=kv, dtype="float16")

    messages = [v.message for v in run(mutate(dev, of_type(DEPLOYMENT_TYPE), place), "placement-fits")]
    assert len(messages) == len(refused) and all(
        want in message for want, message in zip(refused, messages, strict=True)
    ), messages


def test_gpu_capability_one_tenth_below_is_refused(dev, monkeypatch):
    """No catalogued GPU sits a tenth below a threshold, so one is added: 8.8 is below w8a8_fp8's 8.9."""
    import dataclasses

    catalog = rules.gpu_models()
    near = {**catalog, "X88": dataclasses.replace(catalog["L4"], compute_capability=8.8)}
    monkeypatch.setattr(rules, "gpu_models", lambda: near)

    def place(p):
        p["placement"]["gpuModel"] = "X88"
        p["serving"].update(quantization="w8a8_fp8", kvCacheDtype="auto", dtype="float16")

    [v] = run(mutate(dev, of_type(DEPLOYMENT_TYPE), place), "placement-fits")
    assert "quantization w8a8_fp8 needs compute capability 8.9, X88 has 8.8" in v.message


def test_a_gpu_model_known_only_after_apply_leaves_the_fit_undetermined(dev):
    from sgldeploy.policy.values import UNKNOWN

    def unknown_gpu(p):
        p["placement"]["gpuModel"] = UNKNOWN

    resources = mutate(dev, of_type(DEPLOYMENT_TYPE), unknown_gpu)
    name = next(r.name for r in resources if r.type == DEPLOYMENT_TYPE)
    assert _one(resources, "placement-fits") == [
        (
            "advisory",
            f"{name}: cannot check its placement's fit before apply: placement.gpuModel is known only after "
            f"apply; `pulumi up` checks it once known, before it creates {name}",
        )
    ]


def test_a_budget_or_a_cost_known_only_after_apply_leaves_the_budget_undetermined(dev):
    from sgldeploy.policy.values import UNKNOWN

    platform = next(r.name for r in dev if r.type == PLATFORM_TYPE)
    later_budget = mutate(dev, of_type(PLATFORM_TYPE), lambda p: p.update(budgetUsdPerMonth=UNKNOWN))
    assert _one(later_budget, "stack-budget") == [
        (
            "advisory",
            f"{platform}: cannot check the budget before apply: budgetUsdPerMonth is known only after apply; "
            f"`pulumi up` checks it once known, before it creates {platform}",
        )
    ]
    # A deployment's cost unknown: the known parts alone within the budget leave it undetermined, not passed.
    name = next(r.name for r in dev if r.type == DEPLOYMENT_TYPE)
    later_cost = mutate(dev, of_type(DEPLOYMENT_TYPE), lambda p: p.update(cost=UNKNOWN))
    assert _one(later_cost, "stack-budget", budget_usd_per_month=10**9) == [
        (
            "advisory",
            f"{name}: cannot check the stack's cost against its budget before apply: cost is known only after "
            f"apply; `pulumi up` checks it once known, before it creates {name}",
        )
    ]


def test_a_production_deployment_with_no_children_at_all_lacks_its_pdb(prod):
    target = next(r for r in prod if r.type == DEPLOYMENT_TYPE)
    childless = [r for r in prod if r.parent != target.urn]
    assert [(v.level, v.message) for v in run(childless, "production-availability")] == [
        ("mandatory", f"{target.name}: no PodDisruptionBudget guards its pods; keep the deployment's PDB")
    ]


@pytest.mark.parametrize(
    "policy, unknown, known, what",
    [
        ("model-revision-pinned-production", ("environment",), {}, "its environment"),
        ("model-revision-pinned", ("environment",), {}, "its environment"),
        ("production-availability", ("environment",), {}, "its environment"),
        ("model-revision-pinned", ("model",), {}, "that its model revision is a commit"),
        ("weights-safetensors", ("model",), {}, "its weights' format"),
        ("trust-remote-code-allowlist", ("model",), {}, "whether its model runs its own code"),
        ("placement-fits", ("memory",), {}, "its placement's fit"),
        ("placement-fits", ("serving",), {}, "its placement's fit"),
        ("allowed-instances-and-regions", ("region",), {}, "its instance types and region"),
        ("allowed-instances-and-regions", ("placement",), {}, "its instance types and region"),
        ("public-endpoint-secured", ("endpoint", "exposure"), {}, "whether its endpoint is public"),
        (
            "public-endpoint-secured",
            ("endpoint", "auth"),
            {("endpoint", "exposure"): "public"},
            "its public endpoint's auth and TLS",
        ),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_a_fact_known_only_after_apply_is_one_advisory_naming_it(dev, policy, unknown, known, what):
    from sgldeploy.policy.values import UNKNOWN

    def later(props):
        for path, value in [*known.items(), (unknown, UNKNOWN)]:
            *parents, leaf = path
            target = props
            for part in parents:
                target = target[part]
            target[leaf] = value

    resources = mutate(dev, of_type(DEPLOYMENT_TYPE), later)
    name = next(r.name for r in resources if r.type == DEPLOYMENT_TYPE)
    field = ".".join(unknown)
    assert (policy, _one(resources, policy)) == (
        policy,
        [
            (
                "advisory",
                f"{name}: cannot check {what} before apply: {field} is known only after apply; `pulumi up` "
                f"checks it once known, before it creates {name}",
            )
        ],
    )
