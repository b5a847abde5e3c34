"""``llmblend rank`` on Ray vs locally: records/s with the shipped ranker, and Ray's fixed costs.

Ranks the first ``--examples`` alpaca-blend dev examples (11 candidates each) with the shipped
PairRanker (onnx-int8, sparse-refine) three ways: the local engine in this process (torch's
default threads), and the Ray engine with 1 and 2 workers (one CPU and one thread each) on a
local Ray started once. Each figure is end to end: building the ranker (in each actor, for Ray),
ranking, writing and merging. The outputs are checked to be byte-identical.

Then Ray's fixed costs with a ranker that costs nothing (``-r longest``; best of 3): starting a
local Ray (``ray.init``), a whole job of one shard (actor start, Ray Data planning, the merge),
and the cost of one more shard (the same examples as one shard vs one shard per example, 1
worker). Other load on the machine moves every figure: the table gives the load average.

    .venv/bin/python bench/bench_ray.py --examples 48
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from llmblend.engines.ray_rank import rank_file_on_ray, require_ray
from llmblend.engines.recipe import RankerRecipe
from llmblend.rank.rank_file import pending_examples, rank_pending

SHIPPED = RankerRecipe(runtime="onnx-int8")
LONGEST = RankerRecipe(spec="longest")


def local(source: Path, out: Path) -> float:
    """Seconds for the local engine, building the ranker included."""
    started = time.perf_counter()
    todo, done = pending_examples(source, out)
    ranker, label = SHIPPED.build()
    strategy = SHIPPED.strategy_for(ranker, None)
    rank_pending(ranker, todo, out, already_done=done, strategy=strategy, ranker_label=label)
    return time.perf_counter() - started


def on_ray(recipe: RankerRecipe, source: Path, out: Path, workers: int, shard_size: int) -> float:
    """Seconds for one Ray job (this process has joined Ray already)."""
    report = rank_file_on_ray(recipe, source, out, shard_size=shard_size, num_workers=workers)
    return report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--shard-size", type=int, default=8, help="examples per shard for the ranker runs")
    args = parser.parse_args()
    ray = require_ray()
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    source = folder / "dev.jsonl"
    lines = args.dev.read_text(encoding="utf-8").splitlines(keepends=True)[: args.examples]
    source.write_text("".join(lines), encoding="utf-8")
    n = len(lines)
    load = os.getloadavg()[0]

    rows = [("local engine (this process)", local(source, folder / "local.jsonl"))]
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    init_seconds = time.perf_counter() - started
    try:
        for workers in (1, 2):
            out = folder / f"ray{workers}.jsonl"
            rows.append((f"ray, {workers} worker(s)", on_ray(SHIPPED, source, out, workers, args.shard_size)))
            if out.read_bytes() != (folder / "local.jsonl").read_bytes():
                raise SystemExit(f"{out} differs from the local output")
        one_shard = min(on_ray(LONGEST, source, folder / f"longest-1-{i}.jsonl", 1, n) for i in range(3))
        per_example = min(on_ray(LONGEST, source, folder / f"longest-n-{i}.jsonl", 1, 1) for i in range(3))
    finally:
        ray.shutdown()

    print(f"\n## llmblend rank, {n} alpaca-blend dev examples, shipped ranker onnx-int8")
    end_load = os.getloadavg()[0]
    print(f"\n(load average {load:.1f} at the start, {end_load:.1f} at the end, {os.cpu_count()} cores)\n")
    print("| engine | seconds | records/s | vs local |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {n / seconds:.2f} | {rows[0][1] / seconds:.2f}x |")
    print(f"\nshards of {args.shard_size} examples; the Ray outputs are byte-identical to the local one.\n")
    print("## Ray's fixed costs (-r longest, which ranks in microseconds; best of 3)\n")
    print("| what | seconds |")
    print("|---|---:|")
    print(f"| start a local Ray (ray.init, 2 CPUs) | {init_seconds:.1f} |")
    print(f"| a whole job of 1 shard ({n} examples, 1 worker) | {one_shard:.1f} |")
    print(f"| each further shard ({n} shards of 1 vs 1 of {n}) | {(per_example - one_shard) / (n - 1):.3f} |")


if __name__ == "__main__":
    main()
