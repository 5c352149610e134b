"""Latency targets that drive autoscaling (`scaling.metric: slo`) and the SLO burn alerts, run by Prometheus' own
rule engine (promtool) over series written as SGLang 0.5.23 would write them (tests/prometheus_world.py), with the
histogram bounds the rendered server arguments give it; and the plan's SLO warnings and refusals.

The burn-rate rule under test is Google's SRE workbook's (ch. 5, "Alerting on SLOs"): for a p95 target the budget
is 5% of requests over it; page when both an hour and its last 5 minutes burn it 14.4 times too fast (72% over),
warn when six hours and their last 30 minutes burn it 6 times too fast (30% over).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgldeploy import stack
from sgldeploy.builders import sglang_args

from . import prometheus_world as pw
from .conftest import LOCK, PD_PLATFORM, deployment, disaggregated, problem_lines, resources_of
from .test_sglang_args import sglang_parse, sglang_source
from .variants import RenderedVariants

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed; `make test` installs it"
)
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
SCALED = "kubernetes:keda.sh/v1alpha1:ScaledObject"
PER_MINUTE = 6000  # observations per pod and minute
FAST = {"rate": 14.4, "long": 60, "short": 5, "for": 2}
SLOW = {"rate": 6.0, "long": 360, "short": 30, "for": 15}


@pytest.fixture
def variants() -> RenderedVariants:
    """Each test's own renders, not the session's shared ones: `make mutate` then maps the rendering code to every
    test here that checks it, and each run renders with the mutant it tests."""
    return RenderedVariants()


def _rendered(
    variants: RenderedVariants, variant: str, name: str
) -> tuple[Any, dict[str, Any], dict[str, Any], pw.World]:
    plan = variants[variant]
    res = plan.recording.resources
    [rule] = [r for r in resources_of(plan, RULE) if r.inputs["metadata"]["name"] == name]
    [scaled] = [r for r in resources_of(plan, SCALED) if r.inputs["metadata"]["name"] == name]
    namespace = rule.inputs["metadata"]["namespace"]
    spec = next(d.spec for d in plan.loaded.deployments if d.spec.name == name)
    return spec, rule.inputs["spec"], scaled.inputs["spec"], pw.world_of(res, name, namespace)


def _run(tmp_path: Path, rule_file: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    assert PROMTOOL is not None
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_file, sort_keys=False))
    (tmp_path / "test.yaml").write_text(
        json.dumps({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]


def _series(w: pw.World, family: str, by_minute: list[dict[float, int]], neighbours_bad: bool = True) -> list:
    """One deployment's histogram of `family`, each minute's observations by bound; a neighbour named
    `<name>-big` with every observation far over any target, which must never count as ours."""
    metric = {"ttft": "sglang:time_to_first_token_seconds", "itl": "sglang:inter_token_latency_seconds"}[
        family
    ]
    buckets = w.ttft_buckets if family == "ttft" else w.itl_buckets
    out = []
    for world, minutes in [(w, by_minute)] + ([(w.renamed(f"{w.name}-big"), None)] if neighbours_bad else []):
        worst = {buckets[-1]: PER_MINUTE}
        per_minute = minutes or [worst] * len(by_minute)
        for service, pod in world.scraped:
            labels = {
                **pw.target_labels(world, service, pod),
                "model_name": world.model_name,
                "engine_type": pw.ENGINE_TYPE,
            }
            if family == "ttft":
                labels["is_streaming"] = "true"
            for bound in (*buckets, math.inf):
                values, total = [0.0], 0.0
                for m in per_minute:
                    total += sum(c for b, c in m.items() if b <= bound)
                    values.append(total)
                le = pw._le(bound)
                out.append((pw._series(f"{metric}_bucket", {**labels, "le": le}), values))
            counts, total = [0.0], 0.0
            for m in per_minute:
                total += sum(m.values())
                counts.append(total)
            out.append((pw._series(f"{metric}_count", labels), counts))
    return out


def _minutes(bad_share: float, target: float, buckets: tuple[float, ...]) -> dict[float, int]:
    """A minute's observations: a share just over the target (the next bound up), the rest exactly at it (a
    bucket's bound is within it: `le` means ≤)."""
    over = min(b for b in buckets if b > target)
    bad = round(PER_MINUTE * bad_share)
    return {target: PER_MINUTE - bad, over: bad}


