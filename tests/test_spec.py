"""The typed spec: valid examples parse with their defaults; each invalid one names path, value and fix."""

from __future__ import annotations

import pydantic
import pytest

from sgldeploy.spec import READINESS_DEFAULTS, DeploymentSpec, PlatformSpec
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.validate import parse_stack

from .conftest import QWEN, deployment


def problems(platform, deployments) -> list[str]:
    with pytest.raises(InvalidInput) as err:
        parse_stack(platform, deployments)
    return [p.line() for p in err.value.problems]


def test_minimal_deployment_gets_documented_defaults():
    spec = parse_stack(None, [{"name": "qwen", "model": {"repo": "Qwen/Qwen2.5-7B-Instruct"}}])
    dep = spec.deployments[0]
    assert dep.model.revision == "main"
    assert dep.serving.image == "lmsysorg/sglang:v0.5.23"
    assert (dep.readiness, dep.min_replicas, dep.max_replicas) == ("fast", 0, 1)
    assert dep.cache_storage == READINESS_DEFAULTS["fast"]["cache_storage"]
    assert dep.idle_timeout_seconds == READINESS_DEFAULTS["fast"]["idle_timeout_seconds"]
    assert dep.endpoint.auth == "api-key" and dep.endpoint.exposure == "cluster"
    assert spec.platform.cluster.kubernetes_version == "1.35"
    assert spec.platform.node_provisioner == "karpenter"


@pytest.mark.parametrize("readiness", list(READINESS_DEFAULTS))
def test_readiness_sets_defaults_in_one_place(readiness):
    dep = parse_stack(
        None, [deployment(readiness=readiness, scaling={"max_replicas": 2}, cache={})]
    ).deployments[0]
    defaults = READINESS_DEFAULTS[readiness]
    assert dep.min_replicas == defaults["min_replicas"]
    assert dep.cache_storage == defaults["cache_storage"]
    assert dep.idle_timeout_seconds == defaults["idle_timeout_seconds"]


def test_explicit_values_override_readiness_defaults():
    dep = parse_stack(
        None,
        [
            deployment(
                readiness="cold-start",
                scaling={"min_replicas": 1, "max_replicas": 3, "idle_timeout_seconds": 60},
                cache={"storage": "efs"},
            )
        ],
    ).deployments[0]
    assert (dep.min_replicas, dep.idle_timeout_seconds, dep.cache_storage) == (1, 60, "efs")


def test_stopped_deployment_runs_no_replicas():
    dep = parse_stack(None, [deployment(state="stopped", scaling={"min_replicas": 0, "max_replicas": 0})])
    assert (dep.deployments[0].min_replicas, dep.deployments[0].max_replicas) == (0, 0)


@pytest.mark.parametrize("revision", ["main", "v1.0", "release/2024-10", "refs/pr/3", "a" * 40])
def test_revision_accepts_branches_tags_and_commits(revision):
    assert parse_stack(None, [deployment(model={**QWEN, "revision": revision})]).deployments[0]


def test_production_accepts_pinned_commit_and_full_spec():
    spec = parse_stack(
        {
            "environment": "production",
            "budget_usd_per_month": 1000,
            "tags": {"team": "ml"},
            "addons": {"leader_worker_set": True},
            "allow_trust_remote_code": True,
        },
        [
            deployment(
                model={**QWEN, "trust_remote_code": True, "served_name": "qwen"},
                serving={
                    "quantization": "fp8",
                    "kv_cache_dtype": "fp8_e4m3",
                    "context_length": 8192,
                    "mem_fraction_static": 0.85,
                    "extra_args": ["--enable-torch-compile"],
                    "speculative": {"algorithm": "NGRAM"},
                },
                rollout={"strategy": "canary", "canary_percent": 20},
                endpoint={
                    "exposure": "public",
                    "hostname": "llm.example.com",
                    "tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/abc-123",
                },
                env={"SGLANG_LOG_LEVEL": "info"},
            )
        ],
    )
    dep = spec.deployments[0]
    assert dep.rollout.canary_percent == 20 and dep.serving.mem_fraction_static == 0.85


# The canary's default share (10 %) is checked on the rendered ALB weights: test_rollout.py.


