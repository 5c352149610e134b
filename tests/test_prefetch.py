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


# ---- verification at its boundaries: what is trusted, what is fetched again ---------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_blob(data: bytes) -> str:
    """git's object id of a blob: sha1 over "blob <size>\\0" and the bytes (git-hash-object)."""
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def _same_size_other_bytes(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


@pytest.fixture
def small_hub():
    with LoopbackHub() as server:
        server.files = sharded_model()
        server.sha = server.add(Repo("org/small")).commit(server.files)
        yield server


def _fetch_small(server: LoopbackHub, dest: Path) -> dict:
    return prefetch.prefetch(
        "org/small", "main", dest, endpoint=server.endpoint, log=lambda line: None, sleep=lambda s: None
    )


def _gets_of(server: LoopbackHub, name: str) -> int:
    return sum(1 for p in file_gets(server) if p.endswith("/" + name))


def test_a_small_file_is_checked_against_its_git_blob_id(tmp_path):
    data = b'{"version": "1.0"}'
    path = tmp_path / "tokenizer.json"
    path.write_bytes(data)
    good = prefetch.RemoteFile("tokenizer.json", len(data), None, _git_blob(data))
    assert prefetch.verify(path, good) == (None, _sha256(data))
    other = _same_size_other_bytes(data)
    path.write_bytes(other)
    problem, sha = prefetch.verify(path, good)
    assert problem == f"git blob {_git_blob(other)[:12]}…, the Hub says {_git_blob(data)[:12]}…"
    assert sha == _sha256(other)


def test_a_small_file_served_corrupt_is_refused_by_its_git_blob(small_hub, tmp_path):
    small_hub.spoil(
        r"tokenizer\.json$", times=1, corrupt=True
    )  # same size, other bytes: only the blob id tells
    with pytest.raises(prefetch.PrefetchError) as err:
        _fetch_small(small_hub, tmp_path / "cache")
    assert err.value.code == prefetch.CORRUPT
    assert "tokenizer.json failed verification: git blob" in str(err.value)
    target = tmp_path / "cache" / "org" / "small" / small_hub.sha
    assert not (target / ".complete").exists() and not (target / "tokenizer.json").exists()


def test_an_lfs_file_is_checked_by_sha256(tmp_path):
    data = save({"w": np.arange(4, dtype=np.float32)})
    path = tmp_path / "model.safetensors"
    path.write_bytes(_same_size_other_bytes(data))
    remote = prefetch.RemoteFile("model.safetensors", len(data), _sha256(data), _git_blob(data))
    problem, _ = prefetch.verify(path, remote)
    assert problem.startswith(
        f"sha256 {_sha256(path.read_bytes())[:12]}…, the Hub says {_sha256(data)[:12]}…"
    )
    path.write_bytes(data)
    assert prefetch.verify(path, remote) == (None, _sha256(data))
    short = prefetch.RemoteFile("model.safetensors", len(data) + 1, _sha256(data), None)
    assert prefetch.verify(path, short)[0] == f"size {len(data)}, the Hub says {len(data) + 1}"


@pytest.mark.parametrize("name", ["tokenizer.json", "model-00002-of-00002.safetensors"])
def test_a_file_present_with_wrong_content_is_fetched_again_not_trusted(small_hub, tmp_path, name):
    """Cached by verification, not by existence: a file already at its place, at its size, with other bytes
    (an earlier run interrupted before `.complete`, a damaged disk) is fetched again."""
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    target = dest / "org" / "small" / small_hub.sha
    (target / ".complete").unlink()
    (target / name).write_bytes(_same_size_other_bytes(small_hub.files[name]))
    before = {n: _gets_of(small_hub, n) for n in small_hub.files}
    summary = _fetch_small(small_hub, dest)
    assert (target / name).read_bytes() == small_hub.files[name]
    assert _gets_of(small_hub, name) > before[name]
    assert all(_gets_of(small_hub, n) == before[n] for n in small_hub.files if n != name)  # the rest verified
    assert summary["skipped"] == summary["files"] - 1
    marker = json.loads((target / ".complete").read_text())
    assert {e["path"]: e["sha256"] for e in marker["files"]} == {
        n: _sha256(small_hub.files[n]) for n in small_hub.files
    }


def test_a_verified_file_is_kept_and_recorded_by_its_bytes(small_hub, tmp_path):
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    target = dest / "org" / "small" / small_hub.sha
    (target / ".complete").unlink()
    gets = len(file_gets(small_hub))
    summary = _fetch_small(small_hub, dest)
    assert len(file_gets(small_hub)) == gets and summary["skipped"] == summary["files"] == len(
        small_hub.files
    )
    marker = json.loads((target / ".complete").read_text())
    assert marker["repo"] == "org/small" and marker["sha"] == small_hub.sha
    assert sorted(marker["files"], key=lambda e: e["path"]) == [
        {"path": n, "size": len(d), "sha256": _sha256(d)} for n, d in sorted(small_hub.files.items())
    ]


# `.complete`: a directory is complete only when its marker lists exactly these files, each on disk at the
# Hub's size, the marker agreeing on the size and (for LFS files) the sha256.


def _cache_with_marker(tmp_path: Path) -> tuple[Path, list, dict]:
    data = {"config.json": b"{}", "model.safetensors": save({"w": np.zeros(3, dtype=np.float16)})}
    target = tmp_path / "c"
    target.mkdir()
    for name, body in data.items():
        (target / name).write_bytes(body)
    files = [
        prefetch.RemoteFile("config.json", 2, None, _git_blob(data["config.json"])),
        prefetch.RemoteFile(
            "model.safetensors", len(data["model.safetensors"]), _sha256(data["model.safetensors"]), None
        ),
    ]
    marker = {
        "repo": "org/x",
        "sha": "a" * 40,
        "files": [{"path": n, "size": len(b), "sha256": _sha256(b)} for n, b in data.items()],
    }
    return target, files, marker


def _entry(marker: dict, name: str) -> dict:
    return next(e for e in marker["files"] if e["path"] == name)


@pytest.mark.parametrize(
    ("case", "complete"),
    [
        ("as written", True),
        ("no marker", False),
        ("not json", False),
        ("no files key", False),
        ("a file missing from the marker", False),
        ("an extra file in the marker", False),
        ("a listed file missing on disk", False),
        ("a file one byte short on disk", False),
        ("a file one byte long on disk", False),
        ("a listed file is a directory", False),
        ("the marker's size one less", False),
        ("the marker's size one more", False),
        ("the marker names another sha256", False),
        ("the marker has no sha256", False),
        ("a small file's sha256 is not the marker's test", True),
    ],
)
def test_complete_only_when_the_marker_matches(tmp_path, case, complete):
    target, files, marker = _cache_with_marker(tmp_path)
    weights = _entry(marker, "model.safetensors")
    if case == "not json":
        text = "{not json"
    else:
        if case == "no files key":
            marker = {"repo": "org/x"}
        elif case == "a file missing from the marker":
            marker["files"] = [weights]
        elif case == "an extra file in the marker":
            marker["files"].append({"path": "tokenizer.json", "size": 2, "sha256": _sha256(b"{}")})
        elif case == "a listed file missing on disk":
            (target / "config.json").unlink()
        elif case == "a file one byte short on disk":
            (target / "config.json").write_bytes(b"{")
        elif case == "a file one byte long on disk":
            (target / "config.json").write_bytes(b"{} ")
        elif case == "a listed file is a directory":
            (target / "config.json").unlink()
            (target / "config.json").mkdir()
        elif case == "the marker's size one less":
            weights["size"] -= 1
        elif case == "the marker's size one more":
            weights["size"] += 1
        elif case == "the marker names another sha256":
            weights["sha256"] = "0" * 64
        elif case == "the marker has no sha256":
            del weights["sha256"]
        elif case == "a small file's sha256 is not the marker's test":
            _entry(marker, "config.json")["sha256"] = "0" * 64  # small files carry no sha256 on the Hub
        text = json.dumps(marker)
    if case != "no marker":
        (target / ".complete").write_text(text)
    assert prefetch.complete_matches(target, files) is complete


def test_a_marker_naming_another_sha256_is_not_trusted_and_is_rewritten(small_hub, tmp_path):
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    target = dest / "org" / "small" / small_hub.sha
    marker = json.loads((target / ".complete").read_text())
    name = "model-00001-of-00002.safetensors"
    _entry(marker, name)["sha256"] = "0" * 64
    (target / ".complete").write_text(json.dumps(marker))
    gets = len(file_gets(small_hub))
    _fetch_small(small_hub, dest)
    assert len(file_gets(small_hub)) == gets  # every file verified on disk, none fetched
    rewritten = json.loads((target / ".complete").read_text())
    assert _entry(rewritten, name)["sha256"] == _sha256(small_hub.files[name])


def test_a_complete_marker_with_a_file_gone_is_refilled(small_hub, tmp_path):
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    target = dest / "org" / "small" / small_hub.sha
    (target / "generation_config.json").unlink()
    summary = _fetch_small(small_hub, dest)
    assert summary["skipped"] == summary["files"] - 1
    assert (target / "generation_config.json").read_bytes() == small_hub.files["generation_config.json"]


# safetensors: 8 bytes little-endian header length N, N bytes of JSON, then the data, which the tensors' offsets
# (relative to the data) must tile exactly (huggingface/safetensors README "Format"; the library's
# `validate` in safetensors/src/tensor.rs).


def _st(header: dict | bytes, data_len: int, *, header_len: int | None = None, trailing: int = 0) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    return n.to_bytes(8, "little") + raw + bytes(data_len + trailing)


def _problem(tmp_path: Path, content: bytes) -> str | None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    return prefetch.safetensors_problem(path)


def _t(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_safetensors_written_by_the_library_pass(tmp_path):
    for arrays in (
        {"a": np.ones((3, 5), dtype=np.float16), "b": np.zeros(7, dtype=np.int64)},
        {"x": np.ones((2, 2), dtype=np.bool_), "y": np.ones(3, dtype=np.uint8), "z": np.ones(1, np.float64)},
        {"empty": np.zeros((0, 4), dtype=np.float32)},
    ):
        assert _problem(tmp_path, save(arrays, metadata={"format": "pt"})) is None


def test_safetensors_header_length_boundary(tmp_path):
    header = json.dumps({}).encode()
    assert _problem(tmp_path, _st(header, 0)) is None  # header exactly to the end of a file with no tensors
    over = len(header) + 1  # one byte past the end
    content = _st(header, 0, header_len=over)
    assert _problem(tmp_path, content) == (
        f"header length {over} runs past the end of the file ({len(content)} bytes)"
    )
    assert _problem(tmp_path, (2**64 - 1).to_bytes(8, "little")).startswith(
        "header length 18446744073709551615"
    )
    assert _problem(tmp_path, b"\x02\x00\x00\x00\x00\x00\x00") == "shorter than a safetensors header"
    assert _problem(tmp_path, b"") == "shorter than a safetensors header"
    assert (
        _problem(tmp_path, bytes(8)) == "header is not valid JSON"
    )  # 8 bytes: a header length, and 0 of JSON


@pytest.mark.parametrize(
    ("header", "data_len", "trailing", "expected"),
    [
        # tiling: contiguous from 0, no overlap, no gap, ending at the file's end
        ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 8, 16)}, 16, 0, None),
        ({"a": _t("F32", [2], 4, 12)}, 12, 0, "tensor 'a' starts at data byte 4, expected 0"),
        (
            {"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 12, 20)},
            20,
            0,
            "tensor 'b' starts at data byte 12, expected 8",
        ),  # a gap
        (
            {"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 4, 12)},
            12,
            0,
            "tensor 'b' starts at data byte 4, expected 8",
        ),  # overlapping
        (
            {"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 7, 15)},
            15,
            0,
            "tensor 'b' starts at data byte 7, expected 8",
        ),  # one byte of overlap
        (
            {"a": _t("F32", [2], 0, 8)},
            8,
            1,
            "tensors end at byte {end}, the file has {size}",
        ),  # one byte over
        ({"a": _t("F32", [2], 0, 8)}, 7, 0, "tensors end at byte {end}, the file has {size}"),  # one short
        ({"__metadata__": {"format": "pt"}, "a": _t("U8", [3], 0, 3)}, 3, 0, None),
        # each tensor as long as its shape and dtype say
        ({"a": _t("F32", [2], 0, 7)}, 7, 0, "tensor 'a': F32 [2] takes 8 bytes, its offsets span 7"),
        ({"a": _t("F32", [2], 0, 9)}, 9, 0, "tensor 'a': F32 [2] takes 8 bytes, its offsets span 9"),
        ({"a": _t("BF16", [2, 3], 0, 12)}, 12, 0, None),
        ({"a": _t("F4", [2], 0, 1)}, 1, 0, None),
        ({"a": _t("F4", [3], 0, 2)}, 2, 0, "tensor 'a': F4 [3] takes 1.5 bytes, its offsets span 2"),
        # a whole number of bytes, not rounded down: 12 bits are not 1 byte, 6 bits are not 0
        ({"a": _t("F4", [3], 0, 1)}, 1, 0, "tensor 'a': F4 [3] takes 1.5 bytes, its offsets span 1"),
        (
            {"a": _t("F6_E3M2", [1], 0, 0)},
            0,
            0,
            "tensor 'a': F6_E3M2 [1] takes 0.75 bytes, its offsets span 0",
        ),
        ({"a": _t("F6_E3M2", [4], 0, 3)}, 3, 0, None),
        (
            {"a": _t("F6_E2M3", [1], 0, 1)},
            1,
            0,
            "tensor 'a': F6_E2M3 [1] takes 0.75 bytes, its offsets span 1",
        ),
        ({"a": _t("F32", [], 0, 4)}, 4, 0, None),  # a scalar: one element
        ({"a": _t("F32", [0, 5], 0, 0)}, 0, 0, None),
        # a dtype the table does not know is checked by its offsets only
        ({"a": _t("F3_NEW", [5], 0, 2)}, 2, 0, None),
        (
            {"a": _t("F3_NEW", [5], 0, 2), "b": _t("U8", [1], 3, 4)},
            4,
            0,
            "tensor 'b' starts at data byte 3, expected 2",
        ),
        # malformed entries
        ({"a": [0, 4]}, 4, 0, "tensor 'a': is not a JSON object"),
        ({"a": _t("U8", [4], 4, 0)}, 4, 0, "tensor 'a': data_offsets is not [begin, end] (got [4, 0])"),
        ({"a": _t("U8", [4], -1, 3)}, 4, 0, "tensor 'a': data_offsets is not [begin, end] (got [-1, 3])"),
        (
            {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, True]}},
            1,
            0,
            "tensor 'a': data_offsets is not [begin, end]",
        ),
        (
            {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0]}},
            1,
            0,
            "tensor 'a': data_offsets is not [begin, end]",
        ),
        (
            {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}},
            1,
            0,
            "tensor 'a': data_offsets is not [begin",
        ),
        (
            {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0.0, 1]}},
            1,
            0,
            "tensor 'a': data_offsets is not [begin",
        ),
        (
            {"a": {"dtype": "U8", "shape": [1]}},
            1,
            0,
            "tensor 'a': data_offsets is not [begin, end] (got None)",
        ),
        ({"a": _t("U8", [-1], 0, 1)}, 1, 0, "tensor 'a': shape is not a list of sizes (got [-1])"),
        ({"a": _t("U8", [True], 0, 1)}, 1, 0, "tensor 'a': shape is not a list of sizes (got [True])"),
        ({"a": _t("U8", 1, 0, 1)}, 1, 0, "tensor 'a': shape is not a list of sizes (got 1)"),
        ({"a": _t(8, [1], 0, 1)}, 1, 0, "tensor 'a': dtype is not a string (got 8)"),
    ],
)
def test_safetensors_structure_checks(tmp_path, header, data_len, trailing, expected):
    content = _st(header, data_len, trailing=trailing)
    if expected is not None and "{end}" in expected:
        n = len(json.dumps(header).encode())
        end = 8 + n + max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
        expected = expected.format(end=end, size=len(content))
    problem = _problem(tmp_path, content)
    assert problem == expected or (expected is not None and problem and problem.startswith(expected))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"{not json", "header is not valid JSON"),
        (b"[1, 2]", "header is not a JSON object"),
        (b"\xff\xfe", None),
    ],
)
def test_safetensors_header_must_be_a_json_object(tmp_path, header, expected):
    problem = _problem(tmp_path, _st(header, 0))
    assert problem == (expected or "header is not valid JSON")


