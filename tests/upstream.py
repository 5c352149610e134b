"""Where the tests read upstream files (CRDs, charts' default values): the directory SGLDEPLOY_UPSTREAM_MIRROR
names when set, else the project's ../shared. One helper, so a fetched cache can replace it in one place."""

from __future__ import annotations

import os
from pathlib import Path

MIRROR_ENV = "SGLDEPLOY_UPSTREAM_MIRROR"
_SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def upstream(*parts: str) -> Path:
    """A path under the upstream mirror, laid out as ../shared is (crds/, data/charts/, …)."""
    root = Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else _SHARED
    return root.joinpath(*parts)
