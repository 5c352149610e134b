"""Prefill/decode disaggregation as rendered: each role's server in its SGLang mode with the KV transfer over EFA,
kept off the other role's nodes; the router in PD mode as the only way in; NetworkPolicies that let the router
and the two roles reach each other and nothing else; a role's problems at its own paths; cost per role, and the
throughput model's verdict on when disaggregating pays, against figures derived here from the data files."""

from __future__ import annotations

import csv
import ipaddress
import math
from typing import Any

import pytest

from sgldeploy.offline.plan_json import plan_json
from sgldeploy.offline.plan_text import summary

from . import k8s_schemas
from .conftest import (
    LLAMA_8B,
    PD_PLATFORM,
    ROOT,
    disaggregated,
    problem_lines,
    render_stack,
    resources_of,
    write_stack,
)

DATA = ROOT / "sgldeploy" / "data"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
EFA = "vpc.amazonaws.com/efa"
ON_PLATFORM = {k: v for k, v in PD_PLATFORM.items() if k != "cluster"}


def committed():
    """The committed stack rendered afresh, not from the session's shared renders: each test then runs the code
    it checks (which is how `make mutate` maps a mutant to the tests that can kill it)."""
    from sgldeploy.offline.render import render
    from sgldeploy.spec.stackfile import read_stack_file

    return render(read_stack_file(ROOT / "stacks" / "Pulumi.disaggregated.yaml"))


def nixl():
    """The disaggregated-nixl variant rendered afresh (see committed)."""
    import tempfile
    from pathlib import Path

    from sgldeploy.offline.render import render
    from sgldeploy.spec.stackfile import read_stack_file

    from .variants import variant_stack_files

    files = variant_stack_files(Path(tempfile.mkdtemp()))
    return render(read_stack_file(files["disaggregated-nixl"]))


def by_name(plan, type_: str) -> dict[str, dict]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in resources_of(plan, type_)}


def container(workload: dict) -> dict:
    [c] = workload["spec"]["template"]["spec"]["containers"]
    return c


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def efa_of(instance_type: str) -> int:
    with open(DATA / "aws-gpu-efa.csv", newline="") as f:
        return next(
            int(r["efa_interfaces"]) for r in csv.DictReader(f) if r["instance_type"] == instance_type
        )


def instance_row(instance_type: str) -> dict[str, str]:
    with open(DATA / "aws-gpu-instances.csv", newline="") as f:
        return next(r for r in csv.DictReader(f) if r["instance_type"] == instance_type)


# ---- the roles' servers --------------------------------------------------------------------------------------


def test_each_role_serves_in_its_mode_and_prefill_runs_the_bootstrap_server():
    workloads = by_name(committed(), DEPLOYMENT)
    prefill, decode = (container(workloads[f"llama-70b-rag-{r}"])["args"] for r in ("prefill", "decode"))
    assert flag(prefill, "--disaggregation-mode") == "prefill"
    assert flag(decode, "--disaggregation-mode") == "decode"
    assert flag(prefill, "--disaggregation-transfer-backend") == flag(
        decode, "--disaggregation-transfer-backend"
    )
    assert flag(prefill, "--disaggregation-transfer-backend") == "mooncake"
    prefill_pod = workloads["llama-70b-rag-prefill"]["spec"]["template"]
    port = prefill_pod["metadata"]["annotations"]["sglang.ai/bootstrap-port"]  # what the PD router reads
    assert flag(prefill, "--disaggregation-bootstrap-port") == port == "8998"
    assert {"name": "bootstrap", "containerPort": 8998, "protocol": "TCP"} in container(
        workloads["llama-70b-rag-prefill"]
    )["ports"]
    decode_pod = workloads["llama-70b-rag-decode"]["spec"]["template"]
    assert "--disaggregation-bootstrap-port" not in decode  # decode learns it per request, from the router
    assert "sglang.ai/bootstrap-port" not in decode_pod["metadata"]["annotations"]
    # Both serve the same model under the same name: the router pairs any prefill with any decode replica.
    assert flag(prefill, "--served-model-name") == flag(decode, "--served-model-name") == "llama-3.1-70b"


