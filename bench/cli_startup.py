"""Cold start of the CLI: help pages, and ``llmblend rank`` on one example, with the ONNX graph
built fresh and then loaded from the cache.

Every figure is the wall time of a new ``llmblend`` process (what a user waits for), the median of
``--repeats`` runs; the first ``rank`` run of a fresh ``LLMBLEND_CACHE`` also exports, fuses and
quantizes the ONNX graph. ``--runtime`` picks the ranker runtime (default: the shipped default).

    .venv/bin/python bench/cli_startup.py --data build/alpaca-blend/dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLMBLEND = [sys.executable, "-m", "llmblend"]


def wall_seconds(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([*LLMBLEND, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"llmblend {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    return seconds


def median_seconds(args: list[str], env: dict[str, str], repeats: int) -> float:
    return statistics.median(wall_seconds(args, env) for _ in range(repeats))


def one_example_file(data: Path, folder: Path) -> Path:
    with data.open(encoding="utf-8") as handle:
        first = json.loads(next(handle))
    path = folder / "one.jsonl"
    path.write_text(json.dumps(first) + "\n", encoding="utf-8")
    return path


def rank_args(one: Path, folder: Path, runtime: str | None, run: int) -> list[str]:
    args = ["rank", str(one), "--out", str(folder / f"ranked-{run}.jsonl")]
    return args + (["--runtime", runtime] if runtime else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtime", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "LLMBLEND_CACHE": str(folder / "cache")}
        one = one_example_file(args.data, folder)
        rows = [
            ("llmblend --help", median_seconds(["--help"], env, args.repeats)),
            ("llmblend rank --help", median_seconds(["rank", "--help"], env, args.repeats)),
            (
                "rank 1 example, fresh cache (ONNX export)",
                wall_seconds(rank_args(one, folder, args.runtime, 0), env),
            ),
        ]
        warm = [
            wall_seconds(rank_args(one, folder, args.runtime, run), env) for run in range(1, args.repeats + 1)
        ]
        rows.append(("rank 1 example, cached graph", statistics.median(warm)))
    print(f"| command (runtime: {args.runtime or 'default'}) | seconds |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