# (platform, deployments, config path, a fragment of the message) — one per rule, each must fail alone.
INVALID = [
    ("unknown top-level platform key", {"regoin": "x"}, None, "sgldeploy:platform.regoin", "known keys here"),
    (
        "environment not allowed",
        {"environment": "prod"},
        None,
        "sgldeploy:platform.environment",
        "development | staging | production",
    ),
    (
        "k8s version as a number",
        {"cluster": {"kubernetes_version": 1.3}},
        None,
        "sgldeploy:platform.cluster.kubernetes_version",
        "quote it",
    ),
    (
        "vpc cidr malformed",
        {"cluster": {"vpc_cidr": "10.0.0.0/33"}},
        None,
        "sgldeploy:platform.cluster.vpc_cidr",
        "CIDR",
    ),
    (
        "vpc cidr too small",
        {"cluster": {"vpc_cidr": "10.0.0.0/24"}},
        None,
        "sgldeploy:platform.cluster.vpc_cidr",
        "/20 or larger",
    ),
    ("namespace not DNS", {"namespace": "LLM_Prod"}, None, "sgldeploy:platform.namespace", "DNS-1123"),
    ("negative budget", {"budget_usd_per_month": -5}, None, "sgldeploy:platform.budget_usd_per_month", "≥ 0"),
    (
        "addon not true, false or existing",
        {"addons": {"keda": "yes please"}},
        None,
        "sgldeploy:platform.addons.keda",
        "true, false or existing",
    ),
    ("name not DNS-1035", None, [deployment(name="Qwen_7B")], "sgldeploy:deployments[0].name", "DNS-1035"),
    ("name too long", None, [deployment(name="q" * 41)], "sgldeploy:deployments[0].name", "at most 40"),
    (
        "name starts with digit",
        None,
        [deployment(name="7b-qwen")],
        "sgldeploy:deployments[0].name",
        "DNS-1035",
    ),
    ("duplicate names", None, [deployment(), deployment()], "sgldeploy:deployments[1].name", "already used"),
    (
        "repo without org",
        None,
        [deployment(model={"repo": "qwen"})],
        "sgldeploy:deployments[0].model.repo",
        "org/name",
    ),
    (
        "repo with bad chars",
        None,
        [deployment(model={"repo": "Qwen/Qwen 7B"})],
        "sgldeploy:deployments[0].model.repo",
        "org/name",
    ),
    (
        "repo missing",
        None,
        [{"name": "x", "model": {}}],
        "sgldeploy:deployments[0].model.repo",
        "is required",
    ),
    (
        "revision with ..",
        None,
        [deployment(model={**QWEN, "revision": "../../etc"})],
        "sgldeploy:deployments[0].model.revision",
        "'..'",
    ),
    (
        "revision absolute",
        None,
        [deployment(model={**QWEN, "revision": "/etc/passwd"})],
        "sgldeploy:deployments[0].model.revision",
        "leading '/'",
    ),
    (
        "revision with backslash",
        None,
        [deployment(model={**QWEN, "revision": "a\\b"})],
        "sgldeploy:deployments[0].model.revision",
        "backslash",
    ),
    (
        "revision with NUL",
        None,
        [deployment(model={**QWEN, "revision": "main\0"})],
        "sgldeploy:deployments[0].model.revision",
        "NUL",
    ),
    (
        "revision with space",
        None,
        [deployment(model={**QWEN, "revision": "my branch"})],
        "sgldeploy:deployments[0].model.revision",
        "whitespace",
    ),
    (
        "trust_remote_code not allowed",
        None,
        [deployment(model={**QWEN, "trust_remote_code": True})],
        "sgldeploy:deployments[0].model.trust_remote_code",
        "allow_trust_remote_code",
    ),
    (
        "min > max",
        None,
        [deployment(scaling={"min_replicas": 2, "max_replicas": 1})],
        "sgldeploy:deployments[0].scaling.max_replicas",
        "must be ≥ min_replicas (got 1 < 2)",
    ),
    (
        "max 0 while running",
        None,
        [deployment(scaling={"min_replicas": 0, "max_replicas": 0})],
        "sgldeploy:deployments[0].scaling.max_replicas",
        "state: stopped",
    ),
    (
        "negative min",
        None,
        [deployment(scaling={"min_replicas": -1})],
        "sgldeploy:deployments[0].scaling.min_replicas",
        "≥ 0",
    ),
    (
        "always-ready at zero",
        None,
        [deployment(readiness="always-ready", scaling={"min_replicas": 0})],
        "sgldeploy:deployments[0].scaling.min_replicas",
        "always-ready",
    ),
    (
        "metric unknown",
        None,
        [deployment(scaling={"metric": "qps"})],
        "sgldeploy:deployments[0].scaling.metric",
        "queue-depth",
    ),
    (
        "context length zero",
        None,
        [deployment(serving={"context_length": 0})],
        "sgldeploy:deployments[0].serving.context_length",
        "> 0",
    ),
    (
        "context length text",
        None,
        [deployment(serving={"context_length": "long"})],
        "sgldeploy:deployments[0].serving.context_length",
        "whole number",
    ),
    (
        "gpu_count 3",
        None,
        [deployment(resources={"gpu_count": 3})],
        "sgldeploy:deployments[0].resources.gpu_count",
        "1, 2, 4, 8 or a multiple of 8",
    ),
    (
        "gpu_count 12",
        None,
        [deployment(resources={"gpu_count": 12})],
        "sgldeploy:deployments[0].resources.gpu_count",
        "multiple of 8",
    ),
    (
        "gpu_count zero",
        None,
        [deployment(resources={"gpu_count": 0})],
        "sgldeploy:deployments[0].resources.gpu_count",
        "≥ 1",
    ),
    (
        "gpu unknown",
        None,
        [deployment(resources={"gpu": "K80"})],
        "sgldeploy:deployments[0].resources.gpu",
        "A10G",
    ),
    (
        "capacity unknown",
        None,
        [deployment(resources={"capacity": "savings-plan"})],
        "sgldeploy:deployments[0].resources.capacity",
        "reserved-fallback",
    ),
    (
        "canary percent without canary",
        None,
        [deployment(rollout={"canary_percent": 10})],
        "sgldeploy:deployments[0].rollout.canary_percent",
        "strategy canary",
    ),
    (
        "canary percent 100",
        None,
        [deployment(rollout={"strategy": "canary", "canary_percent": 100})],
        "sgldeploy:deployments[0].rollout.canary_percent",
        "1–99",
    ),
    (
        "canary percent 0",
        None,
        [deployment(rollout={"strategy": "canary", "canary_percent": 0})],
        "sgldeploy:deployments[0].rollout.canary_percent",
        "1–99",
    ),
    (
        "rollout that cannot progress",
        None,
        [deployment(rollout={"max_surge": 0, "max_unavailable": 0})],
        "sgldeploy:deployments[0].rollout.max_unavailable",
        "both be 0",
    ),
    (
        "mem fraction too high",
        None,
        [deployment(serving={"mem_fraction_static": 0.99})],
        "sgldeploy:deployments[0].serving.mem_fraction_static",
        "0.5–0.95",
    ),
    (
        "mem fraction too low",
        None,
        [deployment(serving={"mem_fraction_static": 0.3})],
        "sgldeploy:deployments[0].serving.mem_fraction_static",
        "0.5–0.95",
    ),
    (
        "mem fraction text",
        None,
        [deployment(serving={"mem_fraction_static": "most"})],
        "sgldeploy:deployments[0].serving.mem_fraction_static",
        "'auto' or a number",
    ),
    (
        "quantization unknown",
        None,
        [deployment(serving={"quantization": "int3"})],
        "sgldeploy:deployments[0].serving.quantization",
        "w8a8_fp8",
    ),
    (
        "awq with bfloat16",
        None,
        [deployment(serving={"quantization": "awq", "precision": "bfloat16"})],
        "sgldeploy:deployments[0].serving.precision",
        "float16",
    ),
    (
        "speculative without draft",
        None,
        [deployment(serving={"speculative": {"algorithm": "EAGLE"}})],
        "sgldeploy:deployments[0].serving.speculative.draft_repo",
        "required by EAGLE",
    ),
    (
        "extra arg overrides generated flag",
        None,
        [deployment(serving={"extra_args": ["--tp-size", "2"]})],
        "sgldeploy:deployments[0].serving.extra_args[0]",
        "resources.gpu_count",
    ),
    (
        "api key in extra args",
        None,
        [deployment(serving={"extra_args": ["--api-key=abc"]})],
        "sgldeploy:deployments[0].serving.extra_args[0]",
        "endpoint.auth",
    ),
    (
        "image without tag",
        None,
        [deployment(serving={"image": "lmsysorg/sglang"})],
        "sgldeploy:deployments[0].serving.image",
        "pin it",
    ),
    (
        "health path relative",
        None,
        [deployment(endpoint={"health_check": {"path": "health"}})],
        "sgldeploy:deployments[0].endpoint.health_check.path",
        "start it with '/'",
    ),
    (
        "health interval too short",
        None,
        [deployment(endpoint={"health_check": {"interval_seconds": 1}})],
        "sgldeploy:deployments[0].endpoint.health_check.interval_seconds",
        "≥ 5",
    ),
    (
        "tls arn malformed",
        None,
        [deployment(endpoint={"exposure": "public", "tls_certificate_arn": "cert-1"})],
        "sgldeploy:deployments[0].endpoint.tls_certificate_arn",
        "ACM certificate ARN",
    ),
    (
        "tls on cluster-only endpoint",
        None,
        [deployment(endpoint={"tls_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/abc"})],
        "sgldeploy:deployments[0].endpoint.tls_certificate_arn",
        "exposure is cluster",
    ),
    (
        "public endpoint without auth",
        None,
        [deployment(endpoint={"exposure": "public", "auth": "none"})],
        "sgldeploy:deployments[0].endpoint.auth",
        "public endpoint",
    ),
    (
        "hostname invalid",
        None,
        [deployment(endpoint={"exposure": "internal", "hostname": "LLM..example"})],
        "sgldeploy:deployments[0].endpoint.hostname",
        "DNS name",
    ),
    (
        "secret in env",
        None,
        [deployment(env={"HF_TOKEN": "hf_abc"})],
        "sgldeploy:deployments[0].env.HF_TOKEN",
        "pulumi config set --secret",
    ),
    (
        "env name invalid",
        None,
        [deployment(env={"1BAD": "x"})],
        "sgldeploy:deployments[0].env.1BAD",
        "environment variable name",
    ),
    (
        "unknown deployment key",
        None,
        [deployment(replicas=3)],
        "sgldeploy:deployments[0].replicas",
        "known keys here",
    ),
    (
        "unknown nested key",
        None,
        [deployment(scaling={"max": 3})],
        "sgldeploy:deployments[0].scaling.max",
        "max_replicas",
    ),
    (
        "state unknown",
        None,
        [deployment(state="paused")],
        "sgldeploy:deployments[0].state",
        "running | stopped",
    ),
    ("deployments not a list", None, {"qwen": deployment()}, "sgldeploy:deployments", "must be a list"),
    ("deployment not an object", None, ["qwen"], "sgldeploy:deployments[0]", "must be an object"),
]


