"""Generation throughput: two packaged local models at once vs one after the other, and in-process
llama.cpp vs ``llama_cpp.server`` over HTTP (the choice documented in backends/llama_cpp.py).

    .venv/bin/python bench/bench_generation.py [--n 8] [--max-tokens 96]

Every run answers the same first N AlpacaEval instructions greedily with the same settings, so the
work is the same; tokens/s = completion tokens / wall seconds of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from llmblend.backends.base import Backend, GenerationParams
from llmblend.backends.config import Slot
from llmblend.backends.llama_cpp import LlamaCppBackend, resolve_model
from llmblend.backends.openai_http import OpenAIBackend
from llmblend.data.generate import generate_dataset, read_instructions
from llmblend.data.sources import locate_data_dir

MODELS = ("local:smollm2-135m", "local:gemma3-270m")


async def timed_run(slots: Sequence[Slot], prompts, out: Path) -> tuple[float, int]:
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    report = await generate_dataset(prompts, slots, out)
    wall = time.perf_counter() - started
    assert report.failed_slots == 0, f"{report.failed_slots} generations failed"
    return wall, report.usage.completion_tokens


async def warm(backend: Backend, params: GenerationParams) -> None:
    (await backend.generate("Say hello.", GenerationParams(max_tokens=4))).raise_for_error()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, threads: int) -> tuple[subprocess.Popen, str]:
    path, _ = resolve_model(model)
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_threads", str(threads), "--n_ctx", "2048"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        try:
            if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                return server, base_url
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("llama_cpp.server did not start")


def row(label: str, wall: float, tokens: int) -> str:
    return f"| {label} | {wall:.1f} | {tokens} | {tokens / wall:.1f} |"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=8, help="instructions per run")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path("build/bench-generation"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    prompts = read_instructions(locate_data_dir() / "alpaca_eval" / "instructions.jsonl")[: args.n]
    params = GenerationParams(max_tokens=args.max_tokens, temperature=0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []

    alone = {m: LlamaCppBackend(m, threads=cores) for m in MODELS}
    halves = {m: LlamaCppBackend(m, threads=max(1, cores // 2)) for m in MODELS}
    oversubscribed = {m: LlamaCppBackend(m, threads=cores) for m in MODELS}
    for backend in [*alone.values(), *halves.values(), *oversubscribed.values()]:
        await warm(backend, params)

    total_wall, total_tokens = 0.0, 0
    for backend in alone.values():
        wall, tokens = await timed_run([Slot(backend, params)], prompts, args.out / "alone.jsonl")
        rows.append(row(f"{backend.name} alone, {cores} threads", wall, tokens))
        total_wall, total_tokens = total_wall + wall, total_tokens + tokens
    rows.append(row("**both, one after the other**", total_wall, total_tokens))
    for label, pool in [
        (f"**both at once, {max(1, cores // 2)} thread(s) each**", halves),
        (f"both at once, {cores} threads each (oversubscribed)", oversubscribed),
    ]:
        slots = [Slot(backend, params) for backend in pool.values()]
        wall, tokens = await timed_run(slots, prompts, args.out / "both.jsonl")
        rows.append(row(label, wall, tokens))

    model = MODELS[0]
    server, base_url = start_server(model, cores)
    try:
        http = OpenAIBackend(name="smollm2-135m", base_url=base_url, concurrency=1)
        await warm(http, params)
        wall, tokens = await timed_run([Slot(http, params)], prompts, args.out / "server.jsonl")
        rows.append(row(f"smollm2-135m via llama_cpp.server (HTTP), {cores} threads", wall, tokens))
        await http.aclose()
    finally:
        server.terminate()
        server.wait()

    print(f"{args.n} AlpacaEval instructions, greedy, max_tokens {args.max_tokens}, {cores} cores\n")
    print("| run | wall s | completion tokens | tokens/s |\n|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
