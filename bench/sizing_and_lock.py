"""How fast sizing and locking are.

1. Sizing: 100 models of varied shapes, each sized over the whole catalog (auto GPU, auto count), timed
   against a baseline in the same run (evaluating one fixed placement per model).
2. Locking: a 30-file repo (8 safetensors shards) from a loopback Hub, resolved by the real
   huggingface_hub client, cold and again with nothing changed.

    .venv/bin/python bench/sizing_and_lock.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The client reads these once, at import; the cache goes to a scratch directory, not the user's.
CACHE = tempfile.TemporaryDirectory(prefix="sgldeploy-bench-")
os.environ.update(HF_HOME=CACHE.name, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")

from sgldeploy.catalog import gpu_models  # noqa: E402
from sgldeploy.models import hub  # noqa: E402
from sgldeploy.models.lock import LockedModel  # noqa: E402
from sgldeploy.models.sizing import SizingError, memory_fit, size  # noqa: E402
from sgldeploy.spec.validate import parse_stack  # noqa: E402
from tests.hub_server import LoopbackHub, Repo  # noqa: E402


def models(count: int) -> list[LockedModel]:
    out = []
    for i in range(count):
        heads = (8, 16, 32, 64, 128)[i % 5]
        out.append(
            LockedModel(
                repo=f"org/m{i}",
                revision="main",
                sha="0" * 40,
                parameters=(1 + i * 7 % 400) * 10**9,
                dtype="bfloat16",
                gated=False,
                pipeline_tag="text-generation",
                custom_code=False,
                source="bench",
                config={
                    "num_hidden_layers": 16 + i % 80,
                    "num_attention_heads": heads,
                    "num_key_value_heads": max(1, heads // (1, 2, 4, 8)[i % 4]),
                    "head_dim": 128,
                    "max_position_embeddings": 32768,
                },
                parameters_by_dtype={},
                safetensors_bytes=None,
            )
        )
    return out


def bench_sizing() -> None:
    dep = parse_stack(
        None,
        [
            {
                "name": "m",
                "model": {"repo": "org/m"},
                "resources": {"gpu": "auto"},
                "serving": {"context_length": 8192, "max_concurrency": 8},
            }
        ],
    ).deployments[0]
    batch = models(100)
    start = time.perf_counter()
    for m in batch:
        memory_fit(dep, m, gpu_models()["H100"], 8, 8192, "bfloat16")
    baseline = time.perf_counter() - start
    tracemalloc.start()
    start = time.perf_counter()
    placed = 0
    for m in batch:
        try:
            size(dep, m)
            placed += 1
        except SizingError:
            pass
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        f"sizing 100 models over the catalog: {elapsed:.3f} s ({elapsed * 10:.1f} ms/model), "
        f"peak {peak:.1f} MiB, {placed} placed, {100 - placed} infeasible; "
        f"{elapsed / baseline:.0f}× one fixed placement per model ({baseline * 1000:.1f} ms)"
    )


def repo_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    weight_map = {}
    for shard in range(8):
        name = f"model-{shard + 1:05d}-of-00008.safetensors"
        tensors = {f"layers.{shard}.w{j}": np.ones((256, 256), dtype=np.float16) for j in range(4)}
        files[name] = save(tensors)
        weight_map.update({k: name for k in tensors})
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    files["config.json"] = json.dumps(
        {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 256,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
            "max_position_embeddings": 4096,
            "torch_dtype": "float16",
        }
    ).encode()
    for i in range(30 - len(files)):
        files[f"extra/file-{i:02d}.txt"] = f"file {i}".encode()
    return files


def bench_lock() -> None:
    with LoopbackHub() as server:
        files = repo_files()
        server.add(Repo("org/thirty")).commit(files)
        for label in ("cold", "warm"):
            start = time.perf_counter()
            entry = hub.resolve("org/thirty", "main", endpoint=server.endpoint)
            elapsed = time.perf_counter() - start
            print(
                f"lock a {len(files)}-file repo ({label}): {elapsed:.2f} s, {len(entry['files'])} files, "
                f"{entry['parameters']:,} parameters, {len(server.requests)} requests so far"
            )


if __name__ == "__main__":
    bench_sizing()
    bench_lock()
