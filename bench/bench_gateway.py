"""The gateway under a bounded load on loopback: its own overhead per request, requests/s, time to
the first token streamed, and what cross-request batching does for a real PairRanker.

    .venv/bin/python bench/bench_gateway.py [--n 500] [--concurrency 1,8,32] [--local]

Three kinds of process, so that no one's CPU hides in another's figures: this one (the load
generator: C workers, each with an ``httpx.AsyncClient`` of its own, pre-encoded bodies), the
gateway (``llmblend.serve`` under uvicorn on 127.0.0.1, started as ``bench_gateway.py _gateway``)
and a minimal OpenAI-compatible upstream (raw asyncio HTTP/1.1 with keep-alive, ``bench_gateway.py
_upstream``; written here rather than tests/scripted_http.py, whose thread-per-request HTTP/1.0
server would dominate the figures). The upstream answers a fixed text per model at once, or, in
the streaming part, ``--stream-pieces`` pieces ``--stream-gap-ms`` apart (and a non-streamed
answer after the same total time).

Parts:

1. Overhead: 3 backends on the fast upstream, ranker ``longest`` (no model), no fuser; N requests
   at each concurrency C to model ``rank`` (default batching: at once when the ranker is idle,
   gathered while it is busy), ``rank`` with batching off, a proxied backend, and the upstream
   directly (the baseline). Overhead = gateway latency − upstream latency at C=1.
2. Streaming: time to the first content token of ``rank`` (streamed once settled: ≈ the blend's
   time) vs a streamed proxy (pieces relayed as the upstream writes them).
3. Batching: the shipped PairRanker (MiniLM) on runtime ``onnx`` (batched forwards) and
   ``onnx-int8`` (one pair per forward), 4 candidates per request via ``rank``, at concurrency 8,
   batching on (the default: gathered while the ranker is busy, max 16) vs off (max 1); pairs/s
   from ``llmblend.n_forward``.
4. ``--local``: the embedded default config (the packaged llama.cpp models, the shipped ranker),
   fuser none, a few short requests.

Every gateway gets limits well above the load (``max_concurrent`` 2×C, ``max_queue`` 4×C) and
backends with ``concurrency`` 2×C (the default of 4 in flight per backend would queue requests
inside the gateway), so errors must be 0; any are counted by status.

Latencies are client-side wall times of successful requests; CPU ms/req is each process's user +
system CPU over the run divided by the requests (``/proc/PID/stat``); RSS is ``/proc/PID/status``
VmRSS (now) and VmHWM (peak) of the gateway process read after the warm-up and after the run
("no growth": both within 256 kB). Figures also go to ``build/bench-gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
JSON_HEADERS = {"content-type": "application/json"}
#: Answer texts for the ranker part: four candidates of different lengths (words), so a pair is a
#: realistic ~150-250 tokens.
SENTENCES = (
    "The sky looks blue because air molecules scatter short wavelengths of sunlight more strongly "
    "than long ones, an effect called Rayleigh scattering. "
    "Blue light is scattered in every direction, so it reaches the eye from all parts of the sky. "
    "Violet is scattered even more, but the sun emits less of it and our eyes are less sensitive "
    "to it. "
    "At sunrise and sunset the light crosses much more air, most of the blue is scattered away, and "
    "the remaining light looks red and orange. "
    "Clouds look white because their droplets are large and scatter all colours about equally. "
    "On the Moon, with no atmosphere, the sky is black even in daylight. "
)
FAST_TEXT = "The quick answer is forty-two, for reasons that fit in one short sentence or two at most."


# ---- the upstream: a minimal OpenAI-compatible server (a child process) ---------------------------


def answer_text(model: str, answers: dict[str, str]) -> str:
    return answers.get(model, FAST_TEXT)


def split_pieces(text: str, n: int) -> list[str]:
    words = text.split(" ")
    n = max(1, min(n, len(words)))
    cuts = np.linspace(0, len(words), n + 1).round().astype(int)
    out = [" ".join(words[a:b]) for a, b in itertools.pairwise(cuts)]
    return [piece + (" " if k < len(out) - 1 else "") for k, piece in enumerate(out)]


async def upstream_main(answers: dict[str, str], pieces: int, gap_s: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = json.loads(await reader.readexactly(length) or b"{}")
                model = str(body.get("model", ""))
                text = answer_text(model, answers)
                if body.get("stream"):
                    await stream_reply(writer, model, text, pieces, gap_s)
                else:
                    if gap_s > 0:
                        await asyncio.sleep(gap_s * pieces)  # as long as the streamed answer takes
                    writer.write(completion_reply(model, text))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    announce_port(port)
    async with server:
        await server.serve_forever()


def completion_reply(model: str, text: str) -> bytes:
    words = len(text.split())
    payload = json.dumps(
        {
            "id": "up",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 8, "completion_tokens": words, "total_tokens": 8 + words},
        }
    ).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


async def stream_reply(
    writer: asyncio.StreamWriter, model: str, text: str, pieces: int, gap_s: float
) -> None:
    def chunk(data: str) -> bytes:
        raw = f"data: {data}\n\n".encode()
        return f"{len(raw):x}\r\n".encode() + raw + b"\r\n"

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": model}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return chunk(json.dumps(body))

    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + event({"role": "assistant"})
    )
    await writer.drain()
    for piece in split_pieces(text, pieces):
        if gap_s > 0:
            await asyncio.sleep(gap_s)
        writer.write(event({"content": piece}))
        await writer.drain()
    writer.write(event({}, "stop") + chunk("[DONE]") + b"0\r\n\r\n")
    await writer.drain()


# ---- the gateway (a child process) ----------------------------------------------------------------


def gateway_main(config_json: str) -> None:
    import uvicorn

    from llmblend.serve.app import ServeSettings, create_app
    from llmblend.serve.config import ServeConfig

    config = ServeConfig.model_validate(json.loads(config_json))
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it every
    # response written in two parts (headers, body) waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    announce_port(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ServeSettings(config)),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            backlog=1024,
        )
    )
    server.run(sockets=[sock])


def announce_port(port: int) -> None:
    """Tell the parent the port on stdout, then send fd 1 to stderr so stdout never fills up."""
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    os.dup2(2, 1)


# ---- process handling (the parent) ----------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_child(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> Child:
    log = logs / f"{name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(HERE), *argv],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    line = proc.stdout.readline().decode()  # the child writes its port first, or dies
    if not line.startswith("PORT "):
        proc.wait(timeout=10)
        raise RuntimeError(f"{name} did not start; see {log}:\n{tail(log)}")
    return Child(name, proc, int(line.split()[1]), log)


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_upstream(
    name: str, logs: Path, answers: dict[str, str], pieces: int = 20, gap_ms: float = 0.0
) -> Child:
    argv = ["_upstream", "--answers", json.dumps(answers), "--pieces", str(pieces), "--gap-ms", str(gap_ms)]
    return start_child(name, argv, logs)


def start_gateway(name: str, logs: Path, config: dict[str, Any], ready_timeout_s: float = 600.0) -> Child:
    import httpx

    child = start_child(name, ["_gateway", "--config", json.dumps(config)], logs)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see {child.log}:\n{tail(child.log)}")
        try:
            ready = httpx.get(f"{child.base}/ready", timeout=2)
            if ready.status_code == 200:
                return child
            if ready.json().get("status") == "failed":
                child.stop()
                raise RuntimeError(f"{name} failed to load: {ready.json().get('error')}")
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"{name} was not ready within {ready_timeout_s:g} s")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# ---- load -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One load run's figures (see the module docstring)."""

    part: str
    setup: str
    model: str
    concurrency: int
    n: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    rps: float = 0.0
    wall_s: float = 0.0
    server_cpu_ms: float | None = None
    upstream_cpu_ms: float | None = None
    client_cpu_ms: float = 0.0
    rss_mib: tuple[float, float] | None = None  # before, after
    hwm_mib: tuple[float, float] | None = None
    growth: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def chat_body(model: str, i: int, *, stream: bool = False, details: bool = False, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "user", "content": f"Question {i}: why does the sky look blue during the day?"}
        ],
        "stream": stream,
        **extra,
    }
    if details:
        body["llmblend"] = {"details": True}
    return json.dumps(body).encode()


