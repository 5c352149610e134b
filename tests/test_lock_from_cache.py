"""`sgldeploy lock --from-cache`: models onboarded from a Hugging Face cache with no network; damaged lock
entries named by entry and field; pinned entries kept; offline mode reported as offline.

The caches are written by the real client (`hf_hub_download` against the loopback Hub), so their layout is
huggingface_hub's own, not a guess of it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from huggingface_hub import constants, hf_hub_download

from sgldeploy import cli
from sgldeploy.models import hf_cache, hub, lock_stack
from sgldeploy.spec.stackfile import read_stack_file

from .conftest import ROOT
from .hub_server import LoopbackHub, Repo, git_blob_id
from .test_cli import run_cli
from .test_hub import CONFIG, NO_WAIT, sharded_model

CARD = b"---\nlicense: apache-2.0\npipeline_tag: text-generation\n---\n# Tiny\n"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
# Parameters by dtype in sharded_model(), counted from the arrays it saves: 1000×256 + 512×256 F16, 1000×256 F32.
EXPECTED_PARAMETERS = {"F16": 1000 * 256 + 512 * 256, "F32": 1000 * 256}


@pytest.fixture
def loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home-of-the-test"))
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        server.cache = str(tmp_path / "hub-path-cache")  # where hub.resolve keeps config.json
        yield server


def model_files(
    config: dict[str, Any] = CONFIG, card: bytes | None = CARD, **extra: bytes
) -> dict[str, bytes]:
    files = sharded_model(config, extra)
    if card is not None:
        files["README.md"] = card
    return files


def download(server: LoopbackHub, repo: str, names: list[str], cache: Path, revision: str = "main") -> None:
    """Fill `cache` as a user's `hf download` would: the client's own layout (refs, snapshots, blobs)."""
    for name in names:
        hf_hub_download(repo, name, revision=revision, cache_dir=str(cache), endpoint=server.endpoint)


def cached_tiny(server: LoopbackHub, cache: Path) -> str:
    """org/tiny committed on the loopback Hub and downloaded whole into `cache`, as a user's `hf download`
    would: its commit."""
    files = model_files()
    sha = server.add(Repo("org/tiny")).commit(files)
    download(server, "org/tiny", sorted(files), cache)
    return sha


def closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now


def offline_env() -> dict[str, str]:
    """No network: the endpoint is a closed port and the client is in offline mode."""
    return {
        **os.environ,
        "HF_ENDPOINT": closed_port_endpoint(),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def sgldeploy_script(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script with no network, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "sgldeploy")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env=offline_env(), cwd=ROOT, timeout=120
    )


def sgldeploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sgldeploy ARGS` in-process under `env` (default: no network), so mutation testing sees the code each
    test runs. huggingface_hub reads HF_HUB_OFFLINE once, at import: it is set here as the client keeps it."""
    env = env or offline_env()
    offline = constants._is_true(env.get("HF_HUB_OFFLINE"))
    with (
        mock.patch.dict(os.environ, env, clear=True),
        mock.patch.object(constants, "HF_HUB_OFFLINE", offline),
    ):
        return run_cli(*args)


def stack_file(directory: Path, models: list[tuple[str, str]]) -> Path:
    deployments = [
        {
            "name": f"m{i}",
            "model": {"repo": repo, "revision": revision},
            "resources": {"gpu": "L4", "gpu_count": 1},
            "serving": {"max_concurrency": 4},
            "cache": {"storage": "none"},
        }
        for i, (repo, revision) in enumerate(models)
    ]
    platform = {"environment": "development", "cluster": {"name": "x"}}
    path = directory / "Pulumi.test.yaml"
    config = {"sgldeploy:platform": platform, "sgldeploy:deployments": deployments}
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def locked(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "models.lock.json").read_text())["models"]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- resolving from a cache ----------------------------------------------------------------------


