"""The generated SGLang command parses with SGLang's own parser (the version the image pins)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from sgldeploy.builders.sglang_args import ENTRYPOINT, launch_command
from sgldeploy.models.sizing import size
from sgldeploy.spec import SGLANG_IMAGE
from sgldeploy.spec.validate import parse_stack

from .conftest import LLAMA_70B, QWEN, ROOT, deployment

PARSER = Path(__file__).parent / "contract" / "sglang_parse.py"
SGLANG_PYTHON = os.environ.get("SGLANG_PYTHON", str(ROOT / ".venv-sglang" / "bin" / "python"))


def sglang_source() -> Path:
    """Where SGLang 0.5.23's package lies in its virtualenv, to read its source."""
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"SGLang is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    where = subprocess.run(
        [
            SGLANG_PYTHON,
            "-c",
            "import importlib.util; print(importlib.util.find_spec('sglang').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(where.stdout.strip())


def sglang_parse(args: list[str]) -> subprocess.CompletedProcess:
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"SGLang's parser is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    return subprocess.run(
        [SGLANG_PYTHON, str(PARSER), json.dumps(args)], capture_output=True, text=True, timeout=120
    )


def command_for(raw: dict, lock, api_key: bool = True):
    dep = parse_stack(None, [raw]).deployments[0]
    model = lock[f"{dep.model.repo}@{dep.model.revision}"]
    return dep, launch_command(dep, model, size(dep, model), api_key=api_key)


def test_sglang_version_matches_the_image_and_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^SGLANG_VERSION := (\S+)$", makefile, re.M).group(1)
    assert SGLANG_IMAGE == f"lmsysorg/sglang:v{pinned}"
    out = subprocess.run(
        [SGLANG_PYTHON, "-c", "import importlib.metadata as m; print(m.version('sglang'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == pinned


def test_dev_command_parses_with_every_value_intact(lock):
    dep, cmd = command_for(
        deployment(
            serving={
                "context_length": 16384,
                "max_concurrency": 4,
                "quantization": "fp8",
                "kv_cache_dtype": "fp8_e4m3",
            }
        ),
        lock,
    )
    assert cmd.command == list(ENTRYPOINT)
    result = sglang_parse(cmd.args)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["model_path"] == QWEN["repo"]
    assert parsed["revision"] == QWEN["revision"]
    assert parsed["host"] == "0.0.0.0" and parsed["port"] == 30000
    assert parsed["tp_size"] == 1 and parsed["dtype"] == "bfloat16"
    assert parsed["quantization"] == "fp8" and parsed["kv_cache_dtype"] == "fp8_e4m3"
    assert parsed["context_length"] == 16384 and parsed["max_running_requests"] == 4
    assert 0.5 < parsed["mem_fraction_static"] < 0.95
    assert parsed["enable_metrics"] is True
    assert parsed["served_model_name"] == QWEN["repo"]
    # The key is a kubelet reference to a Secret-backed variable, never the value.
    assert parsed["api_key"] == "$(SGLANG_API_KEY)"


def test_tensor_parallel_speculative_and_extra_args_parse(lock):
    _, cmd = command_for(
        {
            "name": "big",
            "model": dict(LLAMA_70B),
            "serving": {
                "context_length": 16384,
                "max_concurrency": 8,
                "extra_args": ["--enable-torch-compile"],
                "speculative": {
                    "algorithm": "EAGLE3",
                    "draft_repo": "org/eagle3-draft",
                    "draft_revision": "main",
                },
            },
            "resources": {"gpu": "H100"},
        },
        lock,
    )
    result = sglang_parse(cmd.args)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["tp_size"] == 8
    assert parsed["speculative_algorithm"] == "EAGLE3"
    assert parsed["speculative_draft_model_path"] == "org/eagle3-draft"
    assert parsed["enable_torch_compile"] is True


def test_no_auth_means_no_api_key_flag(lock):
    _, cmd = command_for(deployment(endpoint={"auth": "none"}), lock, api_key=False)
    assert "--api-key" not in cmd.args
    assert json.loads(sglang_parse(cmd.args).stdout)["api_key"] is None


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--cuda-graph-max-bs", "8"], "unrecognized arguments"),  # removed in 0.5.x
        (["--tp", "2"], "unrecognized arguments"),  # an abbreviation: the real server guesses, we refuse
        (["--no-such-flag"], "unrecognized arguments"),
        (["--quantization", "bogus"], "invalid choice"),
    ],
)
def test_wrong_flags_are_rejected(lock, bad, message):
    _, cmd = command_for(deployment(), lock)
    result = sglang_parse(cmd.args + bad)
    assert result.returncode == 2
    assert message in result.stderr


def test_every_flag_is_a_full_canonical_name(lock):
    _, cmd = command_for(deployment(), lock)
    flags = [a for a in cmd.args if a.startswith("-")]
    assert all(f.startswith("--") for f in flags)
    assert {
        "--model-path",
        "--revision",
        "--served-model-name",
        "--host",
        "--port",
        "--tp-size",
        "--dtype",
        "--context-length",
        "--max-running-requests",
        "--mem-fraction-static",
        "--enable-metrics",
        "--api-key",
    } <= set(flags)