# Bits per element, from the safetensors format (safetensors/src/tensor.rs `Dtype::bitsize`).
FORMAT_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6,
    "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64,
    "U64": 64, "F64": 64, "C64": 64,
}  # fmt: skip


@pytest.mark.parametrize("dtype", sorted(FORMAT_BITS))
def test_each_dtype_takes_its_bytes_exactly(tmp_path, dtype):
    elements = 8  # a whole number of bytes for every width
    size = elements * FORMAT_BITS[dtype] // 8
    for span, ok in ((size - 1, False), (size, True), (size + 1, False)):
        problem = _problem(tmp_path, _st({"t": _t(dtype, [2, 4], 0, span)}, span))
        assert (problem is None) is ok, (dtype, span, problem)
        if not ok:
            assert problem == f"tensor 't': {dtype} [2, 4] takes {size} bytes, its offsets span {span}"


def test_a_safetensors_file_failing_its_structure_is_never_fetched_as_complete(tmp_path):
    overlap = _st({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 4, 12)}, 12)
    with LoopbackHub() as server:
        server.add(Repo("org/overlap")).commit({"config.json": b"{}", "model.safetensors": overlap})
        with pytest.raises(prefetch.PrefetchError) as err:
            prefetch.prefetch("org/overlap", "main", tmp_path / "cache", endpoint=server.endpoint, log=print)
    assert err.value.code == prefetch.CORRUPT
    assert "model.safetensors failed verification: tensor 'b' starts at data byte 4, expected 8" in str(
        err.value
    )
    assert not list((tmp_path / "cache").rglob(".complete"))
    assert not list((tmp_path / "cache").rglob("model.safetensors"))


