"""Resolve models from a local Hugging Face cache directory into lock entries, with no network at all.

The layout is the one `huggingface_hub` writes (2.4.0: file_download.py `repo_folder_name`,
`_cache_commit_hash_for_specific_revision`, `_get_pointer_path`, `try_to_load_from_cache`):

    <cache>/models--ORG--NAME/refs/<branch or tag>      the commit it resolved to, as text
    <cache>/models--ORG--NAME/snapshots/<commit>/<path>  a symlink to ../../blobs/<etag> (a copy where
                                                         symlinks are not supported)
    <cache>/models--ORG--NAME/blobs/<etag>               the file; the etag is the sha256 of an LFS file
                                                         (64 hex) and the git blob id of any other (40 hex)

A snapshot holds only the files that were downloaded, so the file list is what the cache has; the weights the
safetensors index names must all be there. Gating is not recorded in a cache: entries say `"gated": null`.
The refusals are the Hub path's (`hub.refuse_unservable`), and so is the entry's shape (`hub.lock_entry`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.repocard import metadata_load
from safetensors import SafetensorError, safe_open

from sgldeploy.models.hub import (
    ADAPTER_CONFIG,
    PICKLE_WEIGHTS,
    HubError,
    ResolvedFacts,
    adapter_lock_entry,
    lock_entry,
    refuse_unservable,
    refuse_unservable_adapter,
)

SOURCE = "local-cache"
COMMIT = re.compile(r"[0-9a-f]{40}")  # huggingface_hub's REGEX_COMMIT_HASH
SHA256 = re.compile(r"[0-9a-f]{64}")
CONFIG = "config.json"
CARD = "README.md"  # the model card: its YAML front matter holds pipeline_tag
SINGLE_WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


class MissingFiles(Exception):
    """A partial snapshot: every file a lock entry needs that the cache lacks, one HubError each."""

    def __init__(self, errors: list[HubError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def hub_cache(directory: Path) -> Path:
    """The hub cache itself (`models--…` folders), given it or the HF_HOME above it (which holds `hub/`)."""
    if not any(p.name.startswith("models--") for p in _children(directory)) and (directory / "hub").is_dir():
        return directory / "hub"
    return directory


def _children(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


def _snapshot(cache: Path, repo: str, revision: str) -> tuple[str, Path, list[dict[str, Any]]]:
    """The commit `revision` resolves to in the cache, its snapshot folder and its files."""
    folder = cache / repo_folder_name(repo_id=repo, repo_type="model")
    if not folder.is_dir():
        raise HubError(
            f"{repo} is not in the Hugging Face cache {cache} (no {folder.name}/)",
            f"download it with `hf download {repo} --revision {revision} --cache-dir {cache}`, "
            "or pass the cache that holds it",
        )
    sha = _commit(folder, repo, revision)
    snapshot = folder / "snapshots" / sha
    return sha, snapshot, _snapshot_files(snapshot)


def resolve(cache: Path, repo: str, revision: str) -> dict[str, Any]:
    """A version 1 lock entry for `repo@revision` from the cache, or HubError / MissingFiles naming the gap."""
    sha, snapshot, files = _snapshot(cache, repo, revision)
    names = [f["path"] for f in files]
    _check_complete(cache, repo, sha, snapshot, names)
    tag = _card(snapshot / CARD, repo).get("pipeline_tag")
    pipeline_tag = tag if isinstance(tag, str) else None
    refuse_unservable(repo, names, pipeline_tag)
    config = _json(snapshot / CONFIG, repo)
    by_dtype = _parameters_by_dtype(snapshot, _weight_files(snapshot, names, repo), repo)
    facts = ResolvedFacts(repo, revision, sha, pipeline_tag, None, config, by_dtype, files)
    return lock_entry(facts, source=SOURCE)


def resolve_adapter(cache: Path, repo: str, revision: str) -> dict[str, Any]:
    """An `adapters` lock entry for a LoRA adapter from the cache, or HubError / MissingFiles naming the gap."""
    sha, snapshot, files = _snapshot(cache, repo, revision)
    names = [f["path"] for f in files]
    refuse_unservable_adapter(repo, names)
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    config = _json(snapshot / ADAPTER_CONFIG, repo)
    by_dtype = _parameters_by_dtype(snapshot, shards, repo)
    return adapter_lock_entry(repo, revision, sha, config, by_dtype, files, source=SOURCE)


def _commit(folder: Path, repo: str, revision: str) -> str:
    """A commit is looked up in snapshots/; a branch or tag through refs/ (what hf_hub_download recorded)."""
    snapshots = folder / "snapshots"
    held = sorted(p.name for p in _children(snapshots) if p.is_dir())
    have = f"it holds {', '.join(held)}" if held else "it holds no snapshot"
    if COMMIT.fullmatch(revision):
        sha = revision
    else:
        ref = folder / "refs" / revision
        if not _inside(ref, folder / "refs") or not ref.is_file():
            raise HubError(
                f"{repo} has no ref {revision!r} in the cache (no refs/{revision}; {have})",
                "download that revision into the cache, or pin model.revision to a commit the cache holds",
            )
        sha = ref.read_text(encoding="utf-8", errors="replace").strip()
        if not COMMIT.fullmatch(sha):
            raise HubError(
                f"{repo}'s cached ref {revision!r} does not hold a 40-hex commit",
                "download the revision again to repair the cache",
            )
    if not (snapshots / sha).is_dir():
        raise HubError(
            f"{repo}@{sha} has no snapshot in the cache ({have})",
            "download that commit into the cache, or pin model.revision to a commit the cache holds",
        )
    return sha


def _inside(path: Path, parent: Path) -> bool:
    return Path(os.path.abspath(parent)) in Path(os.path.abspath(path)).parents


def _snapshot_files(snapshot: Path) -> list[dict[str, Any]]:
    """Every file of the snapshot with its size, and its sha256 (LFS) or git blob id read off the blob's name.

    A dangling link (its blob deleted) is no file: `_check_complete` then names it if the entry needs it."""
    files = []
    for directory, _, filenames in os.walk(snapshot):
        for filename in filenames:
            path = Path(directory) / filename
            if not path.is_file():
                continue
            etag = os.readlink(path).replace("\\", "/").rsplit("/", 1)[-1] if path.is_symlink() else ""
            files.append(
                {
                    "path": path.relative_to(snapshot).as_posix(),
                    "size": path.stat().st_size,
                    "sha256": etag if SHA256.fullmatch(etag) else None,
                    "blob_id": etag if COMMIT.fullmatch(etag) else None,
                }
            )
    return sorted(files, key=lambda f: str(f["path"]))


def _check_complete(cache: Path, repo: str, sha: str, snapshot: Path, names: list[str]) -> None:
    """The files an entry is read from: config.json, the model card, and every weight file the index names."""
    missing = [name for name in (CONFIG, CARD) if name not in names]
    if WEIGHTS_INDEX in names:
        shards = sorted(set(_json(snapshot / WEIGHTS_INDEX, repo).get("weight_map", {}).values()))
        missing += [shard for shard in shards if shard not in names]
    elif SINGLE_WEIGHTS not in names and not any(n.endswith(PICKLE_WEIGHTS) for n in names):
        missing.append(f"{WEIGHTS_INDEX} (or {SINGLE_WEIGHTS})")
    if missing:
        raise MissingFiles(
            [
                HubError(
                    f"{repo}@{sha[:12]} in the cache {cache} lacks {name} (a partial snapshot)",
                    f"download it with `hf download {repo} {name.split(' ')[0]} --revision {sha} "
                    f"--cache-dir {cache}`",
                )
                for name in missing
            ]
        )


def _weight_files(snapshot: Path, names: list[str], repo: str) -> list[str]:
    """What huggingface_hub's get_safetensors_metadata reads: model.safetensors, else the index's shards."""
    if SINGLE_WEIGHTS in names:
        return [SINGLE_WEIGHTS]
    if WEIGHTS_INDEX in names:
        return sorted(set(_json(snapshot / WEIGHTS_INDEX, repo).get("weight_map", {}).values()))
    raise HubError(
        f"{repo} has no {SINGLE_WEIGHTS} or {WEIGHTS_INDEX}",
        "choose a repo whose weights SGLang loads as safetensors",
    )


def _parameters_by_dtype(snapshot: Path, shards: list[str], repo: str) -> dict[str, int]:
    """Parameter counts by dtype from the safetensors headers (only the headers are read)."""
    counts: dict[str, int] = {}
    for shard in shards:
        try:
            with safe_open(str(snapshot / shard), framework="numpy") as weights:
                for name in weights.keys():
                    tensor = weights.get_slice(name)
                    dtype = str(tensor.get_dtype())
                    counts[dtype] = counts.get(dtype, 0) + math.prod(tensor.get_shape())
        except (SafetensorError, OSError) as error:
            raise HubError(
                f"{repo}'s cached {shard} has an unreadable safetensors header ({error})",
                "download the file again (delete its blob first) to repair the cache",
            ) from None
    return dict(sorted(counts.items()))


def _json(path: Path, repo: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise HubError(
            f"{repo}'s cached {path.name} cannot be read as JSON ({error.__class__.__name__})",
            "download the file again (delete its blob first) to repair the cache",
        ) from None
    if not isinstance(data, dict):
        raise HubError(f"{repo}'s cached {path.name} is not a JSON object", "download the file again")
    return data


def _card(path: Path, repo: str) -> dict[str, Any]:
    """The model card's YAML front matter, read by the client's own parser (empty when there is none)."""
    try:
        return metadata_load(path) or {}
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise HubError(
            f"{repo}'s cached {CARD} has unreadable front matter ({error.__class__.__name__})",
            "download the model card again, or choose another revision",
        ) from None
