"""Lock entries written from published model facts (a models.csv), as the committed lock's were: the test's own
writer, so a check that the committed lock regenerates has an oracle independent of sgldeploy's lock code."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

DTYPE_LABELS = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}  # safetensors' dtype names


MOE_AND_MLA_COLUMNS = (
    "num_experts_per_tok",
    "moe_intermediate_size",
    "intermediate_size",
    "first_k_dense_replace",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "num_nextn_predict_layers",
)


def entry(row: dict[str, str], requested_revision: str) -> dict[str, Any]:
    """A lock entry (DESIGN.md, model lock version 1) from one row of published model facts."""

    def integer(name: str) -> int | None:
        return int(row[name]) if row.get(name) else None

    dtype = row["torch_dtype"]
    # A mixture of experts or a pre-quantized checkpoint has its own columns (empty for the others): the routing,
    # MLA's latent, the RoPE scaling (JSON), the multi-token-prediction layers, the method, and the parameters of each safetensors dtype.
    extensions: dict[str, Any] = {name: integer(name) for name in MOE_AND_MLA_COLUMNS if row.get(name)}
    if row.get("rope_scaling"):
        extensions["rope_scaling"] = json.loads(row["rope_scaling"])
    by_dtype = (
        {label: int(n) for label, n in (pair.split(":") for pair in row["parameters_by_dtype"].split(";"))}
        if row.get("parameters_by_dtype")
        else {DTYPE_LABELS.get(dtype, dtype.upper()): int(row["total_params"])}
    )
    return {
        "repo": row["repo_id"],
        "revision": requested_revision,
        "sha": row["revision_sha"],
        "pipeline_tag": row["pipeline_tag"] or None,
        "gated": row["gated"] == "true",
        "custom_code": False,
        "parameters": int(row["total_params"]),
        "dtype": dtype,
        "parameters_by_dtype": by_dtype,
        "safetensors_bytes": None,
        "files": [],
        "config": {
            "architectures": [row["architecture"]],
            **{
                name: integer(name)
                for name in (
                    "hidden_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "head_dim",
                    "vocab_size",
                    "max_position_embeddings",
                    "num_experts",
                )
            },
            "quantization_method": row.get("quantization_method") or None,
            **extensions,
        },
        "source": "public-facts",
    }


def lock_entries(csv_path: Path, revisions: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Entries keyed `repo@revision` (the lock's key) for `repo → [requested revisions]`."""
    with open(csv_path, newline="") as f:
        rows = {r["repo_id"]: r for r in csv.DictReader(f)}
    return {f"{repo}@{rev}": entry(rows[repo], rev) for repo, revs in revisions.items() for rev in revs}
