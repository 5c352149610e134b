"""The SGLang launch command for one deployment, with full canonical flag names (sglang 0.5.23).

The server's parser accepts unique prefixes (`--tp`); a generator must not rely on that, so every flag
here is spelled out and the tests parse the result with abbreviations disallowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sgldeploy.builders import hierarchical_cache, weight_cache
from sgldeploy.models.lock import LockedModel
from sgldeploy.models.lora import LoraLoad
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import LOAD_FORMATS, OWN_LOADER_QUANTIZATIONS, DeploymentSpec

SERVER_PORT = 30000
ENTRYPOINT = ("python3", "-m", "sglang.launch_server")
API_KEY_ENV = "SGLANG_API_KEY"
"""The pod reads the API key from its Secret into this variable; the argv refers to it, never holds it."""


# SGLang 0.5.23's default histogram buckets (srt/observability/metrics_collector.py, TokenizerMetricsCollector);
# a test checks them against its source.
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
ITL_BUCKETS = (
    *(0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080),
    *(0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000),
)
SLO_BUCKET_FLAGS = {
    "ttft_p95_seconds": ("--bucket-time-to-first-token", TTFT_BUCKETS),
    "itl_p95_seconds": ("--bucket-inter-token-latency", ITL_BUCKETS),
}


@dataclass(frozen=True)
class LaunchCommand:
    command: list[str]  # the container's command
    args: list[str]  # SGLang flags; `$(SGLANG_API_KEY)` is expanded by the kubelet from a Secret-backed env


def server_flags(
    dep: DeploymentSpec, model: LockedModel, sizing: Sizing, api_key: bool, model_path: str | None = None
) -> list[str]:
    """SGLang's flags; `model_path` is a local cache directory of the locked commit, or None for the Hub."""
    s = dep.serving
    source = (
        ["--model-path", model_path]
        if model_path
        else ["--model-path", dep.model.repo, "--revision", model.sha]
    )  # the locked commit: every replica alike
    flags = [
        *source,
        "--served-model-name",
        dep.served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVER_PORT),
        "--tp-size",
        str(sizing.placement.tensor_parallel),
        "--dtype",
        sizing.dtype,
        "--context-length",
        str(sizing.context_length),
        "--max-running-requests",
        str(s.max_concurrency),
        "--mem-fraction-static",
        f"{sizing.memory.mem_fraction_static:g}",
    ]
    flags += loader_flags(dep)
    if s.quantization != "none":
        flags += ["--quantization", s.quantization]
    if s.kv_cache_dtype != "auto":
        flags += ["--kv-cache-dtype", s.kv_cache_dtype]
    if dep.model.trust_remote_code:
        flags.append("--trust-remote-code")
    if dep.observability.metrics:
        flags += ["--enable-metrics", *slo_bucket_flags(dep)]
    if s.speculative:
        flags += ["--speculative-algorithm", s.speculative.algorithm]
        if s.speculative.draft_repo:
            flags += [
                "--speculative-draft-model-path",
                s.speculative.draft_repo,
                "--speculative-draft-model-revision",
                s.speculative.draft_revision,
            ]
    flags += parallelism_flags(dep)
    flags += disaggregation_flags(dep)
    if sizing.lora:
        flags += lora_flags(dep, sizing.lora)
    if sizing.host_cache:
        flags += hierarchical_cache.flags(sizing.host_cache)
    if api_key:
        flags += ["--api-key", f"$({API_KEY_ENV})"]
    return flags + list(s.extra_args)


def loader_flags(dep: DeploymentSpec) -> list[str]:
    """`cache.loader` as SGLang's `--load-format`, never `auto`: SGLang's `auto` falls back to unpickling .bin
    files when a repo has both. The streamer's readers per process come from the spec (the loader sets
    RUNAI_STREAMER_CONCURRENCY and RUNAI_STREAMER_MEMORY_LIMIT from them: srt/model_loader/weight_utils.py)."""
    if dep.serving.quantization in OWN_LOADER_QUANTIZATIONS:
        return []  # these load through SGLang's loader of that format
    loader = "safetensors" if dep.cache.loader == "auto" else dep.cache.loader
    flags = ["--load-format", LOAD_FORMATS[loader]]
    if loader == "runai-streamer":
        streamer = dep.cache.streamer
        extra: dict[str, int] = {"concurrency": streamer.concurrency}
        if streamer.memory_limit_gib != "auto":
            extra["memory_limit"] = int(streamer.memory_limit_gib) * 2**30
        flags += ["--model-loader-extra-config", json.dumps(extra, separators=(",", ":"))]
    return flags


