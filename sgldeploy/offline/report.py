"""Cost diffs for people: the pull-request comment (Markdown, from a jinja2 template) and the terminal text.

Layout after Infracost: a headline with direction, amount and percent; a table per deployment (previous, new,
diff, at min and at max replicas); the per-line cost diff with the inputs that drive it; the resource diff;
policy violations; a footer naming the price basis.
"""

from __future__ import annotations

from typing import Any

import jinja2

from sgldeploy.cost import money, span
from sgldeploy.spec.region import DEFAULT_REGION

MAX_CHANGES_SHOWN = (
    8  # changed inputs listed per resource in the resource list; all of them follow, collapsed
)
MARK = {"added": "+", "removed": "-", "changed": "~"}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("sgldeploy.offline", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def _signed(delta: dict[str, Any]) -> str:
    diff = delta["diff"]
    if diff is None:
        return "unpriced"
    text = ("+" if diff > 0 else "-" if diff < 0 else "±") + money(abs(diff))
    return text + (f" ({delta['percent']:+g}%)" if delta["percent"] is not None and diff else "")


def _headline(total: dict[str, Any]) -> dict[str, Any]:
    top = total["monthly_usd_max"]
    diff = top["diff"] or 0
    return {
        "diff": diff,
        "percent": top["percent"],
        "verb": "increase" if diff > 0 else "decrease",
        "emoji": "📈" if diff > 0 else "📉",
    }


def _coverage(new_plan: dict[str, Any]) -> str:
    items = new_plan["cost"]["items"]
    usage = sum(1 for i in items if i.get("usage_based"))
    unpriced = sum(1 for i in items if i["hourly_usd_min"] is None)
    custom = sum(1 for r in new_plan["resources"] if not r["type"].startswith(("sgldeploy:", "pulumi:")))
    return (
        f"{len(items) - usage - unpriced} provisioned cost lines estimated, {usage} usage-based, {unpriced} "
        f"unpriced; the other {custom} declared resources (Kubernetes objects, security groups, secrets) are "
        "free of charge."
    )


def _shortened(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The resources with more changes than the list shows, with their mark: each gets a collapsed section
    listing all of them, so no change is hidden behind "… N more"."""
    return [
        (mark, r)
        for mark, key in (("±", "replaced"), ("~", "changed"))
        for r in resources[key]
        if len(r["changes"]) > MAX_CHANGES_SHOWN
    ]


def context(
    diff: dict[str, Any], new_plan: dict[str, Any], violations: list[dict[str, Any]]
) -> dict[str, Any]:
    cost = diff["cost"]
    return {
        "stack": new_plan["stack"],
        "base_stack": diff["base_stack"],
        "total": cost["total"],
        "headline": _headline(cost["total"]),
        "deployments": cost["deployments"],
        "platform": cost["platform"],
        "items": cost["items"],
        "resources": diff["resources"],
        "violations": violations,
        "coverage": _coverage(new_plan),
        "region": new_plan["cost"].get("region", DEFAULT_REGION),
        "hours": new_plan["cost"].get("hours_per_month", 730),
        "mark": MARK,
        "max_changes": MAX_CHANGES_SHOWN,
        "shortened": _shortened(diff["resources"]),
        "span": span,
        "signed": _signed,
        "amount": lambda v: money(abs(v)),
        "per_token": per_token,
        "percent": lambda p: "" if p is None else f" ({p:+g}%)",
    }


def markdown(
    diff: dict[str, Any], new_plan: dict[str, Any], violations: list[dict[str, Any]] | None = None
) -> str:
    return _ENV.get_template("cost_comment.md.j2").render(**context(diff, new_plan, violations or []))


def per_token(delta: dict[str, Any]) -> str:
    """$ per 1M output tokens before → after, as far as each side states it."""
    old, new = delta["old"], delta["new"]
    if old is None and new is None:
        return "–"
    if old is None or new is None:
        return money(new if old is None else old) + (" (new)" if old is None else " (before)")
    if old == new:
        return money(new)
    change = "" if delta["percent"] is None else f" ({delta['percent']:+g}%)"
    return f"{money(old)} → {money(new)}{change}"


def text(diff: dict[str, Any]) -> str:
    """The terminal version: headline, per deployment, then each changed line and resource."""
    cost = diff["cost"]
    total = cost["total"]
    old = span(total["monthly_usd_min"]["old"], total["monthly_usd_max"]["old"])
    lines = [
        f"Cost diff against {diff['base_stack']}: monthly {old}"
        f" → {span(total['monthly_usd_min']['new'], total['monthly_usd_max']['new'])} "
        f"({_signed(total['monthly_usd_min'])} at min, {_signed(total['monthly_usd_max'])} at max replicas)"
    ]
    for d in cost["deployments"]:
        why = f"  ({'; '.join(d['changes'])})" if d["changes"] else ""
        tokens = per_token(d["usd_per_million_output_tokens"])
        lines.append(
            f"  {d['name']:<24} {d['status']:<9} {_signed(d['monthly_usd_min'])} at min, "
            f"{_signed(d['monthly_usd_max'])} at max"
            + (f", {tokens} per 1M output tokens" if tokens != "–" else "")
            + why
        )
    for i in cost["items"]:
        lines.append(
            f"  {MARK[i['status']]} {i['resource']:<36} {_signed(i['monthly_usd_max'])} at max"
            + (f"  ({'; '.join(i['changes'])})" if i["changes"] else "")
        )
    r = diff["resources"]
    lines.append(
        f"Resources: {len(r['added'])} to create, {len(r['changed'])} to update, {len(r['replaced'])} to "
        f"replace, {len(r['removed'])} to delete, {len(r['same'])} unchanged"
    )
    for mark, key in (("+", "added"), ("-", "removed"), ("±", "replaced"), ("~", "changed")):
        for e in r[key]:
            why = f"  (replace: {', '.join(e['because'])})" if key == "replaced" else ""
            lines.append(f"  {mark} {e['type']}  {e['name']}{why}")
            lines += [f"      {c}" for c in e.get("changes", [])]  # a terminal shows every one
    return "\n".join(lines)
