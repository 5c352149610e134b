"""Fetch exactly the files SGLang needs for one model commit, verified, into DEST/ORG/NAME/SHA/.

    python prefetch.py --repo ORG/NAME --revision REV --dest DIR [--workers 8]

HF_ENDPOINT and HF_TOKEN come from the environment (the token is never printed or written). The revision is
resolved to its commit first, so a moving branch can never mix two versions. Only safetensors weights and
the config, tokenizer and processor files are fetched; pickle weights never are. Files are fetched in
parallel ranged chunks, each chunk retried on connection resets, 5xx, 429 (Retry-After) and short bodies;
chunks already on disk are kept, so an interrupted run resumes where it stopped. Every file is checked
against the Hub's size and sha256 (git blob id for small files) and every safetensors header must parse and
fit its file; only then is `.complete` written, atomically. A run over a complete cache transfers nothing.

Exit codes: 0 complete; 2 bad arguments; 3 access denied (gated or private: 401/403); 4 repo, revision or
file not found; 5 verification failed (a corrupt file is discarded); 6 disk full or not writable; 7 the Hub
kept failing after retries; 8 the repo's file list is unsafe (a path escaping the cache); 9 (--wait-complete)
the cache did not become complete in time.

`--wait-complete SECONDS` touches no network: it waits until another run (a prefetch Job filling a shared
cache) has written `.complete` for the commit and every file it lists is present at its size. Serving pods
run it as an init container, so they never start on a partial cache.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import hashlib
import importlib
import json
import os
import re
import struct
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.file_download import hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session

OK, BAD_ARGS, DENIED, NOT_FOUND, CORRUPT, DISK, GAVE_UP, UNSAFE, INCOMPLETE = 0, 2, 3, 4, 5, 6, 7, 8, 9
CHUNK = 64 * 2**20  # one ranged request; also the unit of resume
PIECE = 4 * 2**20  # bytes read per write: memory stays flat whatever the file size
WORKERS = max(2, min(8, os.cpu_count() or 2))  # parallel requests: one per core, 2 to 8 (measured in bench/)
ATTEMPTS = 6
WANTED = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.tiktoken",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
    "adapter_config.json",  # a LoRA adapter's: SGLang's LoRAConfig reads r, lora_alpha, target_modules
)
REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
COMPLETE = ".complete"
PARTIAL = ".partial"


def hub_http_library() -> types.ModuleType:
    """The HTTP client library huggingface_hub's own session is built on: httpx under huggingface_hub 1.x,
    httpx2 under 2.x. The tool runs on whichever huggingface_hub the serving image ships (SGLang 0.5.23 takes
    it through transformers 5.19.0: huggingface-hub>=1.31.0,<3.0), so it names neither."""
    return importlib.import_module(type(get_session()).__module__.partition(".")[0])


class PrefetchError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1, for the others


# ---- what to fetch, and where ----------------------------------------------------------------------


def cache_dir(dest: Path, repo: str, sha: str) -> Path:
    """DEST/ORG/NAME/SHA from validated parts only."""
    org, name = repo.split("/")
    if not (REPO_PART.match(org) and REPO_PART.match(name) and ".." not in repo and COMMIT.match(sha)):
        raise PrefetchError(UNSAFE, f"refusing to build a cache path from repo {repo!r} and commit {sha!r}")
    return dest / org / name / sha


def safe_relative(path: str) -> str:
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or "\0" in path
        or ".." in parts
        or not all(parts)
        or any(p in (".", PARTIAL, COMPLETE) for p in parts)
    ):
        raise PrefetchError(UNSAFE, f"the repo lists a file path that escapes the cache: {path!r}")
    return path


def wanted(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return "/" not in path and any(fnmatch.fnmatch(name, pattern) for pattern in WANTED)


def select(siblings) -> list[RemoteFile]:
    for s in siblings:
        safe_relative(s.rfilename)  # the whole list is checked, not only what we fetch
    files = [
        RemoteFile(
            s.rfilename, s.lfs.size if s.lfs else (s.size or 0), s.lfs.sha256 if s.lfs else None, s.blob_id
        )
        for s in siblings
        if wanted(s.rfilename)
    ]
    if not any(f.path.endswith(".safetensors") for f in files):
        raise PrefetchError(NOT_FOUND, "the repo has no safetensors weights at this revision")
    return sorted(files, key=lambda f: f.path)


# ---- verification --------------------------------------------------------------------------------


def digest(path: Path, blob_id: bool = True) -> tuple[str, str]:
    """sha256 of the file and (when asked) its git blob id, in one pass."""
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size) if blob_id else None
    with open(path, "rb") as f:
        while piece := f.read(8 * 2**20):
            sha256.update(piece)
            if blob is not None:
                blob.update(piece)
    return sha256.hexdigest(), blob.hexdigest() if blob is not None else ""


DTYPE_BITS = {
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 8),
    **dict.fromkeys(("F4",), 4),
    **dict.fromkeys(("F6_E2M3", "F6_E3M2"), 6),
    **dict.fromkeys(("I16", "U16", "F16", "BF16"), 16),
    **dict.fromkeys(("I32", "U32", "F32"), 32),
    **dict.fromkeys(("I64", "U64", "F64", "C64"), 64),
}
"""Bits per element of each safetensors dtype (huggingface/safetensors, safetensors/src/tensor.rs `Dtype`).
A dtype not listed here (a newer format) is checked by its offsets only."""


def safetensors_problem(path: Path) -> str | None:
    """The header must be the JSON object the safetensors format defines, and its tensors must tile the data
    exactly: contiguous from byte 0, each as long as its shape and dtype say, ending at the end of the file.
    These are the checks the safetensors library makes when it opens a file, done with the standard library
    (the tool runs on the serving image's own Python, which need not have safetensors)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return "shorter than a safetensors header"
        header_len = struct.unpack("<Q", raw)[0]
        if header_len > size - 8:
            return f"header length {header_len} runs past the end of the file ({size} bytes)"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "header is not valid JSON"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    spans = []
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_problem(tensor)
        if problem:
            return f"tensor {name!r}: {problem}"
        spans.append((tensor["data_offsets"][0], tensor["data_offsets"][1], name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            return f"tensor {name!r} starts at data byte {begin}, expected {at}"
        at = end
    if 8 + header_len + at != size:
        return f"tensors end at byte {8 + header_len + at}, the file has {size}"
    return None


def _tensor_problem(tensor: object) -> str | None:
    if not isinstance(tensor, dict):
        return "is not a JSON object"
    offsets, shape, dtype = tensor.get("data_offsets"), tensor.get("shape"), tensor.get("dtype")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        return f"data_offsets is not [begin, end] (got {offsets!r})"
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        return f"shape is not a list of sizes (got {shape!r})"
    if not isinstance(dtype, str):
        return f"dtype is not a string (got {dtype!r})"
    bits = DTYPE_BITS.get(dtype)
    if bits is not None:
        elements = 1
        for d in shape:
            elements *= d
        if elements * bits % 8 or elements * bits // 8 != offsets[1] - offsets[0]:
            span = offsets[1] - offsets[0]
            return f"{dtype} {shape} takes {elements * bits / 8:g} bytes, its offsets span {span}"
    return None


def verify(path: Path, remote: RemoteFile, sha256: str | None = None) -> tuple[str | None, str]:
    """(problem or None, sha256). `sha256` is the file's, when already computed from its bytes on disk."""
    if path.stat().st_size != remote.size:
        return f"size {path.stat().st_size}, the Hub says {remote.size}", ""
    blob = ""
    if sha256 is None or not remote.sha256:
        sha256, blob = digest(path, blob_id=not remote.sha256)  # LFS files are checked by sha256 alone
    if remote.sha256 and sha256 != remote.sha256:
        return f"sha256 {sha256[:12]}…, the Hub says {remote.sha256[:12]}…", sha256
    if not remote.sha256 and remote.blob_id and blob != remote.blob_id:
        return f"git blob {blob[:12]}…, the Hub says {remote.blob_id[:12]}…", sha256
    if remote.path.endswith(".safetensors"):  # `path` may be the .part file being checked
        problem = safetensors_problem(path)
        if problem:
            return problem, sha256
    return None, sha256


# ---- transfer ------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One file in flight: its partial file, open descriptor and which chunks are on disk."""

    remote: RemoteFile
    part: Path
    done_file: Path
    fd: int
    chunks: int
    done: set
    todo: list
    started: float
    closing: threading.Lock = field(default_factory=threading.Lock)
    # sha256 of the chunks on disk, advanced in order as they land, so a file is verified moments after its
    # last byte rather than by reading it all again at the end
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    hashed: int = 0  # chunks fed to `hasher`
    hashing: threading.Lock = field(default_factory=threading.Lock)

    def hash_ready(self) -> None:
        """Feed every chunk that is on disk and next in order to the hasher; safe to call from any thread."""
        with self.hashing:
            if self.hashed >= self.chunks or self.hashed not in self.done:
                return  # nothing new in order, or the file is hashed (and may be renamed) already
            with open(self.part, "rb", buffering=0) as f:
                while self.hashed < self.chunks and self.hashed in self.done:
                    f.seek(self.hashed * CHUNK)
                    left = min(CHUNK, self.remote.size - self.hashed * CHUNK)
                    while left > 0:
                        piece = f.read(min(PIECE * 2, left))
                        if not piece:
                            return  # shorter than expected: verification reports the size
                        self.hasher.update(piece)
                        left -= len(piece)
                    self.hashed += 1

    def hasher_if_next(self, index: int) -> hashlib._Hash | None:
        """A copy of the hasher when every chunk before `index` is hashed: the chunk is then hashed as it
        arrives, with no second read; a failed attempt just drops the copy."""
        with self.hashing:
            return self.hasher.copy() if self.remote.sha256 and self.hashed == index else None

    def take_hash(self, index: int, hasher: hashlib._Hash) -> None:
        with self.hashing:
            if self.hashed == index:
                self.hasher, self.hashed = hasher, index + 1

    def sha256(self) -> str | None:
        """The file's sha256 once every chunk was hashed in order, else None."""
        self.hash_ready()
        return self.hasher.hexdigest() if self.hashed == self.chunks else None

    def close(self) -> None:
        """Idempotent and thread-safe: a descriptor closed twice could close a file another thread opened."""
        with self.closing:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class Transfer:
    """Parallel ranged chunks with per-chunk retries; progress kept on disk so a later run resumes."""

    def __init__(
        self,
        repo: str,
        sha: str,
        endpoint: str | None,
        workers: int,
        log: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.repo, self.sha, self.endpoint, self.workers, self.log, self.sleep = (
            repo,
            sha,
            endpoint,
            workers,
            log,
            sleep,
        )
        self.session = get_session()
        self.http = hub_http_library()
        self.headers = build_hf_headers()  # HF_TOKEN or the local token; never logged
        self.bytes = 0
        self.lock = threading.Lock()
        self.progress = None  # the library's progress bar, when stderr is a terminal

    def url(self, path: str) -> str:
        return hf_hub_url(self.repo, path, revision=self.sha, endpoint=self.endpoint)

    def fetch_all(
        self,
        files: list[RemoteFile],
        part_of: Callable[[RemoteFile], Path],
        finish: Callable[[RemoteFile, Path, str | None], None],
    ) -> None:
        """Fetch every missing chunk of every file in one pool; check each file (`finish`) as soon as its
        last chunk lands, while the other files are still arriving. Raises the first failure."""
        plans: list[_Plan] = []
        try:
            for remote in files:
                plans.append(self._prepare(remote, part_of(remote)))
            with ThreadPoolExecutor(self.workers) as pool, ThreadPoolExecutor(2) as checks:
                chunk_futures = {
                    pool.submit(self._chunk, plan, i): (plan, i) for plan in plans for i in plan.todo
                }
                check_futures = [checks.submit(self._finish, plan, finish) for plan in plans if not plan.todo]
                try:
                    for future in as_completed(chunk_futures):
                        future.result()
                        plan, index = chunk_futures[future]
                        plan.done.add(index)
                        _write_atomic(plan.done_file, json.dumps(sorted(plan.done)))
                        if len(plan.done) == plan.chunks:
                            check_futures.append(checks.submit(self._finish, plan, finish))
                        elif plan.remote.sha256:
                            check_futures.append(checks.submit(plan.hash_ready))
                    for future in check_futures:
                        future.result()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    checks.shutdown(cancel_futures=True)
                    raise
        finally:  # once both pools have stopped: no thread still writes or reads through these
            for plan in plans:
                plan.close()

    def _prepare(self, remote: RemoteFile, part: Path) -> _Plan:
        done_file = part.with_name(part.name + ".done")
        chunks = max(1, -(-remote.size // CHUNK))
        done: set[int] = set()
        if part.exists() and done_file.exists() and part.stat().st_size == remote.size:
            done = set(json.loads(done_file.read_text()))
        else:
            part.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as f:
                if remote.size:
                    os.posix_fallocate(f.fileno(), 0, remote.size)  # a full disk fails here, not midway
        if done:
            self.log(f"resuming {remote.path}: {len(done)} of {chunks} chunks already on disk")
        return _Plan(
            remote,
            part,
            done_file,
            os.open(part, os.O_WRONLY),
            chunks,
            done,
            [i for i in range(chunks) if i not in done],
            time.monotonic(),
        )

    @staticmethod
    def _finish(plan: _Plan, finish: Callable[[RemoteFile, Path, str | None], None]) -> None:
        plan.close()
        finish(plan.remote, plan.part, plan.sha256() if plan.remote.sha256 else None)

    def _chunk(self, plan: _Plan, index: int) -> int:
        remote, fd = plan.remote, plan.fd
        start = index * CHUNK
        end = min(start + CHUNK, remote.size) - 1
        # identity encoding: the raw bytes on the wire are the file's bytes
        headers = {**self.headers, "Accept-Encoding": "identity"}
        if remote.size:
            headers["Range"] = f"bytes={start}-{end}"
        last = "no answer"
        for attempt in range(ATTEMPTS):
            offset = start
            hasher = plan.hasher_if_next(index)
            try:
                with self.session.stream(
                    "GET",
                    self.url(remote.path),
                    headers=headers,
                    follow_redirects=True,
                    timeout=self.http.Timeout(60.0, connect=10.0),
                ) as response:
                    status = response.status_code
                    if status in (401, 403):
                        raise PrefetchError(
                            DENIED,
                            f"{self.repo} denied {remote.path} (HTTP {status}): accept "
                            "the licence on the Hub and give a token with access (HF_TOKEN)",
                        )
                    if status == 404:
                        raise PrefetchError(
                            NOT_FOUND, f"{self.repo}@{self.sha} has no {remote.path} (HTTP 404)"
                        )
                    if status == 429 or status >= 500 or status not in (200, 206):
                        retry_after = response.headers.get("Retry-After", "")
                        raise _Transient(
                            f"HTTP {status}", float(retry_after) if retry_after.isdigit() else None
                        )
                    if status == 200 and start:
                        raise _Transient("the server ignored the byte range", None)
                    for piece in response.iter_raw():  # as read from the socket: no re-chunking copies
                        os.pwrite(fd, piece, offset)
                        if hasher is not None:
                            hasher.update(piece)
                        offset += len(piece)
                        with self.lock:
                            self.bytes += len(piece)
                            if self.progress is not None:
                                self.progress.update(len(piece))
                if offset != end + 1:
                    raise _Transient(f"body ended at byte {offset} of {end + 1}", None)
                if hasher is not None:
                    plan.take_hash(index, hasher)
                return index
            except PrefetchError:
                raise
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                    raise PrefetchError(DISK, f"cannot write {remote.path}: {exc.strerror}") from None
                last = f"{type(exc).__name__}"
                wait = None
            except _Transient as exc:
                last, wait = exc.reason, exc.retry_after
            except self.http.TransportError as exc:
                last, wait = type(exc).__name__, None
            if attempt + 1 < ATTEMPTS:
                self.sleep(wait if wait is not None else min(0.5 * 2**attempt, 8.0))
        raise PrefetchError(
            GAVE_UP,
            f"gave up on {self.repo} {remote.path} bytes {start}-{end} after {ATTEMPTS} attempts: {last}",
        )


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- the run -------------------------------------------------------------------------------------


def resolve(repo: str, revision: str, endpoint: str | None, sleep: Callable[[float], None]):
    api = HfApi(endpoint=endpoint)
    last = ""
    for attempt in range(ATTEMPTS):
        try:
            return api.model_info(repo, revision=revision, files_metadata=True)
        except GatedRepoError as exc:
            code = getattr(exc.response, "status_code", 403)
            raise PrefetchError(
                DENIED,
                f"{repo} is gated (HTTP {code}): accept the licence on the Hub and give a "
                "token with access (HF_TOKEN)",
            ) from None
        except RevisionNotFoundError:
            raise PrefetchError(NOT_FOUND, f"{repo} has no revision {revision!r} (HTTP 404)") from None
        except RepositoryNotFoundError as exc:
            code = getattr(exc.response, "status_code", 404)
            kind = DENIED if code in (401, 403) else NOT_FOUND
            raise PrefetchError(
                kind, f"{repo} not found or private (HTTP {code}); check the id and HF_TOKEN"
            ) from None
        except Exception as exc:
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            if status is not None and status < 500 and status != 429:
                raise PrefetchError(
                    DENIED if status in (401, 403) else NOT_FOUND,
                    f"{repo}: HTTP {status} resolving {revision!r}",
                ) from None
            last = f"HTTP {status}" if status else type(exc).__name__
            after = response.headers.get("Retry-After", "") if response is not None else ""
            if attempt + 1 < ATTEMPTS:
                sleep(float(after) if after.isdigit() else min(0.5 * 2**attempt, 8.0))
    raise PrefetchError(GAVE_UP, f"gave up resolving {repo}@{revision} after {ATTEMPTS} attempts: {last}")


def complete_matches(target: Path, files: list[RemoteFile]) -> bool:
    """A `.complete` that lists exactly these files, with their sizes on disk and the Hub's hashes."""
    marker = target / COMPLETE
    if not marker.exists():
        return False
    try:
        recorded = {f["path"]: f for f in json.loads(marker.read_text())["files"]}
    except (ValueError, KeyError, TypeError):
        return False
    if set(recorded) != {f.path for f in files}:
        return False
    for f in files:
        entry, local = recorded[f.path], target / f.path
        if not local.is_file() or local.stat().st_size != f.size or entry.get("size") != f.size:
            return False
        if f.sha256 and entry.get("sha256") != f.sha256:
            return False
    return True


def prefetch(
    repo: str,
    revision: str,
    dest: Path,
    *,
    workers: int = WORKERS,
    endpoint: str | None = None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Fill DEST/ORG/NAME/SHA and write `.complete`; return the summary. Raises PrefetchError."""
    started = time.monotonic()
    if not (len(repo.split("/")) == 2 and all(REPO_PART.match(p) for p in repo.split("/"))):
        raise PrefetchError(BAD_ARGS, f"--repo must be ORG/NAME (got {repo!r})")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT")
    info = resolve(repo, revision, endpoint, sleep)
    target = cache_dir(dest, repo, info.sha)
    files = select(info.siblings or [])
    summary = {
        "repo": repo,
        "sha": info.sha,
        "path": str(target),
        "files": len(files),
        "skipped": 0,
        "bytes": 0,
        "seconds": 0.0,
    }
    if complete_matches(target, files):
        summary.update(skipped=len(files), seconds=round(time.monotonic() - started, 3))
        return summary
    try:
        target.mkdir(parents=True, exist_ok=True)
        (target / COMPLETE).unlink(missing_ok=True)  # whatever follows, an unverified cache is never complete
    except OSError as exc:
        raise PrefetchError(DISK, f"cannot write to {dest}: {exc.strerror}") from None
    transfer = Transfer(repo, info.sha, endpoint, workers, log, sleep)
    if sys.stderr.isatty():
        from huggingface_hub.utils import tqdm

        transfer.progress = tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, desc=repo)
    recorded: dict[str, dict] = {}
    missing = []
    for remote in files:
        final = target / remote.path
        if final.is_file():
            problem, sha256 = verify(final, remote)  # cached by verification, not by existence
            if problem is None:  # one read of the file: verifying it gave its sha256
                summary["skipped"] += 1
                recorded[remote.path] = {"path": remote.path, "size": remote.size, "sha256": sha256}
                continue
        missing.append(remote)

    def place(remote: RemoteFile, part: Path, sha256: str | None) -> None:
        problem, sha256 = verify(part, remote, sha256)
        if problem:
            part.unlink(missing_ok=True)
            part.with_name(part.name + ".done").unlink(missing_ok=True)
            raise PrefetchError(
                CORRUPT, f"{remote.path} failed verification: {problem}; discarded, run again"
            )
        os.replace(part, target / remote.path)
        part.with_name(part.name + ".done").unlink(missing_ok=True)
        recorded[remote.path] = {"path": remote.path, "size": remote.size, "sha256": sha256}
        log(f"fetched {remote.path} ({remote.size / 1e6:.1f} MB)")

    try:
        transfer.fetch_all(missing, lambda remote: target / PARTIAL / (remote.path + ".part"), place)
    except OSError as exc:  # preallocation or the directory itself: the disk is full or read-only
        for remote in missing:
            if remote.path not in recorded:
                (target / PARTIAL / (remote.path + ".part")).unlink(missing_ok=True)  # free what was reserved
        raise PrefetchError(DISK, f"cannot write under {dest}: {exc.strerror}") from None
    if transfer.progress is not None:
        transfer.progress.close()
    entries = [recorded[f.path] for f in files]
    _write_atomic(target / COMPLETE, json.dumps({"repo": repo, "sha": info.sha, "files": entries}, indent=1))
    try:
        (target / PARTIAL).rmdir()
    except OSError:
        pass
    summary.update(bytes=transfer.bytes, seconds=round(time.monotonic() - started, 3))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="Hugging Face repo id, ORG/NAME")
    parser.add_argument(
        "--revision", required=True, help="branch, tag or commit; resolved to the commit first"
    )
    parser.add_argument(
        "--dest", required=True, type=Path, help="cache root; files land in DEST/ORG/NAME/SHA/"
    )
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help=f"parallel ranged requests (default {WORKERS})"
    )
    parser.add_argument(
        "--wait-complete",
        type=float,
        metavar="SECONDS",
        help="fetch nothing: wait up to SECONDS "
        "for another run to complete this commit's cache (exit 9 if it does not)",
    )
    return parser


def wait_complete(
    repo: str, sha: str, dest: Path, seconds: float, poll: float = 5.0, log: Callable[[str], None] = print
) -> dict:
    """Wait for `.complete` of DEST/ORG/NAME/SHA with every listed file at its recorded size."""
    if not COMMIT.match(sha):
        raise PrefetchError(BAD_ARGS, f"--wait-complete needs --revision to be a 40-hex commit (got {sha!r})")
    target = cache_dir(dest, repo, sha)
    deadline = time.monotonic() + seconds
    while True:
        marker = target / COMPLETE
        if marker.exists():
            recorded = json.loads(marker.read_text())["files"]
            missing = [
                f["path"]
                for f in recorded
                if not (target / safe_relative(f["path"])).is_file()
                or (target / f["path"]).stat().st_size != f["size"]
            ]
            if not missing:
                return {"repo": repo, "sha": sha, "path": str(target), "files": len(recorded)}
            raise PrefetchError(CORRUPT, f"{target} is marked complete but lacks {', '.join(missing[:3])}")
        if time.monotonic() >= deadline:
            raise PrefetchError(
                INCOMPLETE,
                f"{target} is not complete after {seconds:.0f} s; is the prefetch Job "
                "running? (kubectl get jobs)",
            )
        log(f"waiting for {target}/{COMPLETE}")
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.wait_complete is not None:
        try:
            done = wait_complete(
                args.repo,
                args.revision,
                args.dest,
                args.wait_complete,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
        except PrefetchError as err:
            print(f"prefetch: error: {err}", file=sys.stderr)
            return err.code
        print(f"prefetch: {done['path']} is complete ({done['files']} files)", file=sys.stderr)
        return OK

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        summary = prefetch(args.repo, args.revision, args.dest, workers=max(1, args.workers), log=log)
    except PrefetchError as err:
        print(f"prefetch: error: {err}", file=sys.stderr)
        return err.code
    except OSError as err:  # anything else the file system refuses
        print(f"prefetch: error: cannot use {args.dest}: {err.strerror or err}", file=sys.stderr)
        return DISK
    except KeyboardInterrupt:
        print("prefetch: interrupted; run again to resume", file=sys.stderr)
        return 130
    rate = summary["bytes"] / 1e6 / summary["seconds"] if summary["seconds"] else 0.0
    print(
        f"prefetch: {summary['repo']}@{summary['sha']} complete in {summary['path']}: {summary['files']} files "
        f"({summary['skipped']} already verified), {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.2f} s "
        f"({rate:.0f} MB/s)",
        file=sys.stderr,
    )
    return OK


if __name__ == "__main__":
    sys.exit(main())