def loader_env(dep: DeploymentSpec) -> list[dict[str, str]]:
    """What the streamer reads from the environment alone: the bytes each read asks for."""
    if dep.cache.loader != "runai-streamer":
        return []
    return [{"name": "RUNAI_STREAMER_CHUNK_BYTESIZE", "value": str(dep.cache.streamer.chunk_mib * 2**20)}]


def slo_histogram_buckets(key: str, target: float) -> tuple[float, ...]:
    """SGLang's default buckets of the histogram `key` is judged on, with its target as one more bound."""
    defaults = SLO_BUCKET_FLAGS[key][1]
    return tuple(sorted({float(b) for b in defaults} | {float(target)}))


def slo_bucket_flags(dep: DeploymentSpec) -> list[str]:
    """The SLO's targets as histogram bounds: the burn alerts count the requests (tokens) within a target by
    its own bucket, and p95 against it is exact rather than interpolated inside a wider bucket."""
    flags = []
    for key, target in dep.slo_targets().items():
        flag = SLO_BUCKET_FLAGS[key][0]
        flags += [flag, *(histogram_bound(b) for b in slo_histogram_buckets(key, target))]
    return flags


def histogram_bound(value: float) -> str:
    """A bucket bound as prometheus_client writes it in `le` (floatToGoString: Python's repr below 1e6), so the
    flag SGLang reads back with float() and the label the alerts match are one string."""
    return repr(float(value))


def parallelism_flags(dep: DeploymentSpec) -> list[str]:
    """SGLang 0.5.23's spellings: `--attn-dp-size` replaces `--dp-size N --enable-dp-attention` (deprecated, and
    to be removed after 2026-12-31); the vocabulary then splits within each attention group too, so no all-gather
    crosses the groups."""
    par = dep.serving.parallelism
    flags = []
    if par.data_parallel_attention > 1:
        flags += ["--attn-dp-size", str(par.data_parallel_attention), "--enable-dp-lm-head"]
    if par.expert > 1:
        flags += ["--ep-size", str(par.expert)]
    if par.all_to_all == "deepep":
        flags += ["--moe-a2a-backend", "deepep"]
    return flags


BOOTSTRAP_PORT = 8998
"""The prefill role's KV bootstrap server (SGLang 0.5.23's default --disaggregation-bootstrap-port, made explicit):
decode replicas ask it where each request's KV cache comes from."""


def disaggregation_flags(dep: DeploymentSpec) -> list[str]:
    """A role of a disaggregated deployment: its mode and transfer backend; the prefill role also runs the
    bootstrap server. Nothing for a deployment that prefills and decodes on the same replicas."""
    role = dep.serving_role
    if role is None:
        return []
    flags = [
        "--disaggregation-mode",
        role.role,
        "--disaggregation-transfer-backend",
        role.transfer_backend,
    ]
    if role.role == "prefill":
        flags += ["--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT)]
    return flags


def lora_flags(dep: DeploymentSpec, lora: LoraLoad) -> list[str]:
    """Every adapter by name from its cached commit (the prefetch containers verified it), and the LoRA buffers'
    sizes explicit, so SGLang allocates what sizing counted."""
    paths = [
        f"{ref.name}={weight_cache.local_model_dir(a.repo, a.sha)}"
        for ref, a in zip(dep.model.adapters, lora.adapters, strict=True)
    ]
    loaded = dep.serving.lora.max_loaded_loras
    return [
        "--enable-lora",
        "--lora-paths",
        *paths,
        "--max-loras-per-batch",
        str(lora.slots),
        "--max-lora-rank",
        str(lora.rank),
        "--lora-target-modules",
        *lora.target_modules,
        *(["--max-loaded-loras", str(loaded)] if loaded else []),
    ]


def launch_command(
    dep: DeploymentSpec, model: LockedModel, sizing: Sizing, api_key: bool, model_path: str | None = None
) -> LaunchCommand:
    return LaunchCommand(command=list(ENTRYPOINT), args=server_flags(dep, model, sizing, api_key, model_path))
