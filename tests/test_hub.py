"""Model resolution and the lock, with the real `huggingface_hub` client against a loopback Hub."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save

from sgldeploy.models import hub
from sgldeploy.models.lock import read_lock

from .conftest import ROOT
from .hub_server import LoopbackHub, Repo

TOKEN = "hf_test_token_with_access"
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
    "torch_dtype": "bfloat16",
}
NO_WAIT = hub.Retry(attempts=4, sleep=lambda seconds: None)


def sharded_model(config: dict = CONFIG, extra: dict | None = None) -> dict[str, bytes]:
    """A small model in two real safetensors shards with an index, a config and a tokenizer."""
    shard1 = save(
        {
            "model.embed_tokens.weight": np.zeros((1000, 256), dtype=np.float16),
            "model.layers.0.mlp.up_proj.weight": np.ones((512, 256), dtype=np.float16),
        }
    )
    shard2 = save({"lm_head.weight": np.zeros((1000, 256), dtype=np.float32)})
    index = {
        "metadata": {"total_size": len(shard1) + len(shard2)},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        },
    }
    files = {
        "config.json": json.dumps(config).encode(),
        "model-00001-of-00002.safetensors": shard1,
        "model-00002-of-00002.safetensors": shard2,
        "model.safetensors.index.json": json.dumps(index).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        "generation_config.json": b"{}",
    }
    return {**files, **(extra or {})}


@pytest.fixture
def loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        server.cache = str(tmp_path / "hf-cache")  # the client reads HF_HOME at import: pass it explicitly
        yield server


def resolve(server: LoopbackHub, repo: str, revision: str = "main", token: str | None = None) -> dict:
    return hub.resolve(
        repo, revision, token=token, endpoint=server.endpoint, retry=NO_WAIT, cache_dir=server.cache
    )


def refused(server: LoopbackHub, repo: str, revision: str = "main", token: str | None = None) -> hub.HubError:
    with pytest.raises(hub.HubError) as err:
        resolve(server, repo, revision, token)
    return err.value


def test_resolves_branch_to_commit_with_files_parameters_and_config(loopback):
    repo = loopback.add(Repo("org/tiny"))
    files = sharded_model()
    sha = repo.commit(files)
    repo.refs["v1.0"] = sha
    entry = resolve(loopback, "org/tiny")
    assert entry["sha"] == sha and entry["revision"] == "main" and entry["source"] == "hub"
    assert resolve(loopback, "org/tiny", "v1.0")["sha"] == sha
    assert resolve(loopback, "org/tiny", sha)["sha"] == sha
    # Parameter counts by dtype from the safetensors headers: 1000×256 + 512×256 in F16, 1000×256 in F32.
    assert entry["parameters_by_dtype"] == {"F16": 256_000 + 131_072, "F32": 256_000}
    assert entry["parameters"] == 643_072
    by_path = {f["path"]: f for f in entry["files"]}
    shard = files["model-00001-of-00002.safetensors"]
    assert by_path["model-00001-of-00002.safetensors"]["sha256"] == hashlib.sha256(shard).hexdigest()
    assert by_path["model-00001-of-00002.safetensors"]["size"] == len(shard)
    assert by_path["config.json"]["sha256"] is None and by_path["config.json"]["blob_id"]
    assert entry["safetensors_bytes"] == len(shard) + len(files["model-00002-of-00002.safetensors"])
    assert entry["config"]["num_key_value_heads"] == 2 and entry["config"]["head_dim"] == 32
    assert entry["dtype"] == "bfloat16" and entry["pipeline_tag"] == "text-generation"
    assert entry["gated"] is False and entry["custom_code"] is False
    weights = [p for m, p in loopback.requests if m == "GET" and p.endswith(".safetensors")]
    assert weights, "headers are read with ranged GETs"
    assert all(sha in p for m, p in loopback.requests if "/resolve/" in p), "files are read by commit"


def test_custom_code_is_detected(loopback):
    loopback.add(Repo("org/auto-map")).commit(sharded_model({**CONFIG, "auto_map": {"AutoModel": "m.Model"}}))
    loopback.add(Repo("org/modeling")).commit(sharded_model(extra={"modeling_custom.py": b"import os\n"}))
    assert resolve(loopback, "org/auto-map")["custom_code"] is True
    assert resolve(loopback, "org/modeling")["custom_code"] is True


def test_quantized_and_multimodal_configs(loopback):
    quantized = {**CONFIG, "quantization_config": {"quant_method": "fp8"}}
    loopback.add(Repo("org/fp8")).commit(sharded_model(quantized))
    assert resolve(loopback, "org/fp8")["config"]["quantization_method"] == "fp8"
    vlm = {"architectures": ["Qwen2VLForConditionalGeneration"], "text_config": CONFIG}
    loopback.add(Repo("org/vlm", pipeline_tag="image-text-to-text")).commit(sharded_model(vlm))
    assert resolve(loopback, "org/vlm")["config"]["num_hidden_layers"] == 4


@pytest.mark.parametrize(
    "files, tag, fragment",
    [
        ({"config.json": b"{}", "pytorch_model.bin": b"pickle"}, "text-generation", "only pickle files"),
        ({"config.json": b"{}"}, "text-generation", "has no safetensors weights"),
        (None, None, "pipeline tag none"),
        (None, "text-to-image", "pipeline tag text-to-image"),
    ],
)
def test_refusals(loopback, files, tag, fragment):
    loopback.add(Repo("org/bad", pipeline_tag=tag)).commit(files or sharded_model())
    err = refused(loopback, "org/bad")
    assert fragment in err.problem.what and err.problem.fix


def test_path_escape_is_refused(loopback):
    loopback.add(Repo("org/evil")).commit(sharded_model(extra={"../../etc/evil.safetensors": b"x"}))
    assert "escapes its directory" in refused(loopback, "org/evil").problem.what


def test_gated_without_and_with_token(loopback):
    loopback.add(Repo("meta/gated", gated=True, tokens=(TOKEN,))).commit(sharded_model())
    err = refused(loopback, "meta/gated")
    assert "is gated" in err.problem.what and "HTTP 401" in err.problem.what
    assert (
        "pulumi config set --secret sgldeploy:hfToken" in err.problem.fix
        and "accept the licence" in err.problem.fix
    )
    wrong = refused(loopback, "meta/gated", token="hf_someone_else")
    assert "HTTP 403" in wrong.problem.what
    entry = resolve(loopback, "meta/gated", token=TOKEN)
    assert entry["gated"] is True
    assert TOKEN not in json.dumps(entry)


def test_private_and_missing_repos_and_revisions(loopback):
    loopback.add(Repo("org/private", private=True, tokens=(TOKEN,))).commit(sharded_model())
    assert "HTTP 401" in refused(loopback, "org/private").problem.what
    loopback.add(Repo("org/real")).commit(sharded_model())
    missing = refused(loopback, "org/nothing-here", token=TOKEN)
    assert "does not exist on the Hub (HTTP 404)" in missing.problem.what
    assert "has no revision of that name" in refused(loopback, "org/real", "no-such-branch").problem.what


@pytest.mark.parametrize("status, headers", [(503, {}), (502, {}), (429, {"Retry-After": "7"}), (0, {})])
def test_transient_faults_are_retried_then_succeed(loopback, status, headers):
    loopback.add(Repo("org/flaky")).commit(sharded_model())
    loopback.fail(r"^/api/models/org/flaky", status, times=2, **headers)
    waits: list[float] = []
    entry = hub.resolve(
        "org/flaky",
        "main",
        endpoint=loopback.endpoint,
        retry=hub.Retry(attempts=4, sleep=waits.append),
        cache_dir=loopback.cache,
    )
    assert entry["parameters"] == 643_072
    assert len(waits) == 2
    if "Retry-After" in headers:
        assert waits == [7.0, 7.0]  # the server's Retry-After, not our own backoff
    else:
        assert waits == [1.0, 2.0]  # exponential backoff


def test_permanent_failure_names_repo_and_what_was_tried(loopback):
    loopback.add(Repo("org/down")).commit(sharded_model())
    loopback.fail(r"^/api/models/org/down", 503, times=100)
    err = refused(loopback, "org/down")
    assert err.problem.what == "gave up on org/down after 4 attempts at model_info: HTTP 503"


# ---- the lock command ---------------------------------------------------------------------------


def stack_for(tmp_path: Path, repo: str, revision: str = "main", environment: str = "development") -> Path:
    deployment = {
        "name": "tiny",
        "model": {"repo": repo, "revision": revision},
        "resources": {"gpu": "L4", "gpu_count": 1},
        "serving": {"max_concurrency": 4},
        "cache": {"storage": "none"},
    }
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "sgldeploy:platform": {"environment": environment, "cluster": {"name": "x"}},
                    "sgldeploy:deployments": [deployment],
                }
            }
        )
    )
    return path


def cli(server: LoopbackHub, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "sgldeploy")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_lock_writes_a_stable_lock_and_plans_use_it(loopback, tmp_path):
    sha = loopback.add(Repo("org/tiny")).commit(sharded_model())
    stack = stack_for(tmp_path, "org/tiny")
    first = cli(loopback, "lock", "--config", str(stack))
    assert first.returncode == 0, first.stderr
    assert f"org/tiny@main → {sha}" in first.stdout
    lock_file = tmp_path / "models.lock.json"
    written = lock_file.read_bytes()
    assert read_lock(lock_file)["org/tiny@main"].sha == sha
    again = cli(loopback, "lock", "--config", str(stack))
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert lock_file.read_bytes() == written, "re-locking with nothing changed must change no byte"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".models.lock")], "no temporary file left"
    before = len(loopback.requests)
    plan = cli(loopback, "plan", "--config", str(stack), "--json", str(tmp_path / "plan.json"))
    assert plan.returncode == 0, plan.stderr
    assert len(loopback.requests) == before, "plans never touch the network"
    deployment = json.loads((tmp_path / "plan.json").read_text())["deployments"][0]
    assert deployment["sha"] == sha and deployment["placement"]["instance_type"] == "g6.xlarge"


def test_lock_check_reports_a_moved_branch(loopback, tmp_path):
    repo = loopback.add(Repo("org/moving"))
    old_sha = repo.commit(sharded_model())
    stack = stack_for(tmp_path, "org/moving")
    assert cli(loopback, "lock", "--config", str(stack)).returncode == 0
    steady = cli(loopback, "lock", "--check", "--config", str(stack))
    assert steady.returncode == 0 and "0 moved" in steady.stdout
    new_sha = repo.commit(sharded_model(extra={"README.md": b"new"}))
    drift = cli(loopback, "lock", "--check", "--config", str(stack))
    assert drift.returncode == 1
    assert drift.stderr.splitlines() == [  # at the field that names the branch
        f"drift: sgldeploy:deployments[0].model.revision: org/moving@main moved: locked {old_sha}, now "
        f"{new_sha}; review the change, then run sgldeploy lock (or pin revision: {new_sha})"
    ]


def test_lock_failures_are_one_line_each(loopback, tmp_path):
    loopback.add(Repo("meta/gated", gated=True, tokens=(TOKEN,))).commit(sharded_model())
    result = cli(loopback, "lock", "--config", str(stack_for(tmp_path, "meta/gated")))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: sgldeploy:deployments[0].model.repo: meta/gated is gated")
    assert not (tmp_path / "models.lock.json").exists(), "nothing written on failure"


def test_custom_code_model_needs_trust_remote_code_to_plan(loopback, tmp_path):
    loopback.add(Repo("org/custom")).commit(sharded_model({**CONFIG, "auto_map": {"AutoModel": "m.M"}}))
    stack = stack_for(tmp_path, "org/custom")
    assert cli(loopback, "lock", "--config", str(stack)).returncode == 0
    result = cli(loopback, "validate", "--config", str(stack))
    assert result.returncode == 2
    assert "sgldeploy:deployments[0].model.trust_remote_code: must be true" in result.stderr


def test_production_branch_is_refused_with_the_commit_to_pin(loopback, tmp_path):
    sha = loopback.add(Repo("org/tiny")).commit(sharded_model())
    stack = stack_for(tmp_path, "org/tiny", environment="production")
    assert cli(loopback, "lock", "--config", str(stack)).returncode == 0
    result = cli(loopback, "validate", "--config", str(stack))
    assert result.returncode == 2
    assert (
        f"must be a 40-hex commit in a production stack (got 'main'); pin the commit the branch or tag "
        f"resolves to; it is locked at {sha}" in result.stderr
    )


def test_preview_resolves_a_model_missing_from_the_lock_and_warns(loopback, tmp_path, monkeypatch):
    from sgldeploy.offline.engine import run_program
    from sgldeploy.offline.render import PROGRAM
    from sgldeploy.spec.stackfile import read_stack_file

    sha = loopback.add(Repo("org/tiny")).commit(sharded_model())
    monkeypatch.setenv("HF_ENDPOINT", loopback.endpoint)  # as `pulumi preview` would run with it set
    monkeypatch.setenv("HF_HUB_CACHE", loopback.cache)
    stack = read_stack_file(stack_for(tmp_path, "org/tiny"))
    config = {**stack.config, "sgldeploy:lockFile": str(tmp_path / "models.lock.json")}  # no lock at all
    recording = run_program(PROGRAM, "sgldeploy", stack.stack, config, stack.secret_keys)
    warnings = [message for level, message in recording.log if level == "warning"]
    assert any(
        "org/tiny@main is not in models.lock.json" in w and sha in w and "sgldeploy lock" in w
        for w in warnings
    ), recording.log
    deployment = next(r for r in recording.resources if r.type == "kubernetes:apps/v1:Deployment")
    args = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--revision") + 1] == sha


def test_offline_mode_is_not_retried_as_a_network_failure(loopback, monkeypatch):
    import huggingface_hub.constants

    loopback.add(Repo("org/tiny")).commit(sharded_model())
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", True
    )  # what HF_HUB_OFFLINE=1 sets at import
    waits: list[float] = []
    with pytest.raises(hub.HubError) as err:
        hub.resolve("org/tiny", "main", endpoint=loopback.endpoint, retry=hub.Retry(sleep=waits.append))
    assert err.value.problem.what == "HF_HUB_OFFLINE is set, so org/tiny cannot be resolved on the Hub"
    assert "sgldeploy lock --from-cache DIR" in err.value.problem.fix
    assert waits == [] and loopback.requests == [], "no request, no retry"


def test_lock_check_is_offline_aware_and_names_a_damaged_entry(loopback, tmp_path):
    sha = loopback.add(Repo("org/tiny")).commit(sharded_model())
    stack = stack_for(tmp_path, "org/tiny")
    assert cli(loopback, "lock", "--config", str(stack)).returncode == 0
    offline = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "sgldeploy"),
            "lock",
            "--check",
            "--config",
            str(stack),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_ENDPOINT": loopback.endpoint, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert offline.returncode == 2
    assert offline.stderr.startswith("error: HF_HUB_OFFLINE: is set, so the Hub cannot be reached to resolve")
    lock_file = tmp_path / "models.lock.json"
    lock = json.loads(lock_file.read_text())
    del lock["models"]["org/tiny@main"]["config"]["num_attention_heads"]
    lock_file.write_text(json.dumps(lock))
    damaged = cli(loopback, "lock", "--check", "--config", str(stack))
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr
    assert damaged.stderr.startswith(
        f'error: {lock_file}: models["org/tiny@main"].config.num_attention_heads: is missing'
    )
    relocked = cli(loopback, "lock", "--config", str(stack))  # a damaged entry is resolved again
    assert relocked.returncode == 0 and f"org/tiny@main → {sha}" in relocked.stdout
    assert read_lock(lock_file)["org/tiny@main"].num_attention_heads == 8


# ---- in-process paths (mutation testing sees only the code a test runs in its own process) --------------


@pytest.mark.parametrize(
    "experts, expected",
    [
        ({"num_local_experts": 8, "num_experts_per_tok": 2}, 8),  # Mixtral-8x7B's config.json
        ({"num_experts": 60, "num_experts_per_tok": 4}, 60),  # Qwen1.5-MoE-A2.7B's
        ({"n_routed_experts": 256, "num_experts_per_tok": 8}, 256),  # DeepSeek-V3's
        ({}, None),  # a dense model
    ],
)
def test_the_expert_count_is_read_under_each_name_the_families_use(loopback, experts, expected):
    loopback.add(Repo("org/moe")).commit(sharded_model({**CONFIG, **experts}))
    assert resolve(loopback, "org/moe")["config"]["num_experts"] == expected


def test_lock_check_retries_as_it_is_told(loopback, tmp_path):
    from sgldeploy.models import lock_stack
    from sgldeploy.spec.problems import InvalidInput
    from sgldeploy.spec.stackfile import read_stack_file

    loopback.add(Repo("org/tiny")).commit(sharded_model())
    stack = read_stack_file(stack_for(tmp_path, "org/tiny"))
    lock_stack.lock(stack, endpoint=loopback.endpoint, retry=NO_WAIT)
    loopback.fail(r"^/api/models/org/tiny", 503, times=1000)
    asked, waits = len(loopback.requests), []
    with pytest.raises(InvalidInput) as err:
        lock_stack.check(
            stack,
            endpoint=loopback.endpoint,
            retry=hub.Retry(attempts=3, first_delay=0.5, sleep=waits.append),
        )
    assert waits == [0.5, 1.0], "two waits between three attempts, doubling from first_delay"
    assert len([p for _, p in loopback.requests[asked:] if p.startswith("/api/models/org/tiny")]) == 3
    [problem] = err.value.problems
    assert problem.path == "sgldeploy:deployments[0].model.repo" and problem.got == "org/tiny"


def test_a_file_refused_with_http_401_names_the_token_fix(loopback):
    """A 401 on a file (no Hub error code, so the client raises its plain HTTP error, not RepoNotFound) is
    a token problem, not a fault to retry or a traceback."""
    loopback.add(Repo("org/tiny")).commit(sharded_model())
    loopback.fail(r"/resolve/.*/config\.json$", 401, times=100)
    err = refused(loopback, "org/tiny")
    assert (err.problem.what, err.problem.fix) == ("org/tiny cannot be read (HTTP 401)", hub.TOKEN_FIX)


def test_current_sha_asks_the_hub_that_hf_endpoint_names(loopback):
    """HF_ENDPOINT is read at call time (the client read it once at import, when it named a closed port)."""
    repo = loopback.add(Repo("org/moving"))
    first = repo.commit(sharded_model())
    assert hub.current_sha("org/moving", "main", retry=NO_WAIT) == first
    second = repo.commit(sharded_model(extra={"README.md": b"new"}))
    assert hub.current_sha("org/moving", "main", retry=NO_WAIT) == second
    assert [p for m, p in loopback.requests if m == "GET" and p.startswith("/api/models/org/moving")]


def test_lock_check_judges_every_deployment_past_a_pinned_or_failing_one(loopback, tmp_path):
    from sgldeploy.models import lock_stack
    from sgldeploy.spec.problems import InvalidInput
    from sgldeploy.spec.stackfile import read_stack_file

    from .test_lock_from_cache import stack_file

    pinned = loopback.add(Repo("org/pinned")).commit(sharded_model())
    moving = loopback.add(Repo("org/moving"))
    old = moving.commit(sharded_model())
    loopback.add(Repo("org/broken")).commit(sharded_model())
    first = tmp_path / "first"
    first.mkdir()
    everything = [("org/pinned", pinned), ("org/moving", "main"), ("org/broken", "main")]
    lock_stack.lock(read_stack_file(stack_file(first, everything)), endpoint=loopback.endpoint, retry=NO_WAIT)
    new = moving.commit(sharded_model(extra={"README.md": b"new"}))

    # A commit cannot move: the branch after it is still compared.
    two = read_stack_file(stack_file(first, [("org/pinned", pinned), ("org/moving", "main")]))
    assert lock_stack.check(two, endpoint=loopback.endpoint, retry=NO_WAIT).drift == [
        f"sgldeploy:deployments[1].model.revision: org/moving@main moved: locked {old}, now {new}; review the "
        f"change, then run sgldeploy lock (or pin revision: {new})"
    ]
    # An entry not locked and a Hub that fails are each a problem, and neither stops the rest.
    loopback.fail(r"^/api/models/org/broken", 503, times=1000)
    failing = [("org/absent", "main"), ("org/broken", "main"), ("org/absent2", "main")]
    with pytest.raises(InvalidInput) as err:
        lock_stack.check(
            read_stack_file(stack_file(first, failing)), endpoint=loopback.endpoint, retry=NO_WAIT
        )
    assert [(p.path, p.got) for p in err.value.problems] == [
        ("sgldeploy:deployments[0].model.revision", "main"),
        ("sgldeploy:deployments[1].model.repo", "org/broken"),
        ("sgldeploy:deployments[2].model.revision", "main"),
    ]
