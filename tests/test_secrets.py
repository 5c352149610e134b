"""Secret hygiene: with known secret values, plan every committed stack through the CLI and look for the values
(and their base64 forms) in everything it writes: stdout, stderr, the plan JSON, the Markdown comment and the
manifests. Secrets given in plain text are refused without being echoed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from sgldeploy import cli
from sgldeploy.offline import engine
from sgldeploy.offline.engine import SECRET
from sgldeploy.spec import stackfile

from .conftest import LOCK, ROOT

CONFIGURED = "hf_KnownConfiguredSecret0123456789abcdef"  # what every `secure:` config value decrypts to
GENERATED = "GeneratedApiKeyKnownToTheTest0123456789abcdefgh"  # what random.RandomPassword produces
STACKS = sorted(p.name for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def use_known_secrets(monkeypatch) -> None:
    """Secrets the program sees with values the test knows: config secrets and the generated API key."""
    monkeypatch.setattr(stackfile, "OPAQUE_SECRET", CONFIGURED)
    echo = engine._OfflineMocks.new_resource

    def new_resource(self, args):
        id_, state = echo(self, args)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state = {**state, "result": GENERATED}
        return id_, state

    monkeypatch.setattr(engine._OfflineMocks, "new_resource", new_resource)


@pytest.fixture
def known_secrets(monkeypatch):
    use_known_secrets(monkeypatch)


def stack_with_secrets(name: str, tmp_path: Path, keys: tuple[str, ...]) -> Path:
    data = yaml.safe_load((ROOT / "stacks" / name).read_text())
    for key in keys:
        data["config"][f"sgldeploy:{key}"] = {"secure": "v1:AAAAAAAAAAAAAAAA:ciphertext"}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "models.lock.json").write_text(LOCK.read_text())
    return path


def everything_written(path: Path, tmp_path: Path, capsys) -> dict[str, str]:
    """Plan twice (the second time against the first, for a diff and a comment); return all output by name."""
    first, second, markdown = tmp_path / "first.json", tmp_path / "second.json", tmp_path / "comment.md"
    assert cli.main(["plan", "--config", str(path), "--json", str(first)]) == 0
    manifests = tmp_path / "manifests"
    argv = ["plan", "--config", str(path), "--json", str(second), "--manifests", str(manifests)]
    assert cli.main([*argv, "--compare", str(first), "--markdown", str(markdown)]) == 0
    out = capsys.readouterr()
    written = {"stdout": out.out, "stderr": out.err}
    for file in [first, second, markdown, *sorted(manifests.iterdir())]:
        written[file.name] = file.read_text()
    return written


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize(
    "keys", [("hfToken", "apiKey"), ("hfToken",)], ids=["api-key-configured", "generated"]
)
def test_no_secret_value_appears_in_any_output(name, keys, tmp_path, capsys, known_secrets):
    written = everything_written(stack_with_secrets(name, tmp_path, keys), tmp_path, capsys)
    assert len(written) > 10  # stdout, stderr, two plans, the comment and the manifests
    for where, text in written.items():
        for value in (CONFIGURED, GENERATED):
            for form in forms(value):
                assert form not in text, f"a secret appears in {where}"
    # The Secrets are there, holding only the marker.
    secrets = [yaml.safe_load(t) for n, t in written.items() if n.startswith("secret-")]
    assert secrets and all(s["kind"] == "Secret" for s in secrets)
    for secret in secrets:
        data = secret["stringData"]
        assert data == SECRET or set(data.values()) == {SECRET}
    # The stack output with the API keys is a secret in the plan JSON too.
    api_keys = json.loads(written["second.json"])["outputs"]["apiKeys"]
    assert api_keys and set(api_keys.values()) == {SECRET}


def test_the_generated_key_did_reach_the_program(tmp_path, monkeypatch):
    """The test above could pass with a key that never left the mock. Without the known value the Secret's
    data is unknown (one marker for the whole map); with it, the map and its key are known, the value masked."""
    from sgldeploy.offline.render import render
    from sgldeploy.spec.stackfile import read_stack_file

    def api_key_data() -> object:
        plan = render(read_stack_file(stack_with_secrets("Pulumi.dev.yaml", tmp_path, ("hfToken",))))
        [secret] = [
            r
            for r in plan.recording.resources
            if r.type == "kubernetes:core/v1:Secret" and r.inputs["metadata"]["name"].endswith("-api-key")
        ]
        return secret.inputs["stringData"]

    assert api_key_data() == SECRET
    use_known_secrets(monkeypatch)
    assert api_key_data() == {"API_KEY": SECRET}


@pytest.mark.parametrize("key", ["hfToken", "apiKey"])
def test_a_secret_in_plain_text_is_refused_without_echoing_it(key, tmp_path, capsys):
    data = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    data["config"][f"sgldeploy:{key}"] = CONFIGURED
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "models.lock.json").write_text(LOCK.read_text())
    for command in ("validate", "plan"):
        assert cli.main([command, "--config", str(path)]) == 2
        out = capsys.readouterr()
        assert out.err.strip().splitlines() == [
            f"error: sgldeploy:{key}: is a secret set in plain text, so it is stored unencrypted in the stack "
            f"file; remove it from the file, then run `pulumi config set --secret sgldeploy:{key} <value>`"
        ]
        assert CONFIGURED not in out.out + out.err


# ---- offline plans without the stack's secrets ------------------------------------------------------------

PROD = ROOT / "stacks" / "Pulumi.prod.yaml"
GATED = ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct")  # prod's two models
TOKEN_WARNING = (
    "warning: sgldeploy:hfToken: is not set, and meta-llama/Llama-3.1-8B-Instruct, "
    "meta-llama/Llama-3.1-70B-Instruct are gated: this offline plan puts a stand-in secret in its place; "
    "accept the licence on the Hub, then set it with `pulumi config set --secret sgldeploy:hfToken hf_…` "
    "before `pulumi up`"
)


def test_the_committed_prod_stack_sets_no_token():
    """The premise of the tests below: the stack as shipped, as a pull request's CI sees it."""
    assert "sgldeploy:hfToken" not in yaml.safe_load(PROD.read_text())["config"]
    lock = json.loads(LOCK.read_text())["models"]
    assert {entry["repo"] for entry in lock.values() if entry["gated"]} >= set(GATED)


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_offline_a_missing_token_is_one_warning_and_exit_0(command, capsys):
    assert cli.main([command, "--stack", "prod"], root=ROOT) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "hfToken" in line] == [TOKEN_WARNING]
    assert not [line for line in err if line.startswith("error:")]


