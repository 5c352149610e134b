"""Rollout strategies as rendered: blue-green and canary keep one Deployment per commit; the Service, router and
autoscaler follow the active commit; a canary gets its own Service and an ALB weighted split; changing or
promoting a revision reads as a plan diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgldeploy.builders.rollout import COMMIT_LABEL
from sgldeploy.offline.diff import resource_diff
from sgldeploy.offline.plan_json import plan_json
from sgldeploy.spec.problems import InvalidInput

from . import k8s_schemas
from .conftest import QWEN, deployment, render_stack, resources_of, write_stack

A = QWEN["revision"]
B = "b" * 40
C = "c" * 40
PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm"}
ALB = {"exposure": "internal", "load_balancer": "alb"}
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"


def lock_with_more_commits(path: Path) -> None:
    """The committed lock, plus the same model at two more commits (as `sgldeploy lock` would add them)."""
    lock = json.loads(path.read_text())
    entry = lock["models"][f"{QWEN['repo']}@{A}"]
    for sha in (B, C):
        lock["models"][f"{QWEN['repo']}@{sha}"] = {**entry, "revision": sha, "sha": sha}
    path.write_text(json.dumps(lock))


def render(tmp_path: Path, revision: str = A, **fields):
    fields = {"scaling": {"min_replicas": 2, "max_replicas": 4}, "endpoint": ALB, **fields}
    path = write_stack(
        tmp_path,
        platform=PLATFORM,
        deployments=[deployment(model={"repo": QWEN["repo"], "revision": revision}, **fields)],
    )
    lock_with_more_commits(path.parent / "models.lock.json")
    return render_stack(path)


def objects(plan, type_: str) -> dict[str, dict]:
    found = {r.inputs["metadata"]["name"]: r.inputs for r in resources_of(plan, type_)}
    for obj in found.values():
        k8s_schemas.validate(obj, "1.33")
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_rolling_keeps_one_deployment_named_after_the_model(tmp_path):
    deployments = objects(render(tmp_path), DEPLOYMENT)
    assert list(deployments) == ["qwen"]
    assert COMMIT_LABEL not in deployments["qwen"]["spec"]["selector"]["matchLabels"]


def test_blue_green_keys_the_deployment_by_commit_and_switches_once_ready(tmp_path):
    plan = render(tmp_path, rollout={"strategy": "blue-green"})
    deployments = objects(plan, DEPLOYMENT)
    assert list(deployments) == [f"qwen-{A[:8]}"]
    active = deployments[f"qwen-{A[:8]}"]
    pods = active["spec"]["template"]["metadata"]["labels"]
    assert active["spec"]["selector"]["matchLabels"][COMMIT_LABEL] == A[:12] == pods[COMMIT_LABEL]
    service = objects(plan, SERVICE)["qwen"]
    assert service["spec"]["selector"][COMMIT_LABEL] == A[:12] and selects(service["spec"]["selector"], pods)
    # The Service waits for the Deployment: Pulumi awaits its rollout, so the switch happens once it is ready.
    by_name = {r.name: r for r in plan.recording.resources}
    assert by_name[f"qwen-server-deployment-{A[:8]}"].urn in by_name["qwen-server-service"].dependencies
    [scaled] = resources_of(plan, "kubernetes:keda.sh/v1alpha1:ScaledObject")
    assert scaled.inputs["spec"]["scaleTargetRef"]["name"] == f"qwen-{A[:8]}"


def test_blue_green_keeps_a_previous_commit_warm_without_traffic(tmp_path):
    plan = render(tmp_path, revision=B, rollout={"strategy": "blue-green", "previous_revision": A})
    deployments = objects(plan, DEPLOYMENT)
    assert set(deployments) == {f"qwen-{B[:8]}", f"qwen-{A[:8]}"}
    previous = deployments[f"qwen-{A[:8]}"]
    assert previous["spec"]["replicas"] == 1
    assert f"--revision {A}" in " ".join(previous["spec"]["template"]["spec"]["containers"][0]["args"])
    service = objects(plan, SERVICE)["qwen"]
    assert not selects(service["spec"]["selector"], previous["spec"]["template"]["metadata"]["labels"])
    # Only the active commit is autoscaled; the kept one has a fixed count.
    ignored = {r.name: r.ignore_changes for r in resources_of(plan, DEPLOYMENT)}
    assert ignored == {
        f"qwen-server-deployment-{B[:8]}": ["spec.replicas"],
        f"qwen-server-deployment-{A[:8]}": [],
    }
    [line] = [i for i in plan.estimate.items if i.resource == "qwen/rollout-tracks"]
    [gpu] = [i for i in plan.estimate.items if i.resource == "qwen/gpu-nodes"]
    assert line.hourly_usd_min == line.hourly_usd_max == pytest.approx(gpu.hourly_usd_max / 4)
    # The node pool may hold max replicas, the surge, the switch's new commit and the kept one.
    [pool] = resources_of(plan, "kubernetes:karpenter.sh/v1:NodePool")
    assert pool.inputs["spec"]["limits"]["nvidia.com/gpu"] == str(4 + 1 + 2 + 1)


def test_a_new_revision_reads_as_a_new_deployment_and_a_switched_service(tmp_path):
    before = plan_json(render(tmp_path / "a", rollout={"strategy": "blue-green"}))
    after = plan_json(render(tmp_path / "b", revision=B, rollout={"strategy": "blue-green"}))
    diff = resource_diff(before, after)
    assert [r["name"] for r in diff["added"] if r["type"] == DEPLOYMENT] == [
        f"qwen-server-deployment-{B[:8]}"
    ]
    assert [r["name"] for r in diff["removed"] if r["type"] == DEPLOYMENT] == [
        f"qwen-server-deployment-{A[:8]}"
    ]
    changed = {r["name"]: r for r in diff["changed"]}
    assert "qwen-server-service" in changed


def test_canary_splits_alb_traffic_between_two_services(tmp_path):
    plan = render(tmp_path, rollout={"strategy": "canary", "canary_revision": B, "canary_percent": 25})
    deployments = objects(plan, DEPLOYMENT)
    stable, canary = deployments[f"qwen-{A[:8]}"], deployments[f"qwen-{B[:8]}"]
    assert canary["spec"]["replicas"] == 1  # a quarter of 2, rounded up
    services = objects(plan, SERVICE)
    assert selects(services["qwen"]["spec"]["selector"], stable["spec"]["template"]["metadata"]["labels"])
    assert selects(
        services["qwen-canary"]["spec"]["selector"], canary["spec"]["template"]["metadata"]["labels"]
    )
    assert not selects(services["qwen"]["spec"]["selector"], canary["spec"]["template"]["metadata"]["labels"])
    [ingress] = objects(plan, "kubernetes:networking.k8s.io/v1:Ingress").values()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "weighted", "port": {"name": "use-annotation"}}
    action = json.loads(ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.weighted"])
    assert action["forwardConfig"]["targetGroups"] == [
        {"serviceName": "qwen", "servicePort": "80", "weight": 75},
        {"serviceName": "qwen-canary", "servicePort": "80", "weight": 25},
    ]


def test_promoting_a_canary_keeps_its_deployment_and_removes_the_old_one(tmp_path):
    canary = plan_json(render(tmp_path / "a", rollout={"strategy": "canary", "canary_revision": B}))
    promoted = plan_json(render(tmp_path / "b", revision=B, rollout={"strategy": "canary"}))
    diff = resource_diff(canary, promoted)
    removed = {r["name"] for r in diff["removed"]}
    assert f"qwen-server-deployment-{A[:8]}" in removed and "qwen-server-canary-service" in removed
    assert not [r for r in diff["added"] if r["type"] == DEPLOYMENT]  # the canary's Deployment stays


@pytest.mark.parametrize(
    "fields, where, what",
    [
        ({"rollout": {"strategy": "canary", "canary_revision": B}, "endpoint": {"exposure": "cluster"}},
         "endpoint.exposure", "needs an ALB"),
        ({"rollout": {"strategy": "canary", "canary_revision": B},
          "endpoint": {**ALB, "algorithm": "cache-aware"}}, "endpoint.algorithm", "cannot weight"),
        ({"rollout": {"strategy": "canary", "canary_revision": "main"}}, "rollout.canary_revision", "40-hex"),
        ({"rollout": {"previous_revision": B}}, "rollout.previous_revision", "blue-green and canary"),
        ({"rollout": {"strategy": "canary", "canary_percent": 100}}, "rollout.canary_percent", "1–99"),
        ({"rollout": {"strategy": "blue-green", "previous_revision": B}, "cache": {"storage": "efs"}},
         "cache.storage", "shared caches"),
        ({"rollout": {"strategy": "blue-green", "previous_revision": A}}, "rollout.previous_revision",
         "already serves"),
    ],
    ids=["canary without an ALB", "canary behind the router", "canary by branch", "previous with rolling",
         "all traffic to the canary", "second commit on a shared cache", "previous is the active commit"],
)  # fmt: skip
def test_rollouts_a_shape_cannot_do_are_refused_with_the_field(tmp_path, fields, where, what):
    with pytest.raises(InvalidInput) as caught:
        render(tmp_path, **fields)
    assert any(
        p.path == f"sgldeploy:deployments[0].{where}" and what in p.line() for p in caught.value.problems
    ), [p.line() for p in caught.value.problems]


@pytest.mark.parametrize(
    "endpoint, field, value",
    [({"exposure": "cluster"}, "exposure", "cluster"), ({"exposure": "internal", "load_balancer": "nlb"},
      "load_balancer", "nlb"), ({"exposure": "cluster", "load_balancer": "nlb"}, "exposure", "cluster")],
)  # fmt: skip
def test_a_canary_without_an_alb_names_the_field_whose_value_it_quotes(tmp_path, endpoint, field, value):
    with pytest.raises(InvalidInput) as caught:
        render(tmp_path, rollout={"strategy": "canary", "canary_revision": B}, endpoint=endpoint)
    [line] = [p.line() for p in caught.value.problems if "needs an ALB" in p.what]
    assert line.startswith(f"error: sgldeploy:deployments[0].endpoint.{field}: a canary's traffic split")
    assert f"(got {value!r});" in line


@pytest.mark.parametrize(
    "rollout, field",
    [({"strategy": "canary", "canary_revision": B}, "canary_revision"),
     ({"strategy": "blue-green", "previous_revision": B}, "previous_revision")],
)  # fmt: skip
def test_a_previous_or_canary_commit_must_be_in_the_lock_like_model_revision(tmp_path, rollout, field):
    from sgldeploy.models.lock_stack import _models
    from sgldeploy.spec.stackfile import read_stack_file
    from sgldeploy.stack import load

    def lines(**fields) -> list[str]:
        path = write_stack(tmp_path, platform=PLATFORM, deployments=[deployment(endpoint=ALB, **fields)])
        with pytest.raises(InvalidInput) as caught:
            load(PLATFORM, [deployment(endpoint=ALB, **fields)], path.parent / "models.lock.json", set())
        return [p.line() for p in caught.value.problems]

    # the committed lock holds only commit A: B is missing, as a model.revision of B would be
    [missing] = lines(rollout=rollout, scaling={"min_replicas": 1, "max_replicas": 2})
    [as_model_revision] = lines(model={"repo": QWEN["repo"], "revision": B})
    assert missing == as_model_revision.replace(".model.revision:", f".rollout.{field}:")
    assert missing == (
        f"error: sgldeploy:deployments[0].rollout.{field}: {QWEN['repo']}@{B} is not in models.lock.json "
        f"(got '{B}'); run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock --from-cache DIR` to "
        "resolve it from a Hugging Face cache without the Hub"
    )
    # `sgldeploy lock` resolves it along with model.revision
    stack = read_stack_file(
        write_stack(tmp_path, platform=PLATFORM, deployments=[deployment(endpoint=ALB, rollout=rollout)])
    )
    assert [(m.repo, m.revision) for m in _models(stack)] == [(QWEN["repo"], A), (QWEN["repo"], B)]


@pytest.mark.parametrize(
    "rollout, field",
    [({"strategy": "canary", "canary_revision": B}, "canary_revision"),
     ({"strategy": "blue-green", "previous_revision": B}, "previous_revision")],
)  # fmt: skip
def test_lock_check_reports_a_rollout_commit_missing_from_the_lock_at_its_field(
    tmp_path, capsys, rollout, field
):
    from sgldeploy.cli import main

    # the committed lock holds model.revision's commit A, not B: nothing here reaches the Hub (commits)
    path = write_stack(tmp_path, platform=PLATFORM, deployments=[deployment(endpoint=ALB, rollout=rollout)])
    assert main(["lock", "--check", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: sgldeploy:deployments[0].rollout.{field}: {QWEN['repo']}@{B} is not locked (got '{B}'); "
        "run sgldeploy lock"
    ]


def weights(plan) -> dict[str, int]:
    [ingress] = objects(plan, "kubernetes:networking.k8s.io/v1:Ingress").values()
    action = json.loads(ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.weighted"])
    return {g["serviceName"]: g["weight"] for g in action["forwardConfig"]["targetGroups"]}


def test_a_canary_without_a_percent_gets_the_documented_ten_percent(tmp_path):
    from sgldeploy.spec import RolloutSpec

    assert "default 10 there" in RolloutSpec.model_fields["canary_percent"].description
    plan = render(tmp_path, rollout={"strategy": "canary", "canary_revision": B})
    assert weights(plan) == {"qwen": 90, "qwen-canary": 10}
    assert plan_json(plan)["deployments"][0]["rollout"]["canary_percent"] == 10


@pytest.mark.parametrize(
    "active, percent, canary",
    [
        (3, 25, 1),  # 0.75 of a replica, below one: rounded up, a canary always runs
        (4, 25, 1),  # exactly one
        (5, 25, 2),  # 1.25, above one: rounded up to two (a floor would give one)
        (3, 50, 2),  # 1.5: two
    ],
)
def test_the_canary_gets_its_share_of_the_first_replicas_rounded_up(tmp_path, active, percent, canary):
    plan = render(
        tmp_path,
        scaling={"min_replicas": active, "max_replicas": 6},
        rollout={"strategy": "canary", "canary_revision": B, "canary_percent": percent},
    )
    deployments = objects(plan, DEPLOYMENT)
    assert deployments[f"qwen-{B[:8]}"]["spec"]["replicas"] == canary
    assert deployments[f"qwen-{A[:8]}"]["spec"]["replicas"] == active
    assert weights(plan) == {"qwen": 100 - percent, "qwen-canary": percent}


def test_a_stopped_canary_runs_nothing_and_splits_nothing(tmp_path):
    """README, state stopped: replicas 0 and a node pool whose GPU limit is 0; the ALB answers 503, so no
    weighted split to a canary that does not run."""
    plan = render(tmp_path, state="stopped", rollout={"strategy": "canary", "canary_revision": B})
    deployments = objects(plan, DEPLOYMENT)
    assert {name: d["spec"]["replicas"] for name, d in deployments.items()} == {f"qwen-{A[:8]}": 0}
    [pool] = resources_of(plan, "kubernetes:karpenter.sh/v1:NodePool")
    assert pool.inputs["spec"]["limits"] == {"nvidia.com/gpu": "0"}
    [ingress] = objects(plan, "kubernetes:networking.k8s.io/v1:Ingress").values()
    assert "alb.ingress.kubernetes.io/actions.weighted" not in ingress["metadata"]["annotations"]
    assert plan_json(plan)["deployments"][0]["rollout"]["canary_percent"] is None


@pytest.mark.parametrize("min_replicas, refused", [(0, True), (1, False)])
def test_a_canary_needs_a_replica_the_http_add_on_cannot_split_traffic_to_zero(
    tmp_path, min_replicas, refused
):
    """From zero the HTTP add-on routes every request itself, so no ALB weight reaches the canary."""
    platform = {**PLATFORM, "addons": {"keda": True, "keda_http": True}}
    path = write_stack(
        tmp_path,
        platform=platform,
        deployments=[
            deployment(
                scaling={"min_replicas": min_replicas, "max_replicas": 4},
                endpoint={**ALB, "hostname": "llm.example.com"},
                rollout={"strategy": "canary", "canary_revision": B},
            )
        ],
    )
    lock_with_more_commits(path.parent / "models.lock.json")
    try:
        render_stack(path)
        lines = []
    except InvalidInput as invalid:
        lines = [p.line() for p in invalid.problems]
    assert lines == (
        [
            "error: sgldeploy:deployments[0].scaling.min_replicas: the HTTP add-on cannot split traffic for a "
            "canary (got 0); keep at least one replica while a canary runs"
        ]
        if refused
        else []
    )


# ---- each rule of rollout.problems, its problem whole ----------------------------------------------------

SHAPE = {"multi_node": False, "shared_cache": False, "router": False, "at_zero": False, "active_sha": A}


def rollout_problems(rollout: dict, endpoint: dict | None = None, **shape) -> list[tuple]:
    from sgldeploy.builders import rollout as rollouts
    from sgldeploy.spec.validate import parse_stack

    dep = parse_stack(None, [deployment(rollout=rollout, endpoint=endpoint or ALB)]).deployments[0]
    return [(p.path, p.what, p.fix, p.got) for p in rollouts.problems(dep, **{**SHAPE, **shape})]


@pytest.mark.parametrize(
    "rollout, endpoint, shape, expected",
    [
        (
            {"strategy": "blue-green", "previous_revision": A},
            None,
            {},
            [("rollout.previous_revision", "is the commit model.revision already serves",
              "name another commit, or remove it", A)],
        ),
        (
            {"strategy": "canary", "canary_revision": A},
            None,
            {},
            [("rollout.canary_revision", "is the commit model.revision already serves",
              "name another commit, or remove it", A)],
        ),
        (
            {"strategy": "rolling", "previous_revision": B},
            None,
            {},
            [("rollout.previous_revision", "applies only to blue-green and canary", "remove it", B)],
        ),
        (
            {"strategy": "blue-green", "previous_revision": B},
            None,
            {"multi_node": True},
            [("rollout.strategy", "needs a replica that fits one node (a LeaderWorkerSet rolls in place)",
              "use rolling for placements spanning nodes", "blue-green")],
        ),
        (
            {"strategy": "blue-green", "previous_revision": B},
            None,
            {"shared_cache": True},
            [("cache.storage", "a second commit needs its own prefetch, which shared caches do not run yet",
              "use node-local or none while a previous or canary commit is declared", "none")],
        ),
        (
            {"strategy": "blue-green"},  # no second commit: a shared cache is fine
            None,
            {"shared_cache": True},
            [],
        ),
        (
            {"strategy": "canary", "canary_revision": B},
            {"exposure": "cluster"},
            {},
            [("endpoint.exposure",
              "a canary's traffic split needs an ALB (weighted target groups), and cluster has none",
              "use exposure public or internal (with load_balancer alb)", "cluster")],
        ),
        (
            {"strategy": "canary", "canary_revision": B},
            {"exposure": "internal", "load_balancer": "nlb"},
            {},
            [("endpoint.load_balancer", "a canary's traffic split needs an ALB (weighted target groups)",
              "use load_balancer alb", "nlb")],
        ),
        (
            {"strategy": "canary", "canary_revision": B},
            {**ALB, "algorithm": "cache-aware"},
            {"router": True, "at_zero": True},
            [
                ("endpoint.algorithm", "the router cannot weight a canary",
                 "turn the router off while a canary runs (a round-robin or least-connections ALB splits)",
                 "cache-aware"),
                ("scaling.min_replicas", "the HTTP add-on cannot split traffic for a canary",
                 "keep at least one replica while a canary runs", 0),  # readiness fast: from zero
            ],
        ),
        (
            {"strategy": "canary"},  # no canary commit yet: nothing to split
            {"exposure": "cluster"},
            {"router": True, "at_zero": True},
            [],
        ),
    ],
    ids=[
        "previous-is-active", "canary-is-active", "rolling-with-a-previous", "blue-green-across-nodes",
        "second-commit-on-a-shared-cache", "blue-green-alone-on-a-shared-cache", "canary-without-a-balancer",
        "canary-on-an-nlb", "canary-through-the-router-from-zero", "canary-without-its-commit",
    ],
)  # fmt: skip
def test_each_rollout_rule_is_its_problem(rollout, endpoint, shape, expected):
    assert rollout_problems(rollout, endpoint, **shape) == expected
