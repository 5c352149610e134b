"""How `sgldeploy plan` scales with the number of deployments.

Renders stacks of 1, 10 and 100 deployments, each in a fresh interpreter as a user runs it, and prints wall
time, peak memory (max RSS of the child process) and the marginal cost per deployment. The baseline in the
same run is the interpreter start plus imports, with no stack rendered.

    make bench            # or: .venv/bin/python bench/plan_scaling.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "sgldeploy.cli"]
SIZES = (1, 10, 100)


def stack_file(directory: Path, count: int) -> Path:
    deployments = [
        {
            "name": f"qwen-{i}",
            "model": {
                "repo": "Qwen/Qwen2.5-7B-Instruct",
                "revision": "a09a35458c702b33eeacc393d103063234e8bc28",
            },
            "serving": {"context_length": 4096, "max_concurrency": 4},
            "resources": {"gpu": "L4", "gpu_count": 1},
            "cache": {"prefetch_image": "registry.example/sgldeploy/sglang:v0.5.23"},
            "scaling": {"min_replicas": 0, "max_replicas": 2},
        }
        for i in range(count)
    ]
    path = directory / f"Pulumi.bench{count}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "aws:region": "us-east-1",
                    "sgldeploy:platform": {"cluster": {"name": "bench"}},
                    "sgldeploy:deployments": deployments,
                }
            }
        )
    )
    shutil.copy(ROOT / "stacks" / "models.lock.json", directory / "models.lock.json")
    return path


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def best(argv: list[str], repeat: int) -> tuple[float, float]:
    runs = [measure(argv) for _ in range(repeat)]
    return min(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest wall time is kept")
    args = parser.parse_args()
    baseline = best(
        [
            sys.executable,
            "-c",
            "import sgldeploy.offline.plan_text, sgldeploy.offline.manifests, sgldeploy.cli",
        ],
        args.repeat,
    )
    dev = best(CLI + ["plan", "--stack", "dev"], args.repeat)
    print(f"{'case':<28}{'wall s':>9}{'peak MiB':>10}{'× baseline':>12}")
    print(f"{'baseline (start + imports)':<28}{baseline[0]:>9.2f}{baseline[1]:>10.0f}{1:>12.2f}")
    print(f"{'dev stack':<28}{dev[0]:>9.2f}{dev[1]:>10.0f}{dev[0] / baseline[0]:>12.2f}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in SIZES:
            results[count] = best(CLI + ["plan", "--config", str(stack_file(Path(tmp), count))], args.repeat)
            wall, mem = results[count]
            print(f"{f'{count} deployment(s)':<28}{wall:>9.2f}{mem:>10.0f}{wall / baseline[0]:>12.2f}")
    (w1, m1), (w100, m100) = results[1], results[100]
    print(
        f"\nmarginal per deployment (1 → 100): {(w100 - w1) / 99 * 1000:.1f} ms, {(m100 - m1) / 99:.2f} MiB"
    )
    (w10, _) = results[10]
    print(f"marginal per deployment (1 → 10):  {(w10 - w1) / 9 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