def percentiles(latencies: list[float]) -> tuple[float, float, float, float]:
    if not latencies:
        return 0.0, 0.0, 0.0, 0.0
    values = np.asarray(latencies) * 1000
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(values.mean())


_CLIENTS: list[Any] = []


def clients(n: int) -> list[Any]:
    """``n`` clients with one keep-alive connection each, made once and kept between runs (making
    one builds an SSL context: ~20 ms of CPU that would land inside the first requests)."""
    import httpx

    while len(_CLIENTS) < n:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        _CLIENTS.append(httpx.AsyncClient(limits=limits, timeout=600.0))
    return _CLIENTS[:n]


async def close_clients() -> None:
    for client in _CLIENTS:
        await client.aclose()
    _CLIENTS.clear()


async def fire(
    url: str, bodies: list[bytes], concurrency: int, *, on_json=None
) -> tuple[list[float], Counter, float]:
    """POST every body, ``concurrency`` at a time: latencies of 200s, statuses of the rest, wall s.

    Each worker has a client of its own: one shared ``httpx.AsyncClient`` with 32 connections
    costs ~3.4 ms CPU per request here instead of ~1.3 (its pool's bookkeeping grows with the
    connections; encode/httpx#3215), and the load generator, not the gateway, would set the pace."""
    import httpx

    latencies: list[float] = []
    failures: Counter = Counter()
    todo = iter(bodies)

    async def worker(client: httpx.AsyncClient) -> None:
        for body in todo:
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=JSON_HEADERS)
            except httpx.HTTPError as exc:
                failures[type(exc).__name__] += 1
                continue
            if response.status_code != 200:
                failures[str(response.status_code)] += 1
                continue
            latencies.append(time.perf_counter() - started)
            if on_json is not None:
                on_json(response.json())

    pool = clients(concurrency)
    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in pool))
    return latencies, failures, time.perf_counter() - started