def resources_by_urn(path: Path) -> dict[str, dict]:
    from sgldeploy.offline.plan_json import plan_json
    from sgldeploy.offline.render import render
    from sgldeploy.spec.stackfile import read_stack_file

    return {r["urn"]: r for r in plan_json(render(read_stack_file(path)))["resources"]}


def test_the_stand_in_renders_exactly_as_a_token_that_is_set(tmp_path):
    without = resources_by_urn(PROD)
    with_token = resources_by_urn(stack_with_secrets(PROD.name, tmp_path, ("hfToken",)))
    assert without == with_token
    tokens = [r for r in without.values() if r["name"].endswith("-hf-token")]
    assert sorted(r["inputs"]["metadata"]["name"] for r in tokens) == [
        "llama-70b-hf-token",
        "llama-8b-hf-token",
    ]
    assert all(r["inputs"]["stringData"] == {"HF_TOKEN": SECRET} for r in tokens)


def test_no_stand_in_where_no_model_is_gated(capsys):
    """dev serves a public model: no token, no Secret for one, no warning."""
    resources = resources_by_urn(ROOT / "stacks" / "Pulumi.dev.yaml")
    assert not [r for r in resources.values() if r["name"].endswith("-hf-token")]
    assert cli.main(["validate", "--stack", "dev"], root=ROOT) == 0
    assert "hfToken" not in capsys.readouterr().err


def test_the_real_program_still_refuses_without_the_token():
    """`pulumi preview`/`up` run __main__.py with the stack's config and nothing standing in: run it so, under
    the mock engine, and it stops with today's error lines."""
    import pulumi

    from sgldeploy.offline.engine import run_program
    from sgldeploy.offline.render import PROGRAM
    from sgldeploy.spec.stackfile import read_stack_file

    stack = read_stack_file(PROD)
    config = {**stack.config, "sgldeploy:lockFile": str(LOCK)}
    with pytest.raises(pulumi.RunError) as refused:
        run_program(PROGRAM, "sgldeploy", stack.stack, config, stack.secret_keys)
    assert str(refused.value).splitlines() == [
        f"error: sgldeploy:hfToken: is required: {repo} is gated (got nothing); accept the licence on the Hub, "
        "then run pulumi config set --secret sgldeploy:hfToken hf_…"
        for repo in GATED
    ]


def test_one_gated_model_without_the_token(tmp_path, capsys):
    """What test_cli's table once refused: a stack of one gated model, no token. Offline it is one warning."""
    from .conftest import LLAMA_8B, write_stack

    path = write_stack(tmp_path, deployments=[{"name": "llama", "model": dict(LLAMA_8B)}])
    for command in ("validate", "plan"):
        assert cli.main([command, "--config", str(path)]) == 0
        assert [line for line in capsys.readouterr().err.splitlines() if "hfToken" in line] == [
            "warning: sgldeploy:hfToken: is not set, and meta-llama/Llama-3.1-8B-Instruct is gated: this offline "
            "plan puts a stand-in secret in its place; accept the licence on the Hub, then set it with "
            "`pulumi config set --secret sgldeploy:hfToken hf_…` before `pulumi up`"
        ]