def _alert(name: str, at: int, rule: dict[str, Any] | None) -> dict[str, Any]:
    firing = [] if rule is None else [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]
    return {"eval_time": f"{at}m", "alertname": name, "exp_alerts": firing}


BURN_CASES = [
    ("prod", "llama-8b", "ttft"),
    ("prod", "llama-8b", "itl"),
    ("disaggregated", "llama-70b-rag-decode", "itl"),
]


@needs_promtool
@pytest.mark.parametrize(("variant", "name", "family"), BURN_CASES)
def test_burn_alerts_fire_on_the_workbooks_rates_and_windows(variants, tmp_path, variant, name, family):
    spec, rule_file, _, w = _rendered(variants, variant, name)
    key = {"ttft": "ttft_p95_seconds", "itl": "itl_p95_seconds"}[family]
    target = getattr(spec.slo, key)
    buckets = w.ttft_buckets if family == "ttft" else w.itl_buckets
    assert target in buckets  # the rendered --bucket-… flag made the target a bound
    rules = {r["alert"]: r for r in rule_file["groups"][0]["rules"]}
    prefix = f"Sglang{family.capitalize()}Budget"
    fast, slow = rules[f"{prefix}FastBurn"], rules[f"{prefix}SlowBurn"]
    assert (fast["labels"]["severity"], slow["labels"]["severity"]) == ("critical", "warning")

    def scenario(shares: list[float], alerts: list[dict[str, Any]]) -> dict[str, Any]:
        series = _series(w, family, [_minutes(s, target, buckets) for s in shares])
        return {"interval": "1m", "input_series": pw.input_series(series), "alert_rule_test": alerts}

    f, s = f"{prefix}FastBurn", f"{prefix}SlowBurn"
    limit_fast, limit_slow = FAST["rate"] * 0.05, SLOW["rate"] * 0.05
    just_over_fast, just_under_fast = limit_fast + 0.02, limit_fast - 0.02
    # Rates exist from the second sample (minute 1): a steady burn fires `for` minutes later, not a minute before.
    tests = [
        scenario(
            [just_over_fast] * 40,
            [
                _alert(f, FAST["for"], None),
                _alert(f, 1 + FAST["for"], fast),
                _alert(s, 1 + SLOW["for"], slow),
            ],
        ),
        scenario(
            [just_under_fast] * 40,
            [_alert(f, 39, None), _alert(s, SLOW["for"], None), _alert(s, 1 + SLOW["for"], slow)],
        ),
        scenario([limit_slow - 0.02] * 40, [_alert(f, 39, None), _alert(s, 39, None)]),
        # Healthy for six hours, then ten minutes of every request over: the short window burns, the hour does not.
        scenario([0.0] * 360 + [1.0] * 10, [_alert(f, 369, None), _alert(s, 369, None)]),
    ]
    idle = pw.input_series(_series(w, family, [{}] * 20))  # no requests: 0/0, which is no alert
    tests.append(
        {
            "interval": "1m",
            "input_series": idle,
            "alert_rule_test": [_alert(f, 19, None), _alert(s, 19, None)],
        }
    )
    # An hour of healthy traffic, then every request over: the hour's share passes 72% after 44 minutes over.
    onset = next(k for k in range(1, 61) if (k * 1.0) / 60 > limit_fast + 1e-9)
    tests.append(
        scenario(
            [0.0] * 60 + [1.0] * 60,
            [_alert(f, 60 + onset + FAST["for"] - 1, None), _alert(f, 60 + onset + FAST["for"], fast)],
        )
    )
    _run(tmp_path, rule_file, tests)


