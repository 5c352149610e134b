"""The model lock (`models.lock.json`, version 1): what each `repo@revision` resolved to.

Plans read the lock and never touch the network. Entries come from the Hub (`source: hub`), from a local
Hugging Face cache (`source: local-cache`, gating unknown) or, where neither is at hand, from published facts
(`source: public-facts`, written by hand, without a file list). Any entry may be written by hand: each field
is checked (`entry_problems`) so a damaged one is reported by entry and field, never as a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sgldeploy.files import write_atomic
from sgldeploy.spec.problems import Problem, Verbatim

SERVABLE_PIPELINES = ("text-generation", "image-text-to-text")
LOCK_VERSION = 1
LOCK_NAME = "models.lock.json"
# Where an entry's facts came from: the Hub's API, a local Hugging Face cache directory (no network, so
# gating is unknown), or published model facts (shared data's models.csv, no file list).
SOURCES = ("hub", "local-cache", "public-facts")
RELOCK = "or re-create the entry with `sgldeploy lock --refresh`"
# The fix for a revision absent from the lock: the Hub resolves it, and so does a local Hugging Face cache.
NOT_LOCKED_FIX = (
    "run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock --from-cache DIR` to resolve it from a "
    "Hugging Face cache without the Hub"
)

CONFIG_FIELDS = (
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "num_experts",
    "quantization_method",
    # extensions: MLA models (DeepSeek) cache a compressed latent instead of per-head K and V
    "kv_lora_rank",
    "qk_rope_head_dim",
    # extensions: what SGLang derives the context length from (sgldeploy.models.sizing.context_limit)
    "max_sequence_length",
    "seq_length",
    "max_seq_len",
    "model_max_length",
    "rope_scaling",
    "rope_parameters",
    # extensions: a mixture of experts' routing, for the bytes a decode step reads (models/throughput.py)
    "num_experts_per_tok",
    "moe_intermediate_size",
    "intermediate_size",
    "first_k_dense_replace",
    # extensions: DeepSeek's multi-token-prediction layers, which SGLang skips unless it drafts with them
    "num_nextn_predict_layers",
)


@dataclass(frozen=True)
class LockedModel:
    """One lock entry, with the facts sizing and serving need."""

    repo: str
    revision: str
    sha: str
    parameters: int
    dtype: str
    gated: bool
    pipeline_tag: str | None
    custom_code: bool
    config: dict[str, Any]
    source: str
    parameters_by_dtype: dict[str, int]
    safetensors_bytes: int | None
    gated_known: bool = True  # False for a local-cache entry: the cache does not record gating

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def num_attention_heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def num_kv_heads(self) -> int:
        return int(self.config.get("num_key_value_heads") or self.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.num_attention_heads)

    @property
    def max_context(self) -> int:
        return int(self.config["max_position_embeddings"])

    @property
    def quantization_method(self) -> str | None:
        return self.config.get("quantization_method")

    @property
    def kv_lora_rank(self) -> int:
        return int(self.config.get("kv_lora_rank") or 0)

    @property
    def qk_rope_head_dim(self) -> int:
        return int(self.config.get("qk_rope_head_dim") or 0)

    @classmethod
    def from_entry(cls, entry: dict[str, Any], key: str | None = None) -> LockedModel:
        """The model of a checked entry; LockEntryError names each damaged field."""
        problems = entry_problems(key or "", entry, check_key=key is not None)
        if problems:
            raise LockEntryError(problems)
        return cls(
            repo=entry["repo"],
            revision=entry["revision"],
            sha=entry["sha"],
            parameters=entry["parameters"],
            dtype=entry.get("dtype") or "bfloat16",
            gated=bool(entry.get("gated")),
            gated_known=entry.get("gated") is not None,
            pipeline_tag=entry.get("pipeline_tag"),
            custom_code=bool(entry.get("custom_code")),
            config=dict(entry.get("config") or {}),
            source=entry.get("source", "hub"),
            parameters_by_dtype=dict(entry.get("parameters_by_dtype") or {}),
            safetensors_bytes=entry.get("safetensors_bytes"),
        )


def lock_key(repo: str, revision: str) -> str:
    return f"{repo}@{revision}"


def lock_path_for(stack_file: Path) -> Path:
    """The lock lives next to the stack file it serves."""
    return stack_file.parent / LOCK_NAME


class LockError(Exception):
    pass


@dataclass(frozen=True)
class EntryProblem:
    """One damaged field of one lock entry: the problem's path is the field inside the entry
    (`config.hidden_size`), "" for the entry itself."""

    key: str
    problem: Problem

    def in_lock(self, lock_file: Path | str) -> Problem:
        """The problem placed in the lock: `error: <lock file>: models["<key>"].<field>: <what> (got …); <fix>`."""
        field = self.problem.path
        where = f"{lock_file}: models[{json.dumps(self.key)}]" + (f".{field}" if field else "")
        return replace(self.problem, path=where)


class LockEntryError(LockError):
    """A lock entry with damaged fields, each named."""

    def __init__(self, problems: list[EntryProblem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.key} {p.problem.path}: {p.problem.what}" for p in problems))


# ---- checking an entry (hand-written or damaged) --------------------------------------------------

_COMMIT = re.compile(r"[0-9a-f]{40}")
_MISSING = object()


def _integer(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_COUNT, _POSITIVE = _integer(0), _integer(1)


@dataclass(frozen=True)
class FieldRule:
    """What one field of a lock entry must hold, for the message that names it when it does not."""

    name: str
    required: bool
    check: Callable[[Any], bool]
    expected: str  # what a good value is, in words
    example: str


# The entry's fields: the facts sizing and serving read (README, "Models and the lock").
ENTRY_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "repo",
        True,
        lambda v: isinstance(v, str) and v.count("/") == 1 and all(v.split("/")),
        "a repo id",
        "org/name",
    ),
    FieldRule("revision", True, _text, "the branch, tag or commit the stack asks for", "main"),
    FieldRule(
        "sha",
        True,
        lambda v: isinstance(v, str) and bool(_COMMIT.fullmatch(v)),
        "a 40-hex commit",
        "a09a3545…",
    ),
    FieldRule("parameters", True, _POSITIVE, "the parameter count as a JSON integer", "7615616512"),
    FieldRule("dtype", False, _optional(_text), "the checkpoint's torch_dtype", "bfloat16"),
    FieldRule("pipeline_tag", False, _optional(_text), "the model card's pipeline tag", "text-generation"),
    FieldRule(
        "gated", False, _optional(lambda v: isinstance(v, bool)), "true, false or null (unknown)", "false"
    ),
    FieldRule("custom_code", False, lambda v: isinstance(v, bool), "true or false", "false"),
    FieldRule(
        "parameters_by_dtype",
        False,
        _optional(lambda v: isinstance(v, dict) and all(_text(k) and _COUNT(n) for k, n in v.items())),
        "an object of safetensors dtype → integer count",
        '{"BF16": 7615616512}',
    ),
    FieldRule(
        "safetensors_bytes", False, _optional(_COUNT), "the weights' size in bytes, or null", "15231233024"
    ),
    FieldRule("files", False, lambda v: isinstance(v, list), "a list of {path, size, sha256}", "[]"),
    FieldRule("source", False, lambda v: v in SOURCES, f"one of {', '.join(SOURCES)}", "hub"),
    FieldRule(
        "config",
        True,
        lambda v: isinstance(v, dict),
        "an object of config.json fields",
        '{"num_hidden_layers": 28}',
    ),
)
# The config.json fields sizing reads (layers, heads, head size, context length, MLA, quantization).
CONFIG_FIELD_RULES: tuple[FieldRule, ...] = (
    FieldRule(
        "num_hidden_layers", True, _POSITIVE, "a positive integer (config.json's num_hidden_layers)", "28"
    ),
    FieldRule(
        "num_attention_heads", True, _POSITIVE, "a positive integer (config.json's num_attention_heads)", "28"
    ),
    FieldRule(
        "num_key_value_heads", False, _optional(_POSITIVE), "a positive integer, or null for no GQA", "4"
    ),
    FieldRule("hidden_size", False, _optional(_POSITIVE), "a positive integer", "3584"),
    FieldRule(
        "head_dim", False, _optional(_POSITIVE), "a positive integer, or null for hidden_size / heads", "128"
    ),
    FieldRule("vocab_size", False, _optional(_POSITIVE), "a positive integer", "152064"),
    FieldRule("num_experts", False, _optional(_COUNT), "an integer, or null for a dense model", "null"),
    FieldRule(
        "num_experts_per_tok", False, _optional(_POSITIVE), "a positive integer (MoE models), or null", "8"
    ),
    FieldRule(
        "moe_intermediate_size",
        False,
        _optional(_POSITIVE),
        "a positive integer (MoE models), or null",
        "2048",
    ),
    FieldRule("intermediate_size", False, _optional(_POSITIVE), "a positive integer, or null", "18944"),
    FieldRule("first_k_dense_replace", False, _optional(_COUNT), "an integer (MoE models), or null", "3"),
    FieldRule(
        "quantization_method",
        False,
        _optional(_text),
        "config.json's quantization_config.quant_method",
        "fp8",
    ),
    FieldRule("kv_lora_rank", False, _optional(_COUNT), "an integer (MLA models), or null", "512"),
    FieldRule("qk_rope_head_dim", False, _optional(_COUNT), "an integer (MLA models), or null", "64"),
    FieldRule(
        "architectures",
        False,
        _optional(lambda v: isinstance(v, list) and all(_text(a) for a in v)),
        "a list of names",
        '["Qwen2ForCausalLM"]',
    ),
    FieldRule("rope_scaling", False, _optional(lambda v: isinstance(v, dict)), "an object, or null", "null"),
    FieldRule(
        "rope_parameters", False, _optional(lambda v: isinstance(v, dict)), "an object, or null", "null"
    ),
    *(
        FieldRule(name, False, _optional(_POSITIVE), "a positive integer, or null", "32768")
        for name in (
            "max_position_embeddings",
            "max_sequence_length",
            "seq_length",
            "max_seq_len",
            "model_max_length",
        )
    ),
)


def _field_problems(
    key: str,
    values: dict[str, Any],
    rules: tuple[FieldRule, ...],
    prefix: str,
) -> list[EntryProblem]:
    out = []
    for rule in rules:
        name, expected, example = rule.name, rule.expected, rule.example
        value = values.get(name, _MISSING)
        if value is _MISSING and not rule.required:
            continue
        if value is _MISSING:
            out.append(
                EntryProblem(
                    key,
                    Problem(
                        prefix + name,
                        f"is missing: {expected}",
                        f"add it (e.g. {example}), {RELOCK}",
                        show_got=False,
                    ),
                )
            )
        elif not rule.check(value):
            out.append(
                EntryProblem(
                    key,
                    Problem(prefix + name, f"must be {expected}", f"write e.g. {example}, {RELOCK}", value),
                )
            )
    return out


def entry_problems(key: str, entry: Any, check_key: bool = True) -> list[EntryProblem]:
    """Every damaged field of one lock entry, each named (a missing field, a wrong type, a bad commit)."""
    if not isinstance(entry, dict):
        return [EntryProblem(key, Problem("", "must be an object", RELOCK[3:], entry))]
    problems = _field_problems(key, entry, ENTRY_FIELDS, "")
    config = entry.get("config")
    if isinstance(config, dict):
        problems += _field_problems(key, config, CONFIG_FIELD_RULES, "config.")
        if config.get("hidden_size") is None and config.get("head_dim") is None:
            problems.append(
                EntryProblem(
                    key,
                    Problem(
                        "config.hidden_size",
                        "is missing, and so is config.head_dim",
                        f"add config.hidden_size (or config.head_dim) from config.json, {RELOCK}",
                        show_got=False,
                    ),
                )
            )
    if check_key and not problems:
        problems += _key_problems(key, entry)
    return problems


def _key_problems(key: str, entry: dict[str, Any]) -> list[EntryProblem]:
    """An entry must be keyed by the repo@revision it holds."""
    named = f"{entry.get('repo')}@{entry.get('revision')}"
    if key == named:
        return []
    return [
        EntryProblem(
            key,
            Problem(
                "",
                "is keyed by another repo@revision than it holds",
                f"key it by its repo@revision, {RELOCK}",
                Verbatim(named),
            ),
        )
    ]


# ---- LoRA adapters: their own section of the lock, `adapters`, keyed by `repo@revision` -----------------


@dataclass(frozen=True)
class LockedAdapter:
    """One adapter entry: the commit, and what its adapter_config.json says SGLang will load."""

    repo: str
    revision: str
    sha: str
    rank: int  # `r`
    alpha: float  # `lora_alpha`
    target_modules: tuple[str, ...]
    base_model: str | None  # `base_model_name_or_path`: a repo id, a local path, or absent
    use_dora: bool
    parameters: int
    safetensors_bytes: int | None
    source: str

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> LockedAdapter:
        a = entry["adapter"]
        return cls(
            repo=entry["repo"],
            revision=entry["revision"],
            sha=entry["sha"],
            rank=a["rank"],
            alpha=float(a["alpha"]),
            target_modules=tuple(a["target_modules"]),
            base_model=a.get("base_model"),
            use_dora=bool(a.get("use_dora")),
            parameters=entry["parameters"],
            safetensors_bytes=entry.get("safetensors_bytes"),
            source=entry.get("source", "hub"),
        )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


_ADAPTER_ENTRY_NAMES = (
    "repo",
    "revision",
    "sha",
    "parameters",
    "parameters_by_dtype",
    "safetensors_bytes",
    "files",
    "source",
)
ADAPTER_ENTRY_FIELDS: tuple[FieldRule, ...] = (
    *(rule for rule in ENTRY_FIELDS if rule.name in _ADAPTER_ENTRY_NAMES),
    FieldRule(
        "adapter", True, lambda v: isinstance(v, dict), "an object of adapter_config.json fields", "{}"
    ),
)
ADAPTER_CONFIG_RULES: tuple[FieldRule, ...] = (
    FieldRule("rank", True, _POSITIVE, "a positive integer (adapter_config.json's r)", "16"),
    FieldRule("alpha", True, _number, "a positive number (adapter_config.json's lora_alpha)", "32"),
    FieldRule(
        "target_modules",
        True,
        lambda v: isinstance(v, list) and bool(v) and all(_text(m) for m in v),
        "a list of module names",
        '["q_proj", "v_proj"]',
    ),
    FieldRule("base_model", False, _optional(_text), "the base model's repo id, or null", "org/name"),
    FieldRule("use_dora", False, lambda v: isinstance(v, bool), "true or false", "false"),
)


def adapter_entry_problems(key: str, entry: Any) -> list[EntryProblem]:
    """Every damaged field of one adapter entry, each named."""
    if not isinstance(entry, dict):
        return [EntryProblem(key, Problem("", "must be an object", RELOCK[3:], entry))]
    problems = _field_problems(key, entry, ADAPTER_ENTRY_FIELDS, "")
    if isinstance(entry.get("adapter"), dict):
        problems += _field_problems(key, entry["adapter"], ADAPTER_CONFIG_RULES, "adapter.")
    if not problems:
        problems += _key_problems(key, entry)
    return problems


@dataclass(frozen=True)
class LockContents:
    """The lock's usable models (and adapters) by `repo@revision`, and the damaged entries' problems by the same
    key."""

    entries: dict[str, dict[str, Any]]
    models: dict[str, LockedModel]
    damaged: dict[str, list[EntryProblem]]
    adapter_entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    adapters: dict[str, LockedAdapter] = field(default_factory=dict)
    damaged_adapters: dict[str, list[EntryProblem]] = field(default_factory=dict)


def read_lock_entries(path: Path, section: str = "models") -> dict[str, dict[str, Any]]:
    """The lock's entries of one section (`models` or `adapters`) as written (damaged ones included); an absent
    file is an empty lock."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LockError(
            f"{path}: cannot read the model lock ({exc}); re-create it with `sgldeploy lock`"
        ) from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise LockError(
            f"{path}: not a version {LOCK_VERSION} model lock; re-create it with `sgldeploy lock`"
        )
    entries = data.get(section, {})
    if not isinstance(entries, dict):
        raise LockError(
            f"{path}: `{section}` is not an object of entries; re-create it with `sgldeploy lock`"
        )
    return dict(entries)


