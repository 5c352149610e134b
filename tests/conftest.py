"""Shared fixtures: the project root, the committed lock, and stacks rendered offline."""

from __future__ import annotations

import os
import sys

# Nothing in the tests may reach the real Hub: unless a test points it at its loopback Hub, the client
# talks to a closed loopback port. Set before anything imports huggingface_hub.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)
# The EKS calendar decides which Kubernetes versions are offered and how they are priced: the tests read it as
# of one fixed day, so a version leaving support does not change their figures (tests of the calendar itself
# pass their own dates).
os.environ["SGLDEPLOY_TODAY"] = "2026-12-01"
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgldeploy.models.lock import read_lock
from sgldeploy.offline.render import Plan, render
from sgldeploy.spec.stackfile import read_stack_file

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "stacks" / "models.lock.json"
COMMITTED_STACKS = ("dev", "staging", "prod", "large-moe", "disaggregated", "multi-turn")
QWEN = {"repo": "Qwen/Qwen2.5-7B-Instruct", "revision": "a09a35458c702b33eeacc393d103063234e8bc28"}
LLAMA_8B = {
    "repo": "meta-llama/Llama-3.1-8B-Instruct",
    "revision": "0e9e39f249a16976918f6564b8830bc894c89659",
}
LLAMA_70B = {
    "repo": "meta-llama/Llama-3.1-70B-Instruct",
    "revision": "1605565b47bb9346c5515c34102e054115b4f98b",
}
DEEPSEEK_V3 = {"repo": "deepseek-ai/DeepSeek-V3", "revision": "e815299b0bcbac849fa540c768ef21845365c9eb"}
QWEN3_235B = {"repo": "Qwen/Qwen3-235B-A22B", "revision": "8efa61729e24bd65b1d152b5ab5409052aa80e65"}


@pytest.fixture(scope="session")
def lock():
    return read_lock(LOCK)


def deployment(**fields: Any) -> dict:
    """A valid raw deployment (Qwen 7B on one L4), with fields overridden; dotted keys reach nested ones."""
    raw: dict[str, Any] = {
        "name": "qwen",
        "model": dict(QWEN),
        "serving": {"context_length": 4096, "max_concurrency": 4},
        "cache": {"storage": "none"},
        "resources": {"gpu": "L4", "gpu_count": 1},
    }
    for key, value in fields.items():
        *parents, leaf = key.split("__")
        target = raw
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return raw


def multi_node(**fields: Any) -> dict:
    """Llama 3.1 70B on 16 H100s: two nodes per replica (a LeaderWorkerSet); fields override top-level keys."""
    return {
        "name": "big",
        "model": dict(LLAMA_70B),
        "serving": {"context_length": 16384, "max_concurrency": 8},
        "resources": {"gpu": "H100", "gpu_count": 16},
        "cache": {"storage": "none"},
        **fields,
    }


def disaggregated(**fields: Any) -> dict:
    """Qwen 7B disaggregated: prefill and decode each on one L4 of an EFA-capable type, one to two replicas each;
    fields override top-level keys (`disaggregation` whole)."""

    def role() -> dict[str, Any]:  # one object per role: YAML would write a shared one as an alias
        return {"resources": {"gpu": "L4", "gpu_count": 1}, "scaling": {"min_replicas": 1, "max_replicas": 2}}

    raw: dict[str, Any] = {
        "name": "pd",
        "model": dict(QWEN),
        "serving": {"context_length": 4096, "max_concurrency": 4},
        "cache": {"storage": "none"},
        "disaggregation": {"prefill": role(), "decode": role()},
    }
    return {**raw, **fields}


PD_PLATFORM = {"cluster": {"name": "t"}, "namespace": "llm", "addons": {"efa_device_plugin": "existing"}}


def write_stack(
    tmp_path: Path,
    platform: dict | None = None,
    deployments: list | None = None,
    extra: dict | None = None,
    name: str = "test",
) -> Path:
    """A stack file with its own copy of the committed lock beside it."""
    config: dict[str, Any] = {
        "aws:region": "us-east-1",
        "sgldeploy:platform": platform or {"cluster": {"name": "test"}, "namespace": "llm"},
        "sgldeploy:deployments": deployments if deployments is not None else [deployment()],
    }
    config.update(extra or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    (tmp_path / "models.lock.json").write_text(LOCK.read_text())
    return path


def render_stack(path: Path) -> Plan:
    return render(read_stack_file(path))


def resources_of(plan: Plan, type_: str) -> list:
    return [r for r in plan.recording.resources if r.type == type_]


def with_secret(stack_file: Path, tmp_path: Path, key: str = "hfToken") -> Path:
    """A copy of a committed stack file with a secret set, as `pulumi config set --secret` would."""
    data = yaml.safe_load(stack_file.read_text())
    data["config"][f"sgldeploy:{key}"] = {"secure": "v1:AAAAAAAAAAAAAAAA:opaque-ciphertext"}
    out = tmp_path / stack_file.name
    out.write_text(yaml.safe_dump(data))
    (tmp_path / "models.lock.json").write_text(LOCK.read_text())
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The render snapshots run first. A change in what a stack renders is then reported first by the test
    that shows all of it; and in a mutation run (make mutate), which maps each function to the tests during
    which it first runs, every function a variant's program calls maps to that variant's snapshot, however
    the tests that share the session's renders are ordered."""
    items.sort(key=lambda item: item.path.name != "test_render_unchanged.py")


def pytest_sessionstart(session: pytest.Session) -> None:
    """A session starts with nothing of sgldeploy's cached, neither in sgldeploy (the catalog's tables, the
    prefetch tool's text) nor in the tests (rendered stacks and plans): mutation testing (make mutate) forks
    each mutant's session from a process that already ran the tests once, and a cache kept from that run would
    answer with the unmutated code's results."""
    for name, module in list(sys.modules.items()):
        if name == "sgldeploy" or name.startswith(("sgldeploy.", "tests.")):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)) and _caches_product_output(name, value):
                    value.cache_clear()


# Caches of facts from outside sgldeploy (upstream schemas, AWS API models, generated test repos): kept, since
# no mutant of sgldeploy changes them and they are slow to build.
_EXTERNAL_CACHES = ("tests.aws_api", "tests.k8s_schemas", "tests.upstream")


def _caches_product_output(module: str, value: Any) -> bool:
    return module not in _EXTERNAL_CACHES and getattr(value, "__name__", "") != "big_model"


@pytest.fixture(scope="session")
def sglang_engine():
    """SGLang's start-up checks (tests/contract/sglang_config.py), started once for the session."""
    from .test_sglang_config import Engine

    engine = Engine()
    yield engine
    engine.close()


def sized(lock, raw: dict):
    """A raw deployment parsed, its locked model, and its sizing."""
    from sgldeploy.models.sizing import size
    from sgldeploy.spec.validate import parse_stack

    dep = parse_stack(None, [raw]).deployments[0]
    model = lock[f"{dep.model.repo}@{dep.model.revision}"]
    return dep, model, size(dep, model)


def problem_lines(deployments: list[dict], lock_file: Path = LOCK, **platform: Any) -> list[str]:
    """Each problem `validate` and `plan` print for these deployments on cluster `c` (none: an empty list)."""
    from sgldeploy import stack
    from sgldeploy.spec.problems import InvalidInput

    try:
        stack.load({"cluster": {"name": "c"}, **platform}, deployments, lock_file, set(), offline=True)
    except InvalidInput as invalid:
        return [p.line() for p in invalid.problems]
    return []
