"""Resolve models on the Hugging Face Hub into lock entries, with the `huggingface_hub` client.

What a lock entry records: the commit a branch or tag resolves to, every file with its size and sha256
(LFS) or git blob id, parameter counts by dtype read from the safetensors headers (ranged reads, no weights
downloaded), the config.json fields sizing needs, the pipeline tag, whether the repo is gated and whether it
ships code. `HF_ENDPOINT` and `HF_TOKEN` are honoured by the client; transient faults are retried here,
since the client retries neither `model_info` nor 5xx answers (../shared/reference/huggingface-hub-client.md).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    NotASafetensorsRepoError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from sgldeploy.models.lock import CONFIG_FIELDS, SERVABLE_PIPELINES
from sgldeploy.spec.problems import THIS_FIELD, Problem, ProblemError

PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ADAPTER_CONFIG = "adapter_config.json"
TOKEN_FIX = (
    "accept the licence on the model's Hub page, then set the token with pulumi config set --secret "
    "sgldeploy:hfToken hf_…"
)
OFFLINE_FIX = (
    "unset HF_HUB_OFFLINE to lock from the Hub, or lock from a local Hugging Face cache with "
    "`sgldeploy lock --from-cache DIR`"
)
T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """Bounded retries with exponential backoff for connection errors, 5xx and 429 (honouring Retry-After)."""

    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 16.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, error: Exception) -> float:
        response = getattr(error, "response", None)
        after = response.headers.get("Retry-After") if response is not None else None
        if isinstance(after, str) and after.strip().isdigit():
            return min(float(after), self.max_delay * 4)
        return min(self.first_delay * 2.0**attempt, self.max_delay)


class HubError(ProblemError):
    """A model that cannot be locked: the problem, less the config path and the value, which the caller knows
    (`at`)."""

    def __init__(self, what: str, fix: str):
        super().__init__(Problem(THIS_FIELD, what, fix))

    def at(self, path: str, repo: str) -> Problem:
        return replace(self.problem, path=path, got=repo)


def _status(error: Exception | None) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _transient(error: Exception) -> bool:
    if isinstance(error, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError, TimeoutError)):
        return True
    status = _status(error)
    return status is not None and (status >= 500 or status == 429 or status == 408)


def call(repo: str, what: str, fn: Callable[[], T], retry: Retry) -> T:
    """Run one client call; retry transient faults; turn the final failure into one clear HubError."""
    last: Exception | None = None
    for attempt in range(retry.attempts):
        try:
            return fn()
        except OfflineModeIsEnabled:  # HF_HUB_OFFLINE=1: no request is made, so retrying cannot help
            raise HubError(
                f"HF_HUB_OFFLINE is set, so {repo} cannot be resolved on the Hub", OFFLINE_FIX
            ) from None
        except GatedRepoError as error:
            who = "this token has no access" if _status(error) == 403 else "no valid token was given"
            raise HubError(f"{repo} is gated and {who} (HTTP {_status(error)})", TOKEN_FIX) from None
        except NotASafetensorsRepoError:
            raise HubError(
                f"{repo} has no model.safetensors or model.safetensors.index.json",
                "choose a repo whose weights SGLang loads as safetensors",
            ) from None
        except RevisionNotFoundError:
            raise HubError(
                f"{repo} has no revision of that name (HTTP 404)",
                "check the branch, tag or commit on the model's Hub page",
            ) from None
        except RepositoryNotFoundError as error:
            status = _status(error)
            if status in (401, 403):
                raise HubError(
                    f"{repo} is gated or private and cannot be read (HTTP {status})", TOKEN_FIX
                ) from None
            raise HubError(
                f"{repo} does not exist on the Hub (HTTP 404), or is private",
                "check the repo id; for a private repo, " + TOKEN_FIX.split(", then ")[1],
            ) from None
        except Exception as error:
            if not _transient(error):
                if _status(error) in (401, 403):
                    raise HubError(f"{repo} cannot be read (HTTP {_status(error)})", TOKEN_FIX) from None
                raise
            last = error
            if attempt + 1 < retry.attempts:
                retry.sleep(retry.delay(attempt, error))
    raise HubError(
        f"gave up on {repo} after {retry.attempts} attempts at {what}: {_describe(last)}",
        "the Hub or the network is failing; try again later, or check HF_ENDPOINT",
    )


def _describe(error: Exception | None) -> str:
    status = _status(error)
    return f"HTTP {status}" if status else type(error).__name__


# ---- resolution ---------------------------------------------------------------------------------


def _commit_info(
    repo: str, revision: str, token: str | None, endpoint: str | None, retry: Retry, cache_dir: str | None
) -> tuple[str | None, str | None, HfApi, Any]:
    """The endpoint and cache in effect, the client, and the revision's model info with its files."""
    # The client reads HF_ENDPOINT and HF_HUB_CACHE once, at import; read them at call time instead.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT")
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE")
    api = HfApi(endpoint=endpoint, token=token)
    info = call(
        repo, "model_info", lambda: api.model_info(repo, revision=revision, files_metadata=True), retry
    )
    return endpoint, cache_dir, api, info