async def measured(
    run: Run,
    url: str,
    bodies: list[bytes],
    *,
    gateway: Child | None,
    upstreams: list[Child],
    warmup: list[bytes],
    on_json=None,
) -> Run:
    """Warm up (not counted), then fire ``bodies`` and fill ``run`` with the figures."""
    if warmup:
        await fire(url, warmup, run.concurrency)
    batches = batch_metrics(gateway) if gateway else None
    mem_before = memory_kb(gateway.proc.pid) if gateway else None
    server_cpu = cpu_s(gateway.proc.pid) if gateway else 0.0
    upstream_cpu = sum(cpu_s(u.proc.pid) for u in upstreams)
    client_cpu = time.process_time()
    latencies, failures, wall = await fire(url, bodies, run.concurrency, on_json=on_json)
    run.client_cpu_ms = 1000 * (time.process_time() - client_cpu) / len(bodies)
    if upstreams:
        run.upstream_cpu_ms = 1000 * (sum(cpu_s(u.proc.pid) for u in upstreams) - upstream_cpu) / len(bodies)
    if gateway is not None:
        run.server_cpu_ms = 1000 * (cpu_s(gateway.proc.pid) - server_cpu) / len(bodies)
        mem_after = memory_kb(gateway.proc.pid)
        run.rss_mib = (mem_before["VmRSS"] / 1024, mem_after["VmRSS"] / 1024)
        run.hwm_mib = (mem_before["VmHWM"] / 1024, mem_after["VmHWM"] / 1024)
        d_rss = mem_after["VmRSS"] - mem_before["VmRSS"]
        d_hwm = mem_after["VmHWM"] - mem_before["VmHWM"]
        run.growth = (
            "no growth"
            if d_rss <= 256 and d_hwm <= 256
            else f"RSS {d_rss / 1024:+.1f} MiB, peak {d_hwm / 1024:+.1f} MiB"
        )
        after = batch_metrics(gateway)
        calls, examples = after[0] - batches[0], after[1] - batches[1]
        if calls:
            run.extra.update(ranker_calls=int(calls), examples_per_call=examples / calls)
    run.ok, run.errors, run.wall_s = len(latencies), dict(failures), wall
    run.p50_ms, run.p95_ms, run.p99_ms, run.mean_ms = percentiles(latencies)
    run.rps = len(latencies) / wall if wall > 0 else 0.0
    return run