def _trigger_tests(
    w: pw.World,
    query: str,
    family: str,
    minutes: dict[float, int],
    queue: float,
    prealloc: float,
    expected: list,
) -> dict:
    """Ten minutes: seven within the target, then three of `minutes`. At minute 9 the 2-minute window sees only
    the last two, so its p95 is theirs (a 5-minute one would mix in the good minutes)."""
    good = {min(minutes): sum(minutes.values())}
    series = _series(w, family, [good] * 7 + [minutes] * 3, neighbours_bad=True)
    series += pw.sglang_series(w, pw.Load(queue=queue, decode_prealloc=prealloc), 10, frozenset({"gauges"}))
    return {
        "interval": "1m",
        "input_series": pw.input_series(series),
        "promql_expr_test": [{"expr": query, "eval_time": "9m", "exp_samples": expected}],
    }


SCALING_CASES = [
    ("prod", "llama-8b", {"ttft-p95", "itl-p95"}),
    ("disaggregated", "llama-70b-rag-prefill", {"ttft-p95"}),
    ("disaggregated", "llama-70b-rag-decode", {"itl-p95"}),
]


@needs_promtool
@pytest.mark.parametrize(("variant", "name", "latency"), SCALING_CASES)
def test_slo_triggers_give_the_p95_while_requests_queue_and_nothing_when_none_do(
    variants, tmp_path, variant, name, latency
):
    spec, rule_file, scaled, w = _rendered(variants, variant, name)
    triggers = {t.get("name", "queue"): t for t in scaled["triggers"]}
    assert set(triggers) == {"queue", *latency}  # TTFT drives prefill, ITL decode; queue depth alongside
    assert triggers["queue"]["metricType"] == "AverageValue"
    assert triggers["queue"]["metadata"]["threshold"] == f"{spec.scaling.target:g}"
    decode = name.endswith("-decode")
    tests = []
    for trigger_name in latency:
        t = triggers[trigger_name]
        family = trigger_name.split("-")[0]
        key = f"{family}_p95_seconds"
        target = getattr(spec.slo, key)
        assert t["metricType"] == "Value"  # desired = replicas × p95 / target
        assert float(t["metadata"]["threshold"]) == target
        buckets = w.ttft_buckets if family == "ttft" else w.itl_buckets
        over = min(b for b in buckets if b > target)
        minutes = {target: PER_MINUTE // 2, over: PER_MINUTE // 2}  # half over the target
        pods = len([p for _, p in w.scraped if p.workload == w.workloads[0]])
        p95 = pw.quantile_of(0.95, buckets, minutes, pods)
        assert target < p95 <= over
        q = t["metadata"]["query"]
        tests.append(_trigger_tests(w, q, family, minutes, 1, 0, [{"labels": "{}", "value": p95}]))
        tests.append(_trigger_tests(w, q, family, minutes, 0, 0, []))  # nothing waits: no result, KEDA's 0
        # A decode replica's requests waiting for KV memory wait all the same; elsewhere the gauge is 0.
        tests.append(
            _trigger_tests(w, q, family, minutes, 0, 2, [{"labels": "{}", "value": p95}] if decode else [])
        )
    _run(tmp_path, rule_file, tests)


def test_sglangs_default_buckets_are_the_ones_sgldeploy_extends():
    source = (sglang_source() / "srt" / "observability" / "metrics_collector.py").read_text()

    def defaults(name: str) -> tuple[float, ...]:
        found = re.search(rf"if {name} is None:\s*{name} = \[([^\]]*)\]", source)
        assert found, name
        return tuple(float(v) for v in found.group(1).replace("\n", "").split(",") if v.strip())

    assert sglang_args.TTFT_BUCKETS == defaults("bucket_time_to_first_token")
    assert sglang_args.ITL_BUCKETS == defaults("bucket_inter_token_latency")
    assert pw.TTFT_BUCKETS == defaults("bucket_time_to_first_token")
    assert pw.ITL_BUCKETS == defaults("bucket_inter_token_latency")


def test_targets_become_bucket_bounds_sglang_parses(variants):
    """The rendered flags, read back by SGLang 0.5.23's own parser, as floats: the defaults and the target."""
    plan = variants["prod"]
    [dep] = [
        d
        for d in resources_of(plan, "kubernetes:apps/v1:Deployment")
        if d.inputs["metadata"]["name"] == "llama-8b-0e9e39f2"  # blue-green: the commit's Deployment
    ]
    args = [str(a) for a in dep.inputs["spec"]["template"]["spec"]["containers"][0]["args"]]
    done = sglang_parse([a.replace("$(SGLANG_API_KEY)", "k") for a in args])
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout)
    assert parsed["bucket_time_to_first_token"] == sorted({*map(float, sglang_args.TTFT_BUCKETS), 0.5})
    assert parsed["bucket_inter_token_latency"] == sorted({*map(float, sglang_args.ITL_BUCKETS), 0.05})


