"""Stack files that try to break sgldeploy: each is refused with exit 2 and one line per problem naming the
config path (or the file), never a traceback. Each case mutates the committed dev stack."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgldeploy import cli

from .conftest import LOCK, QWEN, ROOT

DEV = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
DEP = "sgldeploy:deployments[0]"


def dev(edit: Callable[[dict[str, Any]], Any]) -> bytes:
    """The dev stack with one edit applied to its config, as YAML bytes."""
    data = copy.deepcopy(DEV)
    edit(data["config"])
    return yaml.safe_dump(data, allow_unicode=True).encode()


def set_in(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        target = config
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def dep(*path: Any, value: Any) -> bytes:
    return dev(set_in("sgldeploy:deployments", 0, *path, value=value))


def platform(*path: Any, value: Any) -> bytes:
    return dev(set_in("sgldeploy:platform", *path, value=value))


BILLION_LAUGHS = b"""config:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  sgldeploy:deployments: [*g,*g,*g,*g,*g,*g,*g,*g,*g]
"""
DEV_TEXT = (ROOT / "stacks" / "Pulumi.dev.yaml").read_bytes()
SECOND = {**DEV["config"]["sgldeploy:deployments"][0], "name": "qwen-7b"}

# (id, stack file bytes, [(path fragment, message fragment), ...] expected among the error lines)
CASES: list[tuple[str, bytes, list[tuple[str, str]]]] = [
    # ---- the file itself
    ("billion laughs", BILLION_LAUGHS, [("Pulumi.test.yaml", "anchors and aliases")]),
    ("huge file", DEV_TEXT + b"#" * (2 << 20), [("Pulumi.test.yaml", "larger than")]),
    ("not utf-8", DEV_TEXT.replace(b"development", b"d\xe9velopment", 1), [("Pulumi.test.yaml", "UTF-8")]),
    ("nul byte", DEV_TEXT.replace(b"ml-dev", b"ml\x00dev", 1), [("Pulumi.test.yaml", "not valid YAML")]),
    ("duplicate top key", DEV_TEXT.replace(b"config:\n", b"config:\n  aws:region: eu-west-1\n", 1),
     [("Pulumi.test.yaml", "duplicate key 'aws:region'")]),
    ("duplicate nested key", DEV_TEXT.replace(b"        min_replicas: 0\n", b"        min_replicas: 0\n        min_replicas: 1\n", 1),
     [("Pulumi.test.yaml", "duplicate key 'min_replicas'")]),
    ("python tag", DEV_TEXT + b"x: !!python/object/apply:os.system ['true']\n", [("Pulumi.test.yaml", "not valid YAML")]),
    ("tabs", DEV_TEXT.replace(b"  aws:region", b"\taws:region", 1), [("Pulumi.test.yaml", "not valid YAML")]),
    ("a list at the top", b"- config\n", [("Pulumi.test.yaml", "must be a YAML mapping")]),
    ("config is a list", b"config: [1, 2]\n", [("Pulumi.test.yaml", "config")]),
    ("empty file", b"", [("Pulumi.test.yaml: config", "is missing or empty")]),
    # ---- wrong types at every level
    ("platform is text", dev(set_in("sgldeploy:platform", value="prod")), [("sgldeploy:platform", "object")]),
    ("deployments is a mapping", dev(set_in("sgldeploy:deployments", value={"a": 1})), [("sgldeploy:deployments", "list")]),
    ("a null deployment", dev(set_in("sgldeploy:deployments", value=[None])), [(DEP, "")]),
    ("a deployment is text", dev(set_in("sgldeploy:deployments", 0, value="qwen")), [(DEP, "object")]),
    ("model is a list", dep("model", value=["Qwen/Qwen2.5-7B-Instruct"]), [(f"{DEP}.model", "object")]),
    ("repo is a number", dep("model", "repo", value=7), [(f"{DEP}.model.repo", "text")]),
    ("concurrency is words", dep("serving", "max_concurrency", value="many"), [(f"{DEP}.serving.max_concurrency", "whole number")]),
    ("replicas is a bool", dep("scaling", "max_replicas", value=True), [(f"{DEP}.scaling.max_replicas", "whole number")]),
    ("gpu count is a fraction", dep("resources", "gpu_count", value=1.5), [(f"{DEP}.resources.gpu_count", "whole number")]),
    ("unknown exposure", dep("endpoint", "exposure", value="everyone"), [(f"{DEP}.endpoint.exposure", "one of")]),
    ("tag value is a mapping", platform("tags", value={"team": {"a": 1}}), [("sgldeploy:platform.tags.team", "text")]),
    ("misspelt key", dep("scalling", value={"max_replicas": 2}), [(f"{DEP}.scalling", "not a known key")]),
    ("negative budget", platform("budget_usd_per_month", value=-5), [("sgldeploy:platform.budget_usd_per_month", "≥ 0")]),
    # ---- names
    ("unicode hyphen in name", dep("name", value="qwen\u20107b"), [(f"{DEP}.name", "")]),
    ("cyrillic look-alike name", dep("name", value="qw\u0435n-7b"), [(f"{DEP}.name", "")]),
    ("fullwidth name", dep("name", value="\uff51wen-7b"), [(f"{DEP}.name", "")]),
    ("names that collide", dev(lambda c: c["sgldeploy:deployments"].append(dict(SECOND))), [("sgldeploy:deployments[1].name", "")]),
    ("name too long", dep("name", value="q" * 64), [(f"{DEP}.name", "")]),
    ("name with underscore", dep("name", value="qwen_7b"), [(f"{DEP}.name", "")]),
    ("namespace with a dot", platform("namespace", value="llm.dev"), [("sgldeploy:platform.namespace", "")]),
    # ---- revisions
    ("revision with ..", dep("model", "revision", value="../main"), [(f"{DEP}.model.revision", "")]),
    ("revision escaping", dep("model", "revision", value="main/../../etc"), [(f"{DEP}.model.revision", "")]),
    ("revision with backslash", dep("model", "revision", value="a\\b"), [(f"{DEP}.model.revision", "")]),
    ("revision with NUL", dep("model", "revision", value="main\x00"), [(f"{DEP}.model.revision", "")]),
    ("revision with newline", dep("model", "revision", value="main\nx"), [(f"{DEP}.model.revision", "")]),
    ("empty revision", dep("model", "revision", value=""), [(f"{DEP}.model.revision", "")]),
    # ---- repo ids
    ("repo with a scheme", dep("model", "repo", value="https://huggingface.co/Qwen/Qwen2.5-7B-Instruct"), [(f"{DEP}.model.repo", "")]),
    ("repo with a path", dep("model", "repo", value="Qwen/Qwen2.5-7B-Instruct/tree/main"), [(f"{DEP}.model.repo", "")]),
    ("repo escaping", dep("model", "repo", value="../etc/passwd"), [(f"{DEP}.model.repo", "")]),
    ("repo without org", dep("model", "repo", value="Qwen2.5-7B-Instruct"), [(f"{DEP}.model.repo", "")]),
    # ---- numbers
    ("negative replicas", dep("scaling", "max_replicas", value=-1), [(f"{DEP}.scaling.max_replicas", "")]),
    ("enormous replicas", dep("scaling", "max_replicas", value=10**30), [(f"{DEP}.scaling.max_replicas", "")]),
    ("infinite context", dep("serving", "context_length", value=float("inf")), [(f"{DEP}.serving.context_length", "")]),
    ("NaN budget", platform("budget_usd_per_month", value=float("nan")), [("sgldeploy:platform.budget_usd_per_month", "")]),
    ("infinite budget", platform("budget_usd_per_month", value=float("inf")), [("sgldeploy:platform.budget_usd_per_month", "")]),
    ("zero GPUs", dep("resources", "gpu_count", value=0), [(f"{DEP}.resources.gpu_count", "")]),
    ("negative memory share", dep("serving", "mem_fraction_static", value=-0.5), [(f"{DEP}.serving.mem_fraction_static", "")]),
    ("NaN memory share", dep("serving", "mem_fraction_static", value=float("nan")), [(f"{DEP}.serving.mem_fraction_static", "")]),
    # ---- lists
    ("flags that are numbers", dep("serving", "extra_args", value=[1, 2]), [(f"{DEP}.serving.extra_args[0]", "text")]),
    ("instance types as text", dep("resources", "instance_types", value="g6.xlarge"), [(f"{DEP}.resources.instance_types", "list")]),
    # ---- secrets in plain text
    ("plain-text token", dev(set_in("sgldeploy:hfToken", value="hf_plaintext")), [("sgldeploy:hfToken", "pulumi config set --secret sgldeploy:hfToken")]),
    ("plain-text api key", dev(set_in("sgldeploy:apiKey", value="sk-plaintext")), [("sgldeploy:apiKey", "pulumi config set --secret sgldeploy:apiKey")]),
]  # fmt: skip


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_bytes(content)
    (tmp_path / "models.lock.json").write_text(LOCK.read_text())
    return path


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("content, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_stack_file_is_refused_with_one_line_per_problem(tmp_path, capsys, content, expected):
    path = write(tmp_path, content)
    assert cli.main(["validate", "--config", str(path)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert out.out == "" and lines and "Traceback" not in out.err
    assert all(line.startswith("error: ") and "; " in line for line in lines), lines
    for where, what in expected:
        where = where.replace("Pulumi.test.yaml", str(path))
        assert any(line.startswith(f"error: {where}") and what in line for line in lines), (
            where,
            what,
            lines,
        )
    assert "hf_plaintext" not in out.err and "sk-plaintext" not in out.err


def _run_the_program(config: dict[str, Any]) -> None:
    """The real __main__.py under the mock engine, as `pulumi preview` runs it: no CLI checks before it."""
    import json

    from sgldeploy.offline.engine import run_program
    from sgldeploy.offline.render import PROGRAM

    full = {
        "aws:region": "us-east-1",
        "sgldeploy:platform": json.dumps({"cluster": {"name": "t"}, "namespace": "llm"}),
        "sgldeploy:lockFile": str(LOCK),
        **config,
    }
    run_program(PROGRAM, "sgldeploy", "hostile", full, [])


def test_the_program_ends_bad_hub_facts_with_run_error(monkeypatch):
    """A model missing from the lock is resolved on the Hub by the program; facts sizing cannot read end it
    with pulumi.RunError naming the field, as a damaged lock entry would, not with an exception of the lock."""
    import json

    import pulumi

    from sgldeploy.models import hub

    entry = json.loads(LOCK.read_text())["models"][f"{QWEN['repo']}@{QWEN['revision']}"]
    other = "c" * 40
    damaged = {**entry, "revision": other, "sha": other, "config": {**entry["config"]}}
    del damaged["config"]["num_hidden_layers"]
    monkeypatch.setattr(hub, "resolve", lambda repo, revision, **_: damaged)
    dep = {
        "name": "q",
        "model": {"repo": QWEN["repo"], "revision": other},
        "serving": {"context_length": 4096, "max_concurrency": 4},
        "cache": {"storage": "none"},
        "resources": {"gpu": "L4", "gpu_count": 1},
    }
    with pytest.raises(pulumi.RunError) as caught:
        _run_the_program({"sgldeploy:deployments": json.dumps([dep])})
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(
        "error: sgldeploy:deployments[0].model.repo: resolves on the Hub to facts sgldeploy cannot size: "
        "config.num_hidden_layers: is missing"
    ), lines
    assert all(line.startswith("error: sgldeploy:deployments[0].model.") for line in lines), lines


@pytest.mark.parametrize(
    "config",
    [
        {"sgldeploy:usageFile": "/tmp/usage\x00.yaml"},  # a NUL: open() raises ValueError
        {"sgldeploy:usageFile": "/proc"},
        {"sgldeploy:deployments": '{"not": "a list"}'},
        {"sgldeploy:platform": "not json"},  # the SDK's ConfigTypeError, a RunError
    ],
)
def test_the_program_raises_run_error_for_bad_config(config):
    import pulumi

    with pytest.raises(pulumi.RunError):
        _run_the_program(
            {
                "sgldeploy:deployments": '[{"name": "q", "model": {"repo": "Qwen/Qwen2.5-7B-Instruct"}}]',
                **config,
            }
        )
