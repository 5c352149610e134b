"""Secret hygiene: with known secret values, plan every committed stack through the CLI and look for the values
(and their base64 forms) in everything it writes: stdout, stderr, the plan JSON, the Markdown comment and the
manifests. Secrets given in plain text are refused without being echoed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from sgldeploy import cli, engine, stackfile
from sgldeploy.engine import SECRET

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
    from sgldeploy.plan import render
    from sgldeploy.stackfile import read_stack_file

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
