"""The weight prefetch tool against the loopback Hub: downloads, re-runs, resumes, faults, verification."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from .conftest import ROOT, deployment, render_stack, resources_of, write_stack
from .hub_server import LoopbackHub, Repo
from .test_hub import TOKEN, sharded_model
from .test_sglang_args import SGLANG_PYTHON

sys.path.insert(0, str(ROOT / "sglang_image"))
import prefetch

TOOL = ROOT / "sglang_image" / "prefetch.py"
SHARD_MIB = 128  # two shards: a 268 MB repo, generated once per session


@functools.cache
def big_model(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    rows = SHARD_MIB * 2**20 // (4 * 4096)
    shards = {
        f"model-0000{i}-of-00002.safetensors": save(
            {f"layer{i}.weight": rng.standard_normal((rows, 4096), dtype=np.float32)}
        )
        for i in (1, 2)
    }
    index = {
        "metadata": {},
        "weight_map": {f"layer{i}.weight": f"model-0000{i}-of-00002.safetensors" for i in (1, 2)},
    }
    files = sharded_model()
    for name in list(files):
        if name.endswith(".safetensors"):
            del files[name]
    return {
        **files,
        **shards,
        "model.safetensors.index.json": json.dumps(index).encode(),
        "pytorch_model.bin": b"pickled weights are never fetched",
        "README.md": b"not needed either",
    }


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """In-process runs use 8 MiB chunks, so each shard spans several and resuming has something to skip."""
    monkeypatch.setattr(prefetch, "CHUNK", 8 * 2**20)


@pytest.fixture
def hub_with_model(monkeypatch):
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        files = big_model()
        server.sha = server.add(Repo("org/big")).commit(files)
        server.files = files
        yield server


def run(
    server: LoopbackHub,
    dest: Path,
    repo: str = "org/big",
    revision: str = "main",
    token: str | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_ENDPOINT": server.endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(dest.parent / "hf-home"),
    }
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(TOOL), "--repo", repo, "--revision", revision, "--dest", str(dest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def file_gets(server: LoopbackHub) -> list[str]:
    return [p for m, p in server.requests if m == "GET" and "/resolve/" in p]


def test_fresh_download_is_complete_and_verified(hub_with_model, tmp_path):
    result = run(hub_with_model, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "cache" / "org" / "big" / hub_with_model.sha
    marker = json.loads((target / ".complete").read_text())
    assert marker["repo"] == "org/big" and marker["sha"] == hub_with_model.sha
    fetched = {f["path"] for f in marker["files"]}
    assert "pytorch_model.bin" not in fetched and "README.md" not in fetched
    assert {
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    } <= fetched
    for entry in marker["files"]:
        data = hub_with_model.files[entry["path"]]
        assert (target / entry["path"]).read_bytes() == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    assert not (target / ".partial").exists()
    assert "complete in" in result.stderr and "MB/s" in result.stderr
    assert result.stderr.count("fetched ") == len(fetched)  # one line per file when not on a terminal
    serve = subprocess.run(
        ["sh", str(ROOT / "sglang_image" / "serve.sh"), "echo", "serving"],
        capture_output=True,
        text=True,
        env={**os.environ, "SGLDEPLOY_MODEL_DIR": str(target)},
        timeout=30,
    )
    assert serve.returncode == 0 and serve.stdout == "serving\n"  # the image's entrypoint accepts this cache


def test_second_run_transfers_nothing(hub_with_model, tmp_path):
    assert run(hub_with_model, tmp_path / "cache").returncode == 0
    before = len(file_gets(hub_with_model))
    summary = prefetch.prefetch(
        "org/big", "main", tmp_path / "cache", endpoint=hub_with_model.endpoint, log=lambda line: None
    )
    assert len(file_gets(hub_with_model)) == before
    assert summary["bytes"] == 0 and summary["skipped"] == summary["files"]
    assert summary["seconds"] < 1.0


def test_dropped_connections_and_server_errors_are_retried(hub_with_model, tmp_path):
    hub_with_model.spoil(r"model-00001", times=2, truncate_after=1_000_000)
    hub_with_model.fail(r"model-00002", 503, times=2)
    hub_with_model.fail(r"config\.json", 429, times=1, **{"Retry-After": "0"})
    hub_with_model.fail(r"^/api/models/org/big", 502, times=1)
    waits: list[float] = []
    summary = prefetch.prefetch(
        "org/big",
        "main",
        tmp_path / "cache",
        endpoint=hub_with_model.endpoint,
        log=lambda line: None,
        sleep=waits.append,
    )
    assert summary["files"] == 6 and len(waits) == 6
    assert 0.0 in waits  # Retry-After honoured
    assert (tmp_path / "cache" / "org" / "big" / hub_with_model.sha / ".complete").exists()


def test_an_interrupted_run_resumes_without_refetching_finished_chunks(hub_with_model, tmp_path):
    # Every request for the last chunk of shard 2 is cut short, so the first run gives up (exit 7) ...
    size = len(hub_with_model.files["model-00002-of-00002.safetensors"])
    last = (size - 1) // prefetch.CHUNK
    hub_with_model.spoil(
        r"model-00002", times=prefetch.ATTEMPTS, truncate_after=10, range_start=last * prefetch.CHUNK
    )
    assert run_in_process(hub_with_model, tmp_path) == prefetch.GAVE_UP
    target = tmp_path / "cache" / "org" / "big" / hub_with_model.sha
    assert not (target / ".complete").exists()
    done = json.loads((target / ".partial" / "model-00002-of-00002.safetensors.part.done").read_text())
    assert last not in done and done  # what finished before the failure stayed on disk
    # ... and the next run fetches only that chunk.
    gets_before = len(file_gets(hub_with_model))
    lines: list[str] = []
    summary = prefetch.prefetch(
        "org/big", "main", tmp_path / "cache", endpoint=hub_with_model.endpoint, log=lines.append
    )
    refetched = [p for p in file_gets(hub_with_model)[gets_before:] if "model-00002" in p]
    assert len(refetched) == last + 1 - len(done), "only the missing chunks are fetched again"
    assert any(
        line.startswith(f"resuming model-00002-of-00002.safetensors: {len(done)} of {last + 1}")
        for line in lines
    )
    assert summary["skipped"] >= 1 and (target / ".complete").exists()
    assert (target / "model-00002-of-00002.safetensors").read_bytes() == hub_with_model.files[
        "model-00002-of-00002.safetensors"
    ]


def run_in_process(server: LoopbackHub, tmp_path: Path) -> int:
    try:
        prefetch.prefetch(
            "org/big",
            "main",
            tmp_path / "cache",
            endpoint=server.endpoint,
            log=lambda line: None,
            sleep=lambda s: None,
        )
    except prefetch.PrefetchError as err:
        return err.code
    return prefetch.OK


def test_corrupted_bytes_never_become_complete(hub_with_model, tmp_path):
    hub_with_model.spoil(r"model-00001", times=1, corrupt=True)
    result = run(hub_with_model, tmp_path / "cache")
    assert result.returncode == prefetch.CORRUPT
    assert "model-00001-of-00002.safetensors failed verification: sha256" in result.stderr
    target = tmp_path / "cache" / "org" / "big" / hub_with_model.sha
    assert not (target / ".complete").exists()
    assert not (target / "model-00001-of-00002.safetensors").exists()
    assert run(hub_with_model, tmp_path / "cache").returncode == 0  # the next run starts that file afresh


def test_a_truncated_safetensors_header_is_refused(tmp_path, monkeypatch):
    with LoopbackHub() as server:
        broken = save({"w": np.ones((64, 64), dtype=np.float32)})[:40]  # header cut: the Hub's sha is of this
        server.add(Repo("org/broken")).commit({"config.json": b"{}", "model.safetensors": broken})
        result = run(server, tmp_path / "cache", repo="org/broken")
    assert result.returncode == prefetch.CORRUPT, result.stderr
    assert "model.safetensors failed verification" in result.stderr and "header" in result.stderr


@pytest.mark.parametrize(
    "case, code, fragment",
    [
        ("no token", prefetch.DENIED, "HTTP 401"),
        ("wrong token", prefetch.DENIED, "HTTP 403"),
        ("no repo", prefetch.NOT_FOUND, "not found or private (HTTP 404)"),
        ("no revision", prefetch.NOT_FOUND, "has no revision 'v9'"),
        ("escape", prefetch.UNSAFE, "escapes the cache"),
        ("pickle only", prefetch.NOT_FOUND, "no safetensors weights"),
    ],
)
def test_refusals_fail_at_once_with_one_line(tmp_path, case, code, fragment):
    with LoopbackHub() as server:
        server.add(Repo("meta/gated", gated=True, tokens=(TOKEN,))).commit(sharded_model())
        server.add(Repo("org/ok")).commit(sharded_model())
        server.add(Repo("org/evil")).commit(sharded_model(extra={"../../../etc/cron.d/x": b"boom"}))
        server.add(Repo("org/pickle")).commit({"config.json": b"{}", "pytorch_model.bin": b"x"})
        repo, revision, token = {
            "no token": ("meta/gated", "main", None),
            "wrong token": ("meta/gated", "main", "hf_wrong"),
            "no repo": ("org/missing", "main", TOKEN),
            "no revision": ("org/ok", "v9", None),
            "escape": ("org/evil", "main", None),
            "pickle only": ("org/pickle", "main", None),
        }[case]
        result = run(server, tmp_path / "cache", repo=repo, revision=revision, token=token)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefetch: error: ") and fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stderr and "hf_wrong" not in result.stderr
    assert not list((tmp_path / "cache").rglob(".complete")) if (tmp_path / "cache").exists() else True


def test_gated_model_with_token_downloads(tmp_path):
    with LoopbackHub() as server:
        sha = server.add(Repo("meta/gated", gated=True, tokens=(TOKEN,))).commit(sharded_model())
        result = run(server, tmp_path / "cache", repo="meta/gated", token=TOKEN)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cache" / "meta" / "gated" / sha / ".complete").exists()
    assert TOKEN not in result.stderr
    assert not [
        p for p in (tmp_path / "cache").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()
    ]


def test_bad_arguments_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TOOL), "--repo", "no-slash", "--revision", "main", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == prefetch.BAD_ARGS and "ORG/NAME" in result.stderr
    assert subprocess.run([sys.executable, str(TOOL)], capture_output=True, timeout=60).returncode == 2


def test_a_full_disk_fails_clearly_and_leaves_no_complete(hub_with_model, tmp_path):
    mount = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip() or 'not permitted'})")
    try:
        result = run(hub_with_model, mount)
        assert result.returncode == prefetch.DISK, result.stderr
        assert "No space left on device" in result.stderr
        assert not list(mount.rglob(".complete"))
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_wait_complete_touches_no_network_and_times_out_clearly(hub_with_model, tmp_path):
    dest = tmp_path / "cache"
    sha = hub_with_model.sha
    requests_before = len(hub_with_model.requests)
    with pytest.raises(prefetch.PrefetchError) as err:
        prefetch.wait_complete("org/big", sha, dest, seconds=0, log=lambda line: None)
    assert err.value.code == prefetch.INCOMPLETE and "is not complete after 0 s" in str(err.value)
    assert len(hub_with_model.requests) == requests_before
    assert run(hub_with_model, dest).returncode == 0  # the prefetch Job's run
    done = prefetch.wait_complete("org/big", sha, dest, seconds=0, log=lambda line: None)
    assert done["files"] == 6
    (dest / "org" / "big" / sha / "tokenizer.json").unlink()  # a cache damaged after it was completed
    with pytest.raises(prefetch.PrefetchError) as err:
        prefetch.wait_complete("org/big", sha, dest, seconds=0, log=lambda line: None)
    assert err.value.code == prefetch.CORRUPT and "lacks tokenizer.json" in str(err.value)
    cli = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--repo",
            "org/big",
            "--revision",
            "main",
            "--dest",
            str(dest),
            "--wait-complete",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == prefetch.BAD_ARGS and "40-hex commit" in cli.stderr


def test_the_tool_runs_with_a_read_only_root_filesystem(tmp_path):
    """As the prefetch container runs (readOnlyRootFilesystem: true): only the cache directory is writable, and
    HF_HOME is left at its default under the read-only home."""
    from . import read_only_root

    dest = tmp_path / "models"
    dest.mkdir()
    with LoopbackHub() as server:
        sha = server.add(Repo("org/small")).commit(sharded_model())
        env = {
            "HOME": "/root",
            "PATH": "/usr/bin:/bin",
            "HF_ENDPOINT": server.endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        argv = [sys.executable, str(TOOL), "--repo", "org/small", "--revision", "main", "--dest", str(dest)]
        done = subprocess.run(
            read_only_root.command(argv, [dest], env), capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (dest / "org" / "small" / sha / ".complete").exists()


# ---- the built-in tool, as the stock serving image runs it -------------------------------------------------

HUB_PYTHONS = {
    # huggingface_hub 1.33.0, the last 1.x (httpx): .venv-sglang, beside SGLang 0.5.23 and transformers 5.19.0
    "huggingface_hub-1.33.0": SGLANG_PYTHON,
    # huggingface_hub 2.4.0 (httpx2): the project's, and the newest the image's pins allow (< 3.0)
    "huggingface_hub-2.4.0": sys.executable,
}

ONLY_WHAT_THE_IMAGE_HAS = r"""
import importlib.abc, importlib.metadata as md, runpy, sys
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