def test_a_target_outside_the_defaults_is_one_bound_more_and_one_already_there_is_not_repeated():
    assert sglang_args.slo_histogram_buckets("ttft_p95_seconds", 0.35) == tuple(
        sorted({*map(float, pw.TTFT_BUCKETS), 0.35})
    )
    assert len(sglang_args.slo_histogram_buckets("ttft_p95_seconds", 2)) == len(pw.TTFT_BUCKETS)
    assert sglang_args.histogram_bound(1) == "1.0" and sglang_args.histogram_bound(0.05) == "0.05"


# ---- what the plan says and refuses ------------------------------------------------------------------------


def _loaded(deployments: list[dict], **platform: Any):
    return stack.load({"cluster": {"name": "c"}, **platform}, deployments, LOCK, set(), offline=True)


def test_a_ttft_target_scale_from_zero_cannot_meet_is_a_warning_with_both_cold_starts():
    raw = deployment(readiness="fast", slo={"ttft_p95_seconds": 5})  # fast: min_replicas 0, from zero
    [warning] = [w for w in _loaded([raw]).warnings if "slo.ttft_p95_seconds" in w.line()]
    line = warning.line()
    assert "deployments[0].slo.ttft_p95_seconds" in line and "is 5 s" in line
    figures = re.findall(r"(\d+) s on a (new|warm)", line)
    assert len(figures) == 2 and all(int(s) > 5 for s, _ in figures)
    kept = deployment(
        readiness="fast", scaling={"min_replicas": 1, "max_replicas": 2}, slo={"ttft_p95_seconds": 5}
    )
    assert not [
        w for w in _loaded([kept]).warnings if "ttft" in w.line()
    ]  # a replica stays up: no cold start
    generous = deployment(readiness="fast", slo={"ttft_p95_seconds": 3600})
    assert not [w for w in _loaded([generous]).warnings if "ttft" in w.line()]


def test_metric_slo_needs_its_targets_and_replicas_to_measure():
    none = deployment(scaling={"min_replicas": 1, "max_replicas": 2, "metric": "slo"})
    [line] = problem_lines([none])
    assert "deployments[0].scaling.metric" in line and "slo.ttft_p95_seconds or slo.itl_p95_seconds" in line
    zero = deployment(
        readiness="fast", scaling={"max_replicas": 2, "metric": "slo"}, slo={"itl_p95_seconds": 0.05}
    )
    [line] = problem_lines([zero])
    assert "min_replicas is 0" in line and "readiness fast" in line
    ok = deployment(
        scaling={"min_replicas": 1, "max_replicas": 2, "metric": "slo"}, slo={"itl_p95_seconds": 0.05}
    )
    assert problem_lines([ok]) == []


def test_each_role_needs_the_target_it_scales_on():
    raw = disaggregated(slo={"itl_p95_seconds": 0.05})
    raw["disaggregation"]["prefill"]["scaling"]["metric"] = "slo"
    raw["disaggregation"]["decode"]["scaling"]["metric"] = "slo"
    [line] = problem_lines([raw], **{k: v for k, v in PD_PLATFORM.items() if k != "cluster"})
    assert line.startswith("error: sgldeploy:deployments[0].disaggregation.prefill.scaling.metric: is slo")
    assert "the prefill role scales on slo.ttft_p95_seconds" in line
