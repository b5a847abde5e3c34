"""``llmblend rank`` on Ray vs locally: records/s with the shipped ranker, and Ray's fixed costs.

Ranks the first ``--examples`` alpaca-blend dev examples (11 candidates each) with the shipped
PairRanker (onnx-int8, sparse-refine) three ways: the local engine in this process (torch's
default threads), and the Ray engine with 1 and 2 workers (one CPU and one thread each) on a
local Ray started once. Each figure is end to end: building the ranker (in each actor, for Ray),
ranking, writing and merging. The outputs are checked to be byte-identical.

Per worker it also gives pairs (forward passes) per busy second, and, as the CPU-side bound of a
GPU worker, how many pairs one core tokenizes per second (``PairRanker.encode_pairs``, one thread):
the two measured inputs of the README's estimate for ranking 1M examples x 16 candidates on GPUs.

The driver's side: how fast it reads ``--train`` into shards (parses every example, serializes
each shard, puts it into Ray's object store) and how much memory its heap holds per example
meanwhile, against holding every shard, and how fast it counts the input's lines, plain, gzip and
xz, which is all it does before the first shard goes to the workers (``--driver-only`` measures
just that).

Then Ray's fixed costs with a ranker that costs nothing (``-r longest``; best of 3): starting a
local Ray (``ray.init``), a whole job of one shard (actor start, Ray Data planning, the merge),
and the cost of one more shard (the same examples as one shard vs one shard per example, 1
worker). Other load on the machine moves every figure: the table gives the load average.

    .venv/bin/python bench/bench_ray.py --examples 48
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

from llmblend.data.jsonl import count_lines
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.engines.ray_rank import RayRankReport, rank_file_on_ray
from llmblend.engines.ray_session import put_shard, ray_session, require_ray
from llmblend.engines.recipe import RankerRecipe
from llmblend.engines.shards import pending_shards
from llmblend.rank.base import PairQuery
from llmblend.rank.pairranker import PairRanker
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


def on_ray(recipe: RankerRecipe, source: Path, out: Path, workers: int, shard_size: int) -> RayRankReport:
    """One Ray job (this process has joined Ray already)."""
    return rank_file_on_ray(recipe, source, out, shard_size=shard_size, num_workers=workers)


def tokenized_pairs_per_second(source: Path, pairs: int = 2000) -> float:
    """Pairs one core turns into padded model inputs per second (batches of 32), the shipped ranker's
    tokenizer and 256-token pair budget."""
    import torch

    torch.set_num_threads(1)
    ranker = PairRanker.default(runtime="fp32")
    queries = []
    for example in load_mixinstruct(source):
        texts = [c.text for c in example.candidates]
        queries += [PairQuery(example.source, a, b) for a, b in itertools.pairwise(texts)]
    queries = (queries * (pairs // max(1, len(queries)) + 1))[:pairs]
    started = time.perf_counter()
    for start in range(0, len(queries), 32):
        ranker.encode_pairs(queries[start : start + 32])
    return len(queries) / (time.perf_counter() - started)


def driver_memory(source: Path, shard_size: int = 64, copies: int = 5) -> tuple[int, float, float, float]:
    """Examples of the larger input, examples/s the driver reads them into shards at (untraced,
    the best of three reads), and the KB its Python heap keeps per example (traced, on ``source``
    and on ``copies`` copies of it with new ids, so Ray's fixed allocations cancel): holding every
    shard (as the driver did before it streamed), and streaming each into Ray's object store,
    keeping only ids and references (as it does now)."""
    larger = _copies(source, copies)

    def hold_all(path: Path) -> list:
        return list(pending_shards(path, set(), shard_size))

    def stream(path: Path) -> list:
        return [
            (shard.key, put_shard({"shard": shard.index, "examples": shard.data}))
            for shard in pending_shards(path, set(), shard_size)
        ]

    def growth(build) -> float:
        (small, n_small), (large, n_large) = (_traced(build, path) for path in (source, larger))
        return (large - small) / (n_large - n_small) / 1024

    held = growth(hold_all)
    with ray_session(None):
        stream(source)  # Ray's first put sets up what every later one reuses
        streamed = growth(stream)
        rates = []
        for _ in range(3):  # the best of three: one read takes well under a second
            started = time.perf_counter()
            examples = sum(len(key.ids) for key, _ in stream(larger))
            rates.append(examples / (time.perf_counter() - started))
    return examples, max(rates), held, streamed


def _copies(source: Path, copies: int) -> Path:
    """``source`` repeated ``copies`` times, each copy's ids suffixed, in a temporary file."""
    import json

    path = Path(tempfile.mkdtemp(prefix="bench-driver-")) / source.name
    lines = source.read_text(encoding="utf-8").splitlines()
    with path.open("w", encoding="utf-8") as handle:
        for copy in range(copies):
            for line in lines:
                record = json.loads(line)
                record["id"] = f"{record['id']}#{copy}"
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _traced(build, path: Path) -> tuple[int, int]:
    """The traced bytes ``build(path)``'s result keeps once built, and how many examples the
    shards it returns hold."""
    import tracemalloc

    tracemalloc.start()
    shards = build(path)
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return kept, sum(len(getattr(shard, "ids", None) or shard[0].ids) for shard in shards)


def print_driver(train: Path) -> None:
    examples, rate, held, streamed = driver_memory(train)
    print(
        f"driver: read {examples} examples ({train} x5) into shards at {rate:.0f} examples/s, putting "
        f"them into Ray's object store; its heap keeps {streamed:.2f} KB per example (holding "
        f"every shard: {held:.1f} KB)\n"
    )
    print("Before the first shard the driver counts the input's lines (the bound on its shards):\n")
    print("| input | MB on disk | lines counted per second | uncompressed MB/s |")
    print("|---|---:|---:|---:|")
    for name, megabytes, lines_per_second, throughput in counting_rates(_copies(train, 5)):
        print(f"| {name} | {megabytes:.1f} | {lines_per_second:,.0f} | {throughput:,.0f} |")


def counting_rates(source: Path) -> list[tuple[str, float, float, float]]:
    """(file, its MB on disk, lines per second, uncompressed MB per second) of :func:`count_lines`
    on ``source``, plain, gzip and xz; best of 3."""
    import gzip
    import lzma

    data = source.read_bytes()
    lines = count_lines(source)
    variants = {source: data, source.with_suffix(".jsonl.gz"): gzip.compress(data, 6)}
    variants[source.with_suffix(".jsonl.xz")] = lzma.compress(data)
    rates = []
    for path, content in variants.items():
        path.write_bytes(content)
        seconds = min(_timed(count_lines, path) for _ in range(3))
        rates.append((path.name, len(content) / 1e6, lines / seconds, len(data) / 1e6 / seconds))
    return rates


def _timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--train", type=Path, default=Path("build/alpaca-blend/train.jsonl"))
    parser.add_argument("--driver-only", action="store_true", help="only the driver's planning figures")
    parser.add_argument("--shard-size", type=int, default=8, help="examples per shard for the ranker runs")
    args = parser.parse_args()
    if args.driver_only:
        print_driver(args.train)
        return
    ray = require_ray()
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    source = folder / "dev.jsonl"
    lines = args.dev.read_text(encoding="utf-8").splitlines(keepends=True)[: args.examples]
    source.write_text("".join(lines), encoding="utf-8")
    n = len(lines)
    load = os.getloadavg()[0]

    rows = [("local engine (this process)", local(source, folder / "local.jsonl"))]
    per_worker = []
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    init_seconds = time.perf_counter() - started
    try:
        for workers in (1, 2):
            out = folder / f"ray{workers}.jsonl"
            report = on_ray(SHIPPED, source, out, workers, args.shard_size)
            rows.append((f"ray, {workers} worker(s)", report.seconds))
            busy = sum(w.seconds for w in report.workers.values())
            per_worker.append((workers, report.n_forward / n, report.n_forward / busy))
            if out.read_bytes() != (folder / "local.jsonl").read_bytes():
                raise SystemExit(f"{out} differs from the local output")
        one_shard = min(
            on_ray(LONGEST, source, folder / f"longest-1-{i}.jsonl", 1, n).seconds for i in range(3)
        )
        per_example = min(
            on_ray(LONGEST, source, folder / f"longest-n-{i}.jsonl", 1, 1).seconds for i in range(3)
        )
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
    print("| Ray workers | pairs per example | pairs per busy worker-second |")
    print("|---:|---:|---:|")
    for workers, pairs, rate in per_worker:
        print(f"| {workers} | {pairs:.1f} | {rate:.1f} |")
    print_driver(args.train)
    tokenized = tokenized_pairs_per_second(source)
    print(f"\none core tokenizes {tokenized:.0f} pairs/s (encode_pairs, batches of 32)\n")
    print("## Ray's fixed costs (-r longest, which ranks in microseconds; best of 3)\n")
    print("| what | seconds |")
    print("|---|---:|")
    print(f"| start a local Ray (ray.init, 2 CPUs) | {init_seconds:.1f} |")
    print(f"| a whole job of 1 shard ({n} examples, 1 worker) | {one_shard:.1f} |")
    print(f"| each further shard ({n} shards of 1 vs 1 of {n}) | {(per_example - one_shard) / (n - 1):.3f} |")


if __name__ == "__main__":
    main()
