"""Preference pairs for DPO from a ranked or oracle-scored MixInstruct file (LLM-Blender §3.1, reversed).

Each example's candidates are ordered by a score, best first (equal scores: lower candidate index
first), and paired up in one of three :data:`MODES`:

- ``best-worst``: the best against the worst, one pair per example;
- ``top-vs-rest``: the best against each other candidate;
- ``all``: every two candidates, the higher-scored one chosen.

The score is the ``ranking`` field ``llmblend rank`` writes (``scores``, one per candidate), or, with
``by``, each candidate's oracle score ``scores[by]``. Records whose ranking failed (``error`` set) or
is missing, or without the score, are skipped and counted; a ranking of the wrong shape is an error
naming file and line. Pairs whose answers have the same text, or whose margin (chosen score −
rejected score, rounded to 6 places) is below ``min_margin``, are dropped and counted.

Written as TRL preference JSONL (:mod:`llmblend.data.preferences`): the standard form for a text
instruction, the conversational form (answers as assistant messages) for a conversation; plus
provenance: ``source`` (the input file's stem), ``example_id``, ``chosen_model``, ``rejected_model``,
``margin``, ``chosen_decoding_method``, ``rejected_decoding_method``, ``chosen_score``,
``rejected_score`` and ``ranker`` (the ranker's label, or ``oracle:NAME``). The same input gives
the same bytes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Final

from llmblend.data.jsonl import FieldChecker, FieldProblem, iter_checked_records, short, write_jsonl
from llmblend.data.mixinstruct import NUMBER, check_record, example_from_record
from llmblend.data.preferences import record_from_pair
from llmblend.types import Example, Message, PreferencePair, Prompt

MODES: Final = ("best-worst", "top-vs-rest", "all")
RANKING_FIELD: Final = "ranking"  # as llmblend.rank.rank_file writes it (not imported: no rank deps)
IDENTICAL: Final = "identical text"
BELOW_MARGIN: Final = "margin below"


@dataclass(frozen=True, slots=True)
class PairsConfig:
    """How to draw pairs: the mode, the smallest margin kept, the oracle score (None: the ranking),
    and how many records to read (None: all)."""

    mode: str = "best-worst"
    min_margin: float = 0.0
    by: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown pair mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if not math.isfinite(self.min_margin) or self.min_margin < 0:
            raise ValueError(f"min_margin must be a number ≥ 0, got {self.min_margin}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.by == "":
            raise ValueError("by must name a candidate score (e.g. gpt4_win), got an empty string")


@dataclass(frozen=True, slots=True)
class Judged:
    """One example with a score per candidate (None: not scored), who scored it, and, when no pair
    can come from it, why (``skipped``)."""

    example: Example
    scores: tuple[float | None, ...]
    ranker: str
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class DpoPair:
    """A preference pair with where it came from: candidate indices, decoding methods, scores, ranker."""

    pair: PreferencePair
    chosen_index: int
    rejected_index: int
    chosen_decoding_method: str
    rejected_decoding_method: str
    chosen_score: float
    rejected_score: float
    ranker: str


@dataclass(slots=True)
class PairsSummary:
    """What one run read and wrote: examples, skipped ones by reason, pairs, dropped pairs by reason."""

    examples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    pairs: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """One line: ``12 examples read, 1 skipped (ranking error: 1); 30 pairs written; dropped: ...``."""
        skipped = sum(self.skipped.values())
        reasons = f" ({_counts(self.skipped)})" if skipped else ""
        dropped = f"; dropped: {_counts(self.dropped)}" if self.dropped else "; none dropped"
        return (
            f"{self.examples} examples read, {skipped} skipped{reasons}; {self.pairs} pairs written{dropped}"
        )


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counter.items()))


# ---------------------------------------------------------------- checking


def check_ranking(record: Any) -> list[FieldProblem]:
    """The problems of a record's ``ranking`` field (a missing one is no problem: it is skipped)."""
    checker = FieldChecker()
    if not isinstance(record, dict) or record.get(RANKING_FIELD) is None:
        return []
    ranking = record[RANKING_FIELD]
    if not checker.require_object(ranking, RANKING_FIELD):
        return checker.problems
    error = checker.get(ranking, "error", str, f"{RANKING_FIELD}.error", required=False, nullable=True)
    checker.get(ranking, "ranker", str, f"{RANKING_FIELD}.ranker", required=False, nullable=True)
    scores = checker.get(ranking, "scores", list, f"{RANKING_FIELD}.scores", required=not error)
    if error or scores is None:
        return checker.problems
    for i, value in enumerate(scores):
        if value is not None and (not isinstance(value, NUMBER) or isinstance(value, bool)):
            checker.fail(f"{RANKING_FIELD}.scores[{i}]", f"expected a number or null, got {short(value)}")
    candidates = record.get("candidates")
    if isinstance(candidates, list) and len(scores) != len(candidates):
        checker.fail(
            f"{RANKING_FIELD}.scores",
            f"has {len(scores)} score(s) for {len(candidates)} candidates; expected one per candidate",
        )
    return checker.problems


def _check_ranked(record: Any) -> list[FieldProblem]:
    return check_record(record) or check_ranking(record)


# ---------------------------------------------------------------- scoring


