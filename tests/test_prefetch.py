"""The weight prefetch tool against the loopback Hub: downloads, re-runs, resumes, faults, verification."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from safetensors.numpy import save

# By its package path, as mutmut names the tool's functions (sglang_image.prefetch.x_...): the mutants it
# activates are then the functions these tests call.
from sglang_image import prefetch

from .conftest import ROOT, deployment, render_stack, resources_of, write_stack
from .hub_server import LoopbackHub, Repo
from .test_hub import TOKEN, sharded_model
from .test_sglang_args import SGLANG_PYTHON

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


def test_second_run_transfers_nothing_and_reads_each_file_at_most_once(hub_with_model, tmp_path, monkeypatch):
    assert run(hub_with_model, tmp_path / "cache").returncode == 0
    before = len(file_gets(hub_with_model))
    hashed: list[str] = []
    real_digest = prefetch.digest
    monkeypatch.setattr(
        prefetch, "digest", lambda path, **kw: hashed.append(path.name) or real_digest(path, **kw)
    )

    def rerun() -> dict:
        return prefetch.prefetch(
            "org/big", "main", tmp_path / "cache", endpoint=hub_with_model.endpoint, log=lambda line: None
        )

    summary = rerun()  # the marker matches the commit's files: nothing is read
    assert (summary["bytes"], summary["skipped"], hashed) == (0, summary["files"], [])
    marker = tmp_path / "cache" / "org" / "big" / hub_with_model.sha / ".complete"
    recorded = marker.read_text()
    marker.unlink()  # without it every file is verified from disk, each read once
    summary = rerun()
    assert (summary["bytes"], summary["skipped"]) == (0, summary["files"])
    assert len(hashed) == len(set(hashed)) == summary["files"]
    assert marker.read_text() == recorded  # the sha256 verifying gave is the one recorded
    assert len(file_gets(hub_with_model)) == before


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


# (repo, revision, token) of each refusal, on the Hub refusing_hub() serves
REFUSED = {
    "no token": ("meta/gated", "main", None),
    "wrong token": ("meta/gated", "main", "hf_wrong"),
    "no repo": ("org/missing", "main", TOKEN),
    "no revision": ("org/ok", "v9", None),
    "escape": ("org/evil", "main", None),
    "pickle only": ("org/pickle", "main", None),
    "not org/name": ("org/ok/x", "main", None),
}


@contextlib.contextmanager
def refusing_hub() -> Iterator[LoopbackHub]:
    """A Hub with a gated repo, a servable one, one listing a path that escapes the cache, one of pickles only."""
    with LoopbackHub() as server:
        server.add(Repo("meta/gated", gated=True, tokens=(TOKEN,))).commit(sharded_model())
        server.add(Repo("org/ok")).commit(sharded_model())
        server.add(Repo("org/evil")).commit(sharded_model(extra={"../../../etc/cron.d/x": b"boom"}))
        server.add(Repo("org/pickle")).commit({"config.json": b"{}", "pytorch_model.bin": b"x"})
        yield server


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
    with refusing_hub() as server:
        repo, revision, token = REFUSED[case]
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
    # discarded whole: neither its bytes nor its record of finished chunks is left for a later run to resume
    assert not (target / ".partial" / "tokenizer.json.part").exists()
    assert not (target / ".partial" / "tokenizer.json.part.done").exists()


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
        # sizes are exact integers: past 2**53 bytes a float would round (2**53 + 1 to 2**53), so a tensor whose
        # offsets do span its size is judged by where it ends, not refused for a size it has
        (
            {"a": _t("U8", [2**53 + 1], 0, 2**53 + 1)},
            0,
            0,
            "tensors end at byte {end}, the file has {size}",
        ),
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


# ---- the command line, in process: what main() reads, prints and returns --------------------------------------
# (The subprocess runs above prove the script; these run main() where mutation testing can reach it.)


def _main(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = prefetch.main(list(argv))
    return code, capsys.readouterr().err


ACCEPT_THE_LICENCE = "accept the licence on the Hub and give a token with access (HF_TOKEN)"


def _args(dest: Path, repo: str = "org/small", revision: str = "main") -> list[str]:
    return ["--repo", repo, "--revision", revision, "--dest", str(dest)]


@pytest.mark.parametrize(
    ("case", "code", "line"),
    [
        # the Hub lists a gated repo to anyone and denies its files: one worker takes them in order
        ("no token", 3, f"meta/gated denied config.json (HTTP 401): {ACCEPT_THE_LICENCE}"),
        ("wrong token", 3, f"meta/gated denied config.json (HTTP 403): {ACCEPT_THE_LICENCE}"),
        ("no repo", 4, "org/missing not found or private (HTTP 404); check the id and HF_TOKEN"),
        ("no revision", 4, "org/ok has no revision 'v9' (HTTP 404)"),
        ("escape", 8, "the repo lists a file path that escapes the cache: '../../../etc/cron.d/x'"),
        ("pickle only", 4, "the repo has no safetensors weights at this revision"),
        ("not org/name", 2, "--repo must be ORG/NAME (got 'org/ok/x')"),
    ],
)
def test_main_refuses_with_the_exit_code_and_one_line(tmp_path, monkeypatch, capsys, case, code, line):
    with refusing_hub() as server:
        repo, revision, token = REFUSED[case]
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        got, err = _main(capsys, *_args(tmp_path / "cache", repo, revision), "--workers", "1")
        resolved = sum(1 for _, path in server.requests if path.startswith("/api/models/"))
        denied = _gets_of(server, "config.json")
    # (the loopback Hub's threads may print a dropped connection to the same stderr: only the tool's lines count)
    assert got == code and [x for x in err.splitlines() if x.startswith("prefetch")] == [
        f"prefetch: error: {line}"
    ]
    assert resolved <= 1 and denied <= 1  # at once: a refusal is never retried
    assert not list(tmp_path.rglob(".complete"))


def test_main_fetches_logs_each_file_and_reports_a_rerun_as_verified(
    small_hub, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HF_ENDPOINT", small_hub.endpoint)
    code, err = _main(capsys, *_args(tmp_path / "cache"), "--workers", "2")
    target = tmp_path / "cache" / "org" / "small" / small_hub.sha
    assert code == 0 and (target / ".complete").exists()
    names = sorted(small_hub.files)
    for name in names:
        assert f"fetched {name} ({len(small_hub.files[name]) / 1e6:.1f} MB)\n" in err
    total = sum(len(data) for data in small_hub.files.values())
    summary = [line for line in err.splitlines() if line.startswith("prefetch:")][-1]
    assert summary.startswith(
        f"prefetch: org/small@{small_hub.sha} complete in {target}: {len(names)} files (0 already verified), "
        f"{total / 1e6:.1f} MB in "
    )
    code, err = _main(capsys, *_args(tmp_path / "cache"))
    (summary,) = [line for line in err.splitlines() if line.startswith("prefetch:")]
    assert code == 0 and "fetched" not in err
    assert summary.startswith(
        f"prefetch: org/small@{small_hub.sha} complete in {target}: {len(names)} files "
        f"({len(names)} already verified), 0.0 MB in "
    )
    assert summary.endswith(" s (0 MB/s)")


@pytest.fixture
def fake_prefetch(monkeypatch):
    """prefetch() replaced: it records what main() passed and returns (or raises) what a test sets."""
    calls: list[dict] = []
    outcome: dict = {"summary": None, "raise": None, "log": []}

    def fake(repo, revision, dest, *, workers, log):
        calls.append({"repo": repo, "revision": revision, "dest": dest, "workers": workers})
        for line in outcome["log"]:
            log(line)
        if outcome["raise"] is not None:
            raise outcome["raise"]
        return outcome["summary"]

    monkeypatch.setattr(prefetch, "prefetch", fake)
    return calls, outcome


def _summary(**fields) -> dict:
    return {"repo": "org/x", "sha": "c" * 40, "path": "/cache/org/x", "files": 3, "skipped": 1, **fields}


@pytest.mark.parametrize(
    ("fetched", "seconds", "tail"),
    [
        (5_000_000, 2.0, "5.0 MB in 2.00 s (2 MB/s)"),
        (123_456_789, 0.5, "123.5 MB in 0.50 s (247 MB/s)"),
        (0, 0.0, "0.0 MB in 0.00 s (0 MB/s)"),  # nothing timed: no rate, and no division by zero
        (1_000_000, 0.0, "1.0 MB in 0.00 s (0 MB/s)"),
    ],
)
def test_main_prints_the_summary_line(fake_prefetch, capsys, fetched, seconds, tail):
    _, outcome = fake_prefetch
    outcome["summary"] = _summary(bytes=fetched, seconds=seconds)
    outcome["log"] = ["fetched a (1.0 MB)"]
    code, err = _main(capsys, *_args(Path("/d"), "org/x"))
    assert code == prefetch.OK
    assert err == (
        "fetched a (1.0 MB)\n"
        f"prefetch: org/x@{'c' * 40} complete in /cache/org/x: 3 files (1 already verified), {tail}\n"
    )


@pytest.mark.parametrize(
    ("flag", "workers"),
    [([], prefetch.WORKERS), (["--workers", "0"], 1), (["--workers", "1"], 1), (["--workers", "3"], 3)],
)
def test_main_passes_the_arguments_and_at_least_one_worker(fake_prefetch, capsys, flag, workers):
    calls, outcome = fake_prefetch
    outcome["summary"] = _summary(bytes=0, seconds=0.0)
    assert _main(capsys, *_args(Path("/d"), "org/x", "v1"), *flag)[0] == 0
    assert calls == [{"repo": "org/x", "revision": "v1", "dest": Path("/d"), "workers": workers}]


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (prefetch.PrefetchError(prefetch.GAVE_UP, "gave up"), prefetch.GAVE_UP, "prefetch: error: gave up"),
        (
            OSError(13, "Permission denied"),
            prefetch.DISK,
            "prefetch: error: cannot use /d: Permission denied",
        ),
        (OSError("no strerror"), prefetch.DISK, "prefetch: error: cannot use /d: no strerror"),
        (KeyboardInterrupt(), 130, "prefetch: interrupted; run again to resume"),
    ],
)
def test_main_turns_failures_into_an_exit_code_and_one_line(fake_prefetch, capsys, raised, code, line):
    _, outcome = fake_prefetch
    outcome["raise"] = raised
    assert _main(capsys, *_args(Path("/d"), "org/x")) == (code, line + "\n")


@pytest.fixture
def fake_wait(monkeypatch):
    calls: list[tuple] = []
    outcome: dict = {"done": None, "raise": None}

    def fake(repo, sha, dest, seconds, log):
        calls.append((repo, sha, dest, seconds))
        log("waiting for it")
        if outcome["raise"] is not None:
            raise outcome["raise"]
        return outcome["done"]

    monkeypatch.setattr(prefetch, "wait_complete", fake)
    return calls, outcome


def test_main_wait_complete_fetches_nothing_and_reports(fake_wait, fake_prefetch, capsys):
    calls, outcome = fake_wait
    outcome["done"] = {"path": "/cache/org/x/" + "c" * 40, "files": 4}
    code, err = _main(capsys, *_args(Path("/d"), "org/x", "c" * 40), "--wait-complete", "2.5")
    assert (
        code == prefetch.OK
        and err == f"waiting for it\nprefetch: /cache/org/x/{'c' * 40} is complete (4 files)\n"
    )
    assert calls == [("org/x", "c" * 40, Path("/d"), 2.5)]
    assert fake_prefetch[0] == []  # nothing fetched
    outcome["raise"] = prefetch.PrefetchError(prefetch.INCOMPLETE, "not complete")
    assert _main(capsys, *_args(Path("/d"), "org/x", "c" * 40), "--wait-complete", "0") == (
        prefetch.INCOMPLETE,
        "waiting for it\nprefetch: error: not complete\n",
    )
    assert calls[-1][3] == 0.0


def test_the_parser_states_its_contract():
    parser = prefetch.build_parser()
    assert (
        parser.description
        == "Fetch exactly the files SGLang needs for one model commit, verified, into DEST/ORG/NAME/SHA/."
    )
    args = parser.parse_args(_args(Path("/d"), "org/x"))
    assert (args.repo, args.revision, args.dest, args.workers, args.wait_complete) == (
        "org/x",
        "main",
        Path("/d"),
        prefetch.WORKERS,
        None,
    )
    for missing in ("--repo", "--revision", "--dest"):
        argv = _args(Path("/d"))
        at = argv.index(missing)
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv[:at] + argv[at + 2 :])
        assert exit_.value.code == prefetch.BAD_ARGS
    text = " ".join(parser.format_help().split())
    for phrase in (
        "--repo REPO Hugging Face repo id, ORG/NAME",
        "--revision REVISION branch, tag or commit; resolved to the commit first",
        "--dest DEST cache root; files land in DEST/ORG/NAME/SHA/",
        f"--workers WORKERS parallel ranged requests (default {prefetch.WORKERS})",
        "--wait-complete SECONDS fetch nothing: wait up to SECONDS for another run to complete this commit's "
        "cache (exit 9 if it does not)",
    ):
        assert phrase in text


def test_weights_are_hashed_as_their_chunks_land_and_never_read_again(hub_with_model, tmp_path, monkeypatch):
    """An LFS file's sha256 is fed from its chunks as they arrive (or caught up, in order, as they land out of
    order), so its verification reads nothing a second time: digest() is never called on a weights file."""
    read_again: list[str] = []
    real_digest = prefetch.digest

    def digest(path: Path, blob_id: bool = True) -> tuple[str, str]:
        read_again.append(path.name)
        return real_digest(path, blob_id)

    monkeypatch.setattr(prefetch, "digest", digest)
    prefetch.prefetch(
        "org/big",
        "main",
        tmp_path / "cache",
        workers=4,
        endpoint=hub_with_model.endpoint,
        log=lambda line: None,
    )
    assert (tmp_path / "cache" / "org" / "big" / hub_with_model.sha / ".complete").exists()
    assert "config.json.part" in read_again  # small files are checked by their git blob id, read once more
    assert not [name for name in read_again if name.endswith(".safetensors.part")]


# ---- what goes over the wire: each chunk's request, redirects, short bodies, retries and their backoff ----------


class RecordingHub(LoopbackHub):
    """The loopback Hub that also keeps each file GET's headers, can redirect file GETs (as the Hub sends LFS
    files to its CDN) and can end a ranged body early but cleanly: half the bytes, with a Content-Length that
    matches them, so no transport error tells the client."""

    def __init__(self) -> None:
        self.file_headers: list[tuple[str, dict[str, str]]] = []  # (path, headers, lower-cased names)
        self.redirect: str | None = None  # a pattern of file paths answered with a 302 to themselves
        self.short_bodies: dict[str, int] = {}  # a pattern of file paths -> how many bodies to cut short
        super().__init__()

    def _handler(self):
        hub, base = self, super()._handler()

        class Handler(base):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if "/resolve/" in url.path:
                    hub.file_headers.append((url.path, {k.lower(): v for k, v in self.headers.items()}))
                    if hub.redirect and not url.query and re.search(hub.redirect, url.path):
                        self._reply(302, b"", {"Location": f"{url.path}?from=hub"})
                        return
                super().do_GET()

            def _reply(self, status, data=b"", headers=None, body=True, length=None) -> None:
                with hub.lock:
                    pattern = next(
                        (p for p, n in hub.short_bodies.items() if n > 0 and re.search(p, self.path)), None
                    )
                    if status == 206 and pattern is not None:
                        hub.short_bodies[pattern] -= 1
                        data = data[: len(data) // 2]
                super()._reply(status, data, headers, body, length)

        return Handler


@pytest.fixture
def recording_hub():
    with RecordingHub() as server:
        server.files = sharded_model()
        server.sha = server.add(Repo("org/small")).commit(server.files)
        yield server


def _fetch_recording(server: LoopbackHub, dest: Path, waits: list[float] | None = None, **kwargs) -> dict:
    return prefetch.prefetch(
        "org/small",
        "main",
        dest,
        endpoint=server.endpoint,
        log=lambda line: None,
        sleep=(waits.append if waits is not None else lambda s: None),
        **kwargs,
    )


def test_each_chunk_is_one_ranged_identity_request_with_bounded_timeouts(
    recording_hub, tmp_path, monkeypatch
):
    """Identity encoding: the bytes on the wire are the file's (a compressed answer would fail every hash).
    A stalled read is abandoned after 60 s, a connect after 10 s, and the chunk retried."""
    from huggingface_hub.utils import get_session

    session, real_stream = get_session(), get_session().stream
    timeouts: list[tuple] = []

    def stream(*args, **kwargs):
        t = kwargs["timeout"]
        timeouts.append((t.connect, t.read, t.write, t.pool, kwargs["follow_redirects"]))
        return real_stream(*args, **kwargs)

    monkeypatch.setattr(session, "stream", stream)
    _fetch_recording(recording_hub, tmp_path / "cache")
    sizes = {name: len(data) for name, data in recording_hub.files.items()}
    asked = {path.rsplit("/", 1)[-1]: headers for path, headers in recording_hub.file_headers}
    assert sorted(asked) == sorted(sizes) and len(recording_hub.file_headers) == len(sizes)  # one chunk each
    for name, headers in asked.items():
        assert headers["accept-encoding"] == "identity"
        assert headers["range"] == f"bytes=0-{sizes[name] - 1}"
    assert timeouts == [(10.0, 60.0, 60.0, 60.0, True)] * len(sizes)


def test_redirected_files_are_followed(recording_hub, tmp_path):
    recording_hub.redirect = r"/resolve/.*\.safetensors$"
    waits: list[float] = []
    _fetch_recording(recording_hub, tmp_path / "cache", waits)
    target = tmp_path / "cache" / "org" / "small" / recording_hub.sha
    for name, data in recording_hub.files.items():
        assert (target / name).read_bytes() == data
    assert waits == []  # followed at once, not retried
    weights = [p for p, _ in recording_hub.file_headers if p.endswith(".safetensors")]
    assert len(weights) == 4  # each weights file: the redirect, then its target


def test_a_body_ending_early_is_retried_after_half_a_second(recording_hub, tmp_path):
    recording_hub.short_bodies[r"tokenizer\.json$"] = 1
    waits: list[float] = []
    summary = _fetch_recording(recording_hub, tmp_path / "cache", waits, workers=1)
    assert waits == [0.5]
    target = tmp_path / "cache" / "org" / "small" / recording_hub.sha
    assert (target / "tokenizer.json").read_bytes() == recording_hub.files["tokenizer.json"]
    assert summary["skipped"] == 0


def test_a_body_always_ending_early_gives_up_naming_where_it_ended(recording_hub, tmp_path):
    recording_hub.short_bodies[r"tokenizer\.json$"] = prefetch.ATTEMPTS
    size = len(recording_hub.files["tokenizer.json"])
    waits: list[float] = []
    with pytest.raises(prefetch.PrefetchError) as err:
        _fetch_recording(recording_hub, tmp_path / "cache", waits, workers=1)
    assert err.value.code == prefetch.GAVE_UP
    assert str(err.value) == (
        f"gave up on org/small tokenizer.json bytes 0-{size - 1} after 6 attempts: "
        f"body ended at byte {size // 2} of {size}"
    )
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]  # doubling from half a second, none after the last attempt


@pytest.mark.parametrize(
    ("status", "headers", "waits"),
    [(429, {"Retry-After": "2"}, [2.0]), (503, {}, [0.5]), (416, {}, [0.5]), (302, {}, [0.5])],
)
def test_a_chunk_answered_other_than_200_or_206_is_retried(recording_hub, tmp_path, status, headers, waits):
    recording_hub.fail(r"tokenizer\.json$", status, times=1, **headers)
    slept: list[float] = []
    _fetch_recording(recording_hub, tmp_path / "cache", slept, workers=1)
    assert slept == waits
    target = tmp_path / "cache" / "org" / "small" / recording_hub.sha
    assert (target / "tokenizer.json").read_bytes() == recording_hub.files["tokenizer.json"]


def test_an_empty_file_is_one_plain_get_answered_200(tmp_path):
    with RecordingHub() as server:
        files = {**sharded_model(), "added_tokens.json": b""}
        sha = server.add(Repo("org/empty")).commit(files)
        waits: list[float] = []
        prefetch.prefetch(
            "org/empty",
            "main",
            tmp_path / "cache",
            endpoint=server.endpoint,
            log=lambda x: None,
            sleep=waits.append,
        )
    assert (tmp_path / "cache" / "org" / "empty" / sha / "added_tokens.json").read_bytes() == b""
    (asked,) = [h for p, h in server.file_headers if p.endswith("/added_tokens.json")]
    assert "range" not in asked and waits == []  # no byte range to ask for; the whole (empty) answer taken


def test_a_chunk_always_answered_416_gives_up_naming_the_status(recording_hub, tmp_path):
    recording_hub.fail(r"tokenizer\.json$", 416, times=prefetch.ATTEMPTS)
    size = len(recording_hub.files["tokenizer.json"])
    with pytest.raises(prefetch.PrefetchError) as err:
        _fetch_recording(recording_hub, tmp_path / "cache", workers=1)
    assert err.value.code == prefetch.GAVE_UP
    assert (
        str(err.value) == f"gave up on org/small tokenizer.json bytes 0-{size - 1} after 6 attempts: HTTP 416"
    )


# resolving the revision: the Hub's refusals, and retries with their backoff


def _resolve(server: LoopbackHub, repo: str, waits: list[float], revision: str = "main"):
    return prefetch.resolve(repo, revision, server.endpoint, waits.append)


def test_resolving_backs_off_doubling_from_half_a_second_to_a_cap_of_8(small_hub, monkeypatch):
    monkeypatch.setattr(prefetch, "ATTEMPTS", 8)  # enough attempts for the cap to bite
    small_hub.fail(r"^/api/models/org/small", 502, times=8)
    waits: list[float] = []
    with pytest.raises(prefetch.PrefetchError) as err:
        _resolve(small_hub, "org/small", waits)
    assert err.value.code == prefetch.GAVE_UP
    assert str(err.value) == "gave up resolving org/small@main after 8 attempts: HTTP 502"
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize(
    ("fault", "headers", "wait"),
    [(429, {"Retry-After": "3"}, 3.0), (503, {}, 0.5), (0, {}, 0.5)],  # 0: the connection dropped
)
def test_resolving_retries_what_may_pass(small_hub, fault, headers, wait):
    small_hub.fail(r"^/api/models/org/small", fault, times=1, **headers)
    waits: list[float] = []
    assert _resolve(small_hub, "org/small", waits).sha == small_hub.sha
    assert waits == [wait]


@pytest.mark.parametrize(
    ("repo", "status", "headers", "code", "message"),
    [
        (
            "org/small",
            401,
            {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"},
            prefetch.DENIED,
            f"org/small is gated (HTTP 401): {ACCEPT_THE_LICENCE}",
        ),
        (
            "org/missing",
            None,
            {},
            prefetch.DENIED,
            "org/missing not found or private (HTTP 401); check the id",
        ),
        ("org/small", 400, {}, prefetch.NOT_FOUND, "org/small: HTTP 400 resolving 'main'"),
        ("org/small", 499, {}, prefetch.NOT_FOUND, "org/small: HTTP 499 resolving 'main'"),
    ],
)
def test_resolving_refuses_at_once(small_hub, repo, status, headers, code, message):
    if status is not None:
        small_hub.fail(r"^/api/models/", status, times=1, **headers)
    waits: list[float] = []
    with pytest.raises(prefetch.PrefetchError) as err:
        _resolve(small_hub, repo, waits)
    assert err.value.code == code and str(err.value).startswith(message) and waits == []


# ---- what a run leaves: its summary, the marker, a moving branch, a full disk, the progress bar ---------------


def test_the_summary_has_exactly_its_keys_and_times_the_run(small_hub, tmp_path):
    dest = tmp_path / "cache"
    target = dest / "org" / "small" / small_hub.sha
    for fetched in (True, False):  # a fresh run, then one over the complete cache
        before = time.monotonic()
        summary = _fetch_small(small_hub, dest)
        elapsed = time.monotonic() - before
        seconds = summary.pop("seconds")
        assert summary == {
            "repo": "org/small",
            "sha": small_hub.sha,
            "path": str(target),
            "files": len(small_hub.files),
            "skipped": 0 if fetched else len(small_hub.files),
            "bytes": sum(len(d) for d in small_hub.files.values()) if fetched else 0,
        }
        assert 0.0 <= seconds <= round(elapsed, 3) + 0.001 and seconds >= elapsed - 0.05


def test_the_marker_is_written_one_key_per_line(small_hub, tmp_path):
    _fetch_small(small_hub, tmp_path / "cache")
    target = tmp_path / "cache" / "org" / "small" / small_hub.sha
    entries = ",\n".join(
        f'  {{\n   "path": "{n}",\n   "size": {len(d)},\n   "sha256": "{_sha256(d)}"\n  }}'
        for n, d in sorted(small_hub.files.items())
    )
    expected = f'{{\n "repo": "org/small",\n "sha": "{small_hub.sha}",\n "files": [\n{entries}\n ]\n}}'
    assert (target / ".complete").read_text() == expected


def test_a_revision_is_fetched_at_its_commit_while_main_moves_on(tmp_path):
    with RecordingHub() as server:
        repo = server.add(Repo("org/moving"))
        old = sharded_model()
        old_sha = repo.commit(old, ref="v1")
        new = {**old, "config.json": b'{"model_type": "newer"}'}
        repo.commit(new, ref="main")
        prefetch.prefetch(
            "org/moving", "v1", tmp_path / "cache", endpoint=server.endpoint, log=lambda x: None
        )
    target = tmp_path / "cache" / "org" / "moving" / old_sha
    assert (target / "config.json").read_bytes() == old["config.json"]
    assert {p.split("/resolve/")[1].split("/")[0] for p, _ in server.file_headers} == {old_sha}


def test_a_full_disk_at_reservation_fails_clearly_and_frees_what_was_reserved(
    small_hub, tmp_path, monkeypatch
):
    real_fallocate, reserved = os.posix_fallocate, []

    def posix_fallocate(fd: int, offset: int, length: int) -> None:
        if reserved:  # the second file finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        reserved.append(length)
        real_fallocate(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", posix_fallocate)
    dest = tmp_path / "cache"
    with pytest.raises(prefetch.PrefetchError) as err:
        _fetch_small(small_hub, dest)
    assert err.value.code == prefetch.DISK
    assert str(err.value) == f"cannot write under {dest}: No space left on device"
    assert reserved and not list(dest.rglob("*.part")) and not list(dest.rglob(".complete"))


def test_on_a_terminal_a_progress_bar_counts_every_byte_under_the_repo_name(small_hub, tmp_path, monkeypatch):
    # the class `from huggingface_hub.utils import tqdm` hands out lives in this submodule
    bar_module = importlib.import_module("huggingface_hub.utils.tqdm")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bars: list[dict] = []

    class Bar:
        def __init__(self, **kwargs) -> None:
            self.record = {"made": kwargs, "counted": 0, "closed": False}
            bars.append(self.record)

        def update(self, n: int) -> None:
            self.record["counted"] += n

        def close(self) -> None:
            self.record["closed"] = True

    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setattr(bar_module, "tqdm", Bar)
    _fetch_small(small_hub, tmp_path / "cache")
    total = sum(len(d) for d in small_hub.files.values())
    made = {"total": total, "unit": "B", "unit_scale": True, "desc": "org/small"}
    assert bars == [{"made": made, "counted": total, "closed": True}]


# ---- waiting for another run's cache -----------------------------------------------------------------------


def test_wait_complete_returns_what_it_found(small_hub, tmp_path):
    dest = tmp_path / "cache"
    _fetch_small(small_hub, dest)
    done = prefetch.wait_complete("org/small", small_hub.sha, dest, seconds=0, log=lambda line: None)
    target = dest / "org" / "small" / small_hub.sha
    assert done == {
        "repo": "org/small",
        "sha": small_hub.sha,
        "path": str(target),
        "files": len(small_hub.files),
    }


def test_wait_complete_polls_then_says_what_to_check(tmp_path):
    lines: list[str] = []
    sha = "b" * 40
    with pytest.raises(prefetch.PrefetchError) as err:
        prefetch.wait_complete("org/x", sha, tmp_path, seconds=0.05, poll=0.01, log=lines.append)
    target = tmp_path / "org" / "x" / sha
    assert err.value.code == prefetch.INCOMPLETE
    assert (
        str(err.value)
        == f"{target} is not complete after 0 s; is the prefetch Job running? (kubectl get jobs)"
    )
    assert lines and set(lines) == {f"waiting for {target}/.complete"}


@pytest.mark.parametrize("wait", [False, True])
def test_main_flushes_each_log_line_as_it_is_logged(monkeypatch, wait):
    """A Job's log shows progress as it happens, even where stderr is block-buffered."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8"))  # no line buffering
    seen: list[bytes] = []

    def fake(*args, log, **kwargs) -> dict:
        log("a line")
        seen.append(raw.getvalue())
        if wait:
            return {"path": "/p", "files": 1}
        return _summary(bytes=0, seconds=0.0)

    monkeypatch.setattr(prefetch, "wait_complete" if wait else "prefetch", fake)
    flag = ["--wait-complete", "1"] if wait else []
    assert prefetch.main(_args(Path("/d"), "org/x", "c" * 40) + flag) == prefetch.OK
    assert seen == [b"a line\n"]


