"""The router in PD mode, measured with the gateway itself (the Rust router of the sglang-router 0.3.2 wheel),
started with the arguments sgldeploy renders for the committed disaggregated stack, in front of loopback prefill
and decode stand-ins that follow SGLang's side of the protocol: the gateway sends each request to a prefill and a
decode replica at once, with the prefill replica's bootstrap address and a room both share, waits for the prefill,
and answers with the decode replica's response, streamed as it comes. Kubernetes discovery cannot run here, so its
flags are swapped for `--prefill URL PORT` (the port the prefill pods' annotation gives the router) and
`--decode URL`."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from sgldeploy.builders import router

from .test_router_runtime import (
    CHAT,
    KEY,
    RUN,
    _Handler,
    free_ports,
    http,
    ready,
    serving,
    set_flag,
    start,
    without_discovery,
)
from .test_sglang_args import SGLANG_PYTHON
from .variants import rendered_variants

STREAMED = ["Hel", "lo", " world"]


class Role(ThreadingHTTPServer):
    """A prefill or decode replica's HTTP side: SGLang's key rule, server facts for registration, and completions
    recorded with their headers. Decode streams STREAMED and sends all but the first chunk only once the client
    has the first (`first_chunk_seen`), so a gateway that buffered the stream would never deliver it early."""

    daemon_threads = True

    def __init__(self, role: str, status: int = 200) -> None:
        self.role, self.status = role, status
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.first_chunk_seen = threading.Event()
        self.streamed_early: bool | None = None
        super().__init__(("127.0.0.1", 0), _RoleHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RoleHandler(_Handler):
    """The plain stand-in's key rule and server facts (GET); completions as each role answers them."""

    server: Role  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self._refused():
            return
        self.server.bodies.append(body)
        self.server.auth.append(self.headers.get("Authorization"))
        if self.server.status != 200:
            self._json({"error": {"message": f"{self.server.role} failed"}}, self.server.status)
        elif self.server.role == "decode" and body.get("stream"):
            self._stream()
        else:
            content = f"from {self.server.role}"
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
            self._json({"id": self.server.role, "object": "chat.completion", "choices": [choice]})

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, token in enumerate(STREAMED):
            delta = {
                "id": "decode",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": token}}],
            }
            self._chunk(f"data: {json.dumps(delta)}\n\n")
            if i == 0:
                self.server.streamed_early = self.server.first_chunk_seen.wait(timeout=10)
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def role(name: str, status: int = 200) -> AbstractContextManager[Role]:
    return serving(Role(name, status))


def rendered() -> tuple[list[str], str]:
    """The PD router's arguments and the prefill pods' bootstrap-port annotation, as the committed stack renders
    them."""
    plan = rendered_variants()["disaggregated"]
    workloads = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in plan.recording.resources
        if r.type == "kubernetes:apps/v1:Deployment"
    }
    [c] = workloads["llama-70b-rag-router"]["spec"]["template"]["spec"]["containers"]
    annotations = workloads["llama-70b-rag-prefill"]["spec"]["template"]["metadata"]["annotations"]
    return c["args"], annotations["sglang.ai/bootstrap-port"]


@contextmanager
def pd_gateway(prefill: Role, decodes: list[Role]) -> Iterator[str]:
    if not Path(SGLANG_PYTHON).exists():
        pytest.fail(f"sglang-router is not installed at {SGLANG_PYTHON}; run the tests with `make test`")
    args, bootstrap_port = rendered()
    args = [a.replace(f"$({router.API_KEY_ENV})", KEY) for a in without_discovery(args)]
    args += ["--prefill", prefill.url, bootstrap_port, *[x for d in decodes for x in ("--decode", d.url)]]
    proc = None
    for _ in range(3):
        port, metrics = free_ports(2)
        argv = set_flag(
            set_flag(set_flag(args, "--host", "127.0.0.1"), "--port", str(port)),
            "--prometheus-port",
            str(metrics),
        )
        proc = start([SGLANG_PYTHON, str(RUN), *argv], f"http://127.0.0.1:{port}")
        if proc:
            break
    assert proc is not None, "no free ports for the gateway after 3 tries"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def pd(prefill_status: int = 200) -> Iterator[tuple[str, Role, list[Role]]]:
    """The gateway in front of one prefill and two decode stand-ins (its power-of-two decode policy wants two)."""
    with ExitStack() as stack:
        prefill = stack.enter_context(role("prefill", prefill_status))
        decodes = [stack.enter_context(role("decode")) for _ in range(2)]
        base = stack.enter_context(pd_gateway(prefill, decodes))
        assert ready(base, timeout=30) == 200
        yield base, prefill, decodes


def test_each_request_goes_to_both_roles_with_one_bootstrap_room_and_the_decode_answer_comes_back():
    with pd() as (base, prefill, decodes):
        _, bootstrap_port = rendered()
        status, _, text = http(f"{base}/v1/chat/completions", CHAT, key=KEY)
        assert status == 200 and json.loads(text)["choices"][0]["message"]["content"] == "from decode"
        [sent_prefill] = prefill.bodies
        [sent_decode] = [b for d in decodes for b in d.bodies]
        assert sent_prefill["bootstrap_room"] == sent_decode["bootstrap_room"]
        assert sent_prefill["bootstrap_host"] == sent_decode["bootstrap_host"] == "127.0.0.1"
        assert sent_prefill["bootstrap_port"] == sent_decode["bootstrap_port"] == int(bootstrap_port)
        assert sent_prefill["messages"] == sent_decode["messages"] == CHAT["messages"]
        assert prefill.auth == [f"Bearer {KEY}"] and [a for d in decodes for a in d.auth] == [f"Bearer {KEY}"]


def test_the_decode_stream_reaches_the_client_as_it_is_generated():
    with pd() as (base, _, decodes):
        request = urllib.request.Request(
            f"{base}/v1/chat/completions",
            data=json.dumps({**CHAT, "stream": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        )
        tokens = []
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                tokens.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
                for d in decodes:
                    d.first_chunk_seen.set()
        assert tokens == STREAMED
        [early] = [d.streamed_early for d in decodes if d.streamed_early is not None]
        assert early is True  # the client had the first chunk before the decode replica sent the rest


def test_without_the_key_no_role_is_reached():
    with pd() as (base, prefill, decodes):
        assert http(f"{base}/v1/chat/completions", CHAT)[0] == 401
        assert prefill.bodies == [] and all(d.bodies == [] for d in decodes)


def test_a_failed_prefill_fails_the_request_whatever_decode_answers():
    with pd(prefill_status=503) as (base, _, _):
        status, _, text = http(f"{base}/v1/chat/completions", CHAT, key=KEY)
        assert status >= 500 and "from decode" not in text
