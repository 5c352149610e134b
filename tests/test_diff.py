"""`plan --compare` and `--markdown`: cost and resource diffs of real plans, and golden pull-request comments.

Regenerate the golden files after an intended change with `SGLDEPLOY_UPDATE_GOLDEN=1 make test`, and review them.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from sgldeploy.offline import diff, report
from sgldeploy.offline.plan_json import plan_json
from sgldeploy.spec.problems import InvalidInput

from .conftest import LOCK, render_stack
from .test_cli import run_cli

GOLDEN = Path(__file__).parent / "golden"
DEV = LOCK.parent / "Pulumi.dev.yaml"


def dev_variant(tmp_path: Path, change) -> Path:
    """The committed dev stack with `change(config)` applied, under the same stack name (same URNs)."""
    data = yaml.safe_load(DEV.read_text())
    change(data["config"])
    folder = tmp_path / "variant"
    folder.mkdir(exist_ok=True)
    (folder / "models.lock.json").write_text(LOCK.read_text())
    path = folder / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def scale_up(config):
    dep = config["sgldeploy:deployments"][0]
    dep["resources"]["gpu"] = "L40S"
    dep["scaling"]["max_replicas"] = 4
    dep["scaling"]["min_replicas"] = 1  # an NLB cannot hold requests at zero
    dep["endpoint"] = {
        "exposure": "public",
        "load_balancer": "nlb",
        "auth": "api-key",
        "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/abc-123",
    }
    config["sgldeploy:platform"]["budget_usd_per_month"] = 10000


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plans")
    base = plan_json(render_stack(DEV))
    scaled = plan_json(render_stack(dev_variant(tmp, scale_up)))
    return base, scaled


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SGLDEPLOY_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; if intended, regenerate with SGLDEPLOY_UPDATE_GOLDEN=1"


def test_cost_diff_names_what_drives_the_change(plans):
    base, scaled = plans
    d = diff.diff(base, scaled)
    total = d["cost"]["total"]["monthly_usd_max"]
    assert (
        total["old"] == base["cost"]["monthly_usd_max"] and total["new"] == scaled["cost"]["monthly_usd_max"]
    )
    assert total["diff"] == round(total["new"] - total["old"], 2) and total["percent"] > 100
    [dep] = d["cost"]["deployments"]
    assert dep["status"] == "changed"
    assert dep["changes"] == [
        "instance_type g6.xlarge → g6e.xlarge",
        "min_replicas 0 → 1",
        "max_replicas 2 → 4",
        "running_when_idle 0 → 1",
    ]
    items = {i["resource"]: i for i in d["cost"]["items"]}
    assert items["qwen-7b/gpu-nodes"]["status"] == "changed"
    assert "instance_type g6.xlarge → g6e.xlarge" in items["qwen-7b/gpu-nodes"]["changes"]
    assert items["qwen-7b/load-balancer"]["status"] == "added"
    assert items["qwen-7b/load-balancer"]["monthly_usd_max"]["new"] == round(0.0225 * 730, 2)
    assert items["qwen-7b/data-transfer-out"]["usage_based"]


def test_resource_diff_of_the_same_stack(plans):
    base, scaled = plans
    r = diff.diff(base, scaled)["resources"]
    # min 1 and a public NLB: an NLB endpoint and a ScaledObject replace the HTTP add-on's objects
    assert {e["name"] for e in r["added"]} == {
        "qwen-7b-endpoint",
        "qwen-7b-endpoint-nlb",
        "qwen-7b-autoscaler-scaled-object",
    }
    assert {e["name"] for e in r["removed"]} == {
        "qwen-7b-autoscaler-http-scaled-object",
        "qwen-7b-autoscaler-proxy",
    }
    assert r["replaced"] == []
    changed = {e["name"]: e["changes"] for e in r["changed"]}
    assert "qwen-7b-server-deployment" in changed
    assert any("g6e.xlarge" in c for c in changed["qwen-7b-server-deployment"])
    assert "platform-namespace" not in changed  # nothing about the namespace changed
    assert diff.diff(base, base)["resources"]["changed"] == []


def test_replacement_when_an_immutable_input_changes(plans):
    base, _ = plans
    new = copy.deepcopy(base)
    for r in new["resources"]:
        if r["type"] == "kubernetes:apps/v1:Deployment":
            r["inputs"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "other"
        if r["name"] == "qwen-7b-server-service":
            r["inputs"]["metadata"]["name"] = "renamed"
    replaced = {e["name"]: e["because"] for e in diff.diff(base, new)["resources"]["replaced"]}
    assert replaced == {
        "qwen-7b-server-deployment": ["spec.selector"],
        "qwen-7b-server-service": ["metadata.name"],
    }


def test_golden_comment_for_a_cost_increase(plans):
    base, scaled = plans
    check_golden("dev-scale-up.md", report.markdown(diff.diff(base, scaled), scaled))


def test_golden_comment_for_a_cost_decrease(plans):
    base, scaled = plans
    check_golden("dev-scale-down.md", report.markdown(diff.diff(scaled, base), base))


def test_golden_comment_for_a_first_plan_and_for_no_change(plans):
    base, _ = plans
    check_golden("dev-new.md", report.markdown(diff.diff(diff.EMPTY_PLAN, base), base))
    unchanged = report.markdown(diff.diff(base, base), base)
    check_golden("dev-unchanged.md", unchanged)
    assert "Monthly cost will not change" in unchanged


def test_comment_lists_policy_violations(plans):
    base, _ = plans
    text = report.markdown(
        diff.diff(base, base),
        base,
        [{"policy": "stack-budget", "level": "mandatory", "resource": "", "message": "stack: over budget"}],
    )
    assert (
        "**Policy violations (1):**" in text and "- `mandatory` **stack-budget**: stack: over budget" in text
    )


def test_never_a_single_number_where_min_and_max_differ(plans):
    base, scaled = plans
    text = report.markdown(diff.diff(base, scaled), scaled)
    lo, hi = scaled["cost"]["monthly_usd_min"], scaled["cost"]["monthly_usd_max"]
    assert f"${lo:,.2f}–${hi:,.2f}" in text


def test_previous_plan_must_be_a_plan():
    with pytest.raises(InvalidInput) as err:
        diff.check_plan({"version": 2}, "old.json")
    assert err.value.problems[0].line() == (
        "error: old.json: is not a sgldeploy plan JSON of version 1 (got 2); "
        "write it with `sgldeploy plan --json FILE` from the base branch"
    )


def test_cli_compare_writes_diff_json_and_markdown(tmp_path, plans):
    base, _ = plans
    old = tmp_path / "old.json"
    old.write_text(json.dumps(base))
    variant = dev_variant(tmp_path, scale_up)
    out, md = tmp_path / "new.json", tmp_path / "comment.md"
    result = run_cli(
        "plan", "--config", str(variant), "--compare", str(old), "--json", str(out), "--markdown", str(md)
    )
    assert result.returncode == 0, result.stderr
    assert "Cost diff against dev: monthly" in result.stdout
    assert "qwen-7b                  changed" in result.stdout
    written = json.loads(out.read_text())
    assert written["diff"]["cost"]["deployments"][0]["changes"] == [
        "instance_type g6.xlarge → g6e.xlarge",
        "min_replicas 0 → 1",
        "max_replicas 2 → 4",
        "running_when_idle 0 → 1",
    ]
    assert md.read_text().startswith("<!-- sgldeploy-cost-comment stack=dev -->")

    old.write_text("[]")
    result = run_cli("plan", "--stack", "dev", "--compare", str(old))
    assert result.returncode == 2 and "is not a sgldeploy plan JSON of version 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_created_cluster_shows_as_its_own_row(plans, tmp_path):
    base, _ = plans

    def create(config):
        config["sgldeploy:platform"]["cluster"]["create"] = True

    created = plan_json(render_stack(dev_variant(tmp_path, create)))
    d = diff.diff(base, created)
    platform = d["cost"]["platform"]
    assert platform["monthly_usd_max"]["old"] == 0
    assert platform["monthly_usd_max"]["new"] == created["cost"]["platform"]["monthly_usd_max"] > 0
    text = report.markdown(d, created)
    assert f"| platform | $0.00 | ${platform['monthly_usd_max']['new']:,.2f} |" in text
    assert "+ platform/eks-control-plane" in text
    assert diff.diff(base, base)["cost"]["platform"] is None


# ---- command lines, flag by flag, and no change hidden ----------------------------------------------


def narrow(config):
    config["sgldeploy:deployments"][0]["serving"]["context_length"] = 6144


def wide(config):
    dep = config["sgldeploy:deployments"][0]
    dep["serving"]["context_length"] = 16384
    dep["serving"]["extra_args"] = ["--enable-torch-compile"]
    dep["resources"]["gpu_count"] = 4
    dep["observability"] = {"metrics": False}
    config["sgldeploy:platform"]["budget_usd_per_month"] = 10000  # four L4s cost more than dev's budget


ARGS = "spec.template.spec.containers[0].args"
# Written by hand from the two specs: TP 1 → 4 (gpu_count), the context length, the memory fraction sizing
# gives each (0.699 on one L4, 0.673 on four), metrics off, the extra argument appended.
ARGS_CHANGES = [
    f"{ARGS}: --tp-size 1 → 4",
    f"{ARGS}: --context-length 6144 → 16384",
    f"{ARGS}: --mem-fraction-static 0.699 → 0.673",
    f"{ARGS}: removed --enable-metrics",
    f"{ARGS}: added --enable-torch-compile",
]


@pytest.fixture(scope="module")
def tp_plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tp")
    (tmp / "narrow").mkdir(), (tmp / "wide").mkdir()
    narrow_path, wide_path = dev_variant(tmp / "narrow", narrow), dev_variant(tmp / "wide", wide)
    return plan_json(render_stack(narrow_path)), plan_json(render_stack(wide_path)), wide_path


def server_changes(d: dict) -> list[str]:
    [server] = [e for e in d["resources"]["changed"] if e["name"] == "qwen-7b-server-deployment"]
    return server["changes"]


def test_an_args_change_shows_each_flag_with_its_old_and_new_value(tp_plans):
    old, new, _ = tp_plans
    changes = server_changes(diff.diff(old, new))
    assert [c for c in changes if c.startswith(ARGS)] == ARGS_CHANGES
    back = server_changes(diff.diff(new, old))
    assert [c for c in back if c.startswith(ARGS)] == [
        f"{ARGS}: --tp-size 4 → 1",
        f"{ARGS}: --context-length 16384 → 6144",
        f"{ARGS}: --mem-fraction-static 0.673 → 0.699",
        f"{ARGS}: removed --enable-torch-compile",
        f"{ARGS}: added --enable-metrics",
    ]


def test_the_comment_hides_no_change(tp_plans, plans):
    for old, new in (tp_plans[:2], plans):
        d = diff.diff(old, new)
        text = report.markdown(d, new)
        for entry in d["resources"]["changed"] + d["resources"]["replaced"]:
            for change in entry["changes"]:
                assert f"    {change}\n" in text, change
            if len(entry["changes"]) > report.MAX_CHANGES_SHOWN:
                assert f"<summary>All changes of {entry['name']} ({len(entry['changes'])})</summary>" in text
    changed = server_changes(diff.diff(*tp_plans[:2]))
    count = len(changed)
    assert count > report.MAX_CHANGES_SHOWN  # the list shows 8: the rest must be reachable
    text = report.markdown(diff.diff(*tp_plans[:2]), tp_plans[1])
    hint = f'    … {count - 8} more: all {count} under "All changes of qwen-7b-server-deployment" below\n'
    assert hint in text
    [collapsed] = re.findall(
        rf"<summary>All changes of qwen-7b-server-deployment \({count}\)</summary>\n\n```diff\n(.*?)```",
        text,
        re.S,
    )
    assert [line.strip() for line in collapsed.splitlines()[1:]] == changed
    assert collapsed.startswith("~ kubernetes:apps/v1:Deployment  qwen-7b-server-deployment\n")
    assert [line.strip() for line in collapsed.splitlines() if line.strip().startswith(ARGS)] == ARGS_CHANGES


def test_plan_compare_prints_every_changed_flag(tp_plans, tmp_path):
    old, new, wide_path = tp_plans
    base = tmp_path / "base.json"
    base.write_text(json.dumps(old))
    result = run_cli("plan", "--config", str(wide_path), "--compare", str(base))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("  ~ kubernetes:apps/v1:Deployment  qwen-7b-server-deployment")
    shown = []
    for line in lines[at + 1 :]:
        if not line.startswith("      "):
            break
        shown.append(line.strip())
    assert [c for c in shown if c.startswith(ARGS)] == ARGS_CHANGES
    assert shown == server_changes(diff.diff(old, new))  # all of them: a terminal has room


def test_a_cost_diff_against_a_plan_without_costs_has_no_diff_and_removes_every_item(plans):
    """A plan with no cost lines (no totals, no `items`): each amount it lacks is unknown, so the change
    has no diff and no percent, and every item of the other plan reads as removed."""
    base, _ = plans
    bare = {"deployments": [{"name": d["name"]} for d in base["deployments"]], "cost": {}}
    d = diff.cost_diff(base, bare)
    old_max = base["cost"]["monthly_usd_max"]
    assert d["total"]["monthly_usd_max"] == {"old": old_max, "new": None, "diff": None, "percent": None}
    [dep] = d["deployments"]
    old_dep_max = base["deployments"][0]["cost"]["monthly_usd_max"]
    assert dep["monthly_usd_max"] == {"old": old_dep_max, "new": None, "diff": None, "percent": None}
    assert [(i["resource"], i["status"]) for i in d["items"]] == [
        (resource, "removed") for resource in sorted(i["resource"] for i in base["cost"]["items"])
    ]
    back = diff.cost_diff(bare, base)
    assert [(i["resource"], i["status"]) for i in back["items"]] == [
        (resource, "added") for resource in sorted(i["resource"] for i in base["cost"]["items"])
    ]


def test_the_cost_diff_moves_the_price_of_a_million_tokens(plans):
    base, scaled = plans
    [dep] = diff.diff(base, scaled)["cost"]["deployments"]
    old = base["deployments"][0]["throughput"]["usd_per_million_output_tokens"]
    new = scaled["deployments"][0]["throughput"]["usd_per_million_output_tokens"]
    assert old != new  # an L40S serves a token at another price than an L4
    assert dep["usd_per_million_output_tokens"] == {
        "old": old,
        "new": new,
        "diff": round(new - old, 2),
        "percent": round(100 * round(new - old, 2) / old, 1),
    }
    line = next(line for line in report.text(diff.diff(base, scaled)).splitlines() if "qwen-7b " in line)
    assert (
        f", ${old:,.2f} → ${new:,.2f} ({dep['usd_per_million_output_tokens']['percent']:+g}%) per 1M" in line
    )
    # A previous plan from before throughput was stated: the new price alone.
    older = copy.deepcopy(base)
    del older["deployments"][0]["throughput"]
    [first] = diff.diff(older, scaled)["cost"]["deployments"]
    assert first["usd_per_million_output_tokens"] == {"old": None, "new": new, "diff": None, "percent": None}


@pytest.mark.parametrize(
    "old, new, shown",
    [
        (None, None, "–"),
        (None, 2.5, "$2.50 (new)"),
        (2.5, None, "$2.50 (before)"),
        (2.5, 2.5, "$2.50"),
        (2.0, 2.5, "$2.00 → $2.50 (+25%)"),
        (0.0, 2.5, "$0.00 → $2.50"),  # no percentage of nothing
    ],
)
def test_a_price_per_token_shows_as_far_as_each_side_states_it(old, new, shown):
    assert report.per_token(diff._delta(old, new)) == shown