@pytest.mark.parametrize("case, platform, deployments, path, fragment", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input_names_path_value_and_fix(case, platform, deployments, path, fragment):
    lines = problems(platform, deployments if deployments is not None else [deployment()])
    matching = [line for line in lines if line.startswith(f"error: {path}: ")]
    assert matching, f"{case}: no problem at {path} in {lines}"
    line = matching[0]
    assert fragment in line, f"{case}: {line!r} lacks {fragment!r}"
    assert "; " in line, f"{case}: {line!r} has no fix"
    assert "Traceback" not in line


def test_enough_distinct_invalid_cases():
    assert len({c[3] + c[4] for c in INVALID}) >= 30


def test_every_problem_is_reported_at_once():
    lines = problems(
        {"environment": "prod"},
        [
            deployment(name="Bad_Name", scaling={"min_replicas": 3, "max_replicas": 1}),
            deployment(name="ok", resources={"gpu_count": 3}, serving={"mem_fraction_static": 2}),
        ],
    )
    paths = {line.split(": ")[1] for line in lines}
    assert paths >= {
        "sgldeploy:platform.environment",
        "sgldeploy:deployments[0].name",
        "sgldeploy:deployments[0].scaling.max_replicas",
        "sgldeploy:deployments[1].resources.gpu_count",
        "sgldeploy:deployments[1].serving.mem_fraction_static",
    }
    assert all(line.startswith("error: ") for line in lines)


def test_values_are_shown_short():
    line = problems(None, [deployment(model={"repo": "x" * 500})])[0]
    assert len(line) < 400 and "…" in line


def test_models_are_frozen_and_forbid_extra_keys():
    assert DeploymentSpec.model_config["extra"] == "forbid"
    assert PlatformSpec.model_config["extra"] == "forbid"
    dep = parse_stack(None, [deployment()]).deployments[0]
    with pytest.raises(pydantic.ValidationError):
        dep.name = "other"  # type: ignore[misc]


def test_every_field_is_documented():
    def walk(model, seen):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            sub = field.annotation
            for arg in getattr(sub, "__args__", ()) + (sub,):
                if isinstance(arg, type) and hasattr(arg, "model_fields") and arg not in seen:
                    seen.add(arg)
                    walk(arg, seen)

    walk(PlatformSpec, set())
    walk(DeploymentSpec, set())


@pytest.mark.parametrize(
    "written, line",
    [
        (
            "fp8",
            "error: sgldeploy:deployments[0].serving.precision: is the dtype of weights and activations; fp8 is "
            "a quantization method (got 'fp8'); set serving.quantization: fp8 and leave precision auto",
        ),
        (
            "awq",
            "error: sgldeploy:deployments[0].serving.precision: is the dtype of weights and activations; awq is "
            "a quantization method (got 'awq'); set serving.quantization: awq and leave precision auto",
        ),
        (
            "fp8_e4m3",
            "error: sgldeploy:deployments[0].serving.precision: is the dtype of weights and activations, not of "
            "the KV cache (got 'fp8_e4m3'); set serving.kv_cache_dtype: fp8_e4m3 and leave precision auto",
        ),
        (
            "bf16",
            "error: sgldeploy:deployments[0].serving.precision: is not one of the allowed values (got 'bf16'); "
            "write precision: bfloat16",
        ),
    ],
)
def test_precision_points_to_the_field_that_takes_the_value(written, line):
    assert problems(None, [deployment(serving={"precision": written})]) == [line]


def test_precision_pointer_names_a_value_the_other_field_accepts():
    """What the message tells the user to write is itself valid."""
    dep = parse_stack(None, [deployment(serving={"quantization": "fp8"})]).deployments[0]
    assert (dep.serving.quantization, dep.serving.precision) == ("fp8", "auto")
    dep = parse_stack(None, [deployment(serving={"kv_cache_dtype": "fp8_e4m3"})]).deployments[0]
    assert dep.serving.kv_cache_dtype == "fp8_e4m3"
    assert parse_stack(None, [deployment(serving={"precision": "bfloat16"})]).deployments[0]


# ---- revisions: the boundaries of what names a Hub directory safely, and the exact words refused ----------

REVISION_PATH = "sgldeploy:deployments[0].model.revision"
PLAIN_FIX = "use a plain branch or tag name, or the 40-hex commit"


def revision_problems(revision) -> list[str]:
    return problems(None, [deployment(model={**QWEN, "revision": revision})])


@pytest.mark.parametrize(
    "revision, reasons",
    [
        ("main/", "a trailing '/'"),  # the Hub's folder for "main/" would be "main", another revision's
        ("refs/pr/", "a trailing '/'"),
        ("/", "a leading '/', a trailing '/'"),
        ("../x/", "'..', a trailing '/'"),  # every reason at once, in the order the rules are listed
        ("a..b", "'..'"),
        ("/main", "a leading '/'"),
        ("a\\b", "a backslash"),
        ("a\tb", "whitespace"),
    ],
)
def test_a_revision_that_could_escape_its_directory_is_refused_in_so_many_words(revision, reasons):
    assert revision_problems(revision) == [
        f"error: {REVISION_PATH}: must not contain {reasons} (got {revision!r}); {PLAIN_FIX}"
    ]


@pytest.mark.parametrize("revision", ["main", "a/b", "refs/pr/3", "v1.0/x", "a.b"])
def test_a_slash_or_a_dot_inside_a_revision_is_accepted(revision):
    # One below the refused shapes: a slash that neither leads nor trails, a dot that is not '..'.
    assert parse_stack(None, [deployment(model={**QWEN, "revision": revision})]).deployments[0]


def test_a_revision_with_other_characters_says_which_are_allowed():
    assert revision_problems("ma~in") == [
        f"error: {REVISION_PATH}: may only contain letters, digits and . _ / + = - (got 'ma~in'); use the "
        "branch, tag or commit exactly as the Hub shows it"
    ]
    assert revision_problems("") == [
        f"error: {REVISION_PATH}: must be a branch, tag or 40-hex commit (got ''); e.g. main or a commit sha"
    ]


def test_a_revision_is_at_most_255_characters():
    assert parse_stack(None, [deployment(model={**QWEN, "revision": "a" * 255})]).deployments[0]
    (line,) = revision_problems("a" * 256)
    assert line.startswith(f"error: {REVISION_PATH}: ")


# ---- numbers or auto: the bounds, one below, at and one above ------------------------------------------


@pytest.mark.parametrize(
    "section, key, value, taken",
    [
        ("serving", "mem_fraction_static", 0.49, False),
        ("serving", "mem_fraction_static", 0.5, True),
        ("serving", "mem_fraction_static", 0.95, True),
        ("serving", "mem_fraction_static", 0.96, False),
        ("resources", "gpu_count", 0, False),
        ("resources", "gpu_count", 1, True),
        ("resources", "cpu", 0.09, False),
        ("resources", "cpu", 0.1, True),
        ("resources", "memory_gib", 0.1, True),
        ("resources", "disk_gib", 1, True),
        ("resources", "disk_gib", 0, False),
    ],
)
def test_auto_numbers_are_taken_from_their_minimum_to_their_maximum(section, key, value, taken):
    raw = deployment(**{section: {key: value}})
    if taken:
        parsed = getattr(parse_stack(None, [raw]).deployments[0], section)
        assert getattr(parsed, key) == value
        return
    bounds = {"mem_fraction_static": "0.5–0.95", "cpu": "≥ 0.1"}.get(key, "≥ 1")
    assert problems(None, [raw]) == [
        f"error: sgldeploy:deployments[0].{section}.{key}: must be {bounds} (got {value}); use a value in "
        f"{bounds}, or auto"
    ]


@pytest.mark.parametrize(
    "key, value, shown, whole",
    [
        ("mem_fraction_static", True, "true", ""),  # YAML true is no fraction, though Python's True == 1
        ("mem_fraction_static", "0.8", "'0.8'", ""),
    ],
)
def test_a_fraction_that_is_no_number_is_refused(key, value, shown, whole):
    assert problems(None, [deployment(serving={key: value})]) == [
        f"error: sgldeploy:deployments[0].serving.{key}: must be 'auto' or a {whole}number (got {shown}); "
        "write auto to let sgldeploy choose, or a number"
    ]


@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (True, "true"), ("2", "'2'")])
def test_a_gpu_count_must_be_a_whole_number(value, shown):
    assert problems(None, [deployment(resources={"gpu_count": value})]) == [
        f"error: sgldeploy:deployments[0].resources.gpu_count: must be 'auto' or a whole number (got {shown}); "
        "write auto to let sgldeploy choose, or a number"
    ]
    # 2.0 is a whole number: read as the int 2 (a flag's `--tp-size 2`, never `2.0`).
    resources = (
        parse_stack(None, [deployment(resources={"gpu_count": 2.0, "cpu": 2})]).deployments[0].resources
    )
    assert (type(resources.gpu_count), resources.gpu_count) == (int, 2)
    assert (type(resources.cpu), resources.cpu) == (float, 2.0)