# ---- streaming ------------------------------------------------------------------------------------


async def stream_one(client, url: str, body: bytes) -> tuple[float, float, int, float] | str:
    """(TTFT s, total s, content pieces, first→last piece s) of one streamed request, or the error."""
    started = time.perf_counter()
    first = last = None
    pieces = 0
    async with client.stream("POST", url, content=body, headers=JSON_HEADERS) as response:
        if response.status_code != 200:
            await response.aread()
            return str(response.status_code)
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            for choice in chunk.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = now if first is None else first
                    last = now
                    pieces += 1
    total = time.perf_counter() - started
    if first is None:
        return "no content"
    return first - started, total, pieces, last - first


async def stream_runs(
    url: str, model: str, n: int, concurrency: int, warmup: int
) -> tuple[list[tuple[float, float, int, float]], Counter]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[tuple[float, float, int, float]] = []
    failures: Counter = Counter()
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        for i in range(warmup):
            await stream_one(client, url, chat_body(model, i, stream=True))
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                try:
                    got = await stream_one(client, url, chat_body(model, i, stream=True))
                except httpx.HTTPError as exc:
                    got = type(exc).__name__
                if isinstance(got, str):
                    failures[got] += 1
                else:
                    results.append(got)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, failures


# ---- the parts ------------------------------------------------------------------------------------


def backend_entries(upstream: Child, names: list[str], concurrency: int) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "model": name,
            "base_url": f"{upstream.base}/v1",
            "max_retries": 0,
            "read_timeout": 120.0,
            "temperature": 0.0,
            "concurrency": concurrency,
        }
        for name in names
    ]


def limits_for(concurrency: int) -> dict[str, Any]:
    """Limits well above the load, so no request is refused (errors must be 0)."""
    return {
        "max_concurrent": max(4, 2 * concurrency),
        "max_queue": max(16, 4 * concurrency),
        "deadline_s": 600.0,
        "generate_timeout_s": 300.0,
    }


def batching(on: bool) -> dict[str, Any]:
    return {"enabled": True, "window_ms": 0.0, "max_examples": 16} if on else {"enabled": False}


async def part_overhead(args: argparse.Namespace, logs: Path) -> list[Run]:
    top = max(args.concurrency)
    names = ["alpha", "beta", "gamma"]
    upstream = start_upstream("upstream-fast", logs, {})
    runs: list[Run] = []
    try:
        url = f"{upstream.base}/v1/chat/completions"
        for c in args.concurrency:
            bodies = [chat_body("alpha", i) for i in range(args.n)]
            run = Run("overhead", "upstream direct", "alpha", c, args.n)
            runs.append(
                await measured(run, url, bodies, gateway=None, upstreams=[upstream], warmup=bodies[:20])
            )
            print_progress(run)
        for label, batch_on, models, tag in (
            ("longest, batching on", True, ["rank", "alpha"], "batching"),
            ("longest, batching off", False, ["rank"], "no-batching"),
        ):
            config = {
                "backends": backend_entries(upstream, names, 2 * top),
                "ranker": {"spec": "longest"},
                "fuser": "none",
                "limits": limits_for(top),
                "batching": batching(batch_on),
            }
            gateway = start_gateway(f"gateway-overhead-{tag}", logs, config)
            try:
                url = f"{gateway.base}/v1/chat/completions"
                for model in models:
                    for c in args.concurrency:
                        bodies = [chat_body(model, i) for i in range(args.n)]
                        setup = label if model == "rank" else "proxy"
                        run = Run("overhead", setup, model, c, args.n)
                        await measured(
                            run,
                            url,
                            bodies,
                            gateway=gateway,
                            upstreams=[upstream],
                            warmup=bodies[: max(20, c)],
                        )
                        runs.append(run)
                        print_progress(run)
            finally:
                gateway.stop()
    finally:
        upstream.stop()
    return runs


