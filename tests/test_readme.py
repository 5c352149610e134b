"""README true, and kept true: what README.md prints as output is compared with the real output.

- each fenced block after a marker `<!-- output of: COMMAND -->` is what COMMAND prints (the Quickstart's dev plan,
  the prod stack's resource tree);
- the Stacks table: one row per committed stack, and its figures (requests × context, replica bounds, the
  placement chosen, what a cheaper GPU would need) are the plan's;
- the CI snippet's `sgldeploy` commands run as written on the repository as shipped and exit 0;
- every example `error:`/`warning:` line is the line the CLI prints for an input that causes it.

On a difference the test prints a diff. After an intended change of the output, regenerate the printed parts
(and only those: never the prose around them) with

    SGLDEPLOY_UPDATE_README=1 .venv/bin/python -m pytest tests/test_readme.py -q

and review the change with `git diff README.md`.
"""

from __future__ import annotations

import difflib
import functools
import io
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest

from sgldeploy import cli
from sgldeploy.files import write_atomic
from sgldeploy.offline.render import Plan, render
from sgldeploy.spec.stackfile import read_stack_file, stack_path

from .conftest import ROOT, deployment, write_stack

README = ROOT / "README.md"
UPDATE = os.environ.get("SGLDEPLOY_UPDATE_README") == "1"
REGENERATE = (
    "if the new output is intended, regenerate with SGLDEPLOY_UPDATE_README=1 (see tests/test_readme.py)"
)
MARKER = re.compile(r"<!-- output of: (?P<command>.+?) -->")
FENCE = "```"


# ---- running the CLI -----------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`sgldeploy ARGV` in-process, from the repository's root: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv), root=ROOT)
    return code, out.getvalue(), err.getvalue()


@functools.cache
def plan_stdout(stack: str) -> str:
    code, out, err = run_cli("plan", "--stack", stack)
    assert code == 0, err
    return out.rstrip("\n")


def resource_tree(stdout: str) -> str:
    """The plan's stdout up to its `+ N to create` line."""
    lines = stdout.splitlines()
    end = next(i for i, line in enumerate(lines) if re.fullmatch(r"    \+ \d+ to create", line))
    return "\n".join(lines[: end + 1])


def deployment_summaries(stdout: str) -> str:
    """The plan's stdout from its first deployment's line up to the stack's cost line."""
    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if re.match(r"[a-z][-a-z0-9]*: \S+@[0-9a-f]{12} ", line))
    end = next(i for i, line in enumerate(lines) if line.startswith("stack cost "))
    return "\n".join(lines[first:end])


def throughput_calibration() -> str:
    """The calibration table bench/throughput.py prints first."""
    import runpy

    out = io.StringIO()
    with redirect_stdout(out):
        runpy.run_path(str(ROOT / "bench" / "throughput.py"))["calibration"]()
    return out.getvalue().rstrip("\n")


def help_text(*argv: str) -> str:
    """What `sgldeploy ARGV --help` prints on a terminal 110 columns wide (argparse wraps to COLUMNS)."""
    out = io.StringIO()
    with (
        mock.patch.dict(os.environ, {"COLUMNS": "110"}),
        redirect_stdout(out),
        pytest.raises(SystemExit) as exit_,
    ):
        cli.main([*argv, "--help"], root=ROOT)
    assert exit_.value.code == 0
    return out.getvalue().rstrip("\n")


PRINTED: dict[str, Callable[[], str]] = {
    "sgldeploy plan --stack dev": lambda: plan_stdout("dev"),
    "sgldeploy plan --stack prod, its resource tree": lambda: resource_tree(plan_stdout("prod")),
    "sgldeploy --help": lambda: help_text(),
    "sgldeploy validate --help": lambda: help_text("validate"),
    "sgldeploy plan --help": lambda: help_text("plan"),
    "sgldeploy lock --help": lambda: help_text("lock"),
    "sgldeploy verify --help": lambda: help_text("verify"),
    "bench/throughput.py, the calibration": lambda: throughput_calibration(),
    "sgldeploy plan --stack disaggregated, its deployments": lambda: deployment_summaries(
        plan_stdout("disaggregated")
    ),
}