@pytest.mark.parametrize("role,instance", [("prefill", "p5.48xlarge"), ("decode", "p5en.48xlarge")])
def test_each_role_requests_every_efa_interface_of_its_type_and_sends_over_efa(role, instance):
    workload = by_name(committed(), DEPLOYMENT)[f"llama-70b-rag-{role}"]
    c = container(workload)
    assert c["resources"]["requests"][EFA] == c["resources"]["limits"][EFA] == str(efa_of(instance))
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MOONCAKE_PROTOCOL"] == "efa" and env["FI_PROVIDER"] == "efa"
    assert c["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    affinity = workload["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"][0] == instance


def test_prefill_and_decode_pods_never_share_a_node():
    workloads = by_name(committed(), DEPLOYMENT)
    labels = {
        r: workloads[f"llama-70b-rag-{r}"]["spec"]["template"]["metadata"]["labels"]
        for r in ("prefill", "decode")
    }
    for role, other in (("prefill", "decode"), ("decode", "prefill")):
        spec = workloads[f"llama-70b-rag-{role}"]["spec"]["template"]["spec"]["affinity"]
        [term] = spec["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        wanted = term["labelSelector"]["matchLabels"]
        assert wanted.items() <= labels[other].items() and not wanted.items() <= labels[role].items()


def test_nixl_takes_libfabric_and_a_role_over_two_nodes_is_a_leader_worker_set():
    plan = nixl()
    decode = container(by_name(plan, DEPLOYMENT)["pd-nixl-decode"])
    env = {e["name"]: e.get("value") for e in decode["env"]}
    assert env["SGLANG_DISAGGREGATION_NIXL_BACKEND"] == "LIBFABRIC" and "MOONCAKE_PROTOCOL" not in env
    assert flag(decode["args"], "--disaggregation-transfer-backend") == "nixl"
    lws = by_name(plan, LWS)["pd-wide-prefill"]["spec"]["leaderWorkerTemplate"]
    leader, worker = lws["leaderTemplate"], lws["workerTemplate"]
    assert leader["metadata"]["annotations"]["sglang.ai/bootstrap-port"] == "8998"
    assert (
        "sglang.ai/bootstrap-port" not in worker["metadata"]["annotations"]
    )  # rank 0 runs the bootstrap server
    for pod in (leader, worker):
        [c] = pod["spec"]["containers"]
        assert flag(c["args"], "--disaggregation-mode") == "prefill"
        assert c["resources"]["requests"][EFA] == str(efa_of("p5.48xlarge"))


def test_both_roles_node_pools_launch_in_the_same_one_subnet():
    """EFA's OS-bypass traffic does not leave its subnet, so the two roles' nodes share one."""
    plan = nixl()
    classes = by_name(plan, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")
    terms = {n: c["spec"]["subnetSelectorTerms"] for n, c in classes.items() if n.startswith("llm-pd-nixl")}
    assert len(terms) == 2
    [prefill, decode] = terms.values()
    assert prefill == decode and len(prefill) == 1


# ---- the PD router ------------------------------------------------------------------------------------------


def test_the_pd_router_discovers_each_role_by_its_own_labels_and_is_the_only_way_in():
    plan = committed()
    workloads = by_name(plan, DEPLOYMENT)
    args = container(workloads["llama-70b-rag-router"])["args"]
    assert "--pd-disaggregation" in args and "--service-discovery" in args and "--selector" not in args
    pods = {
        r: workloads[f"llama-70b-rag-{r}"]["spec"]["template"]["metadata"]["labels"]
        for r in ("prefill", "decode")
    }
    for role, other in (("prefill", "decode"), ("decode", "prefill")):
        start = args.index(f"--{role}-selector") + 1
        end = next(i for i in range(start, len(args)) if args[i].startswith("--"))
        wanted = dict(a.split("=", 1) for a in args[start:end])
        assert wanted.items() <= pods[role].items() and not wanted.items() <= pods[other].items()
    assert flag(args, "--prefill-policy") == "cache_aware"  # the prefix cache lives on prefill replicas
    assert flag(args, "--decode-policy") == "power_of_two"
    # Admission: what the decode replicas run at their most (max_concurrency 64 × 2 replicas).
    assert flag(args, "--max-concurrent-requests") == str(64 * 2)
    [ingress] = resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress")
    [rule] = ingress.inputs["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "llama-70b-rag-router"
    services = by_name(plan, "kubernetes:core/v1:Service")
    assert all(s["spec"]["type"] == "ClusterIP" for s in services.values())
    assert [r.name for r in resources_of(plan, "sgldeploy:traffic:Router")] == ["llama-70b-rag-router"]


# ---- NetworkPolicies, evaluated --------------------------------------------------------------------------------


def _peer_matches(peer: dict, source: dict[str, Any], namespace: str) -> bool:
    if "ipBlock" in peer:
        return source.get("ip") is not None and ipaddress.ip_address(source["ip"]) in ipaddress.ip_network(
            peer["ipBlock"]["cidr"]
        )
    if source.get("ip"):
        return False
    namespace_ok = True
    if "namespaceSelector" in peer:
        wanted = peer["namespaceSelector"].get("matchLabels", {})
        namespace_ok = all(source["namespace_labels"].get(k) == v for k, v in wanted.items())
    elif source["namespace"] != namespace:
        namespace_ok = False  # a podSelector alone selects pods of the policy's own namespace
    pods_ok = True
    if "podSelector" in peer:
        wanted = peer["podSelector"].get("matchLabels", {})
        pods_ok = all(source["labels"].get(k) == v for k, v in wanted.items())
    return namespace_ok and pods_ok


def _port_matches(rule: dict, port: int) -> bool:
    """A TCP connection to `port` (a rule's port without a protocol is TCP's, as Kubernetes defaults it)."""
    if "ports" not in rule:
        return True
    return any(
        p.get("protocol", "TCP") == "TCP" and p["port"] <= port <= p.get("endPort", p["port"])
        for p in rule["ports"]
    )


def admitted(policies: list[dict], target: dict[str, str], source: dict[str, Any], port: int) -> bool:
    """Kubernetes' ingress semantics: a pod selected by any policy of type Ingress admits only what one of their
    rules allows."""
    selecting = [
        p
        for p in policies
        if "Ingress" in p["spec"]["policyTypes"]
        and all(target.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
    ]
    if not selecting:
        return True
    return any(
        _port_matches(rule, port)
        and any(_peer_matches(peer, source, p["metadata"]["namespace"]) for peer in rule.get("from", []))
        for p in selecting
        for rule in p["spec"]["ingress"]
    )


def pod(labels: dict[str, str], namespace: str = "llm-pd") -> dict[str, Any]:
    return {
        "labels": labels,
        "namespace": namespace,
        "namespace_labels": {"kubernetes.io/metadata.name": namespace},
    }


def test_network_policies_let_the_router_and_the_roles_reach_each_other_and_nothing_else():
    plan = committed()
    policies = list(by_name(plan, POLICY).values())
    for policy in policies:
        k8s_schemas.validate(policy, "1.35")
    workloads = by_name(plan, DEPLOYMENT)
    labels = {
        n: workloads[f"llama-70b-rag{s}"]["spec"]["template"]["metadata"]["labels"]
        for n, s in (("router", "-router"), ("prefill", "-prefill"), ("decode", "-decode"))
    }
    router, prefill, decode = (pod(labels[n]) for n in ("router", "prefill", "decode"))
    neighbour = pod({"app": "notebook"})
    other_router = pod({**labels["router"], "app.kubernetes.io/instance": "another-model"})
    prometheus = pod({"app.kubernetes.io/name": "prometheus"}, "monitoring")
    vpc = {"ip": "10.0.3.7"}
    cases = [
        # (source, target, port, admitted)
        (router, "prefill", 30000, True),
        (router, "decode", 30000, True),
        (router, "prefill", 8998, False),
        (other_router, "prefill", 30000, False),  # another deployment's router
        (other_router, "decode", 30000, False),
        (decode, "prefill", 8998, True),  # the bootstrap server
        (decode, "prefill", 49152, True),  # a prefill rank's ZMQ socket
        (prefill, "decode", 65535, True),  # a decode rank's ZMQ socket
        (prefill, "decode", 30000, True),
        (neighbour, "prefill", 30000, False),
        (neighbour, "decode", 30000, False),
        (neighbour, "decode", 50000, False),
        (vpc, "prefill", 30000, False),
        (prometheus, "decode", 30000, True),
        (prometheus, "prefill", 8998, False),
        (neighbour, "router", 8000, True),  # clients in the cluster reach the router
        (vpc, "router", 8000, True),  # the internal ALB's targets path
        (vpc, "router", 29000, False),
        (prometheus, "router", 29000, True),
    ]
    got = [(s, t, p, admitted(policies, labels[t], s, p)) for s, t, p, _ in cases]
    assert got == cases


# ---- problems at the roles' own paths ----------------------------------------------------------------------


def role_dep(**roles: Any) -> dict:
    base = {"resources": {"gpu": "L4", "gpu_count": 1}, "scaling": {"min_replicas": 1, "max_replicas": 2}}
    return disaggregated(
        disaggregation={"prefill": roles.get("prefill", base), "decode": roles.get("decode", base)}
    )


AT = "error: sgldeploy:deployments[0]"


def test_a_valid_disaggregated_deployment_has_no_problem():
    assert problem_lines([disaggregated()], **ON_PLATFORM) == []


def test_without_the_efa_device_plugin_it_is_refused_at_the_add_on():
    assert problem_lines([disaggregated()]) == [
        "error: sgldeploy:platform.addons.efa_device_plugin: must be true: pd moves KV caches from prefill to "
        "decode over EFA, and pods get EFA interfaces only through the EFA device plugin (got false); set it to "
        "true (or existing, where the cluster runs it)"
    ]


def test_a_role_pinned_to_a_type_without_efa_is_refused_at_its_own_path():
    pinned = {"resources": {"instance_types": ["g6.xlarge", "g6.12xlarge"]}, "scaling": {"min_replicas": 1}}
    assert problem_lines([role_dep(prefill=pinned)], **ON_PLATFORM) == [
        f"{AT}.disaggregation.prefill.resources.instance_types: has instance types without EFA: g6.xlarge; a "
        "prefill replica sends or receives KV caches over EFA (got 'g6.xlarge'); choose EFA-capable types "
        "(sgldeploy/data/aws-gpu-efa.csv), e.g. p5.48xlarge or g6e.12xlarge, or leave instance_types empty"
    ]


def test_with_efa_types_only_the_cheapest_l4_with_efa_is_chosen():
    plan = render_stack(write_stack_pd())
    pools = {n: p for n, p in by_name(plan, "kubernetes:karpenter.sh/v1:NodePool").items()}
    chosen = {d["name"]: d["placement"]["instance_type"] for d in plan_json(plan)["deployments"]}
    assert chosen == {"pd-prefill": "g6.8xlarge", "pd-decode": "g6.8xlarge"}  # g6.xlarge has no EFA
    assert efa_of("g6.8xlarge") == 1 and efa_of("g6.xlarge") == efa_of("g6.4xlarge") == 0
    assert len(pools) == 2


def write_stack_pd(**fields: Any):
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    return write_stack(
        root, platform={**PD_PLATFORM, "namespace": "llm"}, deployments=[disaggregated(**fields)]
    )


def busy(decode_max: int = 2, prefill_max: int = 2, **fields: Any) -> dict[str, Any]:
    """Qwen 7B with 32 requests running per replica, each role on one L40S."""

    def role(most: int) -> dict[str, Any]:
        return {
            "resources": {"gpu": "L40S", "gpu_count": 1},
            "scaling": {"min_replicas": 1, "max_replicas": most},
        }

    return {
        "serving": {"context_length": 4096, "max_concurrency": 32},
        "disaggregation": {"prefill": role(prefill_max), "decode": role(decode_max)},
        **fields,
    }


def test_one_reservation_too_small_for_both_roles_is_refused():
    """Both roles in one reservation of two instances, with three replicas at least: prefill and decode never
    share a node, so it cannot hold them."""
    reserved = {
        "gpu": "H100",
        "gpu_count": 1,
        "capacity": "reserved",
        "reservation": {"ids": ["cr-0123456789abcdef0"], "instances": 2},
    }
    prefill = {"resources": reserved, "scaling": {"min_replicas": 2, "max_replicas": 2}}
    decode = {"resources": reserved, "scaling": {"min_replicas": 1, "max_replicas": 1}}
    assert problem_lines([role_dep(prefill=prefill, decode=decode)], **ON_PLATFORM) == [
        f"{AT}.disaggregation.decode.resources.reservation.instances: is 2, but both roles launch into this "
        "reservation and their min_replicas need 3 nodes: prefill and decode never share a node (got 2); reserve "
        "more instances, lower min_replicas, or give one role other capacity"
    ]
    enough = {
        "resources": {**reserved, "reservation": {"ids": ["cr-0123456789abcdef0"], "instances": 3}},
        "scaling": decode["scaling"],
    }
    assert problem_lines([role_dep(prefill=prefill, decode=enough)], **ON_PLATFORM) == []


def test_what_a_role_cannot_be_is_refused_at_its_path():
    no_min = {"resources": {"gpu": "L4", "gpu_count": 1}, "scaling": {"max_replicas": 2}}
    inverted = {"resources": {"gpu": "L4", "gpu_count": 1}, "scaling": {"min_replicas": 3, "max_replicas": 2}}
    lines = problem_lines([{**role_dep(prefill=no_min, decode=inverted), "readiness": "fast"}], **ON_PLATFORM)
    assert lines == [
        f"{AT}.disaggregation.prefill.scaling.min_replicas: must be ≥ 1 with disaggregation (readiness fast "
        "defaults it to 0): the PD router cannot hold a request while a role has no replica (got 0); set it to 1 "
        "or more, or choose readiness always-ready",
        f"{AT}.disaggregation.decode.scaling.max_replicas: must be ≥ min_replicas (got 2 < 3); raise max_replicas "
        "or lower min_replicas",
    ]


def test_a_role_that_fits_no_gpu_is_refused_at_its_resources():
    t4 = {"resources": {"gpu": "T4", "gpu_count": 1}, "scaling": {"min_replicas": 1}}
    [line] = problem_lines([role_dep(decode=t4)], **ON_PLATFORM)
    assert line.startswith(f"{AT}.disaggregation.decode.resources.")


@pytest.mark.parametrize(
    "fields,line",
    [
        (
            {"resources": {"gpu": "L4"}},
            "resources: is not read with disaggregation: each role has its own; move it under "
            "disaggregation.prefill.resources and disaggregation.decode.resources",
        ),
        (
            {"scaling": {"max_replicas": 2}},
            "scaling: is not read with disaggregation: each role has its own; move it under "
            "disaggregation.prefill.scaling and disaggregation.decode.scaling",
        ),
        (
            {"name": "a" * 33},
            "name: must be at most 32 characters with disaggregation: each role is a deployment named "
            f"<name>-prefill or <name>-decode, of at most 40 (got '{'a' * 33}'); shorten it",
        ),
        (
            {"rollout": {"strategy": "canary"}},
            "rollout.strategy: must be rolling with disaggregation: the PD router pairs every prefill with every "
            "decode replica, whatever commit each serves (got 'canary'); use strategy: rolling",
        ),
        (
            {"endpoint": {"algorithm": "ip-hash"}},
            "endpoint.algorithm: has no PD router policy: with disaggregation the router is the only way in (got "
            "'ip-hash'); use cache-aware, round-robin or least-connections",
        ),
        (
            {"endpoint": {"router": {"enabled": False}}},
            "endpoint.router.enabled: cannot be false with disaggregation: only the router sends each request to "
            "both roles (got false); leave it unset",
        ),
    ],
)
def test_what_the_pd_router_cannot_do_is_refused(fields, line):
    assert problem_lines([disaggregated(**fields)], **ON_PLATFORM) == [f"{AT}.{line}"]


def test_a_name_of_32_characters_is_the_longest_allowed():
    assert problem_lines([disaggregated(name="a" * 32)], **ON_PLATFORM) == []


# ---- cost per role, and the throughput model's verdict --------------------------------------------------------


def test_each_role_is_priced_on_its_own_nodes_and_the_load_balancer_once():
    plan = committed()
    for role, instance in (("prefill", "p5.48xlarge"), ("decode", "p5en.48xlarge")):
        items = {i.resource.split("/", 1)[1]: i for i in plan.estimate.of(f"llama-70b-rag-{role}")}
        hourly = float(instance_row(instance)["on_demand_usd_per_hour_us_east_1"])
        bounds = {"prefill": (2, 4), "decode": (1, 2)}[role]
        nodes = items["gpu-nodes"]
        assert (nodes.hourly_usd_min, nodes.hourly_usd_max) == pytest.approx(
            (bounds[0] * hourly, bounds[1] * hourly)
        )
        assert ("load-balancer" in items) == (role == "decode")


def test_the_verdict_follows_the_itl_gain_derived_from_the_roles_figures():
    plan = committed()
    pd = {d["disaggregation"]["role"]: d for d in plan_json(plan)["deployments"]}
    e = pd["decode"]["disaggregation"]["estimate"]
    assert pd["prefill"]["disaggregation"]["estimate"] == e and pd["decode"]["throughput"] is None
    # Llama-3.1-70B's KV cache per token: 2 (K, V) × 80 layers × 8 KV heads × 128 dims × 2 bytes (bf16).
    kv_bytes = 2 * 80 * 8 * 128 * 2
    gbps = min(float(instance_row(t)["network_gbps"]) for t in ("p5.48xlarge", "p5en.48xlarge"))
    transfer = 4096 * kv_bytes / (gbps / 8 * 1e9 * 0.5)
    assert e["kv_transfer_seconds"] == pytest.approx(transfer, abs=1e-4)
    assert e["ttft_seconds"] == pytest.approx(e["prefill_seconds"] + transfer + e["itl_seconds"], abs=2e-3)
    ratio = e["running_per_decode_replica"] / (512 * e["itl_seconds"]) * e["prefill_seconds"]
    assert e["prefill_replicas_per_decode_replica"] == pytest.approx(ratio, rel=0.01)
    hourly = {
        t: float(instance_row(t)["on_demand_usd_per_hour_us_east_1"])
        for t in ("p5.48xlarge", "p5en.48xlarge")
    }
    usd = (
        (hourly["p5en.48xlarge"] + ratio * hourly["p5.48xlarge"])
        * e["itl_seconds"]
        / e["running_per_decode_replica"]
        / 3600
        * 1e6
    )
    assert e["usd_per_million_output_tokens"] == pytest.approx(usd, rel=0.01)
    assert e["pays"] == (e["colocated"]["itl_seconds"] / e["itl_seconds"] >= 1.5) is True


@pytest.mark.parametrize("tokens,pays", [((3840, 128), True), ((256, 2048), False)])
def test_long_prompts_pay_and_short_ones_do_not(tokens, pays):
    plan = render_stack(
        write_stack_pd(**busy(workload={"input_tokens": tokens[0], "output_tokens": tokens[1]}))
    )
    [decode] = [d for d in plan_json(plan)["deployments"] if d["name"] == "pd-decode"]
    e = decode["disaggregation"]["estimate"]
    assert e["pays"] is pays and (e["colocated"]["itl_seconds"] / e["itl_seconds"] >= 1.5) is pays
    assert (f"  pd         {'pays' if pays else 'does not pay'}: prompts of {tokens[0]:,} tokens") in summary(
        plan
    )


def loaded_pd(**fields: Any):
    from sgldeploy.offline.render import load_offline
    from sgldeploy.spec.stackfile import read_stack_file

    return load_offline(read_stack_file(write_stack_pd(**fields)))


LONG = {"input_tokens": 3840, "output_tokens": 128}


def capacity_warnings(prefill_max: int) -> list[str]:
    loaded = loaded_pd(**busy(decode_max=3, prefill_max=prefill_max, workload=LONG))
    return [w.line() for w in loaded.warnings if "max_replicas" in w.path]


def test_too_few_prefill_replicas_to_feed_the_decode_ones_is_a_warning_at_the_boundary():
    loaded = loaded_pd(**busy(decode_max=3, workload=LONG))
    pd = next(d.disaggregation for d in loaded.deployments if d.spec.name == "pd-decode")
    need = math.ceil(3 * pd.prefill_replicas_per_decode_replica)
    assert need > 1
    assert capacity_warnings(need) == []
    [line] = capacity_warnings(need - 1)
    assert line.startswith(
        f"warning: sgldeploy:deployments[0].disaggregation.prefill.scaling.max_replicas: is {need - 1}, but the "
        f"decode role's 3 replica(s) at full batch take {need} prefill replicas"
    )
    assert line.endswith(f"raise it to {need}, or lower disaggregation.decode.scaling.max_replicas")


def slo_lines(**slo: float) -> list[str]:
    return [w.line() for w in loaded_pd(slo=slo).warnings if ".slo." in w.path]


def test_the_ttft_target_is_the_prefill_roles_and_the_itl_target_the_decode_roles():
    """Each judged on the pair's figures (TTFT with the KV transfer; ITL with no prefill in a step), named with
    the role's instance type; a target the model meets exactly is met."""
    pd = next(d.disaggregation for d in loaded_pd().deployments if d.spec.name == "pd-decode")
    fix = "lower serving.max_concurrency, or choose a faster GPU or more GPUs per replica"
    assert slo_lines(ttft_p95_seconds=0.001, itl_p95_seconds=0.0001) == [
        f"warning: sgldeploy:deployments[0].slo.ttft_p95_seconds: is 0.001 s, but g6.8xlarge is modelled at a time "
        f"to first token of {pd.ttft_seconds:.3g} s with 4 requests of 1024 + 256 tokens running; {fix}",
        f"warning: sgldeploy:deployments[0].slo.itl_p95_seconds: is 0.0001 s, but g6.8xlarge is modelled at an "
        f"inter-token latency of {pd.itl_seconds:.3g} s with 4 requests of 1024 + 256 tokens running; {fix}",
    ]
    assert slo_lines(ttft_p95_seconds=pd.ttft_seconds, itl_p95_seconds=pd.itl_seconds) == []
    assert pd.ttft_seconds == pytest.approx(pd.prefill_seconds + pd.kv_transfer_seconds + pd.itl_seconds)


def test_readme_states_the_committed_stacks_short_prompt_figures(tmp_path):
    """README's sentence on the `disaggregated` stack with prompts of 1,024 tokens for answers of 1,024."""
    import yaml

    from sgldeploy.offline.render import load_offline
    from sgldeploy.spec.stackfile import read_stack_file

    stack = yaml.safe_load((ROOT / "stacks" / "Pulumi.disaggregated.yaml").read_text())
    stack["config"]["sgldeploy:deployments"][0]["workload"] = {"input_tokens": 1024, "output_tokens": 1024}
    path = tmp_path / "Pulumi.short.yaml"
    path.write_text(yaml.safe_dump(stack))
    (tmp_path / "models.lock.json").write_text((ROOT / "stacks" / "models.lock.json").read_text())
    pd = next(d.disaggregation for d in load_offline(read_stack_file(path)).deployments if d.disaggregation)
    assert not pd.pays
    share = 1 - pd.itl_seconds / pd.colocated.itl_seconds
    said = (
        f"The same model with prompts of 1,024 tokens for answers of 1,024 does not pay (prefills take {share:.0%} "
        f"of a colocated\nreplica's ITL: {pd.itl_seconds * 1000:.1f} ms against {pd.colocated.itl_seconds * 1000:.1f} ms)"
    )
    assert said in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    "variant,name,namespace,leaders",
    [("disaggregated", "llama-70b-rag", "llm-pd", False), ("disaggregated-nixl", "pd-wide", "llm", True)],
)
def test_the_pd_routers_arguments_parse_with_sglang_routers_own_parser(variant, name, namespace, leaders):
    """Discovery included, as the router image runs them (the gateway tests swap it for fixed URLs)."""
    from sgldeploy.builders import router

    from .test_router import router_parse

    plan = committed() if variant == "disaggregated" else nixl()
    workloads = by_name(plan, DEPLOYMENT)
    c = container(workloads[f"{name}-router"])
    parsed = router_parse([a.replace(f"$({router.API_KEY_ENV})", "key-from-the-secret") for a in c["args"]])
    assert parsed["pd_disaggregation"] is True and parsed["service_discovery"] is True
    role = {"sgldeploy.io/role": "leader"} if leaders else {}
    assert parsed["prefill_selector"] == {
        "app.kubernetes.io/instance": f"{name}-prefill",
        "app.kubernetes.io/component": "server",
        **role,
    }
    assert parsed["decode_selector"] == {
        "app.kubernetes.io/instance": f"{name}-decode",
        "app.kubernetes.io/component": "server",
    }
    assert parsed["service_discovery_namespace"] == namespace
    assert parsed["service_discovery_port"] == 30000
    assert parsed["api_key"] == "key-from-the-secret"
    assert parsed["prefill_urls"] == [] and parsed["decode_urls"] == []  # found by discovery, not fixed


def test_the_verdict_says_the_figures_it_rests_on():
    [decode] = [d for d in plan_json(committed())["deployments"] if d["name"] == "llama-70b-rag-decode"]
    assert decode["disaggregation"]["estimate"]["why"] == (
        "pays: prompts of 4,096 tokens for answers of 512; prefills take 60% of a colocated replica's ITL · "
        "ITL 14.2 ms vs 35.2 ms colocated · TTFT 0.192 s (with 6.7 ms of KV transfer) vs 0.186 s · $9.01 vs "
        "$9.68 per 1M output tokens, at 1.5 prefill replica(s) per decode replica"
    )


def test_a_role_on_a_type_without_a_price_prices_no_token():
    """p5e.48xlarge has no on-demand price (Capacity Blocks only): the pair's $ per token is none, said so."""
    roles = busy()["disaggregation"]
    roles["decode"]["resources"] = {"instance_types": ["p5e.48xlarge"]}
    loaded = loaded_pd(
        model=dict(LLAMA_8B), serving={"context_length": 4096, "max_concurrency": 32}, disaggregation=roles
    )
    pd = next(d.disaggregation for d in loaded.deployments if d.spec.name == "pd-decode")
    assert pd.usd_per_million_output_tokens is None and pd.colocated.usd_per_million_output_tokens is None
    assert "· no price vs no price per 1M output tokens, at " in pd.verdict()
    plan = render_stack(
        write_stack_pd(
            model=dict(LLAMA_8B),
            serving={"context_length": 4096, "max_concurrency": 32},
            disaggregation=roles,
        )
    )
    [decode] = [d for d in plan_json(plan)["deployments"] if d["name"] == "pd-decode"]
    unpriced = decode["disaggregation"]["estimate"]
    assert unpriced["usd_per_million_output_tokens"] is None
    assert unpriced["colocated"]["usd_per_million_output_tokens"] is None
    priced = loaded_pd(**busy())
    both = next(d.disaggregation for d in priced.deployments if d.spec.name == "pd-decode")
    assert (
        both.usd_per_million_output_tokens is not None
        and both.colocated.usd_per_million_output_tokens is not None
    )


def test_the_plan_states_each_roles_part_and_routing():
    plan = committed()
    lines = summary(plan).splitlines()
    role_lines = [line for line in lines if line.startswith(("  role ", "  routing ", "  pd "))]
    router = "through the PD router llama-70b-rag-router (1 pod(s), lmsysorg/sgl-model-gateway:v0.3.2), which sends each request to a prefill and a decode replica; "
    assert role_lines == [
        "  role       prefill of llama-70b-rag, KV caches to and from llama-70b-rag-decode by mooncake over EFA · "
        "0.171 s a prompt; 1.51 prefill replica(s) keep one decode replica fed",
        f"  routing    {router}admission is bounded by the decode replicas",
        "  role       decode of llama-70b-rag, KV caches to and from llama-70b-rag-prefill by mooncake over EFA · "
        "ITL 14.2 ms with 64 running and no prefill in its steps",
        f"  pd         {plan_json(plan)['deployments'][1]['disaggregation']['estimate']['why']}",
        f"  routing    {router}it admits bursts of 128 requests and 128 more per second (what the decode replicas "
        "run); beyond that clients get 429 at once",
    ]
    assert not any(line.startswith("  throughput ") for line in lines)  # a role alone serves no request


def test_the_plan_json_says_each_roles_place_and_the_pairs_figures():
    deployments = {d["name"]: d for d in plan_json(committed())["deployments"]}
    estimate = {
        "prefill_seconds": 0.171,
        "kv_transfer_seconds": 0.0067,
        "ttft_seconds": 0.192,
        "itl_seconds": 0.0142,
        "running_per_decode_replica": 64,
        "prefill_replicas_per_decode_replica": 1.51,
        "usd_per_million_output_tokens": 9.01,
        "colocated": {"ttft_seconds": 0.186, "itl_seconds": 0.0352, "usd_per_million_output_tokens": 9.68},
        "pays": True,
    }
    for role, peer in (("prefill", "decode"), ("decode", "prefill")):
        d = deployments[f"llama-70b-rag-{role}"]
        got = d["disaggregation"]
        assert {k: v for k, v in got.items() if k != "estimate"} == {
            "deployment": "llama-70b-rag",
            "role": role,
            "peer": f"llama-70b-rag-{peer}",
            "transfer_backend": "mooncake",
        }
        assert {k: v for k, v in got["estimate"].items() if k != "why"} == estimate
        assert d["throughput"] is None and d["routing"]["router"] is True
        assert d["routing"]["max_in_flight"] == (128 if role == "decode" else None)


def test_without_prometheus_no_namespace_of_its_reaches_the_roles():
    import tempfile
    from pathlib import Path

    from sgldeploy.offline.render import render
    from sgldeploy.spec.stackfile import read_stack_file

    platform = {**PD_PLATFORM, "addons": {"efa_device_plugin": "existing", "prometheus": False}}
    path = write_stack(Path(tempfile.mkdtemp()), platform=platform, deployments=[disaggregated()])
    plan = render(read_stack_file(path))
    policies = list(by_name(plan, POLICY).values())
    labels = by_name(plan, DEPLOYMENT)["pd-decode"]["spec"]["template"]["metadata"]["labels"]
    prometheus = {
        "labels": {},
        "namespace": "monitoring",
        "namespace_labels": {"kubernetes.io/metadata.name": "monitoring"},
    }
    assert not admitted(policies, labels, prometheus, 30000)


def test_pods_of_one_replica_of_a_role_over_two_nodes_reach_each_other_and_no_one_else_does():
    plan = nixl()
    policies = list(by_name(plan, POLICY).values())
    lws = by_name(plan, LWS)["pd-wide-prefill"]["spec"]["leaderWorkerTemplate"]
    leader, worker = (lws[t]["metadata"]["labels"] for t in ("leaderTemplate", "workerTemplate"))
    at = {"namespace": "llm", "namespace_labels": {"kubernetes.io/metadata.name": "llm"}}
    assert admitted(policies, leader, {"labels": worker, **at}, 20000)  # torch.distributed's rendezvous
    assert admitted(policies, worker, {"labels": leader, **at}, 51234)  # NCCL picks its ports
    assert not admitted(policies, leader, {"labels": {"app": "notebook"}, **at}, 20000)


def test_a_plain_deployments_problems_keep_their_own_paths():
    """Only a role's resources and scaling move under disaggregation."""
    from .conftest import deployment

    [line] = problem_lines(
        [
            deployment(
                resources={"gpu": "T4", "gpu_count": 1},
                serving={"context_length": 32768, "max_concurrency": 64},
            )
        ]
    )
    assert line.startswith("error: sgldeploy:deployments[0].resources.")


def test_the_cost_diff_states_the_pairs_price_per_token_on_the_decode_role():
    from sgldeploy.offline import diff

    new = plan_json(committed())
    old = {**new, "deployments": []}
    rows = {d["name"]: d for d in diff.cost_diff(old, new)["deployments"]}
    [decode] = [d for d in new["deployments"] if d["name"] == "llama-70b-rag-decode"]
    pair = decode["disaggregation"]["estimate"]["usd_per_million_output_tokens"]
    assert rows["llama-70b-rag-decode"]["usd_per_million_output_tokens"]["new"] == pair == 9.01
    assert rows["llama-70b-rag-prefill"]["usd_per_million_output_tokens"]["new"] is None


def test_the_decode_roles_queue_depth_also_counts_requests_waiting_for_kv_memory():
    """Its trigger adds SGLang's decode prealloc queue (promtool evaluates both in tests/test_promtool.py)."""
    objects = by_name(committed(), "kubernetes:keda.sh/v1alpha1:ScaledObject")
    queries = {
        role: objects[f"llama-70b-rag-{role}"]["spec"]["triggers"][0]["metadata"]["query"]
        for role in ("prefill", "decode")
    }
    match = 'namespace="llm-pd",service="llama-70b-rag-decode"'
    assert queries["decode"] == (
        f"sum(sglang:num_queue_reqs{{{match}}}) + (sum(sglang:num_decode_prealloc_queue_reqs{{{match}}}) or vector(0))"
    )
    assert (
        queries["prefill"] == 'sum(sglang:num_queue_reqs{namespace="llm-pd",service="llama-70b-rag-prefill"})'
    )


def test_a_roles_reservation_follows_the_managed_node_groups_rules_at_its_path():
    fallback = {
        "resources": {
            "gpu": "H100",
            "gpu_count": 1,
            "capacity": "reserved-fallback",
            "reservation": {"ids": ["cr-0123456789abcdef0"]},
        },
        "scaling": {"min_replicas": 1, "max_replicas": 1},
    }
    lines = problem_lines([role_dep(decode=fallback)], **ON_PLATFORM, node_provisioner="managed-node-group")
    assert lines == [
        f"{AT}.disaggregation.decode.resources.capacity: cannot fall back with a managed node group, which has one "
        "capacity type (got 'reserved-fallback'); use capacity: reserved, or node_provisioner: karpenter"
    ]


def test_a_role_is_a_plain_deployment_with_the_roles_resources_and_scaling():
    from sgldeploy.spec.validate import parse_stack

    raw = disaggregated()
    raw["disaggregation"]["decode"]["resources"] = {"gpu": "L40S", "gpu_count": 1}
    dep = parse_stack(PD_PLATFORM, [raw]).deployments[0]
    prefill, decode = dep.serving_units()
    assert (prefill.name, decode.name) == ("pd-prefill", "pd-decode")
    assert decode.resources.gpu == "L40S" and prefill.resources.gpu == "L4"
    assert decode.disaggregation is None and decode.serving_units() == [decode]  # nothing left to split
    assert decode.serving_role is not None and decode.serving_role.peer == "pd-prefill"
    assert (decode.model, decode.serving, decode.endpoint) == (dep.model, dep.serving, dep.endpoint)


@pytest.mark.parametrize(
    "prefill_res,decode_res",
    [
        # Both may fall back to on-demand: the reservation is not all they have.
        ({"capacity": "reserved-fallback"}, {"capacity": "reserved-fallback"}),
        # Two reservations, one each.
        ({}, {"reservation": {"ids": ["cr-0fedcba9876543210"], "instances": 1}}),
    ],
)
def test_a_reservation_is_refused_only_when_both_roles_need_it_alone(prefill_res, decode_res):
    reserved = {
        "gpu": "H100",
        "gpu_count": 1,
        "capacity": "reserved",
        "reservation": {"ids": ["cr-0123456789abcdef0"], "instances": 2},
    }
    prefill = {"resources": {**reserved, **prefill_res}, "scaling": {"min_replicas": 2, "max_replicas": 2}}
    decode = {"resources": {**reserved, **decode_res}, "scaling": {"min_replicas": 1, "max_replicas": 1}}
    assert problem_lines([role_dep(prefill=prefill, decode=decode)], **ON_PLATFORM) == []


def test_a_stopped_disaggregated_deployment_has_no_router_and_its_alb_answers_503_itself():
    plan = render_stack(
        write_stack_pd(state="stopped", endpoint={"exposure": "internal", "algorithm": "cache-aware"})
    )
    assert resources_of(plan, "sgldeploy:traffic:Router") == []
    assert "pd-router" not in by_name(plan, DEPLOYMENT)
    [ingress] = resources_of(plan, "kubernetes:networking.k8s.io/v1:Ingress")
    [rule] = ingress.inputs["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "stopped"  # the fixed-response action
    assert all(w["spec"]["replicas"] == 0 for w in by_name(plan, DEPLOYMENT).values())


def test_the_stacks_outputs_name_the_routers_service_for_both_roles():
    outputs = committed().recording.outputs["deployments"]
    assert {k: v["serviceName"] for k, v in outputs.items()} == {
        "llama-70b-rag-prefill": "llama-70b-rag-router.llm-pd.svc",
        "llama-70b-rag-decode": "llama-70b-rag-router.llm-pd.svc",
    }