async def part_streaming(args: argparse.Namespace, logs: Path) -> list[dict[str, Any]]:
    names = ["alpha", "beta", "gamma"]
    answers = {name: SENTENCES.strip() for name in names}
    upstream = start_upstream(
        "upstream-slow", logs, answers, pieces=args.stream_pieces, gap_ms=args.stream_gap_ms
    )
    rows = []
    try:
        config = {
            "backends": backend_entries(upstream, names, 64),
            "ranker": {"spec": "longest"},
            "fuser": "none",
            "limits": limits_for(args.stream_concurrency),
        }
        gateway = start_gateway("gateway-stream", logs, config)
        try:
            targets = [
                ("upstream direct (stream)", f"{upstream.base}/v1/chat/completions", "alpha"),
                ("rank (streamed once settled)", f"{gateway.base}/v1/chat/completions", "rank"),
                ("proxy alpha (relayed)", f"{gateway.base}/v1/chat/completions", "alpha"),
            ]
            for label, url, model in targets:
                got, failures = await stream_runs(
                    url, model, args.stream_n, args.stream_concurrency, warmup=2
                )
                ttft = percentiles([g[0] for g in got])
                total = percentiles([g[1] for g in got])
                row = {
                    "setup": label,
                    "model": model,
                    "concurrency": args.stream_concurrency,
                    "n": args.stream_n,
                    "ok": len(got),
                    "errors": dict(failures),
                    "ttft_p50_ms": ttft[0],
                    "ttft_p95_ms": ttft[1],
                    "total_p50_ms": total[0],
                    "total_p95_ms": total[1],
                    "pieces_median": float(np.median([g[2] for g in got])) if got else 0.0,
                    "first_to_last_piece_p50_ms": float(np.median([g[3] for g in got]) * 1000)
                    if got
                    else 0.0,
                }
                rows.append(row)
                print(f"  streaming {label}: TTFT p50 {ttft[0]:.1f} ms", flush=True)
        finally:
            gateway.stop()
    finally:
        upstream.stop()
    return rows


def ranker_answers(n: int) -> dict[str, str]:
    """``n`` candidate answers of 35, 50, 65, ... words, each a different cut of the paragraph."""
    words = SENTENCES.split()
    out = {}
    for k in range(n):
        length = 35 + 15 * k
        start = (11 * k) % len(words)
        picked = (words[start:] + words[:start])[:length]
        out[f"cand{k}"] = " ".join(picked)
    return out


def ranker_config(upstream: Child, names: list[str], runtime: str, on: bool, c: int) -> dict[str, Any]:
    return {
        "backends": backend_entries(upstream, names, 2 * c),
        "ranker": {"runtime": runtime},
        "fuser": "none",
        "limits": limits_for(c),
        "batching": batching(on),
    }


def batch_metrics(gateway: Child) -> tuple[float, float]:
    """(count, sum) of the gateway's ranker batch-size histogram (``/metrics``)."""
    import httpx

    count = total = 0.0
    for line in httpx.get(f"{gateway.base}/metrics", timeout=30).text.splitlines():
        if line.startswith("llmblend_ranker_batch_examples_count"):
            count = float(line.split()[-1])
        elif line.startswith("llmblend_ranker_batch_examples_sum"):
            total = float(line.split()[-1])
    return count, total


