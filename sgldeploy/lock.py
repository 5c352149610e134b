"""The model lock (`models.lock.json`, version 1): what each `repo@revision` resolved to.

Plans read the lock and never touch the network. Entries come from the Hub (`source: hub`) or, where
no Hub is at hand, from published facts (`source: public-facts`, without a file list).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import write_atomic

SERVABLE_PIPELINES = ("text-generation", "image-text-to-text")
LOCK_VERSION = 1
LOCK_NAME = "models.lock.json"

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
    # extensions: what SGLang derives the context length from (sgldeploy.sizing.context_limit)
    "max_sequence_length",
    "seq_length",
    "max_seq_len",
    "model_max_length",
    "rope_scaling",
    "rope_parameters",
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
    def from_entry(cls, entry: dict[str, Any]) -> LockedModel:
        return cls(
            repo=entry["repo"],
            revision=entry["revision"],
            sha=entry["sha"],
            parameters=int(entry["parameters"]),
            dtype=entry.get("dtype") or "bfloat16",
            gated=bool(entry.get("gated")),
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


def read_lock_entries(path: Path) -> dict[str, dict[str, Any]]:
    """The lock's entries as written, checked to be usable; an absent file is an empty lock."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LockError(
            f"{path}: cannot read the model lock ({exc}); re-create it with `sgldeploy lock`"
        ) from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise LockError(
            f"{path}: not a version {LOCK_VERSION} model lock; re-create it with `sgldeploy lock`"
        )
    entries = data.get("models", {})
    try:
        for entry in entries.values():
            LockedModel.from_entry(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LockError(f"{path}: an entry lacks {exc}; re-create it with `sgldeploy lock`") from None
    return dict(entries)


def read_lock(path: Path) -> dict[str, LockedModel]:
    """The lock's entries by `repo@revision`; an absent file is an empty lock."""
    return {key: LockedModel.from_entry(entry) for key, entry in read_lock_entries(path).items()}


def write_lock(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Write atomically (temp file, then rename), sorted and stable: the same entries give the same bytes."""
    write_atomic(
        path, json.dumps({"version": LOCK_VERSION, "models": entries}, indent=2, sort_keys=True) + "\n"
    )


def entry_from_public_facts(row: dict[str, str], requested_revision: str) -> dict[str, Any]:
    """A lock entry from a row of published model facts (the columns of shared data's models.csv)."""

    def integer(name: str) -> int | None:
        return int(row[name]) if row.get(name) else None

    return {
        "repo": row["repo_id"],
        "revision": requested_revision,
        "sha": row["revision_sha"],
        "pipeline_tag": row["pipeline_tag"] or None,
        "gated": row["gated"] == "true",
        "custom_code": False,
        "parameters": int(row["total_params"]),
        "dtype": row["torch_dtype"],
        "parameters_by_dtype": {_dtype_label(row["torch_dtype"]): int(row["total_params"])},
        "safetensors_bytes": None,
        "files": [],
        "config": {
            "architectures": [row["architecture"]],
            "hidden_size": integer("hidden_size"),
            "num_hidden_layers": integer("num_hidden_layers"),
            "num_attention_heads": integer("num_attention_heads"),
            "num_key_value_heads": integer("num_key_value_heads"),
            "head_dim": integer("head_dim"),
            "vocab_size": integer("vocab_size"),
            "max_position_embeddings": integer("max_position_embeddings"),
            "num_experts": integer("num_experts"),
            "quantization_method": None,
        },
        "source": "public-facts",
    }


def _dtype_label(torch_dtype: str) -> str:
    return {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(torch_dtype, torch_dtype.upper())


def lock_from_public_facts(csv_path: Path, revisions: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Entries for `repo → [requested revisions]` from a models.csv of published facts."""
    with open(csv_path, newline="") as f:
        rows = {r["repo_id"]: r for r in csv.DictReader(f)}
    return {
        lock_key(repo, rev): entry_from_public_facts(rows[repo], rev)
        for repo, revs in revisions.items()
        for rev in revs
    }
