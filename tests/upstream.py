"""Where the tests read upstream files (CRDs, charts' default values): only the cache that tests/fetch_upstream.py
fills (`make upstream`, run by `make test` before pytest), each file verified against tests/upstream.lock.json.
The published identity of each chart (name, version, where published, repo, path, commit) is data in that lock."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from .fetch_upstream import CACHE, LOCK, STAMP, sha256_of


class UpstreamCacheMissing(RuntimeError):
    pass


@cache
def verified_cache() -> Path:
    """The cache, once fetch_upstream has verified it against the lock as it is now (its stamp)."""
    stamp = CACHE / STAMP
    if not stamp.is_file() or stamp.read_text().strip() != sha256_of(LOCK.read_bytes()):
        raise UpstreamCacheMissing(
            f"{CACHE} is missing or was not verified against {LOCK.name} as it is now: "
            "run `make upstream` (python tests/fetch_upstream.py)"
        )
    return CACHE


def upstream(*parts: str) -> Path:
    """A path in the verified cache, laid out as ../shared is (crds/, data/charts/<chart>-<version>/, …)."""
    return verified_cache().joinpath(*parts)


def chart_source(directory_name: str) -> dict[str, Any] | None:
    """The lock's record of a pinned chart version, `<chart>-<version>` (each chart's SOURCE): None if unpinned."""
    charts: dict[str, Any] = json.loads(LOCK.read_text())["charts"]
    return charts.get(directory_name)