# ---- reading and rewriting README ----------------------------------------------------------------------


def readme_lines() -> list[str]:
    return README.read_text().split("\n")


def write_readme(lines: list[str]) -> None:
    text = "\n".join(lines)
    if text == README.read_text():
        return
    mode = README.stat().st_mode
    write_atomic(README, text)
    os.chmod(README, mode)  # the temporary file's 0600 would stick


def differences(shown: str, real: str, what: str) -> str:
    diff = difflib.unified_diff(
        shown.splitlines(), real.splitlines(), f"README.md: {what}", "real output", lineterm=""
    )
    return "\n".join(diff)


def check(shown: str, real: str, what: str) -> None:
    diff = differences(shown, real, what)
    assert not diff, f"README.md's {what} is not the real output; {REGENERATE}\n{diff}"


def printed_block(lines: list[str], command: str) -> tuple[int, int]:
    """The body of the one fenced block under `<!-- output of: COMMAND -->`: first line, end (the fence)."""
    at = [i for i, line in enumerate(lines) if (m := MARKER.fullmatch(line)) and m["command"] == command]
    assert len(at) == 1, (
        f"README.md must print the output of `{command}` once, after <!-- output of: {command} -->"
    )
    assert lines[at[0] + 1] == FENCE, f"the marker for `{command}` must be followed by a ``` block"
    return at[0] + 2, lines.index(FENCE, at[0] + 2)


def test_every_marker_names_a_command_this_test_runs():
    named = {m["command"] for line in readme_lines() if (m := MARKER.fullmatch(line))}
    assert named == set(PRINTED)


@pytest.mark.parametrize("command", sorted(PRINTED))
def test_printed_output_is_the_real_output(command):
    real = PRINTED[command]()
    lines = readme_lines()
    first, end = printed_block(lines, command)
    if UPDATE:
        lines[first:end] = real.split("\n")
        write_readme(lines)
        first, end = printed_block(lines, command)
    check("\n".join(lines[first:end]), real, f"output of `{command}`")


# ---- the Stacks table ----------------------------------------------------------------------------------

COMMITTED = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
PLACEMENT = re.compile(r"[a-z0-9]+\.[a-z0-9]+ \(\d+× [A-Za-z0-9-]+\)")  # g6e.xlarge (1× L40S)
WOULD_NEED = re.compile(r"the (?P<gpu>[A-Za-z0-9-]+) would need [\d.]+ of [\d.]+ GiB")
REQUESTS = re.compile(r"\d+ × \d+k")  # max_concurrency × context_length in k tokens
REPLICAS = re.compile(r"\d+–\d+")  # min–max replicas


@functools.cache
def rendered(stack: str) -> Plan:
    return render(read_stack_file(stack_path(stack, ROOT)))


def would_need(plan: Plan, gpu: str) -> str:
    options = [
        c for d in plan.loaded.deployments for c in d.sizing.cheaper_infeasible if c.instance.gpu == gpu
    ]
    assert options, f"the plan of {plan.stack.stack} names no cheaper placement on {gpu} that does not fit"
    need = options[0].memory
    return f"the {gpu} would need {need.required_gib_per_gpu:g} of {need.gpu_memory_gib:g} GiB"


def figures(plan: Plan) -> dict[re.Pattern[str], list[str]]:
    """What the table's cells say about each deployment of the stack, in order, as the plan gives it."""
    out: dict[re.Pattern[str], list[str]] = {PLACEMENT: [], REQUESTS: [], REPLICAS: []}
    for d in plan.loaded.deployments:
        p, context = d.sizing.placement, d.sizing.context_length
        assert context % 1024 == 0, f"{d.spec.name}: a context of {context} tokens is not a whole number of k"
        out[PLACEMENT].append(f"{p.instance_type} ({p.gpus_per_replica}× {p.gpu_model})")
        out[REQUESTS].append(f"{d.spec.serving.max_concurrency} × {context // 1024}k")
        out[REPLICAS].append(f"{d.spec.min_replicas}–{d.spec.max_replicas}")
    return out


