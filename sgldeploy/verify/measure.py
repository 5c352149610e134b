"""Measure an OpenAI-compatible endpoint against a deployment's latency targets: streamed chat completions of
the workload's shape at a fixed concurrency, and the endpoint's contract (auth, model name, admission).

Standard library only: the same file runs in the serving image from a ConfigMap (the in-cluster verify Job,
sgldeploy/builders/verify_job.py) and in `sgldeploy verify`. SGLang 0.5.23's own client
(`sglang.benchmark.serving`) needs a tokenizer and the Hub (or a local copy of the model's files) to build its
prompts, reports no failed requests or HTTP statuses, and stops when every request fails, which is what a
contract check must survive; so this measures the same figures (TTFT, ITL per streamed chunk, TPOT, goodput as
`--goodput` defines it) on its own.

Prompts are words drawn at random per request, so no two share a prefix for the radix cache to reuse; a first
request calibrates words to tokens from the server's own `usage.prompt_tokens`. `ignore_eos` (SGLang's
sampling parameter) makes every answer `output_tokens` long.

Exit codes: 0 the SLO holds, 1 it is missed (or a contract check fails), 2 bad input or an unreachable endpoint.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

EXIT_HOLDS, EXIT_MISSED, EXIT_INVALID = 0, 1, 2
OBJECTIVE = 0.95  # the targets are p95s: a failed request counts against the same 5% budget
WORDS = (
    "river mountain signal garden copper lantern orbit harbor meadow pixel canyon ember falcon glacier "
    "island jasmine kernel lattice marble nectar oyster prism quartz ribbon saffron timber umbra velvet "
    "willow yonder zephyr anchor beacon cedar delta echo fjord grove haven iris jungle kiln lagoon mosaic "
    "nimbus opal pepper quiver raven sable thistle ultra vortex wander xenon yarrow zenith"
).split()
CALIBRATION_WORDS = 200


class Unreachable(Exception):
    """The endpoint cannot be reached at all (connection refused, DNS, TLS): exit 2, not a missed SLO."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme://host[:port], no path
    api_key: str | None
    model: str
    timeout_s: float = 600.0

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname or "", parts.port, timeout=timeout or self.timeout_s)

    def headers(self, with_key: bool = True) -> dict[str, str]:
        out = {"Content-Type": "application/json"}
        if with_key and self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out


@dataclass
class Outcome:
    """One request: its HTTP status (0: no response), and for a streamed answer when each chunk came."""

    status: int = 0
    started: float = 0.0
    chunks: list[float] = field(default_factory=list)  # arrival of each chunk carrying generated text
    done: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.chunks) and not self.error

    @property
    def ttft(self) -> float:
        return self.chunks[0] - self.started

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunks, self.chunks[1:], strict=False)]

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunks)

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first, as SGLang's histogram and its benchmark define it."""
        n = self.output_tokens
        return (self.done - self.chunks[0]) / (n - 1) if n > 1 else None


def _request(
    endpoint: Endpoint,
    method: str,
    path: str,
    body: Any = None,
    with_key: bool = True,
    timeout: float = 30,
) -> tuple[int, bytes]:
    conn = endpoint.connection(timeout=timeout)
    try:
        conn.request(method, path, None if body is None else json.dumps(body), endpoint.headers(with_key))
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as err:
        raise Unreachable(f"{endpoint.url}: {err}") from None
    finally:
        conn.close()


def stream_chat(endpoint: Endpoint, prompt: str, max_tokens: int) -> Outcome:
    """One streamed chat completion, timed chunk by chunk."""
    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = Outcome(started=time.perf_counter())
    conn = endpoint.connection()
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), endpoint.headers())
        response = conn.getresponse()
        out.status = response.status
        if response.status != 200:
            response.read()
            out.done = time.perf_counter()
            return out
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                out.error = str(event["error"])[:200]
                break
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                out.chunks.append(time.perf_counter())
            if event.get("usage"):
                out.prompt_tokens = event["usage"].get("prompt_tokens")
                out.completion_tokens = event["usage"].get("completion_tokens")
        out.done = time.perf_counter()
        if not out.chunks and not out.error:
            out.error = "no generated text in the stream"
    except (OSError, ValueError, http.client.HTTPException) as err:
        out.error = f"{err.__class__.__name__}: {err}"[:200]
    finally:
        conn.close()
    return out