def resolve(
    repo: str,
    revision: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: Retry = Retry(),
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """A version 1 lock entry for `repo@revision`, or HubError naming what is wrong."""
    endpoint, cache_dir, api, info = _commit_info(repo, revision, token, endpoint, retry, cache_dir)
    sha = info.sha
    siblings = info.siblings or []
    names = [s.rfilename for s in siblings]
    refuse_unservable(repo, names, info.pipeline_tag)
    config_path = call(
        repo,
        "config.json",
        lambda: hf_hub_download(
            repo, "config.json", revision=sha, token=token, endpoint=endpoint, cache_dir=cache_dir
        ),
        retry,
    )
    with open(config_path) as f:
        config = json.load(f)
    metadata = call(
        repo, "safetensors headers", lambda: api.get_safetensors_metadata(repo, revision=sha), retry
    )
    by_dtype: dict[str, int] = {str(dtype): int(n) for dtype, n in sorted(metadata.parameter_count.items())}
    files = file_list(siblings)
    return lock_entry(
        ResolvedFacts(repo, revision, str(sha), info.pipeline_tag, bool(info.gated), config, by_dtype, files),
        source="hub",
    )


def file_list(siblings: list[Any]) -> list[dict[str, Any]]:
    """Every file of a commit with its size and sha256 (LFS) or git blob id, as the lock records them."""
    return [
        {
            "path": s.rfilename,
            "size": s.lfs.size if s.lfs else s.size,
            "sha256": s.lfs.sha256 if s.lfs else None,
            "blob_id": s.blob_id,
        }
        for s in sorted(siblings, key=lambda s: s.rfilename)
    ]


def resolve_adapter(
    repo: str,
    revision: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: Retry = Retry(),
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """A lock entry of the `adapters` section for a LoRA adapter `repo@revision`, or HubError."""
    endpoint, cache_dir, api, info = _commit_info(repo, revision, token, endpoint, retry, cache_dir)
    siblings = info.siblings or []
    names = [s.rfilename for s in siblings]
    refuse_unservable_adapter(repo, names)
    config_path = call(
        repo,
        ADAPTER_CONFIG,
        lambda: hf_hub_download(
            repo, ADAPTER_CONFIG, revision=info.sha, token=token, endpoint=endpoint, cache_dir=cache_dir
        ),
        retry,
    )
    with open(config_path) as f:
        config = json.load(f)
    # The Hub's get_safetensors_metadata knows model.safetensors only: each adapter file's header instead.
    by_dtype: dict[str, int] = {}
    for name in sorted(n for n in names if n.endswith(".safetensors")):
        read_header = functools.partial(api.parse_safetensors_file_metadata, repo, name, revision=info.sha)
        header = call(repo, f"{name} header", read_header, retry)
        for dtype, n in header.parameter_count.items():
            by_dtype[str(dtype)] = by_dtype.get(str(dtype), 0) + int(n)
    files = file_list(siblings)
    return adapter_lock_entry(repo, revision, str(info.sha), config, by_dtype, files, source="hub")


def refuse_unservable_adapter(repo: str, names: list[str]) -> None:
    """An adapter needs its adapter_config.json and safetensors weights (SGLang's LoRA loader reads both)."""
    _check_paths(repo, names)
    if ADAPTER_CONFIG not in names:
        raise HubError(
            f"{repo} has no {ADAPTER_CONFIG}, so it is no LoRA adapter SGLang can load",
            "name a PEFT LoRA adapter repo in model.adapters (a merged model goes in model.repo)",
        )
    if not any(n.endswith(".safetensors") for n in names):
        raise HubError(
            f"{repo} has no safetensors weights",
            "pickle weights can run code when loaded; choose an adapter (or a revision) that ships "
            "adapter_model.safetensors",
        )


def adapter_lock_entry(
    repo: str,
    revision: str,
    sha: str,
    config: dict[str, Any],
    by_dtype: dict[str, int],
    files: list[dict[str, Any]],
    source: str,
) -> dict[str, Any]:
    """What SGLang's LoRAConfig reads from adapter_config.json (srt/lora/lora_config.py: r, lora_alpha,
    target_modules, use_dora), and the base model it was trained on."""
    modules = config.get("target_modules") or []
    return {
        "repo": repo,
        "revision": revision,
        "sha": sha,
        "parameters": sum(by_dtype.values()),
        "parameters_by_dtype": dict(sorted(by_dtype.items())),
        "safetensors_bytes": sum(f["size"] or 0 for f in files if f["path"].endswith(".safetensors")),
        "files": files,
        "source": source,
        "adapter": {
            "rank": config.get("r"),
            "alpha": config.get("lora_alpha"),
            # PEFT writes a single module name as a string (or "all-linear"); SGLang takes a list.
            "target_modules": [modules] if isinstance(modules, str) else sorted(modules),
            "base_model": config.get("base_model_name_or_path"),
            "use_dora": bool(config.get("use_dora")),
        },
    }


def refuse_unservable(repo: str, names: list[str], pipeline_tag: str | None) -> None:
    """The refusals every source applies (Hub and local cache alike): paths that escape, pickle-only
    weights, a pipeline tag SGLang does not serve."""
    _check_paths(repo, names)
    safetensors = [n for n in names if n.endswith(".safetensors")]
    if not safetensors:
        pickles = [n for n in names if n.endswith(PICKLE_WEIGHTS)]
        what = f"{repo} has no safetensors weights" + (
            f", only pickle files ({', '.join(pickles[:3])})" if pickles else ""
        )
        raise HubError(
            what,
            "pickle weights can run code when loaded; choose a repo (or a revision) that ships "
            ".safetensors files",
        )
    if pipeline_tag not in SERVABLE_PIPELINES:
        raise HubError(
            f"{repo} has pipeline tag {pipeline_tag or 'none'}, which sgldeploy does not serve",
            f"choose a model tagged {' or '.join(SERVABLE_PIPELINES)}",
        )


@dataclass(frozen=True)
class ResolvedFacts:
    """What a source (the Hub, a local cache) found for one `repo@revision`, before it becomes an entry."""

    repo: str
    revision: str
    sha: str
    pipeline_tag: str | None
    gated: bool | None  # None: unknown (a local cache does not record it)
    config: dict[str, Any]
    parameters_by_dtype: dict[str, int]
    files: list[dict[str, Any]]


def lock_entry(facts: ResolvedFacts, source: str) -> dict[str, Any]:
    """A version 1 lock entry: one shape whatever the source."""
    names = [f["path"] for f in facts.files]
    return {
        "repo": facts.repo,
        "revision": facts.revision,
        "sha": facts.sha,
        "pipeline_tag": facts.pipeline_tag,
        "gated": facts.gated,
        "custom_code": "auto_map" in facts.config or any(n.endswith(".py") for n in names),
        "parameters": sum(facts.parameters_by_dtype.values()),
        "dtype": facts.config.get("torch_dtype") or facts.config.get("dtype") or "bfloat16",
        "parameters_by_dtype": facts.parameters_by_dtype,
        "safetensors_bytes": sum(f["size"] or 0 for f in facts.files if f["path"].endswith(".safetensors")),
        "files": facts.files,
        "config": config_fields(facts.config),
        "source": source,
    }


def config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The config.json fields sizing needs; multimodal models keep them under text_config."""
    text = config.get("text_config") or {}
    picked: dict[str, Any] = {name: config.get(name, text.get(name)) for name in CONFIG_FIELDS}
    picked["num_experts"] = (
        config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts")
    )
    quant = config.get("quantization_config") or {}
    picked["quantization_method"] = quant.get("quant_method")
    if picked.get("head_dim") is None and picked.get("hidden_size") and picked.get("num_attention_heads"):
        picked["head_dim"] = int(picked["hidden_size"]) // int(picked["num_attention_heads"])
    return picked


def _check_paths(repo: str, names: list[str]) -> None:
    """A file list that could escape the cache directory is refused outright."""
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or "\0" in name or not all(parts):
            raise HubError(
                f"{repo} lists a file path that escapes its directory: {name!r}",
                "do not use this repo; report it to the Hub",
            )


def current_sha(
    repo: str,
    revision: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: Retry = Retry(),
) -> str:
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)
    sha = call(repo, "model_info", lambda: api.model_info(repo, revision=revision).sha, retry)
    if sha is None:
        raise HubError(
            f"the Hub gave no commit for {repo}@{revision}", "check HF_ENDPOINT points at a Hub API"
        )
    return sha