# ---- what pydantic reports, as one line each ------------------------------------------------------------


@pytest.mark.parametrize("length, refused", [(62, False), (63, False), (64, True)])
def test_a_string_over_its_length_is_one_line_in_pydantics_words(length, refused):
    platform = {"namespace": "n" * length}  # a DNS-1123 label: at most 63 characters
    if not refused:
        assert parse_stack(platform, [deployment()]).platform.namespace == "n" * length
        return
    assert problems(platform, [deployment()]) == [
        f"error: sgldeploy:platform.namespace: string should have at most 63 characters (got '{'n' * length}'); "
        "shorten or correct it"
    ]


def test_a_string_against_its_pattern_is_one_line():
    [line] = problems({"cluster": {"name": "-x"}}, [deployment()])
    # The pattern as EKS's CreateCluster documents a cluster name (letters, digits, - and _, not starting with
    # either), shown with its case: [A-Za-z] lowercased would read [a-za-z] and say something else.
    assert line == (
        "error: sgldeploy:platform.cluster.name: string should match pattern '^[A-Za-z0-9][A-Za-z0-9_-]*$' "
        "(got '-x'); shorten or correct it"
    )


def test_a_type_error_of_a_kind_without_a_phrase_still_reads_as_one_line():
    """Every field today is a number, text, a flag, a list or an object; a field of another type (a set, here)
    still gets a line from pydantic's error kind, not a crash."""
    from sgldeploy.spec.validate import _problem

    class WithASet(pydantic.BaseModel):
        tags: set[str]

    with pytest.raises(pydantic.ValidationError) as err:
        WithASet.model_validate({"tags": 5})
    [detail] = err.value.errors(include_url=False)
    assert detail["type"] == "set_type"
    assert _problem(WithASet, "platform", (), detail).line() == (
        "error: sgldeploy:platform.tags: must be set type (got 5); write set type here"
    )