def with_figures(cell: str, pattern: re.Pattern[str], values: list[str], stack: str) -> str:
    found = pattern.findall(cell)
    assert len(found) == len(values), (
        f"README.md's Stacks table, {stack}: {len(found)} figure(s) like {pattern.pattern!r} for "
        f"{len(values)} deployment(s) ({values}); write one per deployment, in the stack's order"
    )
    real: Iterator[str] = iter(values)
    return pattern.sub(lambda _: next(real), cell)


def stack_rows(lines: list[str]) -> dict[str, int]:
    start = lines.index("## Stacks")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    rows = {}
    for i in range(start, end):
        if m := re.match(r"\| `([\w-]+)` \|", lines[i]):
            rows[m[1]] = i
    return rows


def real_row(row: str, stack: str) -> str:
    """The row with every figure it states replaced by the plan's."""
    name, what, placement = (cell.strip() for cell in row.strip().strip("|").split("|"))
    plan = rendered(stack)
    real = figures(plan)
    what = with_figures(with_figures(what, REQUESTS, real[REQUESTS], stack), REPLICAS, real[REPLICAS], stack)
    placement = with_figures(placement, PLACEMENT, real[PLACEMENT], stack)
    placement = WOULD_NEED.sub(lambda m: would_need(plan, m["gpu"]), placement)
    return f"| {name} | {what} | {placement} |"


def test_the_stacks_table_has_one_row_per_committed_stack():
    assert sorted(stack_rows(readme_lines())) == COMMITTED


@pytest.mark.parametrize("stack", COMMITTED)
def test_the_stacks_table_states_the_plans_figures(stack):
    lines = readme_lines()
    at = stack_rows(lines)[stack]
    real = real_row(lines[at], stack)
    if UPDATE:
        lines[at] = real
        write_readme(lines)
    check(lines[at], real, f"Stacks table row for {stack}")


# ---- the CI snippet ------------------------------------------------------------------------------------


def ci_snippet() -> list[list[str]]:
    """The `sgldeploy` commands of README's CI snippet (the indented block with `plan --stack prod --compare`)."""
    lines = readme_lines()
    at = next(i for i, line in enumerate(lines) if "sgldeploy plan --stack prod --compare" in line)
    first = at
    while lines[first - 1].startswith("    "):
        first -= 1
    last = at
    while lines[last + 1].startswith("    "):
        last += 1
    commands = []
    for line in lines[first : last + 1]:
        for command in re.findall(r"sgldeploy [^&)\n]+", line):
            commands.append(shlex.split(command)[1:])
    return commands


def test_the_ci_snippet_runs_on_the_repository_as_shipped(tmp_path, monkeypatch):
    """Both commands, as written, on the committed prod stack with no secret set (the base branch's plan comes
    from this checkout: `git worktree add ../base origin/main` needs a remote). Absolute paths (/tmp/…) are
    moved into the test's directory; relative ones are written there too."""
    commands = ci_snippet()
    assert [c[:3] for c in commands] == [["plan", "--stack", "prod"]] * 2
    assert "--compare" in commands[1]
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        argv = [str(tmp_path / Path(a).name) if a.startswith("/") else a for a in argv]
        code, _, err = run_cli(*argv)
        assert code == 0, f"`sgldeploy {shlex.join(argv)}` exited {code}:\n{err}"
        assert not [line for line in err.splitlines() if line.startswith("error:")]
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["stack"] == "prod" and "diff" in written
    assert (tmp_path / "comment.md").read_text().strip()


# ---- example error and warning lines ---------------------------------------------------------------------

EXAMPLE = re.compile(r"    (?P<line>(?P<level>error|warning): (?P<path>\S+): .+)")
ERROR_LINE = re.compile(r"error: \S+: [^;]+?( \(got [^)]+\))?; .+")
WARNING_LINE = re.compile(r"warning: \S+: [^;]+; .+")


def _max_below_min(tmp_path: Path) -> list[str]:
    scaling = {"min_replicas": 2, "max_replicas": 1}
    return ["validate", "--config", str(write_stack(tmp_path, deployments=[deployment(scaling=scaling)]))]


