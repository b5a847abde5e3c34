"""The alpaca-blend benchmark: a MixInstruct-style pool of 11 LLMs on AlpacaEval with a GPT-4 oracle.

As MixInstruct drew candidates from 11 open LLMs (LLM-Blender §2), alpaca-blend's pool is 11 models
from AlpacaEval. Instructions are split 80/20 into train and dev, stratified by sub-source, with a
fixed seed. Ranker training pairs come from *every* oracle-scored model on train instructions only,
labelled by the oracle-score difference (the paper labels pairs by metric differences, §3.1);
near-ties below ``min_margin`` are dropped.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from llmblend.data.mixinstruct import write_mixinstruct
from llmblend.data.preferences import write_preferences
from llmblend.data.sources import alpaca_eval
from llmblend.types import Example, PreferencePair

T = TypeVar("T")
#: Wraps an iterable to show progress: (items, description, total) → the same items.
Tracker = Callable[[Iterable[T], str, int], Iterable[T]]

POOL_MODELS = (
    "OpenHermes-2.5-Mistral-7B",
    "Qwen-14B-Chat",
    "gemma-7b-it",
    "vicuna-13b-v1.5",
    "oasst-rlhf-llama-33b",
    "wizardlm-13b",
    "ultralm-13b",
    "baize-v2-13b",
    "falcon-40b-instruct",
    "chatglm2-6b",
    "alpaca-7b",
)
FILES = ("train.jsonl", "dev.jsonl", "pairs_train.jsonl", "build_info.json")


@dataclass(frozen=True)
class AlpacaBlendConfig:
    """How alpaca-blend is built; the defaults give the published benchmark."""

    seed: int = 0
    dev_fraction: float = 0.2
    pairs_per_instruction: int = 16
    min_margin: float = 0.1
    pool: tuple[str, ...] = POOL_MODELS

    def __post_init__(self) -> None:
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.pairs_per_instruction < 1:
            raise ValueError(f"pairs_per_instruction must be >= 1, got {self.pairs_per_instruction}")
        if not 0.0 <= self.min_margin < 1.0:
            raise ValueError(f"min_margin is a probability difference in [0, 1), got {self.min_margin}")
        if len(set(self.pool)) != len(self.pool) or len(self.pool) < 2:
            raise ValueError(f"pool needs at least two distinct models, got {list(self.pool)}")


@dataclass
class PairStats:
    """What happened to the candidate pairs of the train instructions."""

    instructions: int = 0
    possible: int = 0
    identical_text: int = 0
    near_ties: int = 0
    eligible: int = 0
    sampled: int = 0
    models: set[str] = field(default_factory=set)


@dataclass
class AlpacaBlendSummary:
    config: AlpacaBlendConfig
    train: int
    dev: int
    dev_by_subsource: dict[str, int]
    pairs: PairStats

    def to_json(self) -> dict[str, object]:
        pairs = asdict(self.pairs) | {"models": sorted(self.pairs.models)}
        return {
            "config": asdict(self.config),
            "train": self.train,
            "dev": self.dev,
            "dev_by_subsource": self.dev_by_subsource,
            "pairs": pairs,
        }


def stratified_split(
    groups: dict[str, list[int]], dev_fraction: float, seed: int
) -> tuple[set[int], set[int]]:
    """Split ids into (train, dev): within each group, ``round(n · dev_fraction)`` ids go to dev.

    Each group is shuffled with its own seeded RNG, so the split of one sub-source does not depend
    on the others or on file order.
    """
    train: set[int] = set()
    dev: set[int] = set()
    for name, ids in sorted(groups.items()):
        shuffled = sorted(ids)
        random.Random(f"{seed}:{name}").shuffle(shuffled)
        n_dev = round(len(shuffled) * dev_fraction)
        dev.update(shuffled[:n_dev])
        train.update(shuffled[n_dev:])
    return train, dev


def sample_pairs(
    row: alpaca_eval.AlpacaEvalRow,
    scores: dict[str, float],
    config: AlpacaBlendConfig,
    stats: PairStats,
) -> list[PreferencePair]:
    """Up to ``pairs_per_instruction`` labelled pairs among the answers of one instruction.

    A pair is eligible when both answers have an oracle score, their texts differ, and the scores
    differ by at least ``min_margin``; the chosen side is the higher-scored answer.
    """
    models = sorted(m for m in row.outputs if m in scores)
    eligible = []
    for a, b in itertools.combinations(models, 2):
        stats.possible += 1
        if row.outputs[a].strip() == row.outputs[b].strip():
            stats.identical_text += 1
        elif abs(scores[a] - scores[b]) < config.min_margin:
            stats.near_ties += 1
        else:
            eligible.append((a, b) if scores[a] > scores[b] else (b, a))
    stats.eligible += len(eligible)
    rng = random.Random(f"{config.seed}:pairs:{row.example_id}")
    chosen = rng.sample(eligible, min(config.pairs_per_instruction, len(eligible)))
    stats.sampled += len(chosen)
    stats.models.update(itertools.chain.from_iterable(chosen))
    return [
        PreferencePair(
            prompt=row.instruction,
            chosen=row.outputs[win],
            rejected=row.outputs[lose],
            source="alpaca_eval",
            example_id=row.example_id,
            chosen_model=win,
            rejected_model=lose,
            margin=round(scores[win] - scores[lose], 6),
        )
        for win, lose in chosen
    ]


def _scores_of(oracle: dict[str, dict[int, float]], index: int) -> dict[str, float]:
    return {model: by_index[index] for model, by_index in oracle.items() if index in by_index}


def _no_tracking(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    return items


def build_alpaca_blend(
    data_dir: Path,
    out_dir: Path,
    config: AlpacaBlendConfig | None = None,
    track: Tracker = _no_tracking,
) -> AlpacaBlendSummary:
    """Write ``train.jsonl``, ``dev.jsonl``, ``pairs_train.jsonl`` and ``build_info.json``.

    Deterministic: the same data and config give byte-identical files.
    """
    config = config or AlpacaBlendConfig()
    oracle = alpaca_eval.read_oracle_scores(data_dir)
    missing = [m for m in config.pool if m not in oracle]
    if missing:
        raise ValueError(f"pool models {missing} have no oracle scores; choose from {sorted(oracle)}")
    scored_models = sorted(oracle)
    total = alpaca_eval.count_rows(data_dir)
    rows = list(track(alpaca_eval.iter_rows(data_dir, scored_models), "reading AlpacaEval", total))

    groups: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        groups[row.dataset].append(row.index)
    train_ids, dev_ids = stratified_split(groups, config.dev_fraction, config.seed)

    def examples(ids: set[int]) -> Iterator[Example]:
        for row in rows:
            if row.index in ids:
                yield alpaca_eval.to_example(row, config.pool, oracle)

    out_dir = Path(out_dir)
    n_train = write_mixinstruct(examples(train_ids), out_dir / "train.jsonl")
    n_dev = write_mixinstruct(examples(dev_ids), out_dir / "dev.jsonl")
    stats = PairStats(instructions=len(train_ids))
    pairs = (
        pair
        for row in rows
        if row.index in train_ids
        for pair in sample_pairs(row, _scores_of(oracle, row.index), config, stats)
    )
    write_preferences(pairs, out_dir / "pairs_train.jsonl")
    dev_by_subsource = {name: len(set(ids) & dev_ids) for name, ids in sorted(groups.items())}
    summary = AlpacaBlendSummary(config, n_train, n_dev, dev_by_subsource, stats)
    (out_dir / "build_info.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    return summary