def prompt_of(words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def complete(endpoint: Endpoint, prompt: str, max_tokens: int, with_key: bool = True) -> Outcome:
    """One completion, not streamed: its answer carries `usage` whatever sits between (the router drops
    `stream_options`, so a stream through it reports none)."""
    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    out = Outcome(started=time.perf_counter())
    try:
        out.status, raw = _request(
            endpoint, "POST", "/v1/chat/completions", body, with_key, endpoint.timeout_s
        )
    except Unreachable as err:
        out.error = str(err)
        return out
    out.done = time.perf_counter()
    if out.status == 200:
        try:
            usage = json.loads(raw).get("usage") or {}
        except (ValueError, AttributeError):
            usage = {}
        out.chunks = [out.done]
        out.prompt_tokens = usage.get("prompt_tokens")  # what calibration reads
    return out


def calibrate(endpoint: Endpoint, input_tokens: int, rng: random.Random) -> tuple[int, Outcome]:
    """Words per prompt for `input_tokens` prompt tokens, from the server's counts for two prompts (a line through
    them: the chat template's tokens, and tokens per word); the first outcome too (from zero replicas: the time
    to a first replica's first, and only, token)."""
    first = complete(endpoint, prompt_of(CALIBRATION_WORDS, rng), 1)
    if first.status == 0:
        raise Unreachable(first.error)
    second = complete(endpoint, prompt_of(2 * CALIBRATION_WORDS, rng), 1) if first.ok else first
    if not (first.prompt_tokens and second.prompt_tokens and second.prompt_tokens > first.prompt_tokens):
        return input_tokens, first  # no usage reported: a word a token
    per_word = (second.prompt_tokens - first.prompt_tokens) / CALIBRATION_WORDS
    template = first.prompt_tokens - per_word * CALIBRATION_WORDS
    return max(1, round((input_tokens - template) / per_word)), first


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Targets:
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    return {name: percentile(values, q) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def summarize(outcomes: Sequence[Outcome], wall_s: float, targets: Targets) -> dict[str, Any]:
    """The load's figures: TTFT and ITL p50/p95/p99, tokens/s per request and in total, errors by status,
    goodput (requests within both targets, as SGLang's benchmark counts it)."""
    ok = [o for o in outcomes if o.ok]
    ttfts = [o.ttft for o in ok]
    itls = [gap for o in ok for gap in o.itls]
    per_request = [
        (o.output_tokens - 1) / (o.done - o.chunks[0])
        for o in ok
        if o.output_tokens > 1 and o.done > o.chunks[0]
    ]
    errors = Counter(str(o.status) if o.status else "no response" for o in outcomes if not o.ok)

    def good(o: Outcome) -> bool:
        tpot = o.tpot
        return (
            o.ok
            and (targets.ttft_p95_seconds is None or o.ttft <= targets.ttft_p95_seconds)
            and (targets.itl_p95_seconds is None or (tpot is not None and tpot <= targets.itl_p95_seconds))
        )

    within = sum(good(o) for o in outcomes)
    tokens = sum(o.output_tokens for o in ok)
    prompts = [o.prompt_tokens for o in ok if o.prompt_tokens]
    return {
        "requests": len(outcomes),
        "succeeded": len(ok),
        "errors": dict(sorted(errors.items())),
        "wall_seconds": wall_s,
        "ttft_seconds": _spread(ttfts),
        "itl_seconds": _spread(itls),
        "prompt_tokens_mean": sum(prompts) / len(prompts) if prompts else None,
        "output_tokens_mean": tokens / len(ok) if ok else None,
        "output_tokens_per_second_per_request": sum(per_request) / len(per_request) if per_request else None,
        "output_tokens_per_second": tokens / wall_s if wall_s > 0 else None,
        "goodput": {
            "requests_per_second": within / wall_s if wall_s > 0 else None,
            "share": within / len(outcomes) if outcomes else None,
        },
    }


def run_load(
    endpoint: Endpoint, words: int, output_tokens: int, concurrency: int, requests: int, seed: int
) -> tuple[list[Outcome], float]:
    """`requests` streamed requests, `concurrency` in flight at a time."""
    left = iter(range(requests))
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def worker(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        while True:
            with lock:
                if next(left, None) is None:
                    return
            outcome = stream_chat(endpoint, prompt_of(words, rng), output_tokens)
            with lock:
                outcomes.append(outcome)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return outcomes, time.perf_counter() - start


def check_auth(endpoint: Endpoint) -> dict[str, Any]:
    """A completion without the key. (Not /v1/models: the router answers that one itself, without the key.)"""
    status = complete(endpoint, prompt_of(8, random.Random(0)), 1, with_key=False).status
    return {"check": "401 without the key", "passed": status == 401, "got": status}


def check_model(endpoint: Endpoint) -> dict[str, Any]:
    status, body = _request(endpoint, "GET", "/v1/models")
    try:
        served = [m.get("id") for m in json.loads(body).get("data", [])] if status == 200 else []
    except (ValueError, AttributeError):
        served = []
    return {
        "check": f"{endpoint.model} in /v1/models",
        "passed": endpoint.model in served,
        "got": served if status == 200 else status,
    }


def check_admission(endpoint: Endpoint, admitted: int, fast_s: float = 5.0) -> dict[str, Any]:
    """Twice the router's burst at once: past it, requests get 429 at once, never a timeout."""
    n = 2 * admitted
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(n)
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait()
        o = stream_chat(endpoint, prompt_of(8, random.Random(i)), 1)
        with lock:
            outcomes.append(o)

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    refused = [o for o in outcomes if o.status == 429]
    slowest = max((o.done - o.started for o in refused), default=0.0)
    other = Counter(o.status for o in outcomes if o.status not in (200, 429))
    passed = bool(refused) and not other and slowest <= fast_s
    return {
        "check": f"429 past the admission limit ({admitted} at once)",
        "passed": passed,
        "got": {"sent": n, "429": len(refused), "other": dict(other), "slowest_429_seconds": slowest},
        "fast_seconds": fast_s,
    }


@dataclass(frozen=True)
class Plan:
    """What the plan models for the deployment, to show beside the measurement (all optional)."""

    ttft_seconds: float | None = None
    itl_seconds: float | None = None
    output_tokens_per_second_per_request: float | None = None
    hourly_usd: float | None = None  # of the replicas measured
    replicas: int | None = None
    usd_per_million_output_tokens: float | None = None
    cold_start_seconds: float | None = None


@dataclass(frozen=True)
class Settings:
    input_tokens: int
    output_tokens: int
    concurrency: int
    requests: int
    targets: Targets
    admitted: int | None = None  # the router's burst; None: no admission check
    from_zero: bool = False  # the deployment may be at zero: time the first request apart
    seed: int = 0


def measure(endpoint: Endpoint, s: Settings, plan: Plan | None = None) -> dict[str, Any]:
    """The whole verification of one endpoint: contract checks, then the load."""
    checks = []
    rng = random.Random(s.seed)
    words, first = calibrate(endpoint, s.input_tokens, rng)
    if first.status == 401 and endpoint.api_key:
        checks.append({"check": "the key is accepted", "passed": False, "got": 401})
    if endpoint.api_key:
        checks.append(check_auth(endpoint))
    checks.append(check_model(endpoint))
    outcomes, wall = run_load(endpoint, words, s.output_tokens, s.concurrency, s.requests, s.seed)
    result = summarize(outcomes, wall, s.targets)
    if s.from_zero:
        result["first_token_from_zero_seconds"] = first.ttft if first.ok else None
    if s.admitted:
        checks.append(check_admission(endpoint, s.admitted))
    price = plan.hourly_usd if plan else None
    rate = result["output_tokens_per_second"]
    result["usd_per_million_output_tokens"] = price / (rate * 3600) * 1e6 if price and rate else None
    result["checks"] = checks
    result["settings"] = {
        **asdict(s),
        "words_per_prompt": words,
        "url": endpoint.url,
        "model": endpoint.model,
    }
    result["plan"] = asdict(plan) if plan else None
    result["verdict"] = verdict(result, s.targets)
    return result


def verdict(result: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Each target's p95 against it (a failed request counts over it), the failed share against the same
    budget, and every contract check."""
    reasons = []
    n, ok = result["requests"], result["succeeded"]
    for key, name in (("ttft_p95_seconds", "ttft_seconds"), ("itl_p95_seconds", "itl_seconds")):
        target = getattr(targets, key)
        p95 = result[name]["p95"]
        if target is not None and (p95 is None or p95 > target):
            reasons.append(f"{key.removesuffix('_seconds')} {_s(p95)} > {target:g} s")
    if n and (n - ok) / n > 1 - OBJECTIVE:
        reasons.append(f"{n - ok} of {n} requests failed (more than {100 * (1 - OBJECTIVE):g}%)")
    reasons += [f"check failed: {c['check']} (got {c['got']})" for c in result["checks"] if not c["passed"]]
    return {"holds": not reasons, "reasons": reasons}


def compare(canary: dict[str, Any], stable: dict[str, Any], margin_percent: float) -> list[str]:
    """Where the canary measures worse than the stable commit by more than the margin (p95 TTFT, ITL)."""
    worse = []
    for name in ("ttft_seconds", "itl_seconds"):
        c, s = canary[name]["p95"], stable[name]["p95"]
        if c is not None and s is not None and c > s * (1 + margin_percent / 100):
            worse.append(
                f"canary {name.split('_')[0]} p95 {_s(c)} is more than {margin_percent:g}% over stable's {_s(s)}"
            )
    return worse


def _s(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3g} s"


def _n(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def report_lines(result: dict[str, Any], title: str) -> list[str]:
    """The measurement beside the plan's model, as text (and, joined, as markdown)."""
    plan = result.get("plan") or {}
    s = result["settings"]
    lines = [
        f"{title}: {s['url']} ({s['model']})",
        f"  load       {result['requests']} streamed requests, {s['concurrency']} at a time, prompts of "
        f"{_n(result['prompt_tokens_mean'], 0)} tokens (workload {s['input_tokens']}), answers of "
        f"{_n(result['output_tokens_mean'], 0)} (workload {s['output_tokens']}), in {result['wall_seconds']:.1f} s",
    ]
    rows = (
        ("TTFT", result["ttft_seconds"], plan.get("ttft_seconds"), s["targets"]["ttft_p95_seconds"]),
        ("ITL", result["itl_seconds"], plan.get("itl_seconds"), s["targets"]["itl_p95_seconds"]),
    )
    for name, spread, modelled, target in rows:
        lines.append(
            f"  {name:<10} p50 {_s(spread['p50'])} · p95 {_s(spread['p95'])} · p99 {_s(spread['p99'])}"
            f"  (target p95 {_s(target) if target else 'none'}; plan {_s(modelled)})"
        )
    lines.append(
        f"  tokens/s   {_n(result['output_tokens_per_second_per_request'], 2)} per request "
        f"(plan {_n(plan.get('output_tokens_per_second_per_request'), 2)}), "
        f"{_n(result['output_tokens_per_second'])} in total"
    )
    g = result["goodput"]
    lines.append(
        f"  goodput    {_n(g['requests_per_second'], 2)} requests/s within the targets "
        f"({_n(None if g['share'] is None else 100 * g['share'], 1)}% of requests)"
    )
    errors = ", ".join(f"{k}: {v}" for k, v in result["errors"].items()) or "none"
    lines.append(f"  errors     {errors}")
    if result.get("usd_per_million_output_tokens") is not None:
        lines.append(
            f"  cost       ${result['usd_per_million_output_tokens']:.2f} per 1M output tokens at the measured "
            f"rate on {plan.get('replicas')} replica(s) at ${plan.get('hourly_usd'):.2f}/h "
            f"(plan ${_n(plan.get('usd_per_million_output_tokens'), 2)} at full batch)"
        )
    if "first_token_from_zero_seconds" in result:
        lines.append(
            f"  from zero  first token {_s(result['first_token_from_zero_seconds'])} after the first request "
            f"(plan's cold start {_n(plan.get('cold_start_seconds'), 0)} s)"
        )
    for c in result["checks"]:
        lines.append(f"  check      {'ok  ' if c['passed'] else 'FAIL'} {c['check']}")
    v = result["verdict"]
    lines.append(
        "  verdict    SLO holds" if v["holds"] else f"  verdict    SLO missed: {'; '.join(v['reasons'])}"
    )
    return lines


def markdown(results: Sequence[tuple[str, dict[str, Any]]], extra: Sequence[str] = ()) -> str:
    body = ["## sgldeploy verify", ""]
    for title, result in results:
        body += ["```", *report_lines(result, title), "```", ""]
    body += [f"- {line}" for line in extra]
    return "\n".join(body).rstrip() + "\n"


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def verify(
    endpoint: Endpoint,
    settings: Settings,
    plan: Plan | None = None,
    stable: Endpoint | None = None,
    margin_percent: float = 10.0,
    out: Callable[[str], None] = print,
) -> tuple[int, list[tuple[str, dict[str, Any]]], list[str]]:
    """Measure (and, with `stable`, the stable commit the same way), print the report; the exit code, the
    results and the canary's comparison."""
    try:
        results = [("canary" if stable else "endpoint", measure(endpoint, settings, plan))]
        if stable:
            results.append(("stable", measure(stable, settings, plan)))
    except Unreachable as err:
        out(f"error: endpoint unreachable: {err}")
        return EXIT_INVALID, [], []
    worse = compare(results[0][1], results[1][1], margin_percent) if stable else []
    for title, result in results:
        for line in report_lines(result, title):
            out(line)
    for line in worse:
        out(f"  canary     {line}")
    holds = results[0][1]["verdict"]["holds"] and not worse
    return (EXIT_HOLDS if holds else EXIT_MISSED), results, worse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="verify", description="measure an endpoint against its SLO")
    p.add_argument("--url", required=True)
    p.add_argument("--stable-url", help="a canary's stable commit, measured the same way")
    p.add_argument("--model", required=True)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", help="the variable holding the API key")
    key.add_argument("--api-key-file", help="the file holding the API key (a mounted Secret)")
    p.add_argument("--input-tokens", type=int, required=True)
    p.add_argument("--output-tokens", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--ttft-p95", type=float)
    p.add_argument("--itl-p95", type=float)
    p.add_argument("--admitted", type=int)
    p.add_argument("--from-zero", action="store_true")
    p.add_argument("--margin-percent", type=float, default=10.0)
    p.add_argument("--timeout-seconds", type=float, default=600.0, help="a request's longest wait")
    p.add_argument("--plan", help="the plan's figures, JSON")
    p.add_argument("--json", help="write the results here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The Job's entry point: every setting on the command line, the key from the environment."""
    a = _parser().parse_args(argv)
    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    if a.api_key_file:
        with open(a.api_key_file, encoding="utf-8") as f:
            key = f.read().strip()
    endpoint = Endpoint(a.url, key, a.model, a.timeout_seconds)
    settings = Settings(
        a.input_tokens,
        a.output_tokens,
        a.concurrency,
        a.requests,
        Targets(a.ttft_p95, a.itl_p95),
        a.admitted,
        a.from_zero,
    )
    plan = Plan(**json.loads(a.plan)) if a.plan else None
    stable = Endpoint(a.stable_url, key, a.model, a.timeout_seconds) if a.stable_url else None
    code, results, worse = verify(endpoint, settings, plan, stable, a.margin_percent)
    if a.json and results:
        write_atomically(a.json, json.dumps({"results": dict(results), "canary_worse": worse}, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