def _not_in_the_lock(tmp_path: Path) -> list[str]:
    model = {"repo": "mistralai/Mistral-7B-Instruct-v0.3"}
    return ["validate", "--config", str(write_stack(tmp_path, deployments=[deployment(model=model)]))]


# (level, config path) → the CLI arguments whose stderr has that line
EXAMPLES: dict[tuple[str, str], Callable[[Path], list[str]]] = {
    ("error", "sgldeploy:deployments[0].scaling.max_replicas"): _max_below_min,
    ("error", "sgldeploy:deployments[0].model.revision"): _not_in_the_lock,
    ("warning", "sgldeploy:hfToken"): lambda _: ["validate", "--stack", "prod"],
}


def examples(lines: list[str]) -> dict[tuple[str, str], int]:
    found = {}
    for i, line in enumerate(lines):
        if m := EXAMPLE.fullmatch(line):
            found[(m["level"], m["path"])] = i
    return found


def test_every_example_line_has_an_input_that_prints_it():
    found = set(examples(readme_lines()))
    assert not found - set(EXAMPLES), f"README.md shows {sorted(found - set(EXAMPLES))}: add what prints it"
    assert not set(EXAMPLES) - found, f"README.md no longer shows {sorted(set(EXAMPLES) - found)}: drop them"


@pytest.mark.parametrize("level, path", sorted(EXAMPLES))
def test_an_example_line_is_what_the_cli_prints(level, path, tmp_path):
    code, _, err = run_cli(*EXAMPLES[(level, path)](tmp_path))
    assert code == (2 if level == "error" else 0), err
    [real] = [line for line in err.splitlines() if line.startswith(f"{level}: {path}: ")]
    assert (ERROR_LINE if level == "error" else WARNING_LINE).fullmatch(real), real
    lines = readme_lines()
    at = examples(lines)[(level, path)]
    if UPDATE:
        lines[at] = f"    {real}"
        write_readme(lines)
    check(lines[at].removeprefix("    "), real, f"example {level} line for {path}")


# ---- figures in the prose (checked only: edit the sentence by hand when they change) ---------------------


def prose() -> str:
    return " ".join(README.read_text().split())


def test_the_sizing_worked_example_is_the_dev_plans():
    [d] = rendered("dev").loaded.deployments
    model, m, ctx = d.model, d.sizing.memory, d.sizing.context_length
    layers, kv_heads, head_dim, requests = (
        model.num_layers,
        model.num_kv_heads,
        model.head_dim,
        d.spec.serving.max_concurrency,
    )
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * 2  # K and V, bf16
    at_32k = m.weights_gib_per_gpu + 32768 * requests * kv_bytes_per_token / 2**30 + m.reserve_gib_per_gpu
    sentence = (
        f"Qwen2.5-7B-Instruct has {model.parameters:,} parameters, {layers} layers and {kv_heads} KV heads of "
        f"{head_dim}. In bf16 its weights take {m.weights_gib_per_gpu:g} GiB; a token's KV cache takes 2 × "
        f"{layers} × {kv_heads} × {head_dim} × 2 B = {kv_bytes_per_token // 1024} KiB, so {requests} requests of "
        f"{ctx:,} tokens take {m.kv_cache_gib_per_gpu:g} GiB; the L4's {m.gpu_memory_gib:g} GiB at fraction "
        f"{m.mem_fraction_static:g} leaves a {m.reserve_gib_per_gpu:g} GiB reserve; {m.weights_gib_per_gpu:g} + "
        f"{m.kv_cache_gib_per_gpu:g} + {m.reserve_gib_per_gpu:g} = {m.required_gib_per_gpu:g} ≤ "
        f"{m.gpu_memory_gib:g} GiB: it fits on one L4 ({d.sizing.placement.instance_type}). At 32k tokens it "
        f"would need {at_32k:.1f} GiB"
    )
    assert sentence in prose(), (
        f"README.md's Sizing worked example should read (edit it by hand):\n{sentence}"
    )