def read_lock_contents(path: Path) -> LockContents:
    """Every entry checked on its own: one damaged entry does not hide the others."""
    entries = read_lock_entries(path)
    models, damaged = {}, {}
    for key, entry in entries.items():
        problems = entry_problems(key, entry)
        if problems:
            damaged[key] = problems
        else:
            models[key] = LockedModel.from_entry(entry, key)
    adapter_entries = read_lock_entries(path, "adapters")
    adapters, damaged_adapters = {}, {}
    for key, entry in adapter_entries.items():
        problems = adapter_entry_problems(key, entry)
        if problems:
            damaged_adapters[key] = problems
        else:
            adapters[key] = LockedAdapter.from_entry(entry)
    return LockContents(entries, models, damaged, adapter_entries, adapters, damaged_adapters)


def read_lock(path: Path) -> dict[str, LockedModel]:
    """The lock's entries by `repo@revision`; an absent file is an empty lock; any damaged entry is an error."""
    contents = read_lock_contents(path)
    if contents.damaged:
        first = next(iter(contents.damaged.values()))[0]
        raise LockError(first.in_lock(path).message())
    return contents.models


def write_lock(
    path: Path, entries: dict[str, dict[str, Any]], adapters: dict[str, dict[str, Any]] | None = None
) -> None:
    """Write atomically (temp file, then rename), sorted and stable: the same entries give the same bytes. The
    `adapters` section is written only when there are adapters."""
    data: dict[str, Any] = {"version": LOCK_VERSION, "models": entries}
    if adapters:
        data["adapters"] = adapters
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
