"""The `sgldeploy` CLI end to end: validate, plan (--json, --manifests), schema, exit codes, error lines."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jsonschema
import pytest
import yaml

from sgldeploy.cli import main

from .conftest import COMMITTED_STACKS, QWEN, ROOT, deployment, write_stack

CIPHERTEXT = "v1:Q2lwaGVydGV4dC1uZXZlci1zaG93bg=="


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`sgldeploy ARGS` in-process from the repository's root, as the console script runs it (its exit code,
    stdout and stderr): in-process, so mutation testing sees which code each test runs.
    test_the_console_script_is_what_users_run runs the installed script itself."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args), root=ROOT)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 2
    return subprocess.CompletedProcess(["sgldeploy", *args], code, out.getvalue(), err.getvalue())


def test_the_console_script_is_what_users_run():
    exe = os.path.join(os.path.dirname(sys.executable), "sgldeploy")
    result = subprocess.run([exe, "validate", "--stack", "dev"], capture_output=True, text=True, cwd=ROOT)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (
        0,
        f"{ROOT}/stacks/Pulumi.dev.yaml: valid",
        "",
    )
    usage = subprocess.run([exe, "frobnicate"], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 2 and "invalid choice: 'frobnicate'" in usage.stderr


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
            "model missing from lock",
            {"sgldeploy:deployments": [deployment(model={"repo": "org/unknown-model"})]},
            "sgldeploy:deployments[0].model.revision: org/unknown-model@main is not in models.lock.json (got "
            "'main'); run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock --from-cache DIR` to "
            "resolve it from a Hugging Face cache without the Hub",
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
    assert (
        "stacks/Pulumi.nope.yaml: stack file not found (got --stack 'nope'); the stacks in"
        in (assert_clean_errors(result.stderr)[0])
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
    # The README's test command, then the bare-clone proof that the tests need nothing beside the clone.
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == [
        "make test",
        ".ci/bare-clone",
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


# Published facts of the example stacks' models, as a models.csv of public facts has them (the columns
# tests/public_facts.py reads), written here so the oracle is the test's own: each model's
# config.json at the commit (https://huggingface.co/<repo>/blob/<commit>/config.json: sizes, heads, dtype,
# architecture, max_position_embeddings), its model card and page (https://huggingface.co/<repo>: pipeline tag,
# gating, the safetensors parameter count). Llama-3.1-70B's parameter count is the one quoted for
# Llama-3.3-70B-Instruct, the same architecture (as ../shared/data/models.csv notes). The mixtures of experts add
# their routing (num_experts, num_experts_per_tok, moe_intermediate_size, intermediate_size,
# first_k_dense_replace), DeepSeek-V3 its MLA latent (kv_lora_rank, qk_rope_head_dim), its multi-token-prediction
# layer (num_nextn_predict_layers), its RoPE scaling (yarn) and FP8 method (quantization_config.quant_method), from config.json at the
# commit (the same fields as ai-dynamo/aiconfigurator's aic-core/src/aiconfigurator_core/model_configs/
# deepseek-ai--DeepSeek-V3_config.json and Qwen--Qwen3-235B-A22B_config.json at 095f58a); DeepSeek-V3's
# parameters by safetensors dtype are its Hub page's (BF16, F8_E4M3, F32: 684,531,386,000 in all, 671B of the
# decoder and 14B of the MTP layer), Qwen3-235B-A22B's its page's BF16 count.
PUBLISHED_MODEL_FACTS = """\
repo_id,revision_sha,total_params,torch_dtype,hidden_size,num_hidden_layers,num_attention_heads,num_key_value_heads,head_dim,vocab_size,max_position_embeddings,tie_word_embeddings,gated,pipeline_tag,architecture,num_experts,quantization_method,parameters_by_dtype,num_experts_per_tok,moe_intermediate_size,intermediate_size,first_k_dense_replace,kv_lora_rank,qk_rope_head_dim,num_nextn_predict_layers,rope_scaling
Qwen/Qwen2.5-7B-Instruct,a09a35458c702b33eeacc393d103063234e8bc28,7615616512,bfloat16,3584,28,28,4,128,152064,32768,false,false,text-generation,Qwen2ForCausalLM,,,,,,18944,,,,,
meta-llama/Llama-3.1-8B-Instruct,0e9e39f249a16976918f6564b8830bc894c89659,8030261248,bfloat16,4096,32,32,8,128,128256,131072,false,true,text-generation,LlamaForCausalLM,,,,,,14336,,,,,
meta-llama/Llama-3.1-70B-Instruct,1605565b47bb9346c5515c34102e054115b4f98b,70553706496,bfloat16,8192,80,64,8,128,128256,131072,false,true,text-generation,LlamaForCausalLM,,,,,,28672,,,,,
deepseek-ai/DeepSeek-V3,e815299b0bcbac849fa540c768ef21845365c9eb,684531386000,bfloat16,7168,61,128,128,,129280,163840,false,false,text-generation,DeepseekV3ForCausalLM,256,fp8,BF16:3918786560;F8_E4M3:680571043840;F32:41555600,8,2048,18432,3,512,64,1,"{""type"": ""yarn"", ""factor"": 40, ""original_max_position_embeddings"": 4096, ""beta_fast"": 32, ""beta_slow"": 1, ""mscale"": 1.0, ""mscale_all_dim"": 1.0}"
Qwen/Qwen3-235B-A22B,8efa61729e24bd65b1d152b5ab5409052aa80e65,235093634560,bfloat16,4096,94,64,4,128,151936,40960,false,false,text-generation,Qwen3MoeForCausalLM,128,,,8,1536,12288,,,,,
"""


def test_committed_lock_regenerates_from_the_published_facts(tmp_path):
    from sgldeploy.models.lock import read_lock_entries

    from .conftest import DEEPSEEK_V3, LLAMA_8B, LLAMA_70B, QWEN, QWEN3_235B
    from .public_facts import lock_entries

    facts = tmp_path / "models.csv"
    facts.write_text(PUBLISHED_MODEL_FACTS)
    entries = lock_entries(
        facts,
        {ref["repo"]: [ref["revision"]] for ref in (QWEN, LLAMA_8B, LLAMA_70B, DEEPSEEK_V3, QWEN3_235B)},
    )
    assert entries == read_lock_entries(ROOT / "stacks" / "models.lock.json")


# ---- messages from the first hour of a real user ---------------------------------------------------------


def one_error(capsys) -> str:
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    [line] = assert_clean_errors(out.err)
    return line


def test_an_unknown_stack_name_lists_the_stacks_that_exist(tmp_path, capsys):
    committed = sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (ROOT / "stacks").glob("Pulumi.*.yaml")
    )
    assert (
        committed
        == sorted(COMMITTED_STACKS)
        == ["dev", "disaggregated", "large-moe", "multi-turn", "prod", "staging"]
    )
    assert main(["validate", "--stack", "prdo"], root=ROOT) == 2
    assert one_error(capsys) == (
        f"error: {ROOT}/stacks/Pulumi.prdo.yaml: stack file not found (got --stack 'prdo'); the stacks in "
        f"{ROOT}/stacks are dev, disaggregated, large-moe, multi-turn, prod, staging: pass one as --stack NAME, create stacks/Pulumi.prdo.yaml, or "
        "pass --config FILE"
    )
    for name in ("b", "a"):  # another project's stacks: the list is theirs
        write_stack(tmp_path / "stacks", name=name)
    assert main(["plan", "--stack", "c"], root=tmp_path) == 2
    assert f"the stacks in {tmp_path}/stacks are a, b: pass one" in one_error(capsys)
    assert main(["plan"], root=tmp_path / "stacks" / "empty") == 2  # no stacks/ at all
    assert "no stack files exist yet: pass one as --stack NAME" in one_error(capsys)


@pytest.fixture
def forbidden():
    """A path no file can be written under: a directory inside /proc cannot be created, even by root."""
    return Path("/proc/sgldeploy-forbidden")


@pytest.mark.parametrize(
    "flag, target, reason",
    [
        ("--manifests", "{forbidden}", "No such file or directory"),
        ("--json", "{forbidden}/plan.json", "No such file or directory"),
        ("--markdown", "{forbidden}/comment.md", "No such file or directory"),
        ("--json", "{tmp}", "is a directory"),
        ("--markdown", "{stack}/comment.md", "File exists"),  # a file where the directory should be
    ],
)
def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(
    tmp_path, capsys, forbidden, flag, target, reason
):
    path = write_stack(tmp_path)
    target = target.format(forbidden=forbidden, tmp=tmp_path, stack=path)
    assert main(["plan", "--config", str(path), flag, target]) == 2
    assert one_error(capsys) == (
        f"error: {target}: cannot be written ({reason}); choose a path in a directory you can write to"
    )
    assert not forbidden.exists()


def test_an_output_refused_while_writing_is_one_line_too(tmp_path, capsys):
    """Past the checks before rendering, the file system can still refuse: a directory where a manifest goes."""
    manifests = tmp_path / "manifests"
    (manifests / "namespace-cluster-llm.yaml").mkdir(parents=True)
    path = write_stack(tmp_path)
    assert main(["plan", "--config", str(path), "--manifests", str(manifests)]) == 2
    out = capsys.readouterr()
    [line] = assert_clean_errors(out.err)
    assert line == (
        f"error: {manifests}: cannot be written (Is a directory); choose a path in a directory you can write to"
    )


@pytest.mark.parametrize(
    "flag, name, fragment",
    [
        ("--compare", "missing.json", "cannot be read as JSON (FileNotFoundError)"),
        ("--policy-config", "missing.json", "cannot be read as JSON (FileNotFoundError)"),
        ("--usage", "missing.yaml", "cannot be read as YAML (FileNotFoundError)"),
        ("--config", "missing.yaml", "stack file not found"),
    ],
)
def test_an_input_file_that_cannot_be_read_is_one_line_and_exit_2(tmp_path, capsys, flag, name, fragment):
    missing = tmp_path / "nowhere" / name
    args = ["plan", flag, str(missing)]
    if flag != "--config":
        args += ["--config", str(write_stack(tmp_path))]
    assert main(args) == 2
    assert one_error(capsys).startswith(f"error: {missing}: {fragment}")


@pytest.mark.parametrize(
    "content, what",
    [
        ({"version": 1, "stack": "dev"}, "it has no 'cost' and no 'deployments' (got keys version, stack)"),
        (
            {"version": 1, "cost": {}, "deployments": {}},
            "its 'deployments' is not a list of deployments (each with a 'name') (got {})",
        ),
        ({"version": 1, "cost": [], "deployments": []}, "its 'cost' is not an object (got a list of 0)"),
        ({"stack": "dev"}, "it has no 'version' (got keys stack)"),
        ([1, 2], "its top level is not an object (got a list of 2)"),
        ({"version": 2, "cost": {}, "deployments": []}, "(got 2)"),
    ],
)
def test_compare_says_what_is_wrong_with_the_previous_plan(tmp_path, capsys, content, what):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    assert main(["plan", "--config", str(write_stack(tmp_path)), "--compare", str(bad)]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {bad}: is not a sgldeploy plan JSON of version 1")
    assert what + ";" in line


def test_a_hanging_pulumi_config_get_is_one_line(tmp_path, capsys, monkeypatch):
    from sgldeploy.models import lock_stack

    def hangs(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(lock_stack.shutil, "which", lambda name: "/usr/local/bin/pulumi")
    monkeypatch.setattr(lock_stack.subprocess, "run", hangs)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    path = write_stack(tmp_path, extra={"sgldeploy:hfToken": {"secure": CIPHERTEXT}})
    assert main(["lock", "--config", str(path)]) == 2
    assert one_error(capsys) == (
        "error: sgldeploy:hfToken: cannot be read with `pulumi config get` (timed out after 60 s); check "
        "`pulumi login` and the stack's backend, or set HF_TOKEN for this command"
    )


# ---- in-process paths: lock's kept entries, --markdown without --compare, each option's help -------------


def test_lock_keeps_a_pinned_entry_and_says_so(tmp_path):
    path = write_stack(tmp_path)  # Qwen pinned to a commit, already in the lock beside it: nothing to ask
    result = run_cli("lock", "--config", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"kept {QWEN['repo']}@{QWEN['revision']} (pinned; --refresh resolves it again)",
        f"unchanged {tmp_path / 'models.lock.json'}",
    ]


def test_markdown_without_compare_is_the_change_from_nothing(tmp_path):
    """A first plan (no --compare) comments the whole stack as added: every resource to create, the cost
    from $0.00."""
    path = write_stack(tmp_path)
    comment, plan_file = tmp_path / "comment.md", tmp_path / "plan.json"
    result = run_cli("plan", "--config", str(path), "--markdown", str(comment), "--json", str(plan_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"markdown: {comment}"
    document = json.loads(plan_file.read_text())
    low, high = document["cost"]["monthly_usd_min"], document["cost"]["monthly_usd_max"]
    text = comment.read_text()
    assert f"**Monthly cost will be ${low:,.2f}–${high:,.2f} (min–max replicas).**" in text
    assert f"| qwen (added) | $0.00 | ${low:,.2f}–${high:,.2f} |" in text
    created = len(document["resources"])
    assert (
        f"Resource changes: {created} to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged" in text
    )


def test_each_plan_option_says_what_it_does_in_its_help():
    """`sgldeploy plan --help` is the reference users read (the options are the DESIGN.md contract)."""
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        main(["plan", "--help"])
    help_text = " ".join(out.getvalue().split())  # argparse wraps to the terminal's width
    for option, what in [
        ("--stack NAME", "read stacks/Pulumi.NAME.yaml (default dev)"),
        ("--config FILE", "read this stack file"),
        ("--json FILE", "write the plan JSON here"),
        ("--manifests DIR", "write one YAML file per Kubernetes object"),
        (
            "--compare PREVIOUS_PLAN_JSON",
            "diff cost and resources against a plan JSON written earlier (e.g. from the base branch)",
        ),
        ("--markdown FILE", "write the cost estimate (and diff, with --compare) as a pull-request comment"),
        (
            "--policy-config FILE",
            "policy pack config, in the format of `pulumi preview --policy-pack-config`",
        ),
        ("--usage FILE", "YAML of usage assumptions for usage-based cost lines (see README)"),
    ]:
        assert f"{option} {what}" in help_text, option


def test_a_directory_the_user_cannot_write_to_is_one_line(tmp_path, capsys, monkeypatch):
    """Root (these tests' user) may write anywhere; a user who may not is told so before the plan renders."""
    import sgldeploy.cli

    path = write_stack(tmp_path)
    unwritable = tmp_path / "read-only"
    unwritable.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        sgldeploy.cli.os, "access", lambda p, mode: Path(p) != unwritable and real_access(p, mode)
    )
    assert main(["plan", "--config", str(path), "--json", str(unwritable / "plan.json")]) == 2
    assert one_error(capsys) == (
        f"error: {unwritable / 'plan.json'}: cannot be written (Permission denied); choose a path in a "
        "directory you can write to"
    )
    assert list(unwritable.iterdir()) == []


def test_stack_names_are_read_from_the_working_directorys_stacks_else_the_projects(
    tmp_path, capsys, monkeypatch
):
    own = tmp_path / "project"
    (own / "stacks").mkdir(parents=True)
    for name in ("Pulumi.dev.yaml", "models.lock.json"):
        (own / "stacks" / name).write_text((ROOT / "stacks" / name).read_text())
    monkeypatch.chdir(own)
    assert main(["validate", "--stack", "dev"]) == 0
    assert capsys.readouterr().out == f"{own}/stacks/Pulumi.dev.yaml: valid\n"
    monkeypatch.chdir(tmp_path)  # no stacks/ here: the project's own
    assert main(["validate", "--stack", "dev"]) == 0
    assert capsys.readouterr().out == f"{ROOT}/stacks/Pulumi.dev.yaml: valid\n"