def test_the_json_schema_of_an_auto_number_has_the_validators_bounds():
    """Editors check stack files with the schema: 0.49 and 0.96 refused, 0.5 and 0.95 taken, as parse_stack
    does (test_auto_numbers_are_taken_from_their_minimum_to_their_maximum). The helper is called here, not
    only at import, so a mutation of it is seen by the test that runs it."""
    import jsonschema

    from sgldeploy.spec import _auto_or

    class Fraction(pydantic.BaseModel):
        value: _auto_or(float, 0.5, 0.95)  # type: ignore[valid-type]

    schema = Fraction.model_json_schema()["properties"]["value"]
    assert schema["anyOf"] == [{"const": "auto"}, {"type": "number", "minimum": 0.5, "maximum": 0.95}]
    validator = jsonschema.Draft202012Validator(schema)
    for value, taken in ((0.49, False), (0.5, True), (0.95, True), (0.96, False), ("auto", True)):
        assert validator.is_valid(value) is taken, value


@pytest.mark.parametrize("exposure, refused", [("public", True), ("internal", False), ("cluster", False)])
def test_auth_none_is_refused_on_a_public_endpoint_only(exposure, refused):
    try:
        parse_stack(None, [deployment(endpoint={"exposure": exposure, "auth": "none"})])
        lines = []
    except InvalidInput as invalid:
        lines = [p.line() for p in invalid.problems if p.path.endswith(".endpoint.auth")]
    assert lines == (
        [
            "error: sgldeploy:deployments[0].endpoint.auth: must not be none on a public endpoint (got 'none'); "
            "use auth: api-key, or exposure: internal"
        ]
        if refused
        else []
    )


