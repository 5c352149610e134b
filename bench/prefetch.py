"""Prefetch throughput against parallel curl, on the same loopback Hub in the same run.

Generates a repo of ≥ 1 GB of real safetensors shards, serves it from the tests' loopback Hub, then:
  1. curl fetches every wanted file in parallel (--parallel, one connection per file): the baseline;
  2. the prefetch tool fetches the same files into an empty cache (a fresh process);
  3. the prefetch tool runs again over the complete cache (a fresh process).
Each is run --rounds times, interleaved, each into an empty directory, since two cores shared by the server
and the client make single runs noisy. Prints best and median wall time and MB/s of each, the ratios
prefetch / curl (of the best and of the medians), the warm re-run time and the tool's peak memory (max RSS).

    .venv/bin/python bench/prefetch.py [--gib 1.0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hub_server import LoopbackHub, Repo  # noqa: E402

TOOL = ROOT / "sglang_image" / "prefetch.py"


def generate(gib: float, shards: int = 4) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rows = int(gib * 2**30 / shards / (4 * 4096))
    files, weight_map = {}, {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        files[name] = save({f"layer{i}.weight": rng.standard_normal((rows, 4096), dtype=np.float32)})
        weight_map[f"layer{i}.weight"] = name
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    files["config.json"] = b'{"architectures": ["LlamaForCausalLM"]}'
    files["tokenizer.json"] = b"{}"
    return files


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and max RSS (MiB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr.read().decode()[-500:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def serve(gib: float) -> None:
    """The Hub, in its own process, so the measured processes never inherit its gigabyte of memory."""
    files = generate(gib)
    with LoopbackHub() as server:
        sha = server.add(Repo("bench/model")).commit(files)
        print(
            json.dumps(
                {
                    "endpoint": server.endpoint,
                    "sha": sha,
                    "files": list(files),
                    "bytes": sum(len(v) for v in files.values()),
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # until the parent closes the pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the generated weights")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.gib)
    hub = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--gib", str(args.gib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    info = json.loads(hub.stdout.readline())
    files, total, sha, endpoint = info["files"], info["bytes"], info["sha"], info["endpoint"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "HF_ENDPOINT": endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": f"{tmp}/hf-home",
        }
        curl_runs, cold_runs, rss = [], [], []
        for i in range(args.rounds):
            curl_dir = Path(tmp, f"curl-{i}")
            curl_dir.mkdir()
            curl = ["curl", "--silent", "--fail", "--parallel", "--parallel-max", str(len(files))]
            for name in files:
                curl += ["-o", str(curl_dir / name), f"{endpoint}/bench/model/resolve/{sha}/{name}"]
            curl_runs.append(timed(curl, env)[0])
            shutil.rmtree(curl_dir)
            cache = f"{tmp}/cache-{i}"
            seconds, peak = timed(
                [sys.executable, str(TOOL), "--repo", "bench/model", "--revision", "main", "--dest", cache],
                env,
            )
            cold_runs.append(seconds)
            rss.append(peak)
            if i < args.rounds - 1:
                shutil.rmtree(cache)
        warm_s, warm_rss = timed(
            [sys.executable, str(TOOL), "--repo", "bench/model", "--revision", "main", "--dest", cache], env
        )
    hub.stdin.close()
    hub.wait()
    mb = total / 1e6
    curl_best, curl_med = min(curl_runs), statistics.median(curl_runs)
    cold_best, cold_med = min(cold_runs), statistics.median(cold_runs)
    print(f"repo: {len(files)} files, {mb:,.0f} MB; {args.rounds} rounds (best / median)")
    print(
        f"curl --parallel (baseline):  {curl_best:5.2f} / {curl_med:5.2f} s  "
        f"{mb / curl_best:5.0f} / {mb / curl_med:5.0f} MB/s"
    )
    print(
        f"prefetch, empty cache:       {cold_best:5.2f} / {cold_med:5.2f} s  "
        f"{mb / cold_best:5.0f} / {mb / cold_med:5.0f} MB/s  (includes start-up, resolution, verification)"
    )
    print(
        f"ratio prefetch / curl:       {curl_best / cold_best:.2f} of the best, {curl_med / cold_med:.2f} of the "
        f"medians (target ≥ 0.8)"
    )
    print(f"prefetch peak RSS:           {max(rss):.0f} MiB")
    print(f"prefetch, complete cache:    {warm_s:5.2f} s  (peak RSS {warm_rss:.0f} MiB)")


if __name__ == "__main__":
    main()