def test_a_run_that_fails_leaves_no_earlier_complete_behind(small_hub, tmp_path):
    """Once a run finds the cache not complete, the old marker goes first: a pod waiting on `.complete` must
    never start on a cache this run is still (or failed) refilling."""
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    target = dest / "org" / "small" / small_hub.sha
    (target / "tokenizer.json").unlink()
    small_hub.fail(r"tokenizer\.json$", 404, times=1)
    with pytest.raises(prefetch.PrefetchError) as err:
        _fetch_small(small_hub, dest)
    assert err.value.code == prefetch.NOT_FOUND
    assert not (target / ".complete").exists()


def test_wait_complete_refuses_a_listed_file_at_another_size(small_hub, tmp_path):
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    sha, target = small_hub.sha, dest / "org" / "small" / small_hub.sha
    assert prefetch.wait_complete("org/small", sha, dest, seconds=0, log=lambda line: None)["files"] == len(
        small_hub.files
    )
    data = small_hub.files["config.json"]
    for wrong in (data[:-1], data + b" "):  # one byte short, one byte long
        (target / "config.json").write_bytes(wrong)
        with pytest.raises(prefetch.PrefetchError) as err:
            prefetch.wait_complete("org/small", sha, dest, seconds=0, log=lambda line: None)
        assert err.value.code == prefetch.CORRUPT and "lacks config.json" in str(err.value)


