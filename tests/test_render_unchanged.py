"""Behaviour and plan output stay as they are across refactors: every variant (the committed stacks included)
renders to exactly the snapshot under tests/golden/render/: the plan JSON, every registration with its
dependencies, ignored changes and wire form, the stack's outputs, the summary, the resource tree and the policy
report.

A change that means to alter output regenerates them with `SGLDEPLOY_UPDATE_GOLDEN=1 pytest
tests/test_render_unchanged.py`; the diff of the snapshots is then the review of what changed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from sgldeploy.offline.engine import normalize
from sgldeploy.offline.plan_json import plan_json
from sgldeploy.offline.plan_text import policy_report, resource_tree, summary

from .variants import rendered_variants

SNAPSHOTS = Path(__file__).parent / "golden" / "render"
# Variants are written under a fresh temporary directory; its path is not part of what they render.
TEMP_PATH = re.compile(r"/[^\s\"']*sgldeploy-variants-[^/\s\"']+")


def snapshot(plan) -> dict[str, Any]:
    """What a stack renders to, in an order free of the engine's: registrations complete concurrently."""
    rendered = plan_json(plan)
    rendered["resources"].sort(key=lambda r: r["urn"])
    return {
        "plan": rendered,
        "registrations": [
            {
                "urn": r.urn,
                "custom": r.custom,
                "provider": r.provider,
                "dependencies": sorted(r.dependencies),
                "ignore_changes": r.ignore_changes,
                "wire_inputs": normalize(r.wire_inputs),
                "wire_state": normalize(r.wire_state),
            }
            for r in sorted(plan.recording.resources, key=lambda r: r.urn)
        ],
        "wire_outputs": normalize(plan.recording.wire_outputs),
        "summary": summary(plan).splitlines(),
        "tree": resource_tree(plan).splitlines(),
        "policy_report": policy_report(plan).splitlines(),
    }


def text_of(plan) -> str:
    return TEMP_PATH.sub("<tmp>", json.dumps(snapshot(plan), indent=1, sort_keys=True, default=str)) + "\n"


@pytest.mark.parametrize("variant", sorted(rendered_variants()))
def test_variant_renders_as_its_snapshot(variant):
    text = text_of(rendered_variants()[variant])
    path = SNAPSHOTS / f"{variant}.json"
    if os.environ.get("SGLDEPLOY_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no snapshot for {variant}: run with SGLDEPLOY_UPDATE_GOLDEN=1"
    expected = path.read_text()
    if text != expected:  # name the first differing line rather than dumping megabytes
        got, want = text.splitlines(), expected.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want))
        )
        pytest.fail(
            f"{variant} renders differently from tests/golden/render/{variant}.json at line {first + 1}:\n"
            f"  snapshot: {want[first] if first < len(want) else '<end>'}\n"
            f"  now:      {got[first] if first < len(got) else '<end>'}"
        )
