"""What the locked model and the chosen placement need from the rest of the stack, each line exactly as the
user reads it (stack.load, which `validate`, `plan` and the program share)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sgldeploy import stack
from sgldeploy.spec.problems import InvalidInput

from .conftest import LOCK, QWEN, deployment, multi_node

QWEN_KEY = f"{QWEN['repo']}@{QWEN['revision']}"


def lock_with(tmp_path: Path, **entry: Any) -> Path:
    """The committed lock with Qwen's entry changed as a lock of another model would read."""
    lock = json.loads(LOCK.read_text())
    lock["models"][QWEN_KEY].update(entry)
    path = tmp_path / "models.lock.json"
    path.write_text(json.dumps(lock))
    return path


def lines(platform: dict, deployments: list[dict], lock_file: Path = LOCK, secrets=frozenset()) -> list[str]:
    try:
        stack.load(platform, deployments, lock_file, set(secrets), offline=False)
    except InvalidInput as invalid:
        return [p.line() for p in invalid.problems]
    return []


PLATFORM = {"cluster": {"name": "c"}}


@pytest.mark.parametrize(
    "tag, shown",
    [("text-to-image", "text-to-image"), (None, "none")],
)
def test_a_model_sglang_does_not_serve_is_named_with_its_pipeline(tmp_path, tag, shown):
    assert lines(PLATFORM, [deployment()], lock_with(tmp_path, pipeline_tag=tag)) == [
        f"error: sgldeploy:deployments[0].model.repo: has pipeline {shown}, which SGLang does not serve as a "
        f"chat/completions model (got '{QWEN['repo']}'); choose a model tagged text-generation or "
        "image-text-to-text"
    ]


def test_a_model_with_its_own_code_needs_trust_remote_code(tmp_path):
    locked = lock_with(tmp_path, custom_code=True)
    assert lines(PLATFORM, [deployment()], locked) == [
        "error: sgldeploy:deployments[0].model.trust_remote_code: must be true: the model ships its own Python "
        "code (got false); review the code, then allow it (platform and deployment), or choose another model"
    ]
    allowed = {**PLATFORM, "allow_trust_remote_code": True}
    assert lines(allowed, [deployment(model__trust_remote_code=True)], locked) == []


def test_a_gated_model_needs_the_token_unless_it_is_set(tmp_path):
    gated = lock_with(tmp_path, gated=True)
    assert lines(PLATFORM, [deployment()], gated) == [
        f"error: sgldeploy:hfToken: is required: {QWEN['repo']} is gated (got nothing); accept the licence on "
        "the Hub, then run pulumi config set --secret sgldeploy:hfToken hf_…"
    ]
    assert lines(PLATFORM, [deployment()], gated, secrets={"hfToken"}) == []


@pytest.mark.parametrize("storage, addon", [("efs", "efs_csi"), ("fsx-lustre", "fsx_csi")])
def test_a_shared_cache_needs_its_csi_driver(storage, addon):
    assert lines(PLATFORM, [deployment(cache={"storage": storage})]) == [
        f"error: sgldeploy:platform.addons.{addon}: must be true: qwen caches weights on {storage} (got false); "
        f"enable the {addon} add-on, or choose another cache.storage"
    ]
    with_driver = {**PLATFORM, "addons": {addon: True}}
    assert lines(with_driver, [deployment(cache={"storage": storage})]) == []


def test_a_replica_across_nodes_needs_the_leader_worker_set(tmp_path):
    secrets = {"hfToken"}  # Llama is gated
    assert lines(PLATFORM, [multi_node()], secrets=secrets) == [
        "error: sgldeploy:platform.addons.leader_worker_set: must be true: big spans 2 nodes per replica "
        "(p5.48xlarge) (got false); enable the LeaderWorkerSet add-on, or choose a placement that fits one node"
    ]
    with_lws = {**PLATFORM, "addons": {"leader_worker_set": True}}
    assert lines(with_lws, [multi_node()], secrets=secrets) == []


def test_a_latency_target_the_placement_misses_is_a_warning_with_the_numbers():
    from sgldeploy.models.lock import read_lock
    from sgldeploy.models.sizing import size
    from sgldeploy.spec.validate import parse_stack

    # A replica always up: no cold start to warn of as well.
    fields = {"slo": {"ttft_p95_seconds": 0.01, "itl_p95_seconds": 10}, "scaling": {"min_replicas": 1}}
    loaded = stack.load(PLATFORM, [deployment(**fields)], LOCK, set(), offline=True)
    dep = parse_stack(None, [deployment(**fields)]).deployments[0]
    sizing = size(dep, read_lock(LOCK)[QWEN_KEY])  # the same placement, sized on its own
    t = sizing.throughput
    assert t is not None and t.estimate.ttft_seconds > 0.01 and t.estimate.itl_seconds < 10
    assert [w.line() for w in loaded.warnings] == [
        f"warning: sgldeploy:deployments[0].slo.ttft_p95_seconds: is 0.01 s, but "
        f"{sizing.placement.instance_type} is modelled at a time to first token of "
        f"{t.estimate.ttft_seconds:.3g} s with 4 requests of 1024 + 256 tokens running; lower "
        "serving.max_concurrency, or choose a faster GPU or more GPUs per replica"
    ]
    met = stack.load(
        PLATFORM,
        [deployment(slo={"ttft_p95_seconds": 60}, scaling={"min_replicas": 1})],
        LOCK,
        set(),
        offline=True,
    )
    assert met.warnings == ()


@pytest.mark.parametrize(
    "ends_at, when",
    [("2027-01-01", None), ("2026-12-31", "in 30 days"), ("2026-12-02", "tomorrow"), ("2026-12-01", "today"),
     ("2026-11-30", "already")],
)  # fmt: skip
def test_a_reservation_ending_within_30_days_is_a_warning(ends_at, when):
    """Today is 2026-12-01 for the tests (SGLDEPLOY_TODAY); 2027-01-01 is 31 days away."""
    from datetime import date

    resources = {"gpu": "H100", "gpu_count": 1, "capacity": "reserved", "reservation": {"ids": ["cr-0a"],
                                                                                        "ends_at": ends_at}}  # fmt: skip
    dep = deployment(resources=resources, scaling={"min_replicas": 1, "max_replicas": 1})
    loaded = stack.load(PLATFORM, [dep], LOCK, set(), offline=True, today=date(2026, 12, 1))
    expected = (
        []
        if when is None
        else [
            f"warning: sgldeploy:deployments[0].resources.reservation.ends_at: is {ends_at}: the reservation "
            f"ends {when}, and its instances are reclaimed with the replicas on them; extend or replace the "
            "reservation, or move the deployment to other capacity before then"
        ]
    )
    assert [w.line() for w in loaded.warnings] == expected


def test_offline_a_gated_model_gets_a_stand_in_token_only_while_none_is_set(tmp_path):
    gated = lock_with(tmp_path, gated=True)
    without = stack.load(PLATFORM, [deployment()], gated, set(), offline=True)
    assert list(without.stand_in_secrets) == ["sgldeploy:hfToken"]
    with_token = stack.load(PLATFORM, [deployment()], gated, {"hfToken"}, offline=True)
    assert with_token.stand_in_secrets == {}