# ---- which paths a repo may list, and which files are fetched -------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a\\..\\x",
        "a\0b",
        "a//b",
        "a/",
        "",
        "./config.json",
        "a/./b",
        ".partial/x.part",
        ".complete",
        "sub/.complete",
    ],
)
def test_a_path_escaping_or_shadowing_the_cache_is_unsafe(path):
    with pytest.raises(prefetch.PrefetchError) as err:
        prefetch.safe_relative(path)
    assert err.value.code == prefetch.UNSAFE and "escapes the cache" in str(err.value)


@pytest.mark.parametrize("path", ["config.json", "sub/dir/file.bin", "..config", "a..b/c", ".gitattributes"])
def test_an_ordinary_path_is_safe(path):
    assert prefetch.safe_relative(path) == path


@pytest.mark.parametrize(
    ("path", "fetched"),
    [
        ("model.safetensors", True),
        ("model-00001-of-00002.safetensors", True),
        ("tokenizer.json", True),
        ("qwen.tiktoken", True),
        ("original/model.safetensors", False),  # only the top level: SGLang loads nothing from subfolders
        ("onnx/tokenizer.json", False),
        ("pytorch_model.bin", False),
        ("model.safetensors.bak", False),
        ("README.md", False),
    ],
)
def test_only_top_level_weights_and_config_are_wanted(path, fetched):
    assert prefetch.wanted(path) is fetched


@pytest.mark.parametrize(
    ("repo", "sha"),
    [
        ("org/..", "a" * 40),
        ("../name", "a" * 40),
        ("org/na..me", "a" * 40),
        ("org/name", "a" * 39),
        ("org/name", "A" * 40),
        ("org/name", "../" + "a" * 37),
        ("-org/name", "a" * 40),
        ("org/-name", "a" * 40),
        ("org/.name", "a" * 40),
        ("org/na me", "a" * 40),
    ],
)
def test_a_cache_path_is_built_from_validated_parts_only(tmp_path, repo, sha):
    with pytest.raises(prefetch.PrefetchError) as err:
        prefetch.cache_dir(tmp_path, repo, sha)
    assert err.value.code == prefetch.UNSAFE


def test_a_cache_path_is_dest_org_name_sha(tmp_path):
    assert prefetch.cache_dir(
        tmp_path, "Org.1/my_model-v2", "0" * 40
    ) == tmp_path / "Org.1" / "my_model-v2" / ("0" * 40)
