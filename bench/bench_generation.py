"""Generation throughput of the packaged local models: one after the other vs both at once, with
llama.cpp in a thread of this process vs in a ``llama_cpp.server`` child process per model.

    .venv/bin/python bench/bench_generation.py [--n 8] [--max-tokens 96]

Every run answers the same first N AlpacaEval instructions greedily with the same settings, so the
work is the same; tokens/s = completion tokens / wall seconds of the run (models loaded and warm).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

from llmblend.backends.base import GenerationParams
from llmblend.backends.config import Slot
from llmblend.backends.llama_cpp import LlamaCppBackend
from llmblend.backends.llama_server import LlamaServerBackend
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


def row(label: str, wall: float, tokens: int) -> str:
    return f"| {label} | {wall:.1f} | {tokens} | {tokens / wall:.1f} |"


async def mode_rows(mode: str, make, prompts, params, cores: int, out: Path) -> list[str]:
    """Each model alone (all cores), their sum, then both at once (cores split, and oversubscribed)."""
    rows, total_wall, total_tokens = [], 0.0, 0
    for model in MODELS:
        backend = make(model, cores)
        await backend.generate("Say hello.", GenerationParams(max_tokens=4))  # load and warm up
        wall, tokens = await timed_run([Slot(backend, params)], prompts, out)
        await backend.aclose()
        rows.append(row(f"{mode}: {backend.name} alone, {cores} threads", wall, tokens))
        total_wall, total_tokens = total_wall + wall, total_tokens + tokens
    rows.append(row(f"**{mode}: both, one after the other**", total_wall, total_tokens))
    for threads, note in ((max(1, cores // 2), ""), (cores, " (oversubscribed)")):
        pool = [make(model, threads) for model in MODELS]
        for backend in pool:
            await backend.generate("Say hello.", GenerationParams(max_tokens=4))
        wall, tokens = await timed_run([Slot(b, params) for b in pool], prompts, out)
        for backend in pool:
            await backend.aclose()
        rows.append(row(f"**{mode}: both at once, {threads} thread(s) each{note}**", wall, tokens))
    return rows


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
    out = args.out / "run.jsonl"
    rows = await mode_rows(
        "in-process", lambda m, t: LlamaCppBackend(m, threads=t), prompts, params, cores, out
    )
    rows += await mode_rows(
        "server", lambda m, t: LlamaServerBackend(m, threads=t), prompts, params, cores, out
    )
    print(f"{args.n} AlpacaEval instructions, greedy, max_tokens {args.max_tokens}, {cores} cores\n")
    print("| run | wall s | completion tokens | tokens/s |\n|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
