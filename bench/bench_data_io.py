"""Throughput of the data layer: building alpaca-blend, reading, validating and writing MixInstruct.

Run: .venv/bin/python bench/bench_data_io.py [--data-dir ../shared/data]
Prints one line per step; figures are wall-clock on this machine (noisy; compare ratios in one run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llmblend.data.alpaca_blend import build_alpaca_blend
from llmblend.data.mixinstruct import read_mixinstruct, validate_mixinstruct, write_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.data.sources import locate_data_dir


def timed(label: str, work, unit: str) -> None:
    start = time.perf_counter()
    count, size = work()
    seconds = time.perf_counter() - start
    rate = f"{count / seconds:,.0f} {unit}/s" if count else ""
    print(f"{label:<34} {seconds:7.2f} s  {count:>7,} {unit}  {size / seconds / 1e6:7.1f} MB/s  {rate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = locate_data_dir(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        outputs = data_dir / "alpaca_eval" / "model_outputs_wide.jsonl.xz"

        def build() -> tuple[int, int]:
            summary = build_alpaca_blend(data_dir, out)
            return summary.train + summary.dev, outputs.stat().st_size

        timed("build alpaca-blend (xz in)", build, "instr")
        train = out / "train.jsonl"
        pairs = out / "pairs_train.jsonl"
        size = train.stat().st_size
        timed("read MixInstruct (train)", lambda: (sum(1 for _ in read_mixinstruct(train)), size), "rec")
        timed("validate MixInstruct (train)", lambda: (validate_mixinstruct(train)[0], size), "rec")
        examples = list(read_mixinstruct(train))
        timed(
            "write MixInstruct (train)",
            lambda: (write_mixinstruct(examples, out / "copy.jsonl"), size),
            "rec",
        )
        timed(
            "read preference pairs",
            lambda: (sum(1 for _ in read_preferences(pairs)), pairs.stat().st_size),
            "pair",
        )


if __name__ == "__main__":
    main()
