"""A Hugging Face Hub API served on loopback, for driving the real `huggingface_hub` client in tests.

It implements what the client calls to resolve a model: model info by revision (with file metadata),
HEAD and GET (with ranges) of `resolve/` URLs, the error headers the client maps to its exceptions, and
injected faults (5xx, 429 with Retry-After, dropped connections) to test retries. Repos are built by the
tests from real files (safetensors written with the `safetensors` package).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha → files
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag → sha
    pipeline_tag: str | None = "text-generation"
    gated: bool = False
    private: bool = False
    tokens: tuple[str, ...] = ()  # tokens with access, for gated or private repos

    digests: dict[int, tuple[str, str]] = field(default_factory=dict)  # id → (sha256, git blob id)

    def commit(self, files: dict[str, bytes], ref: str = "main") -> str:
        for data in files.values():  # hashed once here, not on every request
            self.digests[id(data)] = (hashlib.sha256(data).hexdigest(), git_blob_id(data))
        sha = hashlib.sha1(
            json.dumps(sorted((k, self.digests[id(v)][0]) for k, v in files.items())).encode()
            + str(len(self.commits)).encode()
        ).hexdigest()
        self.commits[sha] = dict(files)
        self.refs[ref] = sha
        return sha

    def sha_for(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


@dataclass
class Fault:
    """Spoil the next `times` matching requests: answer `status` (0: drop the connection at once), or with
    status 200 serve the real answer cut off after `truncate_after` bytes, or with bytes flipped (`corrupt`)."""

    path_pattern: str
    status: int
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    truncate_after: int | None = None
    corrupt: bool = False
    range_start: int | None = None  # only requests for a byte range starting here


class LoopbackHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.cache = ""  # where a test keeps the client's cache
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.repo_id] = repo
        return repo

    def fail(self, path_pattern: str, status: int, times: int = 1, **headers: str) -> None:
        self.faults.append(Fault(path_pattern, status, times, headers))

    def spoil(
        self,
        path_pattern: str,
        times: int = 1,
        truncate_after: int | None = None,
        corrupt: bool = False,
        range_start: int | None = None,
    ) -> None:
        self.faults.append(Fault(path_pattern, 200, times, {}, truncate_after, corrupt, range_start))

    def _take_fault(self, path: str, range_start: int | None) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.range_start is not None and fault.range_start != range_start:
                    continue
                if fault.times > 0 and re.search(fault.path_pattern, path):
                    fault.times -= 1
                    return fault
        return None

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_POST(self) -> None:  # telemetry and anything else unmodelled
                self._reply(200, b"{}", {"Content-Type": "application/json"})

            def _reply(
                self,
                status: int,
                data: bytes = b"",
                headers: dict | None = None,
                body: bool = True,
                length: int | None = None,
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.end_headers()
                if body and data and self.command != "HEAD":  # a HEAD answer never carries a body
                    self.wfile.write(data)

            def _error(self, status: int, code: str, message: str = "") -> None:
                data = json.dumps({"error": message or code}).encode()
                self._reply(
                    status,
                    data,
                    {
                        "X-Error-Code": code,
                        "X-Error-Message": message or code,
                        "Content-Type": "application/json",
                    },
                )

            def _serve(self, body: bool) -> None:
                path = urlparse(self.path).path
                hub.requests.append((self.command, path))
                ranged = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                fault = hub._take_fault(path, int(ranged.group(1)) if ranged else None)
                self.spoiled = fault if fault is not None and fault.status == 200 else None
                if fault is not None and fault.status != 200:
                    if fault.status == 0:
                        self.close_connection = True
                        self.connection.close()
                        return
                    self._reply(fault.status, b"fault", fault.headers)
                    return
                info = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/(.+))?$", path)
                if info:
                    return self._model_info(unquote(info.group(1)), unquote(info.group(2) or "main"))
                resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if resolve:
                    return self._resolve(
                        unquote(resolve.group(1)), unquote(resolve.group(2)), unquote(resolve.group(3)), body
                    )
                self._reply(200, b"{}", {"Content-Type": "application/json"}, body)

            def _token(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

            def _repo(self, repo_id: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None or (repo.private and self._token() not in repo.tokens):
                    self._error(401 if self._token() is None else 404, "RepoNotFound", "Repository not found")
                    return None
                return repo

            def _model_info(self, repo_id: str, revision: str) -> None:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                sha = repo.sha_for(revision)
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                files = repo.commits[sha]
                siblings = []
                for name, data in sorted(files.items()):
                    sha256, blob = repo.digests[id(data)]
                    sibling = {"rfilename": name, "size": len(data), "blobId": blob}
                    if name.endswith(LFS_SUFFIXES):
                        sibling["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": 134}
                    siblings.append(sibling)
                data = {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "pipeline_tag": repo.pipeline_tag,
                    "tags": [],
                    "siblings": siblings,
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "createdAt": "2026-01-01T00:00:00.000Z",
                }
                self._reply(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

            def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                if repo.gated and self._token() not in repo.tokens:
                    status = 401 if self._token() is None else 403
                    return self._error(status, "GatedRepo", "Access to this model is restricted")
                sha = repo.sha_for(revision)
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                data = repo.commits[sha].get(filename)
                if data is None:
                    return self._error(404, "EntryNotFound", f"{filename} does not exist")
                lfs = filename.endswith(LFS_SUFFIXES)
                etag = repo.digests[id(data)][0 if lfs else 1]
                headers = {
                    "X-Repo-Commit": sha,
                    "ETag": f'"{etag}"',
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }
                if lfs:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
                ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                status, part = 200, data
                if ranged:
                    start = int(ranged.group(1))
                    end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
                    status, part = 206, memoryview(data)[start : end + 1]  # no copy of a 64 MiB range
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                if self.spoiled is not None and body:
                    if self.spoiled.corrupt:
                        part = bytes(b ^ 0xFF for b in part[:64]) + part[64:]
                    if self.spoiled.truncate_after is not None:
                        self.send_response(status)
                        for k, v in headers.items():
                            self.send_header(k, v)
                        self.send_header("Content-Length", str(len(part)))
                        self.end_headers()
                        self.wfile.write(part[: self.spoiled.truncate_after])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                self._reply(status, part, headers, body)

        return Handler
