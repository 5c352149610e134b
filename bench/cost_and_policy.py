"""What pricing and the policy pack add to a plan of 100 deployments (target: under 20%).

In one process, for a stack of N deployments: the whole offline plan (validate, size, run the program under
the mock engine, price, evaluate policies), and within it the time spent pricing (`cost.estimate`, which the
program also runs once for its outputs and facts) and evaluating the 13 policies over every recorded
resource. Prints best-of-3 wall times and the share.

    .venv/bin/python bench/cost_and_policy.py [--deployments 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plan_scaling import stack_file

from sgldeploy import cost
from sgldeploy.offline.render import policy_resources, render
from sgldeploy.policy import pack
from sgldeploy.spec.stackfile import read_stack_file


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = read_stack_file(stack_file(Path(tmp), args.deployments))
        render(stack)  # warm imports and caches, as a second plan in the same process would be
        plan_s, plan = timed(lambda: render(stack), args.repeat)
        price_s, _ = timed(lambda: cost.estimate(plan.loaded, plan.region), args.repeat)
        resources = policy_resources(plan.recording)
        policy_s, violations = timed(lambda: pack.evaluate(resources), args.repeat)
    added = 2 * price_s + policy_s  # priced twice per plan: in the program (outputs, facts) and for the plan
    print(f"deployments            {args.deployments}")
    print(f"recorded resources     {len(resources)}")
    print(f"plan, total            {plan_s:.3f} s")
    print(f"pricing                {price_s * 1000:.1f} ms per estimate (×2 per plan)")
    print(
        f"policy evaluation      {policy_s * 1000:.1f} ms ({len(pack.POLICIES)} policies, "
        f"{len(violations)} violations)"
    )
    print(f"share of the plan      {100 * added / plan_s:.1f}% (pricing ×2 + policies, of the whole plan)")


if __name__ == "__main__":
    main()