def test_lock_from_cache_with_no_network_gives_the_hub_entry(loopback, tmp_path):
    files = model_files()
    sha = loopback.add(Repo("org/tiny")).commit(files)
    hf_home = tmp_path / "hf-home"
    download(loopback, "org/tiny", sorted(files), hf_home / "hub")
    from_hub = hub.resolve(
        "org/tiny", "main", endpoint=loopback.endpoint, retry=NO_WAIT, cache_dir=loopback.cache
    )
    stack = stack_file(tmp_path, [("org/tiny", "main")])
    before = len(loopback.requests)

    result = sgldeploy_script("lock", "--config", str(stack), "--from-cache", str(hf_home))  # HF_HOME: hub/

    assert result.returncode == 0, result.stderr
    assert len(loopback.requests) == before, "nothing may reach the Hub"
    assert f"org/tiny@main → {sha} (local-cache)" in result.stdout
    assert result.stderr.startswith(
        "warning: sgldeploy:deployments[0].model.repo: whether org/tiny is gated is unknown offline"
    ), result.stderr
    assert "pulumi config set --secret sgldeploy:hfToken" in result.stderr
    entry = locked(tmp_path)["org/tiny@main"]
    assert entry["source"] == "local-cache" and entry["gated"] is None and entry["sha"] == sha
    assert entry["parameters_by_dtype"] == EXPECTED_PARAMETERS
    assert entry["parameters"] == sum(EXPECTED_PARAMETERS.values())
    assert entry["pipeline_tag"] == "text-generation"  # from the card's front matter
    by_path = {f["path"]: f for f in entry["files"]}
    assert sorted(by_path) == sorted(files)
    for name, data in files.items():  # the blob's name is the client's etag: sha256 for LFS, else git blob id
        lfs = name.endswith(".safetensors")
        assert by_path[name]["size"] == len(data)
        assert by_path[name]["sha256"] == (hashlib.sha256(data).hexdigest() if lfs else None)
        assert by_path[name]["blob_id"] == (None if lfs else git_blob_id(data))
    # The same facts as the Hub path, bar what a cache cannot know (gating) or names differently.
    same = {k: v for k, v in entry.items() if k not in ("source", "gated", "files")}
    assert same == {k: v for k, v in from_hub.items() if k not in ("source", "gated", "files")}

    plan = sgldeploy("plan", "--config", str(stack), "--json", str(tmp_path / "plan.json"))
    assert plan.returncode == 0, plan.stderr
    assert json.loads((tmp_path / "plan.json").read_text())["deployments"][0]["sha"] == sha
    assert "(local-cache)" in plan.stdout


def test_a_model_not_in_the_lock_names_the_offline_fix_and_that_fix_works(loopback, tmp_path):
    cached_tiny(loopback, tmp_path / "hub")
    stack = stack_file(tmp_path, [("org/tiny", "main")])

    refused = sgldeploy("validate", "--config", str(stack))
    assert refused.returncode == 2
    assert errors(refused.stderr) == [
        "error: sgldeploy:deployments[0].model.revision: org/tiny@main is not in models.lock.json (got 'main'); "
        "run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock --from-cache DIR` to resolve it from "
        "a Hugging Face cache without the Hub"
    ]
    before = len(loopback.requests)
    assert sgldeploy("lock", "--config", str(stack), "--from-cache", str(tmp_path / "hub")).returncode == 0
    assert sgldeploy("validate", "--config", str(stack)).returncode == 0  # the fix it named, offline
    assert len(loopback.requests) == before, "nothing may reach the Hub"


