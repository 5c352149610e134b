"""Lock entries written from published model facts (a models.csv), as the committed lock's were: the test's own
writer, so a check that the committed lock regenerates has an oracle independent of sgldeploy's lock code."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

DTYPE_LABELS = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}  # safetensors' dtype names


def entry(row: dict[str, str], requested_revision: str) -> dict[str, Any]:
    """A lock entry (DESIGN.md, model lock version 1) from one row of published model facts."""

    def integer(name: str) -> int | None:
        return int(row[name]) if row.get(name) else None

    dtype = row["torch_dtype"]
    return {
        "repo": row["repo_id"],
        "revision": requested_revision,
        "sha": row["revision_sha"],
        "pipeline_tag": row["pipeline_tag"] or None,
        "gated": row["gated"] == "true",
        "custom_code": False,
        "parameters": int(row["total_params"]),
        "dtype": dtype,
        "parameters_by_dtype": {DTYPE_LABELS.get(dtype, dtype.upper()): int(row["total_params"])},
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
            "quantization_method": None,
        },
        "source": "public-facts",
    }


def lock_entries(csv_path: Path, revisions: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Entries keyed `repo@revision` (the lock's key) for `repo → [requested revisions]`."""
    with open(csv_path, newline="") as f:
        rows = {r["repo_id"]: r for r in csv.DictReader(f)}
    return {f"{repo}@{rev}": entry(rows[repo], rev) for repo, revs in revisions.items() for rev in revs}
