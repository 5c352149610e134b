"""A file of sgldeploy's that a pod runs in the serving image (the prefetch tool, the verify measurement),
delivered as a ConfigMap named by the file's sha256: a changed file is a new ConfigMap, so whatever mounts it
rolls or is replaced. Pure."""

from __future__ import annotations

import hashlib
from typing import Any


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_map_name(prefix: str, text: str) -> str:
    return f"{prefix}-{digest(text)[:10]}"


def config_map(prefix: str, labels: dict[str, str], key: str, text: str) -> dict[str, Any]:
    """The ConfigMap's metadata (less the namespace) and data: the file's exact text under one key."""
    return {
        "metadata": {
            "name": config_map_name(prefix, text),
            "labels": labels,
            "annotations": {"sgldeploy.io/sha256": digest(text)},
        },
        "data": {key: text},
    }


def volume(name: str, config_map: str, key: str) -> dict[str, Any]:
    """The ConfigMap's one file as a read-only volume."""
    return {
        "name": name,
        "configMap": {"name": config_map, "items": [{"key": key, "path": key}], "defaultMode": 0o444},
    }
