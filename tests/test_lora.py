"""LoRA adapters: locked through a loopback Hub with the real huggingface_hub client (and from a local cache),
cached and verified by the prefetch tool beside the model, served with SGLang's flags as its own parser and
start-up checks read them, their buffers in the memory fit (derived here from SGLang's buffer shapes), and a
refusal with a field and a fix wherever SGLang or the base model would fail."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from safetensors.numpy import save

from sgldeploy import stack
from sgldeploy.builders.sglang_args import launch_command
from sgldeploy.builders.sglang_server import SecretRefs, pod_template
from sgldeploy.models import lora
from sgldeploy.models.lock import LockedAdapter, LockedModel, read_lock, read_lock_contents
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.validate import parse_stack

from .conftest import LLAMA_70B, LOCK, QWEN, deployment, problem_lines
from .hub_server import LoopbackHub, Repo
from .test_cli import run_cli
from .test_hub import CONFIG, sharded_model
from .test_lock_from_cache import download, sgldeploy
from .test_sglang_args import sglang_parse
from .test_sglang_config import case_for_args

HIDDEN, LAYERS = CONFIG["hidden_size"], CONFIG["num_hidden_layers"]
BASE_CONFIG = {**CONFIG, "intermediate_size": 512}


def adapter_files(
    base: str = "org/tiny", rank: int = 8, targets: tuple[str, ...] = ("q_proj", "v_proj"), **config: object
) -> dict[str, bytes]:
    """A PEFT LoRA adapter as `save_pretrained` writes one: its config and A/B matrices in safetensors."""
    tensors = {}
    for layer in range(LAYERS):
        for module in targets:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = np.zeros((rank, HIDDEN), dtype=np.float16)
            tensors[f"{prefix}.lora_B.weight"] = np.zeros((HIDDEN, rank), dtype=np.float16)
    settings = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(targets),
        "base_model_name_or_path": base,
        **config,
    }
    return {
        "adapter_config.json": json.dumps(settings).encode(),
        "adapter_model.safetensors": save(tensors),
        "README.md": b"---\nlibrary_name: peft\n---\n",
    }


def adapter_parameters(rank: int = 8, targets: int = 2) -> int:
    return LAYERS * targets * 2 * rank * HIDDEN


def write_stack(directory: Path, adapters: list[dict], **serving: object) -> Path:
    deployment_ = {
        "name": "tiny",
        "model": {"repo": "org/tiny", "revision": "main", "adapters": adapters},
        "resources": {"gpu": "L4", "gpu_count": 1},
        "serving": {"max_concurrency": 4, "context_length": 4096, **serving},
        "cache": {"storage": "node-local"},
    }
    path = directory / "Pulumi.test.yaml"
    config = {
        "sgldeploy:platform": {"environment": "development", "cluster": {"name": "x"}},
        "sgldeploy:deployments": [deployment_],
    }
    path.write_text(yaml.safe_dump({"config": config}))
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def lock_with_hub(server: LoopbackHub, stack_file: Path):
    env = {"HF_ENDPOINT": server.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(stack_file.parent)}
    with mock.patch.dict("os.environ", env):
        return run_cli("lock", "--config", str(stack_file))


def test_an_adapter_is_locked_with_its_commit_files_rank_modules_and_base(hub, tmp_path):
    hub.add(Repo("org/tiny")).commit(sharded_model(BASE_CONFIG))
    files = adapter_files()
    sha = hub.add(Repo("org/tiny-support", pipeline_tag=None)).commit(files)
    result = lock_with_hub(hub, write_stack(tmp_path, [{"name": "support", "repo": "org/tiny-support"}]))
    assert result.returncode == 0, result.stderr
    assert f"org/tiny-support@main → {sha} (hub, adapter)" in result.stdout
    entry = json.loads((tmp_path / "models.lock.json").read_text())["adapters"]["org/tiny-support@main"]
    assert entry["sha"] == sha and entry["source"] == "hub"
    assert entry["adapter"] == {
        "rank": 8,
        "alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model": "org/tiny",
        "use_dora": False,
    }
    assert entry["parameters"] == adapter_parameters() and entry["parameters_by_dtype"] == {
        "F16": adapter_parameters()
    }
    by_path = {f["path"]: f for f in entry["files"]}
    weights = files["adapter_model.safetensors"]
    assert by_path["adapter_model.safetensors"]["size"] == len(weights)
    assert entry["safetensors_bytes"] == len(weights)
    again = lock_with_hub(hub, write_stack(tmp_path, [{"name": "support", "repo": "org/tiny-support"}]))
    assert again.returncode == 0 and "unchanged" in again.stdout


def test_a_repo_without_an_adapter_config_is_refused_at_its_field(hub, tmp_path):
    hub.add(Repo("org/tiny")).commit(sharded_model(BASE_CONFIG))
    hub.add(Repo("org/merged")).commit(sharded_model(BASE_CONFIG))
    result = lock_with_hub(hub, write_stack(tmp_path, [{"name": "m", "repo": "org/merged"}]))
    assert result.returncode == 2
    assert (
        "error: sgldeploy:deployments[0].model.adapters[0].repo: org/merged has no adapter_config.json, so it is "
        "no LoRA adapter SGLang can load (got 'org/merged'); name a PEFT LoRA adapter repo in model.adapters (a "
        "merged model goes in model.repo)"
    ) in result.stderr


def test_an_adapter_is_locked_from_a_local_cache_too(hub, tmp_path):
    hub.add(Repo("org/tiny")).commit(files := sharded_model(BASE_CONFIG))
    adapter = adapter_files()
    sha = hub.add(Repo("org/tiny-support")).commit(adapter)
    cache = tmp_path / "cache"
    download(hub, "org/tiny", sorted(files), cache)
    download(hub, "org/tiny-support", sorted(adapter), cache)
    stack_file = write_stack(tmp_path, [{"name": "support", "repo": "org/tiny-support"}])
    result = sgldeploy("lock", "--config", str(stack_file), "--from-cache", str(cache))
    assert "org/tiny-support@main → " + sha + " (local-cache, adapter)" in result.stdout, result.stderr
    [locked] = read_lock_contents(tmp_path / "models.lock.json").adapters.values()
    assert (locked.sha, locked.rank, locked.base_model, locked.source) == (sha, 8, "org/tiny", "local-cache")


def test_the_prefetch_tool_fetches_and_verifies_an_adapter_as_sglang_loads_it(hub, tmp_path):
    from .test_prefetch import run as prefetch

    files = adapter_files()
    sha = hub.add(Repo("org/tiny-support")).commit(files)
    result = prefetch(hub, tmp_path / "cache", repo="org/tiny-support")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "cache" / "org" / "tiny-support" / sha
    marker = json.loads((target / ".complete").read_text())
    assert sorted(f["path"] for f in marker["files"]) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (target / name).read_bytes() == files[name]


def test_an_adapter_locked_from_the_hub_for_another_base_model_is_refused(hub, tmp_path):
    hub.add(Repo("org/tiny")).commit(sharded_model(BASE_CONFIG))
    hub.add(Repo("org/other-support")).commit(adapter_files(base="org/other"))
    stack_file = write_stack(tmp_path, [{"name": "support", "repo": "org/other-support"}])
    assert lock_with_hub(hub, stack_file).returncode == 0
    result = run_cli("validate", "--config", str(stack_file))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: sgldeploy:deployments[0].model.adapters[0].repo: was trained on org/other, not on the "
        "deployment's org/tiny (its adapter_config.json's base_model_name_or_path) (got 'org/other-support'); "
        "serve it on a deployment of org/other, or choose an adapter trained on org/tiny"
    )


# ---- serving: against the committed lock, with adapter entries written as `sgldeploy lock` writes them ------


QWEN_ADAPTER = {"repo": "org/qwen-support", "revision": "c" * 40}


def adapter_entry(
    repo: str = QWEN_ADAPTER["repo"],
    revision: str = QWEN_ADAPTER["revision"],
    rank: int = 16,
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    base: str | None = QWEN["repo"],
    **adapter: object,
) -> dict:
    return {
        "repo": repo,
        "revision": revision,
        "sha": revision if len(revision) == 40 else "d" * 40,
        "parameters": 10_092_544,
        "parameters_by_dtype": {"BF16": 10_092_544},
        "safetensors_bytes": 20_185_088,
        "files": [],
        "source": "hub",
        "adapter": {
            "rank": rank,
            "alpha": 32,
            "target_modules": list(targets),
            "base_model": base,
            **adapter,
        },
    }


def lock_with_adapters(tmp_path: Path, *entries: dict) -> Path:
    lock = json.loads(LOCK.read_text())
    lock["adapters"] = {f"{e['repo']}@{e['revision']}": e for e in entries}
    path = tmp_path / "models.lock.json"
    path.write_text(json.dumps(lock))
    return path


def served(names: tuple[str, ...] = ("support",), **sizes: object) -> dict:
    """Qwen2.5-7B with adapters of QWEN_ADAPTER's commit; `sizes` are serving.lora's."""
    return deployment(
        model={**QWEN, "adapters": [{"name": n, **QWEN_ADAPTER} for n in names]},
        serving={"context_length": 4096, "max_concurrency": 4, "lora": sizes},
        cache={"storage": "node-local"},
    )


def lines(raw: dict, lock_file: Path, environment: str = "development") -> list[str]:
    return problem_lines([raw], lock_file, environment=environment)


def loaded(raw: dict, lock_file: Path, **platform: object):
    [d] = stack.load(
        {"cluster": {"name": "c"}, **platform}, [raw], lock_file, set(), offline=True
    ).deployments
    return d


def test_the_adapters_buffers_are_sglangs_shapes_and_come_out_of_the_kv_pool(tmp_path):
    locked = lock_with_adapters(tmp_path, adapter_entry())
    plain = loaded(deployment(cache={"storage": "node-local"}), locked)
    d = loaded(served(), locked)
    # Qwen2.5-7B: 28 layers, hidden 3584, 28 heads and 4 KV heads of 128; rank 16, 8 slots, bf16, one GPU:
    # qkv_proj A [8, 3 × 16, 3584], B [8, (28 + 2 × 4) × 128, 16]; o_proj A [8, 16, 28 × 128], B [8, 3584, 16].
    qkv = 3 * 16 * 3584 + (28 + 2 * 4) * 128 * 16
    o = 16 * 28 * 128 + 3584 * 16
    expected = 2 * 8 * 28 * (qkv + o) / 2**30
    assert d.sizing.memory.lora_gib_per_gpu == pytest.approx(expected, abs=0.01)
    m, p = d.sizing.memory, plain.sizing.memory
    assert m.required_gib_per_gpu == pytest.approx(p.required_gib_per_gpu + expected, abs=0.02)
    assert m.kv_capacity_tokens < p.kv_capacity_tokens
    assert d.sizing.lora.rank == 16 and d.sizing.lora.modules == {"qkv_proj", "o_proj"}


def test_sglang_reads_the_adapter_flags_and_its_start_up_checks_pass(tmp_path, sglang_engine):
    locked = lock_with_adapters(tmp_path, adapter_entry())
    d = loaded(served(max_loaded_loras=8, max_loras_per_batch=4), locked)
    args = launch_command(d.spec, d.model, d.sizing, api_key=False).args
    path = f"/models/{QWEN_ADAPTER['repo']}/{QWEN_ADAPTER['revision']}"
    at = args.index("--enable-lora")
    assert args[at : at + 3] == ["--enable-lora", "--lora-paths", f"support={path}"]
    parsed = sglang_parse(args)
    assert parsed.returncode == 0, parsed.stderr
    [verdict] = sglang_engine.start([case_for_args(QWEN, args)])
    assert verdict["error"] is None, verdict


def test_sglang_and_sgldeploy_refuse_more_adapters_than_it_may_load(tmp_path, sglang_engine):
    second = {**QWEN_ADAPTER, "repo": "org/qwen-legal"}
    locked = lock_with_adapters(tmp_path, adapter_entry(), adapter_entry(repo=second["repo"]))
    raw = served(max_loaded_loras=1, max_loras_per_batch=1)
    raw["model"]["adapters"] = [{"name": "support", **QWEN_ADAPTER}, {"name": "legal", **second}]
    assert lines(raw, locked) == [
        "error: sgldeploy:deployments[0].serving.lora.max_loaded_loras: is fewer than the 2 adapters SGLang loads "
        "at start (got 1); raise it to 2, or leave it null"
    ]
    args = [
        "--model-path", "m", "--enable-lora", "--lora-paths", "support=/a", "legal=/b", "--max-loras-per-batch",
        "1", "--max-loaded-loras", "1", "--max-lora-rank", "16", "--lora-target-modules", "q_proj",
    ]  # fmt: skip
    [verdict] = sglang_engine.start([case_for_args(QWEN, args)])
    assert "The number of LoRA paths should not exceed max_loaded_loras" in verdict["error"]


def test_each_adapter_is_fetched_and_verified_beside_the_model(tmp_path):
    locked = lock_with_adapters(tmp_path, adapter_entry())
    d = loaded(served(), locked)
    pod = pod_template(d.spec, d.model, d.sizing, SecretRefs(None, None), [d.sizing.placement.instance_type])
    inits = {c["name"]: c for c in pod["spec"]["initContainers"]}
    assert list(inits) == ["prefetch", "prefetch-adapter-0"]
    assert inits["prefetch-adapter-0"]["args"] == [
        "--repo", QWEN_ADAPTER["repo"], "--revision", QWEN_ADAPTER["revision"], "--dest", "/models",
    ]  # fmt: skip
    assert inits["prefetch-adapter-0"]["volumeMounts"] == inits["prefetch"]["volumeMounts"]


def test_a_shared_cache_fills_adapters_in_the_prefetch_job_and_pods_wait_for_each(tmp_path):
    from sgldeploy.builders.weight_cache import layout, prefetch_job_spec

    locked = lock_with_adapters(tmp_path, adapter_entry())
    raw = served()
    raw["cache"] = {"storage": "efs"}
    d = loaded(raw, locked, addons={"efs_csi": True})
    adapters = d.sizing.lora.adapters
    job = prefetch_job_spec(d.spec, d.model, None, adapters)["template"]["spec"]["containers"]
    assert [c["name"] for c in job] == ["prefetch", "prefetch-adapter-0"]
    waits = layout(d.spec, d.model, d.sizing.disk_gib, None, adapters).init_containers
    assert [c["name"] for c in waits] == ["wait-for-cache", "wait-for-cache-adapter-0"]
    assert waits[1]["args"][:4] == ["--repo", QWEN_ADAPTER["repo"], "--revision", QWEN_ADAPTER["revision"]]
    assert waits[1]["args"][-2] == "--wait-complete"


def test_refusals_name_the_field_and_the_fix(tmp_path):
    cases = {
        "another base": (
            adapter_entry(base="meta-llama/Llama-3.1-8B-Instruct"),
            {},
            "error: sgldeploy:deployments[0].model.adapters[0].repo: was trained on meta-llama/Llama-3.1-8B-Instruct, "
            f"not on the deployment's {QWEN['repo']} (its adapter_config.json's base_model_name_or_path) (got "
            f"'{QWEN_ADAPTER['repo']}'); serve it on a deployment of meta-llama/Llama-3.1-8B-Instruct, or choose an "
            f"adapter trained on {QWEN['repo']}",
        ),
        "DoRA": (
            adapter_entry(use_dora=True),
            {},
            "error: sgldeploy:deployments[0].model.adapters[0].repo: is a DoRA adapter, which SGLang 0.5.23 refuses "
            f"to load (lora_manager.py validate_new_adapter) (got '{QWEN_ADAPTER['repo']}'); choose a plain LoRA "
            "adapter (adapter_config.json use_dora: false)",
        ),
        "modules": (
            adapter_entry(targets=("q_proj", "mlp.fc1")),
            {},
            "error: sgldeploy:deployments[0].model.adapters[0].repo: targets modules sgldeploy does not size LoRA "
            f"for: mlp.fc1 (got '{QWEN_ADAPTER['repo']}'); choose an adapter of the attention and MLP projections "
            "(q/k/v/o, gate/up/down), embed_tokens or lm_head",
        ),
        "rank": (
            adapter_entry(rank=64),
            {"max_lora_rank": 32},
            "error: sgldeploy:deployments[0].serving.lora.max_lora_rank: is below the rank 64 of "
            f"{QWEN_ADAPTER['repo']}: SGLang's LoRA buffers hold ranks up to it (got 32); raise it to 64, or set "
            "it to auto",
        ),
    }
    for name, (entry, serving, line) in cases.items():
        raw = served(**serving)
        assert lines(raw, lock_with_adapters(tmp_path, entry)) == [line], name


def test_an_adapter_missing_from_the_lock_or_unpinned_in_production(tmp_path):
    locked = lock_with_adapters(tmp_path)
    assert lines(served(), locked) == [
        "error: sgldeploy:deployments[0].model.adapters[0].revision: "
        f"{QWEN_ADAPTER['repo']}@{QWEN_ADAPTER['revision']} is not in models.lock.json (got "
        f"'{QWEN_ADAPTER['revision']}'); run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock "
        "--from-cache DIR` to resolve it from a Hugging Face cache without the Hub"
    ]
    on_main = lock_with_adapters(tmp_path, adapter_entry(revision="main"))
    raw = served()
    raw["model"]["adapters"][0]["revision"] = "main"
    assert lines(raw, on_main, environment="production") == [
        "error: sgldeploy:deployments[0].model.adapters[0].revision: must be a 40-hex commit in a production "
        f"stack (got 'main'); pin the commit the branch or tag resolves to; it is locked at {'d' * 40}"
    ]


def test_spec_rules_for_adapters():
    raw = served(("support", "support"), max_loaded_loras=2, max_loras_per_batch=4)
    raw["cache"] = {"storage": "none"}
    raw["serving"]["extra_args"] = ["--lora-paths", "x=/y"]
    try:
        parse_stack(None, [raw])
        got: list[str] = []
    except InvalidInput as invalid:
        got = [p.line() for p in invalid.problems]
    assert got == [
        "error: sgldeploy:deployments[0].serving.extra_args[0]: --lora-paths is generated from the spec (got "
        "'--lora-paths'); set model.adapters in the spec instead",
        "error: sgldeploy:deployments[0].model.adapters[1].name: is the name of an earlier adapter (got 'support'); "
        "give each adapter its own name",
        "error: sgldeploy:deployments[0].cache.storage: cannot hold the LoRA adapters, and SGLang would fetch each "
        "adapter's default branch from the Hub, not its locked commit (got 'none'); set node-local (or efs, "
        "fsx-lustre), or auto",
        "error: sgldeploy:deployments[0].serving.lora.max_loaded_loras: must be at least max_loras_per_batch (4): "
        "a batch's adapters are all loaded (got 2); raise it to 4, or lower max_loras_per_batch",
    ]


BUFFERS = Path(__file__).parent / "contract" / "sglang_lora_buffers.py"
EVERY_MODULE = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "embed_tokens", "lm_head")


def sglang_buffer_elements(
    entry: dict, modules: tuple[str, ...], rank: int, tp: int, attention_tp: int
) -> int:
    """The elements SGLang's own LoRAMemoryPool shape code allocates on one GPU for a lock entry (tests/contract)."""
    import subprocess

    from .test_sglang_args import SGLANG_PYTHON

    case = {"config": entry["config"], "dtype": entry["dtype"], "modules": list(modules), "rank": rank}
    case |= {"slots": 1, "tp": tp, "attn_tp": attention_tp}
    done = subprocess.run(
        [SGLANG_PYTHON, str(BUFFERS), json.dumps(case)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["elements"]


@pytest.mark.parametrize(
    "ref, modules, rank, tp, attention_tp",
    [
        (QWEN, ("qkv_proj", "o_proj"), 16, 1, 1),
        (QWEN, EVERY_MODULE, 8, 2, 2),  # 4 KV heads over 2 GPUs: split
        (QWEN, EVERY_MODULE, 32, 8, 8),  # over 8 GPUs: each holds a copy of one KV head
        (QWEN, ("qkv_proj", "o_proj", "down_proj"), 16, 8, 2),  # attention in 4 groups of 2 GPUs
        (LLAMA_70B, EVERY_MODULE, 64, 8, 8),
    ],
)
def test_the_buffers_are_what_sglangs_own_shape_code_allocates(ref, modules, rank, tp, attention_tp):
    key = f"{ref['repo']}@{ref['revision']}"
    model = read_lock(LOCK)[key]
    load = lora.LoraLoad(rank=rank, modules=frozenset(modules), slots=1)
    ours = lora.buffer_bytes_per_gpu(model, load, tp, 1, attention_tp)
    assert ours == sglang_buffer_elements(
        json.loads(LOCK.read_text())["models"][key], modules, rank, tp, attention_tp
    )
    # Slots and element size scale it, as init_buffers allocates one slice per slot in the model's dtype.
    assert lora.buffer_bytes_per_gpu(model, replace(load, slots=8), tp, 2, attention_tp) == 16 * ours


@pytest.mark.parametrize("tp", [1, 2])
def test_a_vocabulary_off_the_padding_splits_as_sglangs_lm_head_does(tp):
    """1,000 tokens: SGLang pads the vocabulary to 1,024 before it divides it among the GPUs."""
    from sgldeploy.models.hub import config_fields

    entry = {"config": config_fields(BASE_CONFIG), "dtype": "bfloat16"}
    model = LockedModel.from_entry(
        {"repo": "org/tiny", "revision": "main", "sha": "a" * 40, "parameters": 1, **entry}
    )
    load = lora.LoraLoad(rank=8, modules=frozenset(("lm_head", "embed_tokens", "gate_up_proj")), slots=1)
    assert lora.buffer_bytes_per_gpu(model, load, tp, 1) == sglang_buffer_elements(
        entry, tuple(load.modules), 8, tp, tp
    )


def test_an_adapter_of_the_mlp_loads_where_the_lock_has_the_models_intermediate_size(tmp_path):
    locked = lock_with_adapters(tmp_path, adapter_entry(targets=("gate_proj", "up_proj", "down_proj")))
    assert lines(served(), locked) == []
    assert loaded(served(), locked).sizing.lora.modules == {"gate_up_proj", "down_proj"}


def test_a_damaged_or_missing_adapter_does_not_hide_the_next(tmp_path):
    broken = adapter_entry(repo="org/broken")
    del broken["adapter"]["alpha"]
    locked = lock_with_adapters(tmp_path, adapter_entry(base="org/other"), broken)
    raw = served()
    raw["model"]["adapters"] = [
        {"name": "other", **QWEN_ADAPTER},
        {"name": "broken", "repo": "org/broken", "revision": QWEN_ADAPTER["revision"]},
        {"name": "absent", "repo": "org/absent", "revision": QWEN_ADAPTER["revision"]},
        {"name": "other-too", "repo": "org/other-too", "revision": QWEN_ADAPTER["revision"]},
    ]
    got = lines(raw, locked)
    assert len(got) == 4
    for line, place in zip(
        got,
        [
            "sgldeploy:deployments[0].model.adapters[0].repo",
            f'{tmp_path}/models.lock.json: models["org/broken@{QWEN_ADAPTER["revision"]}"].adapter.alpha',
            "sgldeploy:deployments[0].model.adapters[2].revision",
            "sgldeploy:deployments[0].model.adapters[3].revision",
        ],
        strict=True,
    ):
        assert line.startswith(f"error: {place}: "), line


def test_an_mlp_adapter_needs_the_models_intermediate_size(tmp_path):
    lock = json.loads(LOCK.read_text())
    del lock["models"][f"{QWEN['repo']}@{QWEN['revision']}"]["config"]["intermediate_size"]
    lock["adapters"] = {
        f"{QWEN_ADAPTER['repo']}@{QWEN_ADAPTER['revision']}": adapter_entry(targets=("down_proj",))
    }
    (tmp_path / "models.lock.json").write_text(json.dumps(lock))
    assert lines(served(), tmp_path / "models.lock.json") == [
        "error: sgldeploy:deployments[0].model.adapters[0].repo: adapts the MLP, and the lock entry of "
        f"{QWEN['repo']} has no config.intermediate_size, which sizes its LoRA buffers (got "
        f"'{QWEN_ADAPTER['repo']}'); re-create the entry with `sgldeploy lock --refresh`, or add "
        f"config.intermediate_size from {QWEN['repo']}'s config.json"
    ]


def test_an_attention_adapter_needs_no_intermediate_size(tmp_path):
    lock = json.loads(LOCK.read_text())
    del lock["models"][f"{QWEN['repo']}@{QWEN['revision']}"]["config"]["intermediate_size"]
    lock["adapters"] = {f"{QWEN_ADAPTER['repo']}@{QWEN_ADAPTER['revision']}": adapter_entry()}
    (tmp_path / "models.lock.json").write_text(json.dumps(lock))
    assert lines(served(), tmp_path / "models.lock.json") == []


def test_an_adapter_of_a_mixture_of_experts_is_refused(tmp_path):
    from .conftest import QWEN3_235B

    entry = adapter_entry(base=QWEN3_235B["repo"])
    raw = deployment(
        model={**QWEN3_235B, "adapters": [{"name": "support", **QWEN_ADAPTER}]},
        serving={"context_length": 4096, "max_concurrency": 4},
        resources={"gpu": "H200"},
        cache={"storage": "node-local"},
    )
    assert lines(raw, lock_with_adapters(tmp_path, entry)) == [
        "error: sgldeploy:deployments[0].model.adapters[0].repo: is an adapter of a mixture of experts "
        f"({QWEN3_235B['repo']}), whose expert LoRA buffers sgldeploy does not size yet (got "
        f"'{QWEN_ADAPTER['repo']}'); serve adapters on a dense model, or merge this one into the weights"
    ]


def test_the_rank_is_the_adapters_largest_unless_set_and_an_equal_rank_fits(tmp_path):
    small, large = adapter_entry(rank=8), adapter_entry(repo="org/qwen-legal", rank=32)
    locked = lock_with_adapters(tmp_path, small, large)
    raw = served()
    raw["model"]["adapters"].append(
        {"name": "legal", "repo": "org/qwen-legal", "revision": QWEN_ADAPTER["revision"]}
    )
    assert loaded(raw, locked).sizing.lora.rank == 32
    raw["serving"]["lora"] = {"max_lora_rank": 32}
    assert loaded(raw, locked).sizing.lora.rank == 32
    raw["serving"]["lora"] = {"max_lora_rank": 48}
    d = loaded(raw, locked)
    assert d.sizing.lora.rank == 48
    args = launch_command(d.spec, d.model, d.sizing, api_key=False).args
    at = args.index("--max-lora-rank")
    assert args[at : at + 7] == [
        "--max-lora-rank",
        "48",
        "--lora-target-modules",
        "k_proj",
        "o_proj",
        "q_proj",
        "v_proj",
    ]


def test_the_modules_are_named_as_sglangs_own_mapping_names_them():
    import subprocess

    from .test_sglang_args import SGLANG_PYTHON

    names = [*lora.NORMALIZED, "model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj"]
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from sglang_config import _import_sglang; "
        "_import_sglang(); from sglang.srt.lora.utils import get_normalized_target_modules as n; "
        "print(json.dumps({m: sorted(n([m])) for m in json.loads(sys.argv[2])}))"
    )
    done = subprocess.run(
        [SGLANG_PYTHON, "-c", code, str(BUFFERS.parent), json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sglang = json.loads(done.stdout.strip().splitlines()[-1])

    def ours(name: str) -> list[str]:
        entry = LockedAdapter("o/a", "main", "e" * 40, 8, 16.0, (name,), None, False, 1, None, "hub")
        return sorted(lora.normalized_modules(entry) or [])

    assert {name: ours(name) for name in names} == sglang


def test_more_problems_with_adapters_are_reported_together(tmp_path):
    legal = {"repo": "org/qwen-legal", "revision": QWEN_ADAPTER["revision"]}
    locked = lock_with_adapters(
        tmp_path,
        adapter_entry(targets=("model.layers.0.self_attn.q_proj", "fc1", "fc2")),
        adapter_entry(repo=legal["repo"], rank=64),
        adapter_entry(repo="org/qwen-math", rank=40, base="./trained-from-a-local-copy"),
    )
    raw = served(max_lora_rank=32)
    raw["model"]["adapters"] += [
        {"name": "legal", **legal},
        {"name": "math", "repo": "org/qwen-math", "revision": QWEN_ADAPTER["revision"]},
        {"name": "absent", "repo": "org/absent", "revision": "f" * 40},
    ]
    got = lines(raw, locked)
    assert got[0].startswith(
        "error: sgldeploy:deployments[0].model.adapters[0].repo: targets modules sgldeploy does not size LoRA "
        "for: fc1, fc2 (got"
    )
    assert got[1].startswith("error: sgldeploy:deployments[0].model.adapters[3].revision: org/absent@ffff")
    # A base model named by a local path cannot be checked, so it is not refused; the largest rank over the limit
    # is the one named.
    assert got[2:] == [
        "error: sgldeploy:deployments[0].serving.lora.max_lora_rank: is below the rank 64 of org/qwen-legal: "
        "SGLang's LoRA buffers hold ranks up to it (got 32); raise it to 64, or set it to auto"
    ]


@pytest.mark.parametrize("base", ["./base", "~/base", "/mnt/models/base", "base", QWEN["repo"].upper()])
def test_a_base_model_that_is_no_other_repo_id_is_not_refused(tmp_path, base):
    assert lines(served(), lock_with_adapters(tmp_path, adapter_entry(base=base))) == []


def test_a_damaged_adapter_entry_is_named_by_field_and_an_unlocked_branch_in_production_too(tmp_path):
    broken = adapter_entry()
    broken["adapter"]["rank"] = "sixteen"
    assert lines(served(), lock_with_adapters(tmp_path, broken)) == [
        f'error: {tmp_path}/models.lock.json: models["{QWEN_ADAPTER["repo"]}@{QWEN_ADAPTER["revision"]}"]'
        ".adapter.rank: must be a positive integer (adapter_config.json's r) (got 'sixteen'); write e.g. 16, or "
        "re-create the entry with `sgldeploy lock --refresh`"
    ]
    raw = served()
    raw["model"]["adapters"][0]["revision"] = "main"
    assert lines(raw, lock_with_adapters(tmp_path), environment="production") == [
        "error: sgldeploy:deployments[0].model.adapters[0].revision: must be a 40-hex commit in a production "
        "stack (got 'main'); pin the commit the branch or tag resolves to",
        f"error: sgldeploy:deployments[0].model.adapters[0].revision: {QWEN_ADAPTER['repo']}@main is not in "
        "models.lock.json (got 'main'); run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock "
        "--from-cache DIR` to resolve it from a Hugging Face cache without the Hub",
    ]


def test_normalized_modules_follow_sglangs_mapping():
    def adapter(*targets: str) -> LockedAdapter:
        return LockedAdapter("o/a", "main", "e" * 40, 8, 16.0, targets, None, False, 1, None, "hub")

    assert lora.normalized_modules(adapter("q_proj", "k_proj", "gate_proj", "up_proj", "down_proj")) == {
        "qkv_proj",
        "gate_up_proj",
        "down_proj",
    }
    for every in ("all-linear", "all"):  # PEFT's and SGLang's names for every linear layer
        assert lora.normalized_modules(adapter(every)) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    assert lora.normalized_modules(adapter("model.layers.0.self_attn.o_proj")) == {"o_proj"}
    assert lora.normalized_modules(adapter("fc1")) is None