def closure(dist, seen):
    if dist in seen:
        return seen
    seen.add(dist)
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**default_environment(), "extra": ""}):
            try:
                closure(canonicalize_name(md.distribution(req.name).metadata["Name"]), seen)
            except md.PackageNotFoundError:
                pass
    return seen

dists = closure("huggingface-hub", set())
owners = md.packages_distributions()
allowed = set(sys.stdlib_module_names) | {
    top for top, names in owners.items() if {canonicalize_name(n) for n in names} & dists
}

class OnlyTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in allowed:
            what = f"{name} is neither the standard library nor huggingface_hub's"
            raise ModuleNotFoundError(what, name=name)
        return None

sys.meta_path.insert(0, OnlyTheImage())
print(f"huggingface_hub {md.version('huggingface-hub')}", file=sys.stderr)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
"""Runs the tool (argv[1]) where only the standard library and huggingface_hub with its own dependencies
import: what the stock image is sure to have. Anything else the interpreter holds (numpy, safetensors) fails."""


@functools.cache
def rendered_prefetch() -> tuple[dict, dict]:
    """The built-in tool as a default stack renders it: the prefetch init container and the tool's ConfigMap."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        plan = render_stack(write_stack(Path(tmp), deployments=[deployment(cache={})]))
    pod = resources_of(plan, "kubernetes:apps/v1:Deployment")[0].inputs["spec"]["template"]["spec"]
    (config_map,) = [
        r.inputs
        for r in resources_of(plan, "kubernetes:core/v1:ConfigMap")
        if r.name.endswith("-prefetch-tool")
    ]
    return pod["initContainers"][0], config_map


@pytest.mark.parametrize("hub", sorted(HUB_PYTHONS))
def test_the_mounted_tool_runs_on_the_image_python_under_each_hub_version(tmp_path, hub):
    """The ConfigMap's bytes, at the mounted path, run with the rendered command (its interpreter swapped for
    one with that huggingface_hub), under a read-only root, importing only what the stock image has; a gated
    repo, a token, a dropped connection and 503s on the way."""
    from . import read_only_root

    python = HUB_PYTHONS[hub]
    if not Path(python).exists():
        pytest.fail(f"no interpreter at {python}; run the tests with `make test`")
    container, config_map = rendered_prefetch()
    *flags, mounted = container["command"]
    assert flags[0] == "python3" and mounted == "/opt/sgldeploy-tool/prefetch.py"
    tool = tmp_path / "tool" / "prefetch.py"  # the ConfigMap as the kubelet mounts it: its data, read-only
    tool.parent.mkdir()
    tool.write_text(config_map["data"]["prefetch.py"], encoding="utf-8")
    tool.chmod(0o444)
    dest = tmp_path / "models"
    dest.mkdir()
    with LoopbackHub() as server:
        sha = server.add(Repo("meta/gated", gated=True, tokens=(TOKEN,))).commit(sharded_model())
        server.spoil(r"model-00001", times=1, truncate_after=1000)
        server.fail(r"model-00002", 503, times=2)
        env = {
            "HOME": "/root",
            "PATH": "/usr/bin:/bin",
            "HF_ENDPOINT": server.endpoint,
            "HF_TOKEN": TOKEN,
            **{e["name"]: e["value"] for e in container["env"] if "value" in e},
        }
        args = ["--repo", "meta/gated", "--revision", "main", "--dest", str(dest)]
        argv = [python, *flags[1:], "-c", ONLY_WHAT_THE_IMAGE_HAS, str(tool), *args]
        done = subprocess.run(
            read_only_root.command(argv, [dest], env), capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"huggingface_hub {hub.partition('-')[2]}" in done.stderr  # the interpreter holds that version
    marker = json.loads((dest / "meta" / "gated" / sha / ".complete").read_text())
    for entry in marker["files"]:
        assert (
            entry["sha256"]
            == hashlib.sha256((dest / "meta" / "gated" / sha / entry["path"]).read_bytes()).hexdigest()
        )
    assert TOKEN not in done.stderr
    assert not list(tool.parent.rglob("__pycache__"))


@pytest.mark.parametrize("hub", sorted(HUB_PYTHONS))
def test_a_corrupt_safetensors_header_is_refused_without_the_safetensors_package(tmp_path, hub):
    """The header check is the format's own, in the standard library: tensors must tile the data."""
    python = HUB_PYTHONS[hub]
    if not Path(python).exists():
        pytest.fail(f"no interpreter at {python}; run the tests with `make test`")
    header = json.dumps(
        {
            "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [20, 28]},
        }
    ).encode()
    broken = len(header).to_bytes(8, "little") + header + bytes(28)  # a 4-byte gap between a and b
    with LoopbackHub() as server:
        files = sharded_model()
        for name in [n for n in files if n.endswith(".safetensors")]:
            files[name] = broken
        server.add(Repo("org/gap")).commit(files)
        env = {
            **os.environ,
            "HF_ENDPOINT": server.endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(tmp_path / "hf"),
        }
        env.pop("HF_TOKEN", None)
        done = subprocess.run(
            [
                python,
                "-I",
                "-B",
                "-c",
                ONLY_WHAT_THE_IMAGE_HAS,
                str(TOOL),
                "--repo",
                "org/gap",
                "--revision",
                "main",
                "--dest",
                str(tmp_path / "cache"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert done.returncode == prefetch.CORRUPT, done.stderr[-2000:]
    assert "starts at data byte 20, expected 16" in done.stderr
    assert not list((tmp_path / "cache").rglob(".complete"))
