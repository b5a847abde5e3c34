"""How many DPO pairs each ``llmblend data pairs`` mode gives on alpaca-blend train, and how often the
shipped ranker's pairs agree with GPT-4's (the ``gpt4_win`` oracle).

1. Oracle pairs (``--by gpt4_win``) from ``build/alpaca-blend/train.jsonl`` (480 instructions × 11
   candidates): pairs written and dropped per mode, at ``--min-margin`` 0 and 0.1.
2. Ranker pairs from the same file ranked by the shipped ranker (default strategy sparse-refine,
   onnx-int8), per mode and ranker-margin threshold: the share of pairs whose chosen answer also has
   the higher ``gpt4_win``, over the pairs the oracle decides (|Δ gpt4_win| ≥ 0.1; the oracle
   near-ties left out are counted). gpt4_win is P(beats gpt4_1106_preview) and mostly tiny (median
   4e-5), so most pairs are near-ties; the last column is the share over every pair the oracle
   does not tie exactly (Δ ≠ 0), near-ties included.

Rank once (resumable: rerun after a kill, it ranks only what the output lacks), then run::

    .venv/bin/llmblend rank build/alpaca-blend/train.jsonl --out build/alpaca-blend/train.ranked.jsonl
    .venv/bin/python bench/dpo_pairs.py

It prints two tables and writes ``build/bench-dpo-pairs.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llmblend.data.dpo_pairs import MODES, PairsConfig, PairsSummary, iter_dpo_pairs
from llmblend.data.mixinstruct import read_mixinstruct
from llmblend.eval.ranking import fmt_percent, markdown_table

ORACLE = "gpt4_win"
NEAR_TIE = 0.1
ORACLE_MARGINS = (0.0, 0.1)
RANKER_MARGINS = (0.0, 0.5, 1.0, 2.0)


def oracle_counts(train: Path) -> list[dict[str, Any]]:
    """Pairs written and dropped per mode and oracle min-margin."""
    rows = []
    for mode in MODES:
        for margin in ORACLE_MARGINS:
            summary = PairsSummary()
            for _ in iter_dpo_pairs(train, PairsConfig(mode, margin, by=ORACLE), summary):
                pass
            rows.append(
                {
                    "mode": mode,
                    "min_margin": margin,
                    "examples": summary.examples,
                    "skipped": sum(summary.skipped.values()),
                    "pairs": summary.pairs,
                    "dropped": dict(summary.dropped),
                }
            )
    return rows


def share_positive(deltas: list[float]) -> float:
    """The share of oracle differences (chosen − rejected) that are positive; NaN for none."""
    return sum(d > 0 for d in deltas) / len(deltas) if deltas else float("nan")


def ranker_agreement(ranked: Path) -> list[dict[str, Any]]:
    """Per mode and ranker min-margin: ranker pairs, oracle near-ties, agreement with the oracle."""
    oracle = {ex.id: [c.scores[ORACLE] for c in ex.candidates] for ex in read_mixinstruct(ranked)}
    rows = []
    for mode in MODES:
        for margin in RANKER_MARGINS:
            summary = PairsSummary()
            deltas = [
                oracle[p.pair.example_id][p.chosen_index] - oracle[p.pair.example_id][p.rejected_index]  # type: ignore[index]
                for p in iter_dpo_pairs(ranked, PairsConfig(mode, margin), summary)
            ]
            decided = [d for d in deltas if abs(d) >= NEAR_TIE]
            agree = sum(d > 0 for d in decided)
            rows.append(
                {
                    "mode": mode,
                    "min_margin": margin,
                    "examples": summary.examples,
                    "skipped": dict(summary.skipped),
                    "pairs": len(deltas),
                    "oracle_near_ties": len(deltas) - len(decided),
                    "decided": len(decided),
                    "agree": agree,
                    "agreement": share_positive(decided),
                    "agreement_any_delta": share_positive([d for d in deltas if d != 0]),
                }
            )
    return rows


def print_table(title: str, headers: list[str], rows: list[dict[str, Any]], cells) -> None:
    """``title``, then a markdown table with one line ``cells(row)`` per row."""
    print(title)
    print(markdown_table((headers, [cells(r) for r in rows])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=Path("build/alpaca-blend/train.jsonl"))
    parser.add_argument("--ranked", type=Path, default=Path("build/alpaca-blend/train.ranked.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("build/bench-dpo-pairs.json"))
    args = parser.parse_args()
    if not args.ranked.is_file():
        raise SystemExit(f"{args.ranked} is missing; rank first (see this script's docstring)")

    counts = oracle_counts(args.train)
    print_table(
        f"oracle pairs ({ORACLE}) from {args.train}",
        ["mode", "min margin", "pairs", "identical text", "below margin", "skipped"],
        counts,
        lambda r: [
            r["mode"],
            f"{r['min_margin']:g}",
            str(r["pairs"]),
            str(r["dropped"].get("identical text", 0)),
            str(sum(v for k, v in r["dropped"].items() if k.startswith("margin below"))),
            str(r["skipped"]),
        ],
    )
    agreement = ranker_agreement(args.ranked)
    print_table(
        f"\nranker pairs from {args.ranked} vs {ORACLE} (oracle near-ties |Δ| < {NEAR_TIE} left out)",
        ["mode", "ranker min margin", "pairs", "oracle near-ties", "decided", "agree", "agree (Δ ≠ 0)"],
        agreement,
        lambda r: [
            r["mode"],
            f"{r['min_margin']:g}",
            str(r["pairs"]),
            str(r["oracle_near_ties"]),
            str(r["decided"]),
            fmt_percent(r["agreement"]),
            fmt_percent(r["agreement_any_delta"]),
        ],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"oracle": ORACLE, "near_tie": NEAR_TIE, "oracle_pairs": counts, "ranker_pairs": agreement}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
