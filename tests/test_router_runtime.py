"""The router's behaviour, measured with the gateway itself: the Rust router inside the sglang-router 0.3.2 wheel
(the release the router image pins), started with the arguments sgldeploy renders, in front of a loopback SGLang
stand-in. Kubernetes discovery cannot run here, so its flags are swapped for `--worker-urls`."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import pytest

from sgldeploy.builders import router
from sgldeploy.models.lock import read_lock
from sgldeploy.models.sizing import size
from sgldeploy.spec.validate import parse_stack

from . import read_only_root
from .conftest import LOCK, deployment
from .test_sglang_args import SGLANG_PYTHON

RUN = Path(__file__).parent / "contract" / "router_run.py"
ServerT = TypeVar("ServerT", bound=ThreadingHTTPServer)
KEY = "test-api-key-0123456789"
DISCOVERY = {"--service-discovery": 0, "--service-discovery-namespace": 1, "--service-discovery-port": 1}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def http(
    url: str, body: dict | None = None, key: str | None = None, timeout: float = 10
) -> tuple[int, dict, str]:
    """(status, headers with lower-case names, body text); an HTTP error status is a result, not an exception."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read().decode(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all are held open together, so no two can be the same."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


OPEN_PATHS = (
    "/health",
    "/ready",
    "/metrics",
)  # what SGLang 0.5.23 serves without the key (srt/utils/auth.py)