# ---- the transfer's parts, where no run can reach a case: hashing out of order, the verification pool --------


def _plan(part: Path, data: bytes, done: set[int]) -> prefetch._Plan:
    chunks = max(1, -(-len(data) // prefetch.CHUNK))
    remote = prefetch.RemoteFile("w.safetensors", len(data), _sha256(data), None)
    return prefetch._Plan(remote, part, part.with_name(part.name + ".done"), -1, chunks, done, [], 0.0)


@pytest.mark.parametrize("size", [1, 15, 16, 17, 24, 25, 32, 33, 41])
def test_chunks_landed_out_of_order_are_hashed_to_the_last_byte(tmp_path, monkeypatch, size):
    """Chunks of 16 bytes read 8 at a time: a chunk that ends 1 byte into a read, or is 1 byte long, still
    counts that byte."""
    monkeypatch.setattr(prefetch, "CHUNK", 16)
    monkeypatch.setattr(prefetch, "PIECE", 4)
    data = bytes(range(size))
    part = tmp_path / "w.safetensors.part"
    part.write_bytes(data)
    plan = _plan(part, data, set(range(-(-size // 16))))
    assert plan.sha256() == _sha256(data) and plan.hashed == plan.chunks


def test_a_chunk_landing_before_the_first_reads_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "CHUNK", 16)
    data = bytes(48)
    plan = _plan(tmp_path / "absent.part", data, {1, 2})  # chunk 0 not yet landed; no file to read either
    plan.hash_ready()
    assert plan.hashed == 0 and plan.sha256() is None


def test_at_most_two_files_are_verified_at_once(tmp_path):
    """Verification reads whole files (git blob ids): two at a time, beside the transfers, not one per file."""
    files, partial = [], tmp_path / ".partial"
    partial.mkdir()
    for i in range(4):  # each already on disk in full: all four are ready to verify at once
        remote = prefetch.RemoteFile(f"f{i}.json", 3, None, None)
        (partial / f"{remote.path}.part").write_bytes(b"abc")
        (partial / f"{remote.path}.part.done").write_text("[0]")
        files.append(remote)
    ready, in_flight, peak, checked = threading.Condition(), [0], [0], []

    def finish(remote: prefetch.RemoteFile, part: Path, sha256: str | None) -> None:
        with ready:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            ready.notify_all()
            ready.wait_for(lambda: in_flight[0] > 2, timeout=0.2)  # a third, if it ever runs, comes now
            in_flight[0] -= 1
            checked.append(remote.path)

    transfer = prefetch.Transfer("org/x", "a" * 40, None, 4, lambda line: None)
    transfer.fetch_all(files, lambda remote: partial / f"{remote.path}.part", finish)
    assert peak[0] == 2 and sorted(checked) == [f.path for f in files]


def test_a_plan_closes_its_descriptor_once_however_often_it_is_closed(tmp_path, monkeypatch):
    """Closed once: a second close must not close a descriptor the number was reused for, nor any other."""
    part = tmp_path / "w.part"
    part.write_bytes(b"x")
    plan = _plan(part, b"x", set())
    plan.fd = os.open(part, os.O_WRONLY)
    closed: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    opened = plan.fd
    monkeypatch.setattr(os, "close", close)
    plan.close()
    plan.close()
    assert closed == [opened] and plan.fd < 0