def test_branch_and_tag_resolve_through_refs_and_a_commit_through_snapshots(loopback, tmp_path):
    repo = loopback.add(Repo("org/tiny"))
    files = model_files()
    old = repo.commit(files)
    repo.refs["v1.0"] = old
    new = repo.commit(model_files(config={**CONFIG, "num_hidden_layers": 6}))
    cache = tmp_path / "cache"
    download(loopback, "org/tiny", sorted(files), cache, revision="v1.0")
    download(loopback, "org/tiny", sorted(files), cache, revision="main")
    download(loopback, "org/tiny", ["config.json"], cache, revision=old)  # by commit: no ref is written
    assert sorted(p.name for p in (cache / "models--org--tiny" / "refs").iterdir()) == ["main", "v1.0"]

    assert hf_cache.resolve(cache, "org/tiny", "v1.0")["sha"] == old
    main = hf_cache.resolve(cache, "org/tiny", "main")
    assert main["sha"] == new and main["config"]["num_hidden_layers"] == 6
    by_commit = hf_cache.resolve(cache, "org/tiny", old)
    assert by_commit["sha"] == old and by_commit["revision"] == old
    with pytest.raises(hub.HubError) as no_ref:
        hf_cache.resolve(cache, "org/tiny", "v2.0")
    assert "has no ref 'v2.0' in the cache" in no_ref.value.problem.what and old in no_ref.value.problem.what
    with pytest.raises(hub.HubError) as no_snapshot:
        hf_cache.resolve(cache, "org/tiny", "f" * 40)
    assert "has no snapshot in the cache" in no_snapshot.value.problem.what
    with pytest.raises(hub.HubError) as absent:
        hf_cache.resolve(cache, "org/other", "main")
    assert "org/other is not in the Hugging Face cache" in absent.value.problem.what
    assert "hf download org/other --revision main" in absent.value.problem.fix


def test_a_partial_snapshot_gives_one_line_per_missing_file(loopback, tmp_path):
    files = model_files()
    sha = loopback.add(Repo("org/tiny")).commit(files)
    cache = tmp_path / "cache"
    download(loopback, "org/tiny", [n for n in sorted(files) if n != "config.json"], cache)
    shard = cache / "models--org--tiny" / "snapshots" / sha / SHARD_2
    (shard.parent / os.readlink(shard)).unlink()  # its blob deleted: the snapshot's link dangles
    stack = stack_file(tmp_path, [("org/tiny", "main")])

    result = sgldeploy("lock", "--config", str(stack), "--from-cache", str(cache))

    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = errors(result.stderr)
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(
        f"error: sgldeploy:deployments[0].model.repo: org/tiny@{sha[:12]} in the cache"
    )
    assert (
        "lacks config.json" in lines[0] and "hf download org/tiny config.json --revision " + sha in lines[0]
    )
    assert f"lacks {SHARD_2}" in lines[1] and f"hf download org/tiny {SHARD_2}" in lines[1]
    assert not (tmp_path / "models.lock.json").exists()


def test_a_damaged_safetensors_header_is_one_line(loopback, tmp_path):
    cache = tmp_path / "cache"
    sha = cached_tiny(loopback, cache)
    shard = cache / "models--org--tiny" / "snapshots" / sha / SHARD_1
    shard.resolve().write_bytes(b"\xff" * 16)
    with pytest.raises(hub.HubError) as err:
        hf_cache.resolve(cache, "org/tiny", "main")
    assert f"cached {SHARD_1} has an unreadable safetensors header" in err.value.problem.what
    assert err.value.problem.fix == "download the file again (delete its blob first) to repair the cache"


def test_a_partial_snapshot_names_the_commit_by_its_first_12_hex_in_process(loopback, tmp_path):
    """The lines of the subprocess test above, from the function itself (so mutation testing sees them)."""
    files = model_files()
    sha = loopback.add(Repo("org/tiny")).commit(files)
    cache = tmp_path / "cache"
    download(loopback, "org/tiny", [n for n in sorted(files) if n not in ("config.json", SHARD_2)], cache)
    with pytest.raises(hf_cache.MissingFiles) as err:
        hf_cache.resolve(cache, "org/tiny", "main")
    assert [(e.problem.what, e.problem.fix) for e in err.value.errors] == [
        (
            f"org/tiny@{sha[:12]} in the cache {cache} lacks {name} (a partial snapshot)",
            f"download it with `hf download org/tiny {name} --revision {sha} --cache-dir {cache}`",
        )
        for name in ("config.json", SHARD_2)
    ]


