"""A loopback OpenAI-compatible server whose latency, errors, auth and admission the test sets: streamed chat
completions as SGLang 0.5.23 streams them (a role chunk, one chunk per token, a usage chunk with
`stream_options.include_usage`, then `[DONE]`), and SGLang's key rule (every path but /health, /ready and
/metrics needs `Bearer KEY`)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPEN_PATHS = ("/health", "/ready", "/metrics")
TEMPLATE_TOKENS = 7  # what a chat template adds to the prompt's words, in the stand-in's count


@dataclass
class Behaviour:
    ttft: float = 0.2  # seconds from the request to the first token
    itl: float = 0.02  # seconds between tokens
    key: str | None = "test-api-key-0123456789"
    model: str = "m"
    fail_every: int = 0  # every n-th completion answers 500 (0: none)
    admit: int = 0  # completions in flight past which a request gets 429 at once (0: no limit)
    overload_status: int = 429
    bucket: int = 0  # the router's admission: bursts of this many, refilled at this many a second (0: none)
    cold: float = 0.0  # the first completion waits this much more (a replica starting from zero)
    served: list[dict] = field(default_factory=list)  # each completion's body, as received


class StandIn(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of connections at once, as a server's listen backlog takes them

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.in_flight = 0
        self.count = 0
        self.tokens, self.filled = float(behaviour.bucket), time.monotonic()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self._one_request()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> bool:
        key = self.server.behaviour.key
        if (
            key is None
            or self.path.startswith(OPEN_PATHS)
            or self.headers.get("Authorization") == f"Bearer {key}"
        ):
            return False
        self._send(401, {"error": "Unauthorized"})
        return True

    def do_GET(self) -> None:
        if self._refused():
            return
        b = self.server.behaviour
        # /v1/models as SGLang answers it, and the server facts the router's health checks read.
        self._send(
            200,
            {
                "object": "list",
                "data": [{"id": b.model, "object": "model"}],
                "model_path": b.model,
                "is_generation": True,
            },
        )

    def _one_request(self) -> None:
        """One request per connection (as the client makes them): no wait for a next one it never sends."""
        self.send_header("Connection", "close")
        self.close_connection = True

    def _chunk(self, event: dict | str) -> None:
        data = (f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        started = time.perf_counter()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self._refused():
            return
        s, b = self.server, self.server.behaviour
        with s.lock:
            s.count += 1
            n = s.count
            if b.bucket:
                now = time.monotonic()
                s.tokens = min(b.bucket, s.tokens + (now - s.filled) * b.bucket)
                s.filled = now
            over = (b.admit and s.in_flight >= b.admit) or (b.bucket and s.tokens < 1)
            if b.bucket and not over:
                s.tokens -= 1
            if not over:
                s.in_flight += 1
        if over:
            self._send(b.overload_status, {"error": "too many requests"})
            return
        try:
            b.served.append(body)
            if b.fail_every and n % b.fail_every == 0:
                self._send(500, {"error": "internal"})
                return
            self._stream(body, started + (b.cold if n == 1 else 0.0))
        finally:
            with s.lock:
                s.in_flight -= 1

    def _stream(self, body: dict, started: float) -> None:
        b = self.server.behaviour
        words = len(body["messages"][-1]["content"].split())
        # SGLang reads max_completion_tokens first (the router rewrites max_tokens to it), then max_tokens.
        tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        usage = {"prompt_tokens": words + TEMPLATE_TOKENS, "completion_tokens": tokens}
        if not body.get("stream"):
            time.sleep(max(0.0, started + b.ttft + (tokens - 1) * b.itl - time.perf_counter()))
            message = {"role": "assistant", "content": " ".join(f"t{i}" for i in range(tokens))}
            choice = {"index": 0, "message": message, "finish_reason": "length"}
            self._send(200, {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})
            return
        self.send_response(200)
        self._one_request()
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": "x", "object": "chat.completion.chunk", "model": b.model}
        self._chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for i in range(tokens):
            due = started + b.ttft + i * b.itl  # on a fixed clock: no drift from sleeps overshooting
            time.sleep(max(0.0, due - time.perf_counter()))
            self._chunk({**base, "choices": [{"index": 0, "delta": {"content": f" t{i}"}}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self._chunk({**base, "choices": [], "usage": usage})
        self._chunk("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