def judge_example(example: Example, ranking: dict[str, Any] | None, by: str | None) -> Judged:
    """The scores pairs are drawn by: ``scores[by]`` of each candidate, else the ranking's; a
    null or NaN score leaves its candidate out."""
    if by is not None:
        ranker = f"oracle:{by}"
        if any(by not in c.scores for c in example.candidates):
            return Judged(example, (), ranker, f"a candidate lacks score {by}")
        return _enough(Judged(example, _finite(c.scores[by] for c in example.candidates), ranker))
    if ranking is None:
        return Judged(example, (), "", "no ranking")
    ranker = ranking.get("ranker") or "unknown"
    if ranking.get("error"):
        return Judged(example, (), ranker, "ranking error")
    return _enough(Judged(example, _finite(ranking["scores"]), ranker))


def _finite(scores: Iterable[float | None]) -> tuple[float | None, ...]:
    """Scores as floats; a missing or non-finite one (NaN) as None: that candidate is not paired."""
    return tuple(float(s) if s is not None and math.isfinite(s) else None for s in scores)


def _enough(judged: Judged) -> Judged:
    if sum(s is not None for s in judged.scores) < 2:
        return Judged(judged.example, judged.scores, judged.ranker, "fewer than 2 scored candidates")
    return judged


def score_order(scores: tuple[float | None, ...]) -> list[int]:
    """Indices of the scored candidates, best first; equal scores keep candidate order."""
    return sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: (-scores[i], i))  # type: ignore[operator]


def index_pairs(order: list[int], mode: str) -> list[tuple[int, int]]:
    """(chosen, rejected) candidate indices of ``mode`` over ``order`` (best first)."""
    if len(order) < 2:
        return []
    if mode == "best-worst":
        return [(order[0], order[-1])]
    if mode == "top-vs-rest":
        return [(order[0], j) for j in order[1:]]
    if mode == "all":
        return [(i, j) for a, i in enumerate(order) for j in order[a + 1 :]]
    raise ValueError(f"unknown pair mode {mode!r}; expected one of {', '.join(MODES)}")


def dpo_prompt(example: Example) -> Prompt:
    """The instruction a policy is trained on: instruction then input; a conversation keeps its
    turns, with the input appended to its last user turn."""
    if isinstance(example.instruction, str):
        return example.source
    turns = list(example.instruction)
    if example.input and turns and turns[-1].role == "user":
        turns[-1] = Message("user", f"{turns[-1].content}\n\n{example.input}")
    return turns


def example_pairs(judged: Judged, config: PairsConfig, source: str) -> tuple[list[DpoPair], Counter[str]]:
    """The kept pairs of one example, and the dropped ones counted by reason."""
    dropped: Counter[str] = Counter()
    kept: list[DpoPair] = []
    example, scores = judged.example, judged.scores
    for i, j in index_pairs(score_order(scores), config.mode):
        chosen, rejected = example.candidates[i], example.candidates[j]
        margin = round(scores[i] - scores[j], 6)  # type: ignore[operator]
        if chosen.text == rejected.text:
            dropped[IDENTICAL] += 1
        elif margin < config.min_margin:
            dropped[f"{BELOW_MARGIN} {config.min_margin:g}"] += 1
        else:
            pair = PreferencePair(
                prompt=dpo_prompt(example),
                chosen=chosen.text,
                rejected=rejected.text,
                source=source,
                example_id=example.id,
                chosen_model=chosen.model,
                rejected_model=rejected.model,
                margin=margin,
            )
            kept.append(
                DpoPair(
                    pair,
                    chosen_index=i,
                    rejected_index=j,
                    chosen_decoding_method=chosen.decoding_method,
                    rejected_decoding_method=rejected.decoding_method,
                    chosen_score=round(scores[i], 6),  # type: ignore[arg-type]
                    rejected_score=round(scores[j], 6),  # type: ignore[arg-type]
                    ranker=judged.ranker,
                )
            )
    return kept, dropped


def dpo_record(pair: DpoPair) -> dict[str, Any]:
    """The TRL record of a pair (conversational when its prompt is a conversation), with provenance."""
    return {
        **record_from_pair(pair.pair, conversational=True),
        "chosen_decoding_method": pair.chosen_decoding_method,
        "rejected_decoding_method": pair.rejected_decoding_method,
        "chosen_score": pair.chosen_score,
        "rejected_score": pair.rejected_score,
        "ranker": pair.ranker,
    }


# ---------------------------------------------------------------- files


def read_judged(path: str | Path, by: str | None = None, limit: int | None = None) -> Iterator[Judged]:
    """Each record of a ranked (or, with ``by``, oracle-scored) MixInstruct file, judged; with
    ``by`` the ranking field is not read.

    Raises :class:`~llmblend.errors.DataFormatError` naming file and line at the first bad record.
    """
    check = check_record if by is not None else _check_ranked
    for _, record in islice(iter_checked_records(path, check), limit):
        yield judge_example(example_from_record(record), record.get(RANKING_FIELD), by)


def iter_dpo_pairs(
    path: str | Path, config: PairsConfig, summary: PairsSummary | None = None
) -> Iterator[DpoPair]:
    """Stream the pairs of ``path``, counting what was read, skipped and dropped into ``summary``."""
    summary = summary if summary is not None else PairsSummary()
    source = Path(path).name.split(".")[0]
    for judged in read_judged(path, config.by, config.limit):
        summary.examples += 1
        if judged.skipped:
            summary.skipped[judged.skipped] += 1
            continue
        kept, dropped = example_pairs(judged, config, source)
        summary.dropped.update(dropped)
        summary.pairs += len(kept)
        yield from kept


def write_dpo_pairs(path: str | Path, out: str | Path, config: PairsConfig) -> PairsSummary:
    """Write the pairs of ``path`` to ``out`` as TRL JSONL, atomically; return the summary."""
    summary = PairsSummary()
    write_jsonl((dpo_record(p) for p in iter_dpo_pairs(path, config, summary)), out)
    return summary