async def part_batching(args: argparse.Namespace, logs: Path) -> list[Run]:
    answers = ranker_answers(args.rank_candidates)
    names = list(answers)
    upstream = start_upstream("upstream-ranker", logs, answers)
    runs: list[Run] = []
    c = args.rank_concurrency
    try:
        for runtime in args.runtimes:
            for on in (True, False):
                gateway = start_gateway(
                    f"gateway-{runtime}-{'on' if on else 'off'}",
                    logs,
                    ranker_config(upstream, names, runtime, on, c),
                )
                try:
                    url = f"{gateway.base}/v1/chat/completions"
                    pairs: list[int] = []

                    def count(data: dict[str, Any], pairs: list[int] = pairs) -> None:
                        pairs.append(int(data["llmblend"]["n_forward"]))

                    bodies = [chat_body("rank", i, details=True) for i in range(args.rank_n)]
                    warmup = [chat_body("rank", 10_000 + i, details=True) for i in range(max(c, 8))]
                    await fire(url, warmup[:1], 1)  # the first forward builds or loads the ONNX graph
                    await fire(url, warmup[1:], c)
                    setup = f"{runtime}, " + ("batching on / 16" if on else "batching off")
                    run = Run("batching", setup, "rank", c, args.rank_n)
                    await measured(
                        run,
                        url,
                        bodies,
                        gateway=gateway,
                        upstreams=[upstream],
                        warmup=[],
                        on_json=count,
                    )
                    run.extra.update(
                        pairs=int(sum(pairs)),
                        pairs_per_s=sum(pairs) / run.wall_s if run.wall_s else 0.0,
                        pairs_per_request=sum(pairs) / max(len(pairs), 1),
                    )
                    runs.append(run)
                    print_progress(run, f"{run.extra['pairs_per_s']:.1f} pairs/s")
                finally:
                    gateway.stop()
    finally:
        upstream.stop()
    return runs


async def part_local(args: argparse.Namespace, logs: Path) -> list[Run]:
    from llmblend.serve.config import DEFAULT_SERVE_CONFIG

    top = max(args.local_concurrency)
    config = DEFAULT_SERVE_CONFIG.model_dump(mode="json", exclude_defaults=True)
    config.update(fuser="none", limits=limits_for(top))
    gateway = start_gateway("gateway-local", logs, config)
    runs: list[Run] = []
    backend = DEFAULT_SERVE_CONFIG.backend_names[0]
    try:
        url = f"{gateway.base}/v1/chat/completions"
        for model in ("rank", backend):
            for c in args.local_concurrency:
                bodies = [chat_body(model, i, max_tokens=args.local_max_tokens) for i in range(args.local_n)]
                warmup = [chat_body(model, 1000 + i, max_tokens=args.local_max_tokens) for i in range(2)]
                run = Run("local", "default config, fuser none", model, c, args.local_n)
                tokens: list[int] = []

                def count(data: dict[str, Any], tokens: list[int] = tokens) -> None:
                    tokens.append(int(data["usage"]["completion_tokens"]))

                await measured(run, url, bodies, gateway=gateway, upstreams=[], warmup=warmup, on_json=count)
                run.extra["completion_tokens_per_s"] = sum(tokens) / run.wall_s if run.wall_s else 0.0
                runs.append(run)
                print_progress(run)
    finally:
        gateway.stop()
    return runs


# ---- report ---------------------------------------------------------------------------------------


def print_progress(run: Run, note: str = "") -> None:
    errors = f", errors {run.errors}" if run.errors else ""
    print(
        f"  {run.part}: {run.setup} / {run.model} @ C={run.concurrency}: p50 {run.p50_ms:.2f} ms, "
        f"{run.rps:.0f} req/s{errors} {note}",
        flush=True,
    )


def fmt_errors(errors: dict[str, int]) -> str:
    return "0" if not errors else ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()))


def fmt_rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_mem(run: Run) -> str:
    if run.rss_mib is None or run.hwm_mib is None:
        return "- | - | -"
    rss = f"{run.rss_mib[0]:.1f} → {run.rss_mib[1]:.1f}"
    hwm = f"{run.hwm_mib[0]:.1f} → {run.hwm_mib[1]:.1f}"
    return f"{rss} | {hwm} | {run.growth}"


