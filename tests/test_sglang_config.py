"""SGLang's own start-up checks on what sgldeploy declares (tests/contract/sglang_config.py, in the SGLang
virtualenv): ServerArgs resolved from each server container's generated flags and environment, ModelConfig built
from the lock entry's config, and the architecture's attention module at the command's tensor-parallel size.

They run for every server container of every stack of tests/variants.py; and SGLang's verdict is the oracle for
sgldeploy's validation at the context-length boundaries of Qwen2.5-7B (32,768) and Llama 3.1 8B (131,072), for
every `serving.quantization` on every kind of checkpoint a lock records (judged on an H100's compute capability),
and for every tensor-parallel size the catalog offers against published head shapes. What cannot run on a CPU is
listed in the contract's docstring.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sgldeploy.models.lock import read_lock
from sgldeploy.models.sizing import SizingError, candidates, context_limit, size
from sgldeploy.spec import QUANTIZATIONS
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.validate import parse_stack

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


def case_for_args(ref: dict[str, str], args: list[str]) -> dict[str, Any]:
    """A case of the committed lock's entry for a model reference, with flags written by the test."""
    entry = json.loads(LOCK.read_text())["models"][f"{ref['repo']}@{ref['revision']}"]
    return {"args": args, "env": {}, "config": entry["config"], "dtype": entry["dtype"]}


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
        # The parallel sizes as SGLang resolved them: the flags' (an all-to-all backend would set expert = tp).
        groups = int(flag(args, "--attn-dp-size")) if "--attn-dp-size" in args else 1
        experts = int(flag(args, "--ep-size")) if "--ep-size" in args else 1
        assert (result["attn_dp_size"], result["ep_size"]) == (groups, experts), label
        # The heads each rank holds, as the attention module split them over its attention group's tp / groups
        # GPUs (KV heads replicated below that; an MLA module holds a latent, no KV heads).
        attention_tp = tp // groups
        assert result["attention_heads_per_rank"] == config["num_attention_heads"] // attention_tp, label
        kv_heads = (
            None if config.get("kv_lora_rank") else max(1, config["num_key_value_heads"] // attention_tp)
        )
        assert result["kv_heads_per_rank"] == kv_heads, label
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
    "yarn x4 (old 'type' key)": _qwen_config(rope_scaling={"type": "yarn", "factor": 4.0}),
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

# config.json's `quantization_config` as published checkpoints write it, one per `quant_method` a lock entry can
# record (sgldeploy/models/hub.py keeps only that key): the fields SGLang reads to decide what the checkpoint converts to.
CHECKPOINTS: dict[str, dict[str, Any] | None] = {
    "unquantized": None,
    # Qwen's own FP8 checkpoints (e.g. Qwen/Qwen3-8B-FP8): block-wise e4m3, dynamic activations.
    "fp8": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    # AutoAWQ GEMM, 4 bits, groups of 128, as in the transformers-era AWQ checkpoints (e.g.
    # https://huggingface.co/TheBloke/Yarn-Mistral-7B-64k-AWQ/commit/ce42327a293cc6ac1676aabb9295626b3f689626).
    "awq": {"bits": 4, "group_size": 128, "quant_method": "awq", "version": "gemm", "zero_point": True},
    # AutoGPTQ, 4 bits, symmetric, groups of 128, no act-order (e.g. Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4;
    # https://huggingface.co/srishti-chouhan/gpt2-gptq/blob/7798ca075955456c637eaca57e7953fe437e7a3c/quantize_config.json).
    "gptq": {
        "bits": 4,
        "group_size": 128,
        "damp_percent": 0.01,
        "desc_act": False,
        "static_groups": False,
        "sym": True,
        "true_sequential": True,
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
    },
    # llm-compressor FP8-dynamic (e.g. RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8-dynamic): per-channel weights,
    # per-token dynamic activations.
    "compressed-tensors": {
        "config_groups": {
            "group_0": {
                "input_activations": {
                    "dynamic": True,
                    "num_bits": 8,
                    "strategy": "token",
                    "symmetric": True,
                    "type": "float",
                },
                "output_activations": None,
                "targets": ["Linear"],
                "weights": {
                    "dynamic": False,
                    "num_bits": 8,
                    "observer": "minmax",
                    "strategy": "channel",
                    "symmetric": True,
                    "type": "float",
                },
            }
        },
        "format": "float-quantized",
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    },
    # TensorRT Model Optimizer exports, in config.json's flat form (SGLang 0.5.23 model_config.py
    # `_parse_modelopt_quant_config` reads it as hf_quant_config.json's "quantization" block): FP8
    # (nvidia/Llama-3.1-8B-Instruct-FP8) and NVFP4 (nvidia/Llama-3.1-8B-Instruct-FP4, groups of 16).
    "modelopt (FP8)": {
        "quant_method": "modelopt",
        "quant_algo": "FP8",
        "kv_cache_quant_algo": "FP8",
        "exclude_modules": ["lm_head"],
        "producer": {"name": "modelopt", "version": "0.19.0"},
    },
    "modelopt (NVFP4)": {
        "quant_method": "modelopt",
        "quant_algo": "NVFP4",
        "group_size": 16,
        "kv_cache_quant_algo": "FP8",
        "exclude_modules": ["lm_head"],
        "producer": {"name": "modelopt", "version": "0.23.0"},
    },
    # OpenAI's gpt-oss (openai/gpt-oss-20b config.json): MXFP4 experts, attention and router left in bf16.
    "mxfp4": {
        "modules_to_not_convert": [
            "model.layers.*.self_attn",
            "model.layers.*.mlp.router",
            "model.embed_tokens",
            "lm_head",
        ],
        "quant_method": "mxfp4",
    },
    # bitsandbytes NF4 with double quantization, as transformers' BitsAndBytesConfig saves it (unsloth/*-bnb-4bit).
    "bitsandbytes": {
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": None,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": True,
        "load_in_8bit": False,
        "quant_method": "bitsandbytes",
    },
}
H100 = [9, 0]  # the GPU the cross product is judged on: every conversion that needs one (Marlin: 8.0) is open
# The one pair the lock cannot tell from another: it records a ModelOpt checkpoint's quant_method (modelopt), not
# its algorithm; SGLang requantizes FP8 to NVFP4 online (nvfp4_online) but refuses it on an NVFP4 checkpoint.
# sgldeploy accepts it, as for the FP8 exports that use it.
LOCK_CANNOT_TELL = {("modelopt (NVFP4)", "nvfp4_online")}


def _quantized(config: dict[str, Any], method: str | None) -> dict[str, Any]:
    return {**config, "quantization_method": method}


def _served(quantization: str) -> list[str]:
    args = ["--model-path", QWEN["repo"], "--context-length", "4096", "--tp-size", "1", "--dtype", "bfloat16"]
    return args + ([] if quantization == "none" else ["--quantization", quantization])


@pytest.fixture(scope="module")
def quantization_verdicts(sglang) -> dict[tuple[str, str], dict[str, Any]]:
    """SGLang's result for every checkpoint of CHECKPOINTS served with every `serving.quantization` value."""
    qwen = read_lock(LOCK)[f"{QWEN['repo']}@{QWEN['revision']}"]
    pairs = [(name, q) for name in CHECKPOINTS for q in QUANTIZATIONS]
    cases = [
        {
            "args": _served(q),
            "env": {},
            "config": _quantized(qwen.config, (CHECKPOINTS[name] or {}).get("quant_method")),
            "dtype": "bfloat16",
            "quantization_config": CHECKPOINTS[name],
            "gpu_capability": H100,
        }
        for name, q in pairs
    ]
    return dict(zip(pairs, sglang.start(cases), strict=True))


def _refused_by_sglang(result: dict[str, Any]) -> bool:
    return "_verify_quantization" in (result.get("raised_in") or [])


def _sgldeploy_refuses_quantization(method: str | None, quantization: str) -> str | None:
    """What sizing reports at serving.quantization for the checkpoint on an H100, if it refuses there."""
    qwen = read_lock(LOCK)[f"{QWEN['repo']}@{QWEN['revision']}"]
    model = replace(qwen, config=_quantized(qwen.config, method))
    raw = deployment(serving={"context_length": 4096, "max_concurrency": 4, "quantization": quantization})
    raw["resources"] = {"gpu": "H100", "gpu_count": 1}
    dep = parse_stack(None, [raw]).deployments[0]
    try:
        size(dep, model)
    except SizingError as refused:
        return refused.problem.what if refused.problem.path == "serving.quantization" else None
    return None


def test_quantization_is_refused_exactly_where_sglang_refuses_it(quantization_verdicts):
    """Every serving.quantization on every kind of checkpoint: sgldeploy's verdict against SGLang's own
    `ModelConfig._verify_quantization`, on an H100's capability."""
    judged = {
        p: r for p, r in quantization_verdicts.items() if _refused_by_sglang(r) or r["quantization_verified"]
    }
    # Every pair reaches SGLang's verdict on this CPU: none stops before the quantization is checked.
    assert judged.keys() == quantization_verdicts.keys(), set(quantization_verdicts) - set(judged)
    sglang_refuses = {p for p, r in judged.items() if _refused_by_sglang(r)}
    # What fails after the verdict, and why it is not the quantization's: nvfp4_online needs a Blackwell GPU
    # (arg_groups/overrides.py reads the machine's own; sgldeploy refuses it below compute capability 10.0).
    later = {p: r["error"] for p, r in judged.items() if r["error"] and p not in sglang_refuses}
    assert {q for _, q in later} == {"nvfp4_online"}, later
    assert all("Blackwell" in error for error in later.values())
    ours = {
        (name, q)
        for name, q in judged
        if _sgldeploy_refuses_quantization((CHECKPOINTS[name] or {}).get("quant_method"), q)
    }
    assert sglang_refuses - ours == LOCK_CANNOT_TELL, "SGLang refuses, sgldeploy lets through"
    assert ours - sglang_refuses == set(), "sgldeploy refuses what SGLang serves"
    assert len(sglang_refuses) > 100 and len(judged) - len(sglang_refuses) > 50  # both verdicts are exercised


def test_a_quantization_other_than_the_checkpoints_is_refused_where_sglang_refuses_it(
    quantization_verdicts, tmp_path
):
    """A checkpoint saved in fp8 served with `--quantization awq`: SGLang stops at start (ModelConfig
    `_verify_quantization`: "Quantization method specified in the model config (fp8) does not match ..."); sgldeploy
    refuses it at validation, one line, with the methods SGLang takes for that checkpoint."""
    refused_by_sglang = quantization_verdicts[("fp8", "awq")]
    assert "does not match the quantization method" in refused_by_sglang["error"]
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
    with pytest.raises(InvalidInput) as refused:
        render_stack(stack)
    [line] = [p.line() for p in refused.value.problems]
    assert line.startswith(
        f"error: sgldeploy:deployments[0].serving.quantization: does not match {QWEN['repo']}'s checkpoint, "
        "saved quantized with fp8: SGLang 0.5.23 refuses to start with it (got 'awq'); "
        "leave serving.quantization none to serve the checkpoint as saved"
    ), line
    # The other ways out are exactly the flags SGLang starts with on this checkpoint.
    taken = sorted(
        q
        for (name, q), r in quantization_verdicts.items()
        if name == "fp8" and q not in ("none", "unquant") and not _refused_by_sglang(r)
    )
    assert line.endswith(f", or set it to one of {', '.join(taken)}"), line


GPTQ_BOUNDARY = [
    pytest.param("T4", [7, 5], id="T4-7.5"),
    pytest.param("A100-40GB", [8, 0], id="A100-8.0"),
    pytest.param("A10G", [8, 6], id="A10G-8.6"),
]


@pytest.mark.parametrize("gpu, capability", GPTQ_BOUNDARY)
def test_a_gptq_checkpoint_is_refused_where_sglang_has_no_kernel_for_it(sglang, gpu, capability):
    """SGLang 0.5.23's CUDA build registers no plain gptq method: a GPTQ checkpoint runs only converted to
    gptq_marlin, which needs compute capability 8.0; below, ModelConfig refuses it ("Unknown quantization method:
    gptq"). sgldeploy refuses the GPU below, serves it at and above."""
    llama = read_lock(LOCK)[f"{LLAMA_8B['repo']}@{LLAMA_8B['revision']}"]
    # hugging-quants/Meta-Llama-3.1-8B-Instruct-GPTQ-INT4: about 5.7 GB (int4 layers, fp16 embeddings and head).
    # Llama's 32 heads split over the 8 GPUs of the A100 nodes, the only A100s AWS offers.
    gptq = replace(
        llama, config=_quantized(llama.config, "gptq"), dtype="float16", safetensors_bytes=5_730_000_000
    )
    args = [
        "--model-path",
        LLAMA_8B["repo"],
        "--context-length",
        "4096",
        "--tp-size",
        "1",
        "--dtype",
        "float16",
    ]
    [result] = sglang.start(
        [
            {
                "args": args,
                "env": {},
                "config": gptq.config,
                "dtype": "float16",
                "quantization_config": CHECKPOINTS["gptq"],
                "gpu_capability": capability,
            }
        ]
    )
    sglang_refuses = _refused_by_sglang(result)
    assert sglang_refuses == (capability < [8, 0]), result
    if not sglang_refuses:
        assert result["quantization"] == "gptq_marlin"
    raw = deployment(
        model=dict(LLAMA_8B),
        serving={"context_length": 4096, "max_concurrency": 4},
        resources={"gpu": gpu, "gpu_count": "auto"},
    )
    dep = parse_stack(None, [raw]).deployments[0]
    try:
        size(dep, gptq)
    except SizingError as refused:
        assert sglang_refuses, f"sgldeploy refuses what SGLang serves on {gpu}: {refused.problem.what}"
        assert (
            refused.problem.path == "resources.gpu"
            and "gptq needs compute capability 8.0" in refused.problem.what
        )
        return
    assert not sglang_refuses, f"sgldeploy serves a GPTQ checkpoint on {gpu}, which SGLang refuses"


# ---- the tensor-parallel size against the attention heads ----------------------------------------------

# (attention heads, KV heads) of published models, and two shapes whose KV heads split unevenly.
HEAD_SHAPES = {
    "Llama-3.1-70B (64, 8)": (64, 8),
    "Qwen2.5-7B (28, 4)": (28, 4),
    "Qwen2.5-14B (40, 8)": (40, 8),
    "Phi-3-medium (40, 10)": (40, 10),
    "Qwen2.5-1.5B (12, 2)": (12, 2),
    "Llama-2-7B MHA (32, 32)": (32, 32),
    "24 heads, 6 KV heads": (24, 6),
}
TP_SIZES = (1, 4, 8, 16, 32)  # the GPU counts the catalog offers: one node of 1, 4 or 8; 2 or 4 nodes of 8
ARCHITECTURES = {"qwen2": QWEN, "llama": LLAMA_8B}  # models/qwen2.py and models/llama.py assert the same


def _shaped(base: dict[str, Any], heads: int, kv_heads: int) -> dict[str, Any]:
    return {
        **base,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_size": heads * 128,
        "head_dim": 128,
    }


@pytest.fixture(scope="module")
def tp_verdicts(sglang) -> dict[tuple[str, str, int], dict[str, Any]]:
    """SGLang's attention module, built at every tp size for every shape and architecture."""
    lock = read_lock(LOCK)
    keys = [(arch, shape, tp) for arch in ARCHITECTURES for shape in HEAD_SHAPES for tp in TP_SIZES]
    cases = []
    for arch, shape, tp in keys:
        ref = ARCHITECTURES[arch]
        config = _shaped(lock[f"{ref['repo']}@{ref['revision']}"].config, *HEAD_SHAPES[shape])
        args = ["--model-path", ref["repo"], "--context-length", "4096", "--tp-size", str(tp)]
        cases.append({"args": args, "env": {}, "config": config, "dtype": "bfloat16"})
    return dict(zip(keys, sglang.start(cases), strict=True))


def _tp_model(shape: str) -> Any:
    qwen = read_lock(LOCK)[f"{QWEN['repo']}@{QWEN['revision']}"]
    # A small model, so that memory never decides: only the heads do.
    return replace(qwen, config=_shaped(qwen.config, *HEAD_SHAPES[shape]), parameters=1_000_000_000)


def _tp_dep(gpu_count: int | str) -> Any:
    raw = deployment(serving={"context_length": 4096, "max_concurrency": 4})
    raw["resources"] = {"gpu": "auto", "gpu_count": gpu_count}
    return parse_stack(None, [raw]).deployments[0]


def test_tensor_parallel_sizes_are_refused_exactly_where_sglangs_attention_refuses_them(tp_verdicts):
    for shape in HEAD_SHAPES:
        by_arch = {
            arch: {tp for tp in TP_SIZES if tp_verdicts[(arch, shape, tp)]["error"] is None}
            for arch in ARCHITECTURES
        }
        assert by_arch["qwen2"] == by_arch["llama"], shape  # one rule for both architectures
        sglang_takes = by_arch["qwen2"]
        for tp in TP_SIZES:
            result = tp_verdicts[("qwen2", shape, tp)]
            assert result["error"] is None or result["stage"] == "attention", (shape, tp, result["error"])
        model = _tp_model(shape)
        # Forced: refused, one line at resources.gpu_count naming the rule SGLang's attention asserted and the
        # counts SGLang takes.
        heads, kv_heads = HEAD_SHAPES[shape]
        works = " or ".join(str(n) for n in sorted(sglang_takes))
        for tp in TP_SIZES:
            try:
                sizing = size(_tp_dep(tp), model)
            except SizingError as refused:
                assert tp not in sglang_takes, f"{shape}: sgldeploy refuses tp {tp}, SGLang builds it"
                assert refused.problem.path == "resources.gpu_count" and refused.problem.got == tp
                asserted = tp_verdicts[("qwen2", shape, tp)]["error"]
                rule = (
                    f"does not split the {kv_heads} KV heads"
                    if "total_num_kv_heads" in asserted
                    else f"does not divide the {heads} attention heads"
                )
                assert refused.problem.what.startswith(rule), (asserted, refused.problem.what)
                assert refused.problem.fix.startswith(f"pick gpu_count {works} ("), refused.problem.fix
                continue
            assert tp in sglang_takes, f"{shape}: sgldeploy places tp {tp}, SGLang's attention refuses it"
            assert sizing.placement.tensor_parallel == tp
        # Auto: the candidates sizing weighs are exactly the tp sizes SGLang takes.
        offered = {c.tp for c in candidates(_tp_dep("auto"), model, 4096)}
        assert offered == sglang_takes, shape
    refused_somewhere = {
        s for s in HEAD_SHAPES if any(tp_verdicts[("qwen2", s, tp)]["error"] for tp in TP_SIZES)
    }
    assert len(refused_somewhere) >= 4  # the shapes do reach both of SGLang's asserts