class Worker(ThreadingHTTPServer):
    """An SGLang stand-in with SGLang's key rule (every path but OPEN_PATHS needs `Bearer KEY`): answers GETs with
    server facts and each completion after `delay` seconds, recording the Authorization header it was sent."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay, self.auth, self.bodies = delay, [], []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Worker

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> bool:
        if self.path.startswith(OPEN_PATHS) or self.headers.get("Authorization") == f"Bearer {KEY}":
            return False
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_GET(self) -> None:
        if not self._refused():
            self._json(
                {"model_path": "m", "tokenizer_path": "m", "is_generation": True, "data": [{"id": "m"}]}
            )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._refused():
            return
        self.server.auth.append(self.headers.get("Authorization"))
        self.server.bodies.append(json.loads(body or b"{}"))
        time.sleep(self.server.delay)
        choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        self._json({"id": "x", "object": "chat.completion", "choices": [choice]})


def rendered_args(max_concurrency: int, max_replicas: int) -> list[str]:
    raw = deployment(
        serving={"context_length": 4096, "max_concurrency": max_concurrency},
        scaling={"min_replicas": 1, "max_replicas": max_replicas},
        endpoint={"exposure": "internal", "algorithm": "cache-aware"},
    )
    dep = parse_stack(None, [raw]).deployments[0]
    model = read_lock(LOCK)[f"{dep.model.repo}@{dep.model.revision}"]
    return router.args(dep, size(dep, model), "llm", multi_node=False)


def without_discovery(args: list[str]) -> list[str]:
    out, skip = [], 0
    for i, arg in enumerate(args):
        if skip:
            skip -= 1
        elif arg in DISCOVERY:
            skip = DISCOVERY[arg]
        elif arg in ("--selector", "--prefill-selector", "--decode-selector"):
            skip = next((j for j, a in enumerate(args[i + 1 :]) if a.startswith("--")), 0)
        else:
            out.append(arg)
    return out


def set_flag(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def start(argv: list[str], base: str) -> subprocess.Popen[bytes] | None:
    """The gateway answering on `base`; None when its port was taken meanwhile (the caller picks others)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            error = proc.stderr.read().decode() if proc.stderr else ""
            if "Address already in use" in error:
                return None
            raise AssertionError(error[-2000:])
        try:
            http(f"{base}/liveness", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the gateway did not answer on {base} within 30 s")


@contextmanager
def gateway(
    worker_url: str, max_concurrency: int = 2, max_replicas: int = 1, read_only: bool = False
) -> Iterator[str]:
    """The gateway on free loopback ports; `read_only` runs it as its pod does, with a read-only root."""
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"sglang-router is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    rendered = without_discovery(rendered_args(max_concurrency, max_replicas))
    rendered = [a.replace(f"$({router.API_KEY_ENV})", KEY) for a in rendered] + ["--worker-urls", worker_url]
    proc = None
    for _ in range(3):
        port, metrics = free_ports(2)
        args = set_flag(set_flag(rendered, "--host", "127.0.0.1"), "--port", str(port))
        argv = [SGLANG_PYTHON, str(RUN), *set_flag(args, "--prometheus-port", str(metrics))]
        if read_only:
            env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9"}
            argv = read_only_root.command(argv, [], env)
        proc = start(argv, f"http://127.0.0.1:{port}")
        if proc:
            break
    assert proc is not None, "no free ports for the gateway after 3 tries"
    try:
        yield f"http://127.0.0.1:{port}"
        assert "smg_http_requests_total" in http(f"http://127.0.0.1:{metrics}/metrics", timeout=5)[2]
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """The stand-in answering on its loopback port, from a thread, until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def worker(delay: float = 0.0) -> AbstractContextManager[Worker]:
    return serving(Worker(delay))


def ready(base: str, timeout: float = 20) -> int:
    deadline, status = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        status = http(f"{base}/readiness", timeout=2)[0]
        if status == 200:
            return status
        time.sleep(0.3)
    return status


def test_clients_need_the_key_and_the_replica_receives_it():
    """With a read-only root filesystem, as the router's pod runs. The replica enforces SGLang's key rule, so
    readiness also shows that the router's health checks and worker queries get through."""
    with worker() as w, gateway(f"http://127.0.0.1:{w.server_address[1]}", read_only=True) as base:
        assert ready(base) == 200
        assert http(f"{base}/v1/chat/completions", CHAT)[0] == 401
        status, _, text = http(f"{base}/v1/chat/completions", CHAT, key=KEY)
        assert status == 200 and json.loads(text)["choices"][0]["message"]["content"] == "hi"
        assert w.auth == [f"Bearer {KEY}"]  # the key the replica's own --api-key checks


def test_a_lora_adapter_chosen_by_model_name_reaches_the_replica_as_sent():
    """Every replica loads every adapter, so the router may send any request anywhere: what matters is that
    `model: "<served name>:<adapter>"`, SGLang's way to pick one, arrives unchanged."""
    with worker() as w, gateway(f"http://127.0.0.1:{w.server_address[1]}") as base:
        assert ready(base) == 200
        status, _, _ = http(f"{base}/v1/chat/completions", {**CHAT, "model": "m:support"}, key=KEY)
        assert status == 200
        assert [b["model"] for b in w.bodies] == ["m:support"]


def test_past_the_burst_clients_get_429_at_once_without_retry_after():
    """2 running requests per replica, 1 replica: a burst of 5 long requests admits 2, the rest get 429 at once."""
    with worker(delay=3.0) as w, gateway(f"http://127.0.0.1:{w.server_address[1]}", 2, 1) as base:
        assert ready(base) == 200

        def call(_: int) -> tuple[int, float, dict]:
            start = time.monotonic()
            status, headers, _ = http(f"{base}/v1/chat/completions", CHAT, key=KEY, timeout=30)
            return status, time.monotonic() - start, headers

        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(call, range(5)))
    codes = sorted(code for code, _, _ in results)
    assert codes == [200, 200, 429, 429, 429], results
    rejected = [(seconds, headers) for code, seconds, headers in results if code == 429]
    assert all(seconds < 1.0 for seconds, _ in rejected)  # not after a timeout
    assert all("retry-after" not in headers for _, headers in rejected)  # as README says


def test_the_router_is_not_ready_without_a_healthy_replica():
    """So the load balancer and the HTTP add-on's interceptor wait for a replica (the readiness probe)."""
    with gateway(f"http://127.0.0.1:{free_ports(1)[0]}") as base:
        time.sleep(2)
        status, _, text = http(f"{base}/readiness", timeout=2)
        assert status == 503 and "healthy workers" in text
        assert http(f"{base}/liveness", timeout=2)[0] == 200


def test_the_stand_in_applies_sglangs_own_key_rule():
    """The worker above refuses what SGLang 0.5.23 refuses: its auth decision, asked in the SGLang virtualenv."""
    probe = (
        "import json, sys\n"
        "from sglang.srt.utils.auth import AuthLevel, decide_request_auth\n"
        "out = {p: decide_request_auth(method='GET', path=p, authorization_header=None, api_key='k',"
        " admin_api_key=None, auth_level=AuthLevel.NORMAL).allowed for p in json.loads(sys.argv[1])}\n"
        "print(json.dumps(out))\n"
    )
    paths = ["/health", "/health_generate", "/ready", "/metrics", "/model_info", "/server_info", "/v1/models"]
    done = subprocess.run(
        [SGLANG_PYTHON, "-c", probe, json.dumps(paths)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {p: p.startswith(OPEN_PATHS) for p in paths}