def test_an_entry_from_a_cache_warns_that_gating_is_unknown_in_process(loopback, tmp_path):
    cache = tmp_path / "hf-home" / "hub"
    sha = cached_tiny(loopback, cache)
    stack = read_stack_file(stack_file(tmp_path, [("org/tiny", "main")]))
    report = lock_stack.lock(stack, from_cache=cache)
    assert report.written == [f"org/tiny@main → {sha} (local-cache)"] and report.problems == []
    assert [w.line() for w in report.warnings] == [
        "warning: sgldeploy:deployments[0].model.repo: whether org/tiny is gated is unknown offline (a local "
        'cache does not record it; the entry says "gated": null); if it is gated, set the token with '
        "`pulumi config set --secret sgldeploy:hfToken hf_…` before `pulumi up`, or run `sgldeploy lock "
        "--refresh` where the Hub is reachable"
    ]


@pytest.mark.parametrize(
    "files, tag",
    [
        ({"config.json": b"{}", "pytorch_model.bin": b"pickle", "README.md": CARD}, "text-generation"),
        (model_files(card=b"---\nlicense: mit\n---\n"), None),
        (model_files(card=b"---\npipeline_tag: text-to-image\n---\n"), "text-to-image"),
    ],
    ids=["pickle-only", "no-pipeline-tag", "unservable-pipeline"],
)
def test_cache_refusals_are_the_hub_paths(loopback, tmp_path, files, tag):
    loopback.add(Repo("org/bad", pipeline_tag=tag)).commit(files)
    cache = tmp_path / "cache"
    download(loopback, "org/bad", sorted(files), cache)
    with pytest.raises(hub.HubError) as from_hub:
        hub.resolve("org/bad", "main", endpoint=loopback.endpoint, retry=NO_WAIT, cache_dir=loopback.cache)
    with pytest.raises(hub.HubError) as from_cache:
        hf_cache.resolve(cache, "org/bad", "main")
    assert (from_cache.value.problem.what, from_cache.value.problem.fix) == (
        from_hub.value.problem.what,
        from_hub.value.problem.fix,
    )


def test_custom_code_from_a_cache_needs_trust_remote_code(loopback, tmp_path):
    files = model_files(config={**CONFIG, "auto_map": {"AutoModel": "m.M"}})
    loopback.add(Repo("org/custom")).commit(files)
    cache = tmp_path / "cache"
    download(loopback, "org/custom", sorted(files), cache)
    stack = stack_file(tmp_path, [("org/custom", "main")])
    assert sgldeploy("lock", "--config", str(stack), "--from-cache", str(cache)).returncode == 0
    assert locked(tmp_path)["org/custom@main"]["custom_code"] is True
    result = sgldeploy("validate", "--config", str(stack))
    assert result.returncode == 2
    assert "sgldeploy:deployments[0].model.trust_remote_code: must be true" in result.stderr


# ---- pinned entries, partial success, offline mode -----------------------------------------------


def test_pinned_entries_are_kept_unless_refreshed_and_one_failure_does_not_block_the_rest(loopback, tmp_path):
    a = loopback.add(Repo("org/a")).commit(model_files())
    loopback.add(Repo("org/b")).commit(model_files())
    loopback.add(Repo("org/c")).commit(model_files())

    def run(models: list[tuple[str, str]], refresh: bool = False) -> lock_stack.LockReport:
        stack = read_stack_file(stack_file(tmp_path, models))
        return lock_stack.lock(stack, endpoint=loopback.endpoint, retry=NO_WAIT, refresh=refresh)

    assert run([("org/a", a)]).written == [f"org/a@{a} → {a} (hub)"]
    loopback.fail(r"^/api/models/org/a", 503, times=1000)  # org/a cannot be reached from now on
    asked = len(loopback.requests)
    kept = run([("org/a", a), ("org/b", "main")])
    assert kept.problems == [] and kept.kept == [f"org/a@{a} (pinned; --refresh resolves it again)"]
    assert [line.split(" → ")[0] for line in kept.written] == ["org/b@main"]
    assert not [p for _, p in loopback.requests[asked:] if "org/a" in p], "a pinned entry needs no request"

    refreshed = run([("org/a", a), ("org/b", "main"), ("org/c", "main")], refresh=True)
    assert [p.line().split(": ")[1] for p in refreshed.problems] == ["sgldeploy:deployments[0].model.repo"]
    assert "gave up on org/a" in refreshed.problems[0].what
    assert {"org/a@" + a, "org/b@main", "org/c@main"} <= set(locked(tmp_path)), "the rest is written"