def load_table(runs: list[Run]) -> list[str]:
    lines = [
        "| setup | model | C | ok/N | errors | p50 ms | p95 ms | p99 ms | req/s "
        "| gateway CPU ms/req | upstream CPU ms/req | client CPU ms/req | examples/ranker call "
        "| gateway RSS MiB | gateway peak MiB | growth |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in runs:
        per_call = r.extra.get("examples_per_call")
        per_call = "-" if per_call is None else f"{per_call:.2f}"
        lines.append(
            f"| {r.setup} | {r.model} | {r.concurrency} | {r.ok}/{r.n} | {fmt_errors(r.errors)} "
            f"| {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {fmt_rate(r.rps)} "
            f"| {fmt_cpu(r.server_cpu_ms)} | {fmt_cpu(r.upstream_cpu_ms)} | {r.client_cpu_ms:.2f} "
            f"| {per_call} | {fmt_mem(r)} |"
        )
    return lines


def overhead_rows(runs: list[Run]) -> list[dict[str, Any]]:
    base = next((r for r in runs if r.setup == "upstream direct" and r.concurrency == 1), None)
    if base is None:
        return []
    rows = []
    for r in runs:
        if r.concurrency != 1 or r.setup == "upstream direct":
            continue
        rows.append(
            {
                "setup": r.setup,
                "model": r.model,
                "gateway_p50_ms": r.p50_ms,
                "upstream_p50_ms": base.p50_ms,
                "overhead_p50_ms": r.p50_ms - base.p50_ms,
                "overhead_mean_ms": r.mean_ms - base.mean_ms,
                "gateway_cpu_ms_per_request": r.server_cpu_ms,
            }
        )
    return rows


def report(results: dict[str, Any]) -> None:
    print(f"\ncommand: {results['command']}")
    print(f"machine: {results['machine']}\n")
    if results.get("overhead"):
        print("## Load: gateway vs upstream (fast upstream: fixed answer at once; 3 backends)\n")
        print("\n".join(load_table([Run(**r) for r in results["overhead"]])))
        print("\n## Gateway's own overhead per request at C=1 (gateway latency − direct upstream latency)\n")
        print(
            "| setup | model | gateway p50 ms | upstream p50 ms | overhead p50 ms | overhead mean ms "
            "| gateway CPU ms/req |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for o in results["overhead_c1"]:
            print(
                f"| {o['setup']} | {o['model']} | {o['gateway_p50_ms']:.2f} | {o['upstream_p50_ms']:.2f} "
                f"| {o['overhead_p50_ms']:.2f} | {o['overhead_mean_ms']:.2f} "
                f"| {fmt_cpu(o['gateway_cpu_ms_per_request'])} |"
            )
    if results.get("streaming"):
        s = results["settings"]
        print(
            f"\n## Streaming: time to first token (upstream streams {s['stream_pieces']} pieces "
            f"{s['stream_gap_ms']:g} ms apart; non-streamed answers after the same total)\n"
        )
        print(
            "| setup | model | C | ok/N | errors | TTFT p50 ms | TTFT p95 ms | total p50 ms | total p95 ms "
            "| content pieces | first→last piece ms |"
        )
        print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in results["streaming"]:
            print(
                f"| {r['setup']} | {r['model']} | {r['concurrency']} | {r['ok']}/{r['n']} "
                f"| {fmt_errors(r['errors'])} "
                f"| {r['ttft_p50_ms']:.1f} | {r['ttft_p95_ms']:.1f} | {r['total_p50_ms']:.1f} "
                f"| {r['total_p95_ms']:.1f} | {r['pieces_median']:.0f} "
                f"| {r['first_to_last_piece_p50_ms']:.1f} |"
            )
    if results.get("batching"):
        runs = [Run(**r) for r in results["batching"]]
        print(
            f"\n## Cross-request batching: shipped PairRanker, {results['settings']['rank_candidates']} "
            "candidates per request, model rank\n"
        )
        print(
            "| setup | C | ok/N | errors | pairs | pairs/req | pairs/s | ranker calls | examples/call "
            "| p50 ms | p95 ms | req/s | gateway CPU ms/req | gateway RSS MiB | gateway peak MiB | growth |"
        )
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        for r in runs:
            e = r.extra
            print(
                f"| {r.setup} | {r.concurrency} | {r.ok}/{r.n} | {fmt_errors(r.errors)} | {e['pairs']} "
                f"| {e['pairs_per_request']:.1f} | {e['pairs_per_s']:.1f} | {e.get('ranker_calls', 0)} "
                f"| {e.get('examples_per_call', 0.0):.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.rps:.2f} "
                f"| {fmt_cpu(r.server_cpu_ms)} | {fmt_mem(r)} |"
            )
    if results.get("local"):
        s = results["settings"]
        print(
            "\n## --local: the embedded default config (packaged llama.cpp models, shipped ranker), "
            f"fuser none, max_tokens {s['local_max_tokens']}\n"
        )
        local = [Run(**r) for r in results["local"]]
        print("\n".join(load_table(local)))
        print("\n| model | C | completion tokens/s (all candidates) |\n|---|---:|---:|")
        for r in local:
            print(f"| {r.model} | {r.concurrency} | {r.extra.get('completion_tokens_per_s', 0.0):.1f} |")


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    logs = args.out.parent / "bench-gateway-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.machine()}",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    started = time.perf_counter()
    if "overhead" not in args.skip:
        print("overhead ...", flush=True)
        runs = await part_overhead(args, logs)
        results["overhead"] = [asdict(r) for r in runs]
        results["overhead_c1"] = overhead_rows(runs)
    if "streaming" not in args.skip:
        print("streaming ...", flush=True)
        results["streaming"] = await part_streaming(args, logs)
    if "batching" not in args.skip:
        print("batching ...", flush=True)
        results["batching"] = [asdict(r) for r in await part_batching(args, logs)]
    if args.local:
        print("local ...", flush=True)
        results["local"] = [asdict(r) for r in await part_local(args, logs)]
    await close_clients()
    results["bench_wall_s"] = time.perf_counter() - started
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        sub = argparse.ArgumentParser()
        sub.add_argument("--answers", default="{}")
        sub.add_argument("--pieces", type=int, default=20)
        sub.add_argument("--gap-ms", type=float, default=0.0)
        a = sub.parse_args(sys.argv[2:])
        asyncio.run(upstream_main(json.loads(a.answers), a.pieces, a.gap_ms / 1000))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_gateway":
        sub = argparse.ArgumentParser()
        sub.add_argument("--config", required=True)
        gateway_main(sub.parse_args(sys.argv[2:]).config)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500, help="requests per overhead run")
    parser.add_argument("--concurrency", type=parse_ints, default=[1, 8, 32], help="e.g. 1,8,32")
    parser.add_argument("--stream-n", type=int, default=30, help="streamed requests per setup")
    parser.add_argument("--stream-concurrency", type=int, default=1)
    parser.add_argument("--stream-pieces", type=int, default=20)
    parser.add_argument("--stream-gap-ms", type=float, default=20.0)
    parser.add_argument("--rank-n", type=int, default=64, help="requests per batching run")
    parser.add_argument("--rank-concurrency", type=int, default=8)
    parser.add_argument("--rank-candidates", type=int, default=4, help="backends (candidates) per request")
    parser.add_argument(
        "--runtimes", type=lambda s: s.split(","), default=["onnx", "onnx-int8"], help="PairRanker runtimes"
    )
    parser.add_argument("--local", action="store_true", help="also the packaged local models (slow)")
    parser.add_argument("--local-n", type=int, default=6)
    parser.add_argument("--local-concurrency", type=parse_ints, default=[1, 2])
    parser.add_argument("--local-max-tokens", type=int, default=32)
    parser.add_argument(
        "--skip", type=lambda s: s.split(","), default=[], help="parts to skip: overhead,streaming,batching"
    )
    parser.add_argument("--out", type=Path, default=Path("build/bench-gateway.json"))
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    print(f"\nfigures written to {args.out}; whole bench {results['bench_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