def test_the_attention_groups_worked_example_is_the_large_moe_plans():
    d = next(d for d in rendered("large-moe").loaded.deployments if d.spec.name == "deepseek-v3")
    m, model = d.sizing.memory, d.model
    routed_gib = round(_routed_per_gpu(d), 2)
    latent = model.num_layers * (model.kv_lora_rank + model.qk_rope_head_dim) * 2
    groups = d.spec.serving.parallelism.data_parallel_attention
    requests, ctx = d.spec.serving.max_concurrency, d.sizing.context_length
    sentence = (
        f"take {routed_gib:.2f} GiB per GPU split eight ways and the rest "
        f"{m.weights_gib_per_gpu - routed_gib:.2f} GiB on each, {m.weights_gib_per_gpu:g} GiB; "
        f"{requests // groups} requests of {ctx:,} tokens at {latent:,} B per token (61 × (512 + 64) × 2) take "
        f"{m.kv_cache_gib_per_gpu:g} GiB; {m.weights_gib_per_gpu:g} + {m.kv_cache_gib_per_gpu:g} + "
        f"{m.reserve_gib_per_gpu:g} reserve = {m.required_gib_per_gpu:g} of {m.gpu_memory_gib:g} GiB. Without the "
        f"groups, every GPU would cache all {requests} requests' latents, {requests * ctx * latent / 2**30:g} GiB."
    )
    assert sentence in prose(), (
        f"README.md's attention-groups example should read (edit it by hand):\n{sentence}"
    )


def _routed_per_gpu(d) -> float:
    from sgldeploy.models.sizing import routed_expert_bytes, weight_bytes

    weights = weight_bytes(d.spec, d.model, d.sizing.dtype)
    return routed_expert_bytes(d.model, weights) / d.sizing.placement.tensor_parallel / 2**30


def test_the_cold_start_figures_are_the_dev_plans():
    from sgldeploy.offline.plan_json import plan_json

    cold = plan_json(rendered("dev"))["deployments"][0]["cold_start_seconds"]
    for words in (
        f"For the dev stack that is {cold['new_node']['total']} s on a new node",
        f"and {cold['warm_node']['total']} s when the node and its cache are warm",
    ):
        assert words in prose(), f"README.md's cold-start paragraph should say (edit it by hand): {words}"


def test_the_count_of_hostile_files_is_the_tests():
    from .test_hostile_input import CASES

    counts = re.findall(r"(?i)\ba table of (\d+)", prose())
    assert counts and set(counts) == {str(len(CASES))}, (
        f"README.md says {counts}; tests/test_hostile_input.py has {len(CASES)}"
    )


def test_the_t4_trial_figures_are_the_sizings():
    """README's Throughput section: where Qwen2.5-7B at 32k × 16 lands with gpu: auto, and what its cheapest
    memory fit, 4× T4, would cost per token (in float16, which only an explicit precision allows there)."""
    from sgldeploy.models.lock import read_lock
    from sgldeploy.models.sizing import size
    from sgldeploy.spec.validate import parse_stack

    from .conftest import LOCK, QWEN

    qwen = read_lock(LOCK)[f"{QWEN['repo']}@{QWEN['revision']}"]

    def sized(gpu: str, **serving: object):
        shape = {"context_length": 32768, "max_concurrency": 16, **serving}
        dep = deployment(resources={"gpu": gpu, "gpu_count": "auto"}, serving=shape)
        return size(parse_stack(None, [dep]).deployments[0], qwen)

    chosen, on_t4 = sized("auto"), sized("T4", precision="float16")
    assert on_t4.placement.instance_type == "g4dn.12xlarge"
    p = chosen.placement
    text = " ".join(README.read_text().split())
    assert (
        f"now lands on one {p.gpu_model} ({p.instance_type}) at "
        f"${chosen.throughput.usd_per_million_output_tokens:.2f} per 1M output tokens against the T4s' "
        f"${on_t4.throughput.usd_per_million_output_tokens:.2f}, and says so" in text
    ), "README's Throughput section states other figures than sizing gives"