def test_offline_mode_is_one_line_not_a_network_failure(loopback, tmp_path):
    sha = loopback.add(Repo("org/tiny")).commit(model_files())
    stack = stack_file(tmp_path, [("org/tiny", "main")])
    env = {**os.environ, "HF_ENDPOINT": loopback.endpoint, "HF_HUB_OFFLINE": "1"}

    result = sgldeploy("lock", "--config", str(stack), env=env)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors(result.stderr) == [
        "error: HF_HUB_OFFLINE: is set, so the Hub cannot be reached to resolve org/tiny@main (got '1'); "
        "unset HF_HUB_OFFLINE to lock from the Hub, or lock from a local Hugging Face cache with "
        "`sgldeploy lock --from-cache DIR`"
    ]
    assert loopback.requests == [], "offline: no request, no retries"
    pinned = stack_file(tmp_path, [("org/tiny", sha)])
    online = sgldeploy("lock", "--config", str(pinned), env={**env, "HF_HUB_OFFLINE": "0"})
    assert online.returncode == 0, online.stderr
    again = sgldeploy("lock", "--config", str(pinned), env=env)  # everything pinned: nothing needs the Hub
    assert again.returncode == 0 and "kept org/tiny@" in again.stdout, again.stderr


# ---- damaged lock entries ------------------------------------------------------------------------

QWEN = "Qwen/Qwen2.5-7B-Instruct@a09a35458c702b33eeacc393d103063234e8bc28"


def _delete(*path: str) -> Any:
    def apply(entry: dict[str, Any]) -> None:
        target = entry
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return apply


def _set(value: Any, *path: str) -> Any:
    def apply(entry: dict[str, Any]) -> None:
        target = entry
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return apply


DAMAGE = [
    ("no-layers", [_delete("config", "num_hidden_layers")], ["config.num_hidden_layers: is missing"]),
    (
        "parameters-text",
        [_set("7B", "parameters")],
        ["parameters: must be the parameter count as a JSON integer (got '7B')"],
    ),
    (
        "parameters-bool",
        [_set(True, "parameters")],
        ["parameters: must be the parameter count as a JSON integer (got true)"],
    ),
    ("short-sha", [_set("abc", "sha")], ["sha: must be a 40-hex commit (got 'abc')"]),
    (
        "zero-heads",
        [_set(0, "config", "num_attention_heads")],
        ["config.num_attention_heads: must be a positive integer"],
    ),
    (
        "config-list",
        [_set([], "config")],
        ["config: must be an object of config.json fields (got a list of 0)"],
    ),
    ("gated-text", [_set("yes", "gated")], ["gated: must be true, false or null (unknown) (got 'yes')"]),
    (
        "bad-source",
        [_set("hand", "source")],
        ["source: must be one of hub, local-cache, public-facts (got 'hand')"],
    ),
    (
        "no-size",
        [_delete("config", "hidden_size"), _delete("config", "head_dim")],
        ["config.hidden_size: is missing"],
    ),
    ("no-repo", [_delete("repo")], ["repo: is missing"]),
    (
        "two-faults",
        [_set("7B", "parameters"), _delete("config", "num_hidden_layers")],
        ["parameters: must be", "config.num_hidden_layers: is missing"],
    ),
]


def damaged_stack(tmp_path: Path, damage: list[Any]) -> Path:
    for name in ("Pulumi.dev.yaml", "models.lock.json"):
        shutil.copy(ROOT / "stacks" / name, tmp_path / name)
    lock = json.loads((tmp_path / "models.lock.json").read_text())
    entry = copy.deepcopy(lock["models"][QWEN])
    for apply in damage:
        apply(entry)
    lock["models"][QWEN] = entry
    (tmp_path / "models.lock.json").write_text(json.dumps(lock))
    return tmp_path / "Pulumi.dev.yaml"


