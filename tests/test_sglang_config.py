"""SGLang's own start-up checks on what sgldeploy declares (tests/contract/sglang_config.py, in the SGLang
virtualenv): ServerArgs resolved from each server container's generated flags and environment, ModelConfig built
from the lock entry's config, and the architecture's attention module at the command's tensor-parallel size.

They run for every server container of every stack of tests/variants.py, and for the context-length boundaries of
Qwen2.5-7B (32,768) and Llama 3.1 8B (131,072), where SGLang's verdict is the oracle for sgldeploy's validation.
What cannot run on a CPU is listed in the contract's docstring.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sgldeploy.lock import read_lock
from sgldeploy.problems import InvalidInput
from sgldeploy.sizing import context_limit

from .conftest import LLAMA_8B, LOCK, QWEN, deployment, render_stack, write_stack
from .test_sglang_args import SGLANG_PYTHON
from .variants import rendered_variants

CONTRACT = Path(__file__).parent / "contract" / "sglang_config.py"
LAUNCHER = "sglang.launch_server"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
# The variable SGLang 0.5.23 names when it refuses a longer context (srt/configs/model_config.py).
OVERRIDE = "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"
CONTEXT_REFUSED = "To allow overriding this maximum, set the env var " + OVERRIDE


class Engine:
    """The contract, started once (SGLang's import takes seconds) and asked case by case."""

    def __init__(self) -> None:
        if not Path(SGLANG_PYTHON).exists():
            pytest.fail(f"SGLang is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [SGLANG_PYTHON, str(CONTRACT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def start(self, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """SGLang's verdict on each case: the contract's result, in order."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(cases) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            pytest.fail(f"the contract stopped:\n{self.log.read()[-4000:]}")
        results: list[dict[str, Any]] = json.loads(line)
        return results

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def sglang() -> Iterator[Engine]:
    engine = Engine()
    yield engine
    engine.close()


def _pod_specs(inputs: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Each pod template, with the variables its pods get at run time that the manifest does not spell: the
    LeaderWorkerSet controller injects LWS_LEADER_ADDRESS and LWS_GROUP_SIZE into every container, and labels
    each pod with its worker index (0 for the leader)."""
    spec = inputs["spec"]
    if "leaderWorkerTemplate" in spec:  # a replica over nodes: the leader's pod and the workers'
        group = spec["leaderWorkerTemplate"]
        runtime = {"LWS_LEADER_ADDRESS": "leader.example.internal", "LWS_GROUP_SIZE": str(int(group["size"]))}
        leader = group.get("leaderTemplate") or group["workerTemplate"]
        return [
            (leader["spec"], {**runtime, "LWS_WORKER_INDEX": "0"}),
            (group["workerTemplate"]["spec"], {**runtime, "LWS_WORKER_INDEX": "1"}),
        ]
    return [(spec["template"]["spec"], {})]


def _expand(args: list[str], variables: dict[str, str]) -> list[str]:
    """$(NAME) in args, as the kubelet expands it from the container's environment."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m[1], m[0]), a) for a in args]


def server_containers(plan: Any) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """(workload, SGLang's flags, the container's literal environment) for every container that runs SGLang."""
    for resource in plan.recording.resources:
        if resource.type not in WORKLOADS:
            continue
        for pod, runtime in _pod_specs(resource.inputs):
            for container in pod["containers"]:
                argv = [*(container.get("command") or []), *(container.get("args") or [])]
                if LAUNCHER not in argv:
                    continue
                env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
                # Secret-backed variables hold some string; SGLang only passes the API key on.
                referenced = {
                    e["name"]: "from-a-secret" for e in container.get("env") or [] if "value" not in e
                }
                variables = {**referenced, **runtime, **env}
                yield resource.name, _expand(argv[argv.index(LAUNCHER) + 1 :], variables), env


def locked_entry(stack_file: Path, args: list[str]) -> dict[str, Any]:
    """The lock entry (as written beside the stack) for the repo and commit the flags name."""
    entries = json.loads((stack_file.parent / LOCK.name).read_text())["models"].values()
    path = args[args.index("--model-path") + 1]
    if "--revision" in args:
        repo, sha = path, args[args.index("--revision") + 1]
    else:  # a cached commit: /models/ORG/NAME/SHA
        *_, org, name, sha = path.split("/")
        repo = f"{org}/{name}"
    return next(e for e in entries if e["repo"] == repo and e["sha"] == sha)


def case(stack_file: Path, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    entry = locked_entry(stack_file, args)
    return {"args": args, "env": env, "config": entry["config"], "dtype": entry["dtype"]}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# ---- every server of every variant --------------------------------------------------------------


def test_every_server_of_every_variant_starts_past_sglangs_own_checks(sglang):
    cases, where = [], []
    for variant, plan in rendered_variants().items():
        for workload, args, env in server_containers(plan):
            cases.append(case(plan.stack.path, args, env))
            where.append(f"{variant} {workload}")
    assert len(cases) >= len(rendered_variants())  # every variant serves at least one model
    unique = {json.dumps(c, sort_keys=True): c for c in cases}
    verdicts = dict(zip(unique, sglang.start(list(unique.values())), strict=True))
    failures = []
    for label, c in zip(where, cases, strict=True):
        result = verdicts[json.dumps(c, sort_keys=True)]
        if result["error"]:
            failures.append(f"{label}: {result['stage']}: {result['error']}")
            continue
        args, config = c["args"], c["config"]
        tp = int(flag(args, "--tp-size"))
        assert result["context_len"] == int(flag(args, "--context-length")), label
        assert result["tp_size"] == tp and result["dtype"] == flag(args, "--dtype"), label
        quantization = flag(args, "--quantization") if "--quantization" in args else None
        assert result["quantization"] == (quantization or config.get("quantization_method")), label
        # The heads each rank holds, as the attention module split them (KV heads replicated below tp).
        assert result["attention_heads_per_rank"] == config["num_attention_heads"] // tp, label
        assert result["kv_heads_per_rank"] == max(1, config["num_key_value_heads"] // tp), label
    assert not failures, "\n".join(failures)


# ---- the context length at its boundary ----------------------------------------------------------

# (model, the context length its published config gives: max_position_embeddings; Llama 3.1's llama3 RoPE
# scaling does not multiply it). The tests check SGLang derives the same from the locked config.
BOUNDARIES = [pytest.param(QWEN, 32768, id="qwen2.5-7b"), pytest.param(LLAMA_8B, 131072, id="llama-3.1-8b")]
SECRET = {"sgldeploy:hfToken": {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}}  # Llama is gated


def _render(tmp_path: Path, model: dict[str, str], context: int, env: dict[str, str]) -> Any:
    raw = deployment(
        model=dict(model),
        serving={"context_length": context, "max_concurrency": 1},
        resources={"gpu": "H100", "gpu_count": 1},
        env=env,
    )
    return render_stack(write_stack(tmp_path, deployments=[raw], extra=SECRET))


def _server(plan: Any) -> tuple[list[str], dict[str, str]]:
    [(_, args, env)] = list(server_containers(plan))
    return args, env


@pytest.mark.parametrize("model, limit", BOUNDARIES)
def test_context_length_is_refused_exactly_where_sglang_refuses_it(sglang, tmp_path, model, limit):
    allowed = {OVERRIDE: "1"}
    at_limit = _render(tmp_path / "at", model, limit, {})
    # One token above the limit renders only with the override; SGLang then judges its flags with and without it.
    above = _render(tmp_path / "above", model, limit + 1, allowed)
    with pytest.raises(InvalidInput) as refused:
        _render(tmp_path / "refused", model, limit + 1, {})
    at_args, at_env = _server(at_limit)
    above_args, above_env = _server(above)
    assert flag(above_args, "--context-length") == str(limit + 1)
    assert above_env[OVERRIDE] == "1"  # what SGLang needs reaches the server container
    stack = tmp_path / "at" / "Pulumi.test.yaml"
    without = {k: v for k, v in above_env.items() if k != OVERRIDE}
    at, above_allowed, above_refused = sglang.start(
        [case(stack, at_args, at_env), case(stack, above_args, above_env), case(stack, above_args, without)]
    )
    assert at["derived_context_len"] == limit  # SGLang derives the limit from the locked config
    assert at["error"] is None and at["context_len"] == limit
    assert above_allowed["error"] is None and above_allowed["context_len"] == limit + 1
    assert above_refused["stage"] == "server_args" and CONTEXT_REFUSED in above_refused["error"]
    # sgldeploy refuses what SGLang refuses, at validation, one line, with SGLang's limit and both ways out.
    [line] = [p.line() for p in refused.value.problems]
    assert line.startswith(
        f"error: sgldeploy:deployments[0].serving.context_length: is longer than {model['repo']} takes: "
        f"SGLang 0.5.23 derives {limit:,} tokens from its config (max_position_embeddings {limit:,})"
    )
    assert f"(got {limit + 1}); set serving.context_length ≤ {limit}; " in line
    assert f'set env {OVERRIDE}: "1"' in line


@pytest.fixture(scope="module")
def qwen_one_above(tmp_path_factory) -> tuple[Path, list[str], dict[str, str]]:
    """Qwen's command one token above its limit (rendered with the override) and its environment without it."""
    directory = tmp_path_factory.mktemp("one-above")
    args, env = _server(_render(directory, QWEN, 32769, {OVERRIDE: "1"}))
    return directory / "Pulumi.test.yaml", args, {k: v for k, v in env.items() if k != OVERRIDE}


@pytest.mark.parametrize("value", ["1", "TRUE", "y", "0", "no", "maybe"])
def test_the_override_is_read_as_sglang_reads_it(sglang, tmp_path, qwen_one_above, value):
    """sgldeploy accepts the values SGLang starts with and names the field SGLang stops on."""
    stack, args, env = qwen_one_above
    [verdict] = sglang.start([case(stack, args, {**env, OVERRIDE: value})])
    try:
        _render(tmp_path, QWEN, 32769, {OVERRIDE: value})
    except InvalidInput as refused:
        [line] = [p.line() for p in refused.problems]
        assert verdict["error"], f"SGLang starts with {value!r}, sgldeploy refuses it: {line}"
        # SGLang's two ways to stop: the context it refuses, or a value it cannot read (srt/environ.py EnvBool).
        field = "serving.context_length" if CONTEXT_REFUSED in verdict["error"] else f"env.{OVERRIDE}"
        assert line.startswith(f"error: sgldeploy:deployments[0].{field}: "), (line, verdict["error"])
        return
    assert verdict["error"] is None, f"sgldeploy accepts {value!r}, SGLang stops: {verdict['error']}"


def test_an_unset_context_length_is_the_one_sglang_derives(sglang, tmp_path):
    raw = deployment(serving={"max_concurrency": 1}, resources={"gpu": "H100", "gpu_count": 1})
    plan = render_stack(write_stack(tmp_path, deployments=[raw]))
    args, env = _server(plan)
    [result] = sglang.start([case(tmp_path / "Pulumi.test.yaml", args, env)])
    assert result["error"] is None
    assert int(flag(args, "--context-length")) == result["derived_context_len"] == 32768


# ---- how the limit is derived, against SGLang on configs that set it otherwise -----------------------------


def _qwen_config(**changes: Any) -> dict[str, Any]:
    config = dict(read_lock(LOCK)[f"{QWEN['repo']}@{QWEN['revision']}"].config)
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


CONFIGS = {
    "no rope scaling": _qwen_config(),
    "linear rope x2": _qwen_config(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "dynamic rope x4 (old 'type' key)": _qwen_config(rope_scaling={"type": "dynamic", "factor": 4.0}),
    "yarn x4": _qwen_config(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
    "linear x2 with its original length": _qwen_config(
        rope_scaling={"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 32768}
    ),
    "llama3 x8": _qwen_config(
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    ),
    "rope_parameters, transformers 5's key": _qwen_config(
        rope_parameters={"rope_type": "linear", "factor": 3.0}
    ),
    "seq_length before max_position_embeddings": _qwen_config(seq_length=8192),
}


def test_the_limit_sgldeploy_derives_is_the_one_sglang_derives(sglang):
    from dataclasses import replace

    qwen = read_lock(LOCK)[f"{QWEN['repo']}@{QWEN['revision']}"]
    args = ["--model-path", QWEN["repo"], "--revision", QWEN["revision"], "--context-length", "2048"]
    results = sglang.start(
        [{"args": args, "env": {}, "config": config, "dtype": "bfloat16"} for config in CONFIGS.values()]
    )
    derived = {name: r["derived_context_len"] for name, r in zip(CONFIGS, results, strict=True)}
    ours = {name: context_limit(replace(qwen, config=config))[0] for name, config in CONFIGS.items()}
    assert ours == derived
    assert len(set(derived.values())) > 3  # the configs do move the limit


# ---- the checkpoint's own quantization ---------------------------------------------------------------------


def test_a_quantization_other_than_the_checkpoints_is_refused_where_sglang_refuses_it(sglang, tmp_path):
    """A checkpoint saved in fp8 served with `--quantization awq`: SGLang stops at start (ModelConfig
    `_verify_quantization`: "Quantization method specified in the model config (fp8) does not match ...")."""
    stack = write_stack(
        tmp_path,
        deployments=[
            deployment(
                serving={"context_length": 4096, "max_concurrency": 4, "quantization": "awq"},
                resources={"gpu": "L40S", "gpu_count": 1},
            )
        ],
    )
    lock = json.loads((tmp_path / LOCK.name).read_text())
    lock["models"][f"{QWEN['repo']}@{QWEN['revision']}"]["config"]["quantization_method"] = "fp8"
    (tmp_path / LOCK.name).write_text(json.dumps(lock))
    try:
        plan = render_stack(stack)
    except InvalidInput as refused:
        [line] = [p.line() for p in refused.problems]
        assert line.startswith("error: sgldeploy:deployments[0].serving.quantization: "), line
        return
    args, env = _server(plan)
    [result] = sglang.start([case(stack, args, env)])
    assert result["stage"] == "server_args" and "does not match the quantization method" in result["error"]
    pytest.xfail("sgldeploy passes --quantization awq on an fp8 checkpoint, which SGLang refuses at start")
