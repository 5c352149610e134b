"""The `sgldeploy` CLI end to end: validate, plan (--json, --manifests), schema, exit codes, error lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest
import yaml

from sgldeploy.cli import main

from .conftest import QWEN, ROOT, deployment, write_stack

CIPHERTEXT = "v1:Q2lwaGVydGV4dC1uZXZlci1zaG93bg=="


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "sgldeploy")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def assert_clean_errors(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no error reported"
    assert "Traceback" not in stderr
    for line in lines:
        assert re.match(r"^error: \S.*: .+; .+", line), f"not a problem line: {line!r}"
    return lines


def test_validate_dev_stack():
    result = run_cli("validate")
    assert result.returncode == 0, result.stderr
    assert "Pulumi.dev.yaml: valid" in result.stdout


def test_plan_dev_writes_json_and_manifests(tmp_path):
    out, manifests = tmp_path / "plan.json", tmp_path / "manifests"
    result = run_cli("plan", "--stack", "dev", "--json", str(out), "--manifests", str(manifests))
    assert result.returncode == 0, result.stderr
    assert (
        result.stderr == ""
    )  # nothing at all, not even interpreter-shutdown noise from the SDK's event loops
    assert "sgldeploy:serving:ModelDeployment" in result.stdout and "qwen-7b" in result.stdout
    assert "g6.xlarge" in result.stdout and "1× L4" in result.stdout
    plan = json.loads(out.read_text())
    assert plan["version"] == 1 and plan["stack"] == "dev"
    assert set(plan) >= {"resources", "deployments", "cost", "policy"}
    resource = plan["resources"][0]
    assert set(resource) == {"urn", "type", "name", "parent", "inputs"}
    dep = plan["deployments"][0]
    assert dep["name"] == "qwen-7b" and dep["sha"] == "a09a35458c702b33eeacc393d103063234e8bc28"
    assert (
        dep["placement"].items()
        >= {
            "instance_type": "g6.xlarge",
            "gpu_model": "L4",
            "gpus_per_replica": 1,
            "nodes_per_replica": 1,
            "tensor_parallel": 1,
        }.items()
    )
    assert set(dep["memory"]) >= {"weights_gib", "kv_cache_gib", "required_gib_per_gpu", "gpu_memory_gib"}
    assert dep["memory"]["required_gib_per_gpu"] <= dep["memory"]["gpu_memory_gib"]
    assert dep["replicas"]["min"] == 0 and dep["replicas"]["max"] == 2
    assert dep["cost"]["monthly_usd_max"] == pytest.approx(
        dep["cost"]["hourly_usd_max"] * 730, abs=0.05
    )  # hourly shown to 4 places
    assert plan["cost"]["currency"] == "USD" and plan["cost"]["items"]
    files = sorted(p.name for p in manifests.iterdir())
    assert "deployment-llm-dev-qwen-7b.yaml" in files and "service-llm-dev-qwen-7b.yaml" in files
    assert "namespace-cluster-llm-dev.yaml" in files
    assert not [p for p in manifests.iterdir() if p.name.startswith(".")], "temporary files left behind"
    obj = yaml.safe_load((manifests / "deployment-llm-dev-qwen-7b.yaml").read_text())
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert isinstance(obj["spec"]["replicas"], int)
    assert isinstance(obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], int)


def test_plan_is_deterministic(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["plan", "--json", str(first)]) == 0
    assert main(["plan", "--json", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_secrets_never_reach_output(tmp_path, capsys):
    path = write_stack(
        tmp_path,
        extra={"sgldeploy:hfToken": {"secure": CIPHERTEXT}, "sgldeploy:apiKey": {"secure": CIPHERTEXT}},
    )
    assert (
        main(
            [
                "plan",
                "--config",
                str(path),
                "--json",
                str(tmp_path / "p.json"),
                "--manifests",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    written = (tmp_path / "p.json").read_text() + "".join(p.read_text() for p in (tmp_path / "m").iterdir())
    shown = capsys.readouterr()
    for text in (written, shown.out, shown.err):
        assert CIPHERTEXT not in text and "offline-opaque-secret" not in text
    assert "[secret]" in written


def test_schema_matches_the_committed_file_and_checks_stack_files():
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema == json.loads((ROOT / "schema" / "sgldeploy.schema.json").read_text()), (
        "schema/sgldeploy.schema.json is stale: run `make schema`"
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(ROOT.glob("stacks/Pulumi.*.yaml")):
        text = path.read_text()
        assert text.startswith("# yaml-language-server: $schema=../schema/sgldeploy.schema.json")
        validator.validate(yaml.safe_load(text))
    bad = {"config": {"sgldeploy:deployments": [{"name": "x", "model": {"repo": "a/b"}, "replicas": 2}]}}
    assert list(validator.iter_errors(bad)), "the schema must reject unknown keys"
    assert list(validator.iter_errors({"config": {"sgldeploy:platfrom": {}}})), "and unknown sgldeploy: keys"


@pytest.mark.parametrize(
    "case, content, expected",
    [
        (
            "unknown key",
            {"sgldeploy:deployments": [deployment(replica=2)]},
            "sgldeploy:deployments[0].replica: is not a known key",
        ),
        (
            "wrong type",
            {"sgldeploy:deployments": [deployment(scaling={"max_replicas": "many"})]},
            "sgldeploy:deployments[0].scaling.max_replicas: must be a whole number",
        ),
        (
            "out of range",
            {"sgldeploy:deployments": [deployment(serving={"mem_fraction_static": 1.5})]},
            "sgldeploy:deployments[0].serving.mem_fraction_static: must be 0.5–0.95 (got 1.5)",
        ),
        (
            "absent secret",
            {
                "sgldeploy:deployments": [
                    {
                        "name": "llama",
                        "model": {
                            "repo": "meta-llama/Llama-3.1-8B-Instruct",
                            "revision": "0e9e39f249a16976918f6564b8830bc894c89659",
                        },
                    }
                ]
            },
            "sgldeploy:hfToken: is required: meta-llama/Llama-3.1-8B-Instruct is gated",
        ),
        (
            "model missing from lock",
            {"sgldeploy:deployments": [deployment(model={"repo": "org/unknown-model"})]},
            "sgldeploy:deployments[0].model.revision: org/unknown-model@main is not in models.lock.json",
        ),
        (
            "branch in production",
            {
                "sgldeploy:platform": {"environment": "production", "cluster": {"name": "x"}},
                "sgldeploy:deployments": [deployment(model={"repo": QWEN["repo"], "revision": "v1"})],
            },
            "sgldeploy:deployments[0].model.revision: must be a 40-hex commit in a production stack",
        ),
        (
            "does not fit",
            {"sgldeploy:deployments": [deployment(serving={"context_length": 32768})]},
            "sgldeploy:deployments[0].resources.gpu: does not fit",
        ),
    ],
)
def test_invalid_stacks_exit_2_with_one_line_each(tmp_path, case, content, expected):
    content = dict(content)
    path = write_stack(
        tmp_path,
        platform=content.pop("sgldeploy:platform", None),
        deployments=content.pop("sgldeploy:deployments"),
        extra=content,
    )
    for command in ("validate", "plan"):
        result = run_cli(command, "--config", str(path))
        assert result.returncode == 2, f"{case}: {result.stdout}"
        lines = assert_clean_errors(result.stderr)
        assert any(line.startswith(f"error: {expected}") for line in lines), f"{case}: {lines}"


def test_missing_and_unreadable_stack_files(tmp_path):
    result = run_cli("plan", "--stack", "nope")
    assert result.returncode == 2
    assert assert_clean_errors(result.stderr)[0].endswith(
        "stacks/Pulumi.nope.yaml: stack file not found; create it, or pass --stack NAME for "
        "stacks/Pulumi.NAME.yaml or --config FILE"
    )
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config:\n  sgldeploy:platform: {namespace: [unclosed\n")
    result = run_cli("validate", "--config", str(broken))
    assert result.returncode == 2
    assert "is not valid YAML at line" in assert_clean_errors(result.stderr)[0]
    listing = tmp_path / "Pulumi.list.yaml"
    listing.write_text("- just\n- a list\n")
    result = run_cli("validate", "--config", str(listing))
    assert result.returncode == 2 and "must be a YAML mapping" in result.stderr


def test_program_errors_are_clean_too(tmp_path):
    usage = tmp_path / "usage.yaml"
    usage.write_text("lcu: 1\n")  # read by the program itself (stack config sgldeploy:usageFile), not the CLI
    path = write_stack(tmp_path, extra={"sgldeploy:usageFile": str(usage)})
    result = run_cli("plan", "--config", str(path))
    assert result.returncode == 2
    assert f"{usage}: lcu: is not a usage assumption" in assert_clean_errors(result.stderr)[0]


def test_usage_errors_exit_2():
    assert run_cli("plan", "--stack", "dev", "--config", "x.yaml").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_make_plan_renders_the_default_stack():
    result = subprocess.run(["make", "plan"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pulumi:pulumi:Stack" in result.stdout and "sgldeploy-dev" in result.stdout
    assert "stack cost" in result.stdout


def test_readme_quickstart_is_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quickstart.splitlines() if line.strip().startswith("make ")]
    assert [c.split()[1] for c in commands] == ["plan", "test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == [
        "make test"
    ]


def test_benchmark_stacks_stay_valid(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import plan_scaling

    assert main(["validate", "--config", str(plan_scaling.stack_file(tmp_path, 3))]) == 0


def test_a_broken_lock_is_one_clear_line(tmp_path):
    path = write_stack(tmp_path)
    (tmp_path / "models.lock.json").write_text("{not json")
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "models.lock.json: is not a usable model lock" in result.stderr
    assert "re-create it with `sgldeploy lock`" in result.stderr


def test_committed_lock_regenerates_from_the_published_facts():
    from sgldeploy.lock import lock_from_public_facts, read_lock_entries

    from .conftest import LLAMA_8B, LLAMA_70B, QWEN, SHARED

    entries = lock_from_public_facts(
        SHARED / "data" / "models.csv",
        {ref["repo"]: [ref["revision"]] for ref in (QWEN, LLAMA_8B, LLAMA_70B)},
    )
    assert entries == read_lock_entries(ROOT / "stacks" / "models.lock.json")