@pytest.mark.parametrize("damage, fields", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_lock_entry_is_one_line_per_field_naming_the_entry(tmp_path, capsys, damage, fields):
    stack = damaged_stack(tmp_path, damage)
    assert cli.main(["validate", "--config", str(stack)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    prefix = f'error: {tmp_path / "models.lock.json"}: models["{QWEN}"].'
    assert len(lines) == len(fields), err
    for line, field in zip(lines, fields, strict=True):
        assert line.startswith(prefix + field), line
        assert line.count("sgldeploy lock --refresh") == 1, line  # the fix, once


def test_an_entry_that_is_not_an_object_and_a_misnamed_key_are_named(tmp_path, capsys):
    stack = damaged_stack(tmp_path, [])
    lock = json.loads((tmp_path / "models.lock.json").read_text())
    lock["models"][QWEN] = "7B"
    (tmp_path / "models.lock.json").write_text(json.dumps(lock))
    assert cli.main(["validate", "--config", str(stack)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {tmp_path / 'models.lock.json'}: models[\"{QWEN}\"]: must be an object (got '7B'); re-create"
    )


@pytest.mark.parametrize("damage, fields", [DAMAGE[0][1:], DAMAGE[1][1:]], ids=[DAMAGE[0][0], DAMAGE[1][0]])
def test_plan_reports_a_damaged_entry_like_validate(tmp_path, damage, fields):
    stack = damaged_stack(tmp_path, damage)
    result = sgldeploy("plan", "--config", str(stack))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = errors(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f'error: {tmp_path / "models.lock.json"}: models["{QWEN}"].{fields[0]}')


def test_a_damaged_entry_of_another_stack_does_not_block_this_one(tmp_path, capsys):
    stack = damaged_stack(tmp_path, [])
    lock = json.loads((tmp_path / "models.lock.json").read_text())
    lock["models"]["org/unused@main"] = {"repo": "org/unused"}
    (tmp_path / "models.lock.json").write_text(json.dumps(lock))
    assert cli.main(["validate", "--config", str(stack)]) == 0, capsys.readouterr().err


def test_an_entry_keyed_by_another_model_is_named(tmp_path, capsys):
    stack = damaged_stack(tmp_path, [_set("main", "revision")])  # the key says the commit, the entry "main"
    assert cli.main(["validate", "--config", str(stack)]) == 2
    assert capsys.readouterr().err.startswith(
        f'error: {tmp_path / "models.lock.json"}: models["{QWEN}"]: is keyed by another repo@revision than it '
        "holds (got Qwen/Qwen2.5-7B-Instruct@main); key it by its repo@revision"
    )


def test_an_entry_without_a_dtype_is_read_as_bfloat16():
    """A lock entry's dtype is optional (DESIGN.md: the checkpoint's torch_dtype); missing, it is bfloat16,
    the dtype SGLang serves a checkpoint in when its config names none."""
    from sgldeploy.models.lock import LockedModel, read_lock_entries

    key, entry = next(iter(read_lock_entries(ROOT / "stacks" / "models.lock.json").items()))
    without = {k: v for k, v in entry.items() if k != "dtype"}
    assert LockedModel.from_entry(without, key).dtype == "bfloat16"
    assert LockedModel.from_entry({**without, "dtype": None}, key).dtype == "bfloat16"
    assert LockedModel.from_entry({**without, "dtype": "float16"}, key).dtype == "float16"


def test_a_damaged_weights_index_in_the_cache_names_the_repo(loopback, tmp_path):
    cache = tmp_path / "cache"
    sha = cached_tiny(loopback, cache)
    index = cache / "models--org--tiny" / "snapshots" / sha / "model.safetensors.index.json"
    index.resolve().write_bytes(b"{not json")
    with pytest.raises(hub.HubError) as err:
        hf_cache.resolve(cache, "org/tiny", "main")
    assert (err.value.problem.what, err.value.problem.fix) == (
        "org/tiny's cached model.safetensors.index.json cannot be read as JSON (JSONDecodeError)",
        "download the file again (delete its blob first) to repair the cache",
    )


def test_safetensors_sgl_cannot_load_beside_pickle_weights_are_refused_like_the_hub_refuses_them(
    loopback, tmp_path
):
    """An adapter in safetensors beside pickle weights: complete as a snapshot, but no model.safetensors
    and no index for SGLang to load; the cache names the repo as the Hub path does."""
    files = {"config.json": b"{}", "README.md": CARD, "pytorch_model.bin": b"pickle"}
    files["adapter_model.safetensors"] = sharded_model()[SHARD_2]
    loopback.add(Repo("org/adapter")).commit(files)
    cache = tmp_path / "cache"
    download(loopback, "org/adapter", sorted(files), cache)
    with pytest.raises(hub.HubError) as from_cache:
        hf_cache.resolve(cache, "org/adapter", "main")
    assert (from_cache.value.problem.what, from_cache.value.problem.fix) == (
        "org/adapter has no model.safetensors or model.safetensors.index.json",
        "choose a repo whose weights SGLang loads as safetensors",
    )
    with pytest.raises(hub.HubError) as from_hub:
        hub.resolve(
            "org/adapter", "main", endpoint=loopback.endpoint, retry=NO_WAIT, cache_dir=loopback.cache
        )
    assert from_hub.value.problem.what == from_cache.value.problem.what


@pytest.mark.parametrize(
    "extra, line",
    [
        (
            ["--from-cache", "{tmp}/absent"],
            "error: --from-cache: is not a directory (got '{tmp}/absent'); pass the Hugging Face cache "
            "(HF_HUB_CACHE, e.g. ~/.cache/huggingface/hub)",
        ),
        (
            ["--from-cache", "{tmp}/a-file"],
            "error: --from-cache: is not a directory (got '{tmp}/a-file'); pass the Hugging Face cache "
            "(HF_HUB_CACHE, e.g. ~/.cache/huggingface/hub)",
        ),
        (
            ["--check", "--from-cache", "{tmp}"],
            "error: --check: compares the lock with the Hub and writes nothing, so it takes neither "
            "--from-cache nor --refresh; drop them, or drop --check",
        ),
        (
            ["--check", "--refresh"],
            "error: --check: compares the lock with the Hub and writes nothing, so it takes neither "
            "--from-cache nor --refresh; drop them, or drop --check",
        ),
    ],
    ids=["absent", "a-file", "check-with-cache", "check-with-refresh"],
)
def test_lock_options_that_cannot_work_are_one_line_and_touch_nothing(tmp_path, extra, line):
    (tmp_path / "a-file").write_text("")
    stack = stack_file(tmp_path, [("org/tiny", "main")])
    result = sgldeploy("lock", "--config", str(stack), *(a.format(tmp=tmp_path) for a in extra))
    assert (result.returncode, result.stderr.strip(), result.stdout) == (2, line.format(tmp=tmp_path), "")
    assert not (tmp_path / "models.lock.json").exists()


def test_lock_prints_each_entry_written_or_kept_then_the_lock_file(loopback, tmp_path):
    cache = tmp_path / "hub"
    sha = cached_tiny(loopback, cache)
    lock_file = tmp_path / "models.lock.json"
    stack = stack_file(tmp_path, [("org/tiny", "main")])

    first = sgldeploy("lock", "--config", str(stack), "--from-cache", str(cache))
    assert (first.returncode, first.stdout) == (
        0,
        f"org/tiny@main → {sha} (local-cache)\nwrote {lock_file}\n",
    )
    again = sgldeploy(
        "lock", "--config", str(stack_file(tmp_path, [("org/tiny", sha)])), "--from-cache", str(cache)
    )
    assert (again.returncode, again.stdout) == (
        0,
        f"org/tiny@{sha} → {sha} (local-cache)\nwrote {lock_file}\n",
    )
    pinned = sgldeploy(
        "lock", "--config", str(stack_file(tmp_path, [("org/tiny", sha)])), "--from-cache", str(cache)
    )
    assert (pinned.returncode, pinned.stdout) == (
        0,
        f"kept org/tiny@{sha} (pinned; --refresh resolves it again)\nunchanged {lock_file}\n",
    )
