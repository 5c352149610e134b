"""Property-based tests: stack files generated from the spec's JSON Schema, and committed stacks with a value
swapped for a random one. Whatever the input, `sgldeploy validate` and `sgldeploy plan` exit 0, 1 or 2, never
with a traceback, and every exit-2 line names a config path (or the file) and a fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from sgldeploy import cli

from .conftest import LOCK, ROOT

SCHEMA = json.loads((ROOT / "schema" / "sgldeploy.schema.json").read_text())
STACKS = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))}
FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


def config_schema() -> dict[str, Any]:
    """The stack file's `config:` with a platform and one or two deployments, so generation reaches them."""
    config = copy.deepcopy(SCHEMA["properties"]["config"])
    config["properties"]["sgldeploy:deployments"].update(minItems=1, maxItems=2)
    config.pop("patternProperties", None)
    config["additionalProperties"] = False
    config["required"] = ["sgldeploy:platform", "sgldeploy:deployments"]
    return {**config, "$defs": SCHEMA["$defs"]}


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a nested value that a mutation can replace."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*prefix, i))
    return found


@st.composite
def mutated_stack(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(STACKS)))
    data = copy.deepcopy(STACKS[name])
    config = data["config"]
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(config)))
        target = config
        for part in where[:-1]:
            target = target[part]
        if draw(st.booleans()) and isinstance(target, dict):
            del target[where[-1]]
        else:
            target[where[-1]] = draw(JSON_VALUES)
        if not paths(config):
            break
    return data


def run(tmp_path: Path, capsys: Any, data: Any, command: str) -> None:
    path = tmp_path / "Pulumi.fuzz.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    (tmp_path / "models.lock.json").write_text(LOCK.read_text())
    code = cli.main([command, "--config", str(path)])
    out = capsys.readouterr()
    assert code in (0, 1, 2), code
    assert "Traceback" not in out.err
    if code == 2:
        lines = out.err.strip().splitlines()
        assert lines, "exit 2 without a message"
        for line in lines:
            assert line.startswith(("error: sgldeploy:", "error: aws:", f"error: {path}")), line
            assert "; " in line, line  # every problem comes with its fix


@FUZZ
@given(config=from_schema(config_schema()))
def test_schema_generated_stacks_validate_cleanly(tmp_path_factory, capsys, config):
    run(tmp_path_factory.mktemp("schema"), capsys, {"config": config}, "validate")


@settings(FUZZ, max_examples=200)
@given(data=mutated_stack())
def test_mutated_stacks_validate_cleanly(tmp_path_factory, capsys, data):
    run(tmp_path_factory.mktemp("mutated"), capsys, data, "validate")


@settings(FUZZ, max_examples=12)
@given(data=mutated_stack())
def test_mutated_stacks_plan_cleanly(tmp_path_factory, capsys, data):
    run(tmp_path_factory.mktemp("plan"), capsys, data, "plan")