def test_the_stack_file_schema_tells_how_to_set_the_hugging_face_token():
    """Called in-process (not only through `sgldeploy schema`), the schema's hfToken is a secure value whose
    description is the command DESIGN.md gives for setting it."""
    from sgldeploy.spec.json_schema import SECURE_VALUE, stack_file_schema

    token = stack_file_schema()["properties"]["config"]["properties"]["sgldeploy:hfToken"]
    assert token == {
        **SECURE_VALUE,
        "description": "Hugging Face token: pulumi config set --secret sgldeploy:hfToken hf_…",
    }


def test_a_deployment_refused_in_shape_does_not_hide_the_rules_of_the_next():
    """Every problem at once: the first deployment fails its shape, the second a rule across its fields."""
    assert problems(
        None,
        [
            deployment(name="a", scaling={"max_replicas": "two"}),
            deployment(name="b", scaling={"min_replicas": 2, "max_replicas": 1}),
        ],
    ) == [
        "error: sgldeploy:deployments[0].scaling.max_replicas: must be a whole number (got 'two'); "
        "write a whole number here",
        "error: sgldeploy:deployments[1].scaling.max_replicas: must be ≥ min_replicas (got 1 < 2); "
        "raise max_replicas or lower min_replicas",
    ]


@pytest.mark.parametrize(
    "file, name",
    [
        ("Pulumi.prod.yaml", "prod"),
        ("Pulumi.prod.yml", "prod"),
        ("Pulumi.team.prod.yaml", "team.prod"),  # Pulumi stack names may hold dots
        ("Pulumi.yaml.yaml", "yaml"),
        ("prod.yaml", "prod"),  # not named as Pulumi names stack files: its stem
        ("Pulumi.prod.json", "Pulumi.prod"),
    ],
)
def test_the_stack_name_is_what_pulumi_names_the_file_by(file, name):
    from pathlib import Path

    from sgldeploy.spec.stackfile import stack_name

    assert stack_name(Path("/some/dir") / file) == name
