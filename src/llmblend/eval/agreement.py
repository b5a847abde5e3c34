"""How often a ranker or an LLM judge agrees with human or GPT-4 labels on answer pairs (LLM-Blender §5).

Label sets (``llmblend eval agreement --labels NAME``), all read from the shared data:

- ``hhh``: 221 HHH-alignment pairs with a human preference (no ties);
- ``vicuna80-human``: FairEval's 80 human labels on gpt-3.5 vs vicuna-13b over the Vicuna-80
  questions (CHATGPT / VICUNA13B / TIE);
- ``vicuna80-gpt4``: GPT-4's reviews of the same 80 pairs (equal scores are a tie);
- ``rewardbench:PATH``: a RewardBench file (prompt, chosen, rejected, subset; no ties), reported
  as a whole and per subset (:func:`label_groups`);
- or a TRL-style preference JSONL file (no ties).

Ties are kept apart: ``accuracy`` is over pairs the label decides *and* the method decides;
``predicted_ties`` counts decided labels the method calls a tie; on tie labels the report says
how often the method also said tie. In labelled pairs the preferred answer is put first on even
indices and second on odd ones, so a position bias cannot score.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmblend.data.jsonl import read_jsonl
from llmblend.data.sources import require_file
from llmblend.types import PreferencePair, Prompt, prompt_text

Side = Literal["a", "b", "tie"]
Prediction = Literal["a", "b", "tie", "error"]
VICUNA80_HUMAN = "vicuna80/faireval_human_gpt35_vs_vicuna-13b.txt"
_HUMAN_LABELS = {"CHATGPT": "a", "VICUNA13B": "b", "TIE": "tie"}


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """An instruction, two answers and which is better according to the label source."""

    instruction: Prompt
    answer_a: str
    answer_b: str
    label: Side
    source: str
    model_a: str = "A"
    model_b: str = "B"
    example_id: str = ""


def from_preferences(pairs: Sequence[PreferencePair]) -> list[LabelledPair]:
    """Preference pairs as labelled pairs, the preferred answer first on even indices only."""
    out = []
    for index, pair in enumerate(pairs):
        swap = index % 2 == 1
        a, b = (pair.rejected, pair.chosen) if swap else (pair.chosen, pair.rejected)
        out.append(
            LabelledPair(
                pair.prompt, a, b, "b" if swap else "a", pair.source, example_id=pair.example_id or ""
            )
        )
    return out


def _vicuna80_answers(data_dir: Path) -> tuple[list[dict], dict[int, str], dict[int, str]]:
    folder = require_file(data_dir, "vicuna80")
    questions = list(read_jsonl(folder / "question.jsonl"))
    gpt35 = {r["question_id"]: r["text"] for r in read_jsonl(folder / "answer" / "answer_gpt35.jsonl")}
    vicuna = {r["question_id"]: r["text"] for r in read_jsonl(folder / "answer" / "answer_vicuna-13b.jsonl")}
    return questions, gpt35, vicuna


def vicuna80_human(data_dir: Path) -> list[LabelledPair]:
    """FairEval's human labels: line i of the label file judges question i (gpt-3.5 = A)."""
    questions, gpt35, vicuna = _vicuna80_answers(data_dir)
    path = require_file(data_dir, VICUNA80_HUMAN)
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) != len(questions):
        raise ValueError(f"{path}: {len(labels)} labels for {len(questions)} questions")
    unknown = sorted(set(labels) - set(_HUMAN_LABELS))
    if unknown:
        raise ValueError(f"{path}: unknown labels {unknown}; expected {sorted(_HUMAN_LABELS)}")
    return [
        LabelledPair(
            q["text"],
            gpt35[q["question_id"]],
            vicuna[q["question_id"]],
            _HUMAN_LABELS[label],
            "vicuna80/human",
            "gpt35",
            "vicuna-13b",
            f"vicuna80/{q['question_id']}",
        )
        for q, label in zip(questions, labels, strict=True)
    ]


def vicuna80_gpt4(data_dir: Path) -> list[LabelledPair]:
    """GPT-4's reviews of gpt-3.5 vs vicuna-13b on the same questions (equal scores: a tie)."""
    questions, gpt35, vicuna = _vicuna80_answers(data_dir)
    folder = require_file(data_dir, "vicuna80/review/vicuna-13b_20230322-clean-lang")
    scores = {r["question_id"]: r["score"] for r in read_jsonl(folder / "review_gpt35_vicuna-13b.jsonl")}
    pairs = []
    for q in questions:
        if q["question_id"] not in scores:
            continue
        first, second = scores[q["question_id"]]
        label: Side = "a" if first > second else "b" if second > first else "tie"
        pairs.append(
            LabelledPair(
                q["text"],
                gpt35[q["question_id"]],
                vicuna[q["question_id"]],
                label,
                "vicuna80/gpt4",
                "gpt35",
                "vicuna-13b",
                f"vicuna80/{q['question_id']}",
            )
        )
    return pairs


LABEL_SETS = {
    "hhh": "221 HHH-alignment pairs, human preference",
    "vicuna80-human": "80 Vicuna questions, gpt-3.5 vs vicuna-13b, human labels with ties (FairEval)",
    "vicuna80-gpt4": "the same 80 pairs, GPT-4's review scores (equal = tie)",
    "rewardbench:FILE": "a RewardBench JSONL or JSON file of pairs, reported whole and per subset",
}
REWARDBENCH = "rewardbench:"


def load_labels(name: str, data_dir: Path) -> list[LabelledPair]:
    """A named label set (:data:`LABEL_SETS`), ``rewardbench:PATH``, or a preference-pair JSONL file."""
    if name == "hhh":
        from llmblend.data.sources.hhh import HHH_FILE, hhh_pairs

        return from_preferences(hhh_pairs(require_file(data_dir, HHH_FILE)))
    if name == "vicuna80-human":
        return vicuna80_human(data_dir)
    if name == "vicuna80-gpt4":
        return vicuna80_gpt4(data_dir)
    if name.startswith(REWARDBENCH):
        from llmblend.data.sources.rewardbench import rewardbench_pairs

        return from_preferences(rewardbench_pairs(name.removeprefix(REWARDBENCH)))
    if Path(name).is_file():
        from llmblend.data.preferences import read_preferences

        return from_preferences(list(read_preferences(name)))
    raise ValueError(
        f"unknown label set {name!r}: give one of {', '.join(LABEL_SETS)} or a preference JSONL file"
    )


# ---------------------------------------------------------------- predictions


def side_of(margin: float) -> Prediction:
    """A margin (A's score − B's) as a verdict: NaN is an error, 0 a tie."""
    if math.isnan(margin):
        return "error"
    return "a" if margin > 0 else "b" if margin < 0 else "tie"


def ranker_predictions(ranker: Any, pairs: Sequence[LabelledPair], **options: Any) -> list[Prediction]:
    """A ranker's verdict on each pair (each pair ranked as a two-candidate example)."""
    from llmblend.eval.ranking import preference_margins

    as_preferences = [PreferencePair(p.instruction, p.answer_a, p.answer_b, p.source) for p in pairs]
    return [side_of(float(m)) for m in preference_margins(ranker, as_preferences, **options)]


def judge_predictions(judge: Any, pairs: Sequence[LabelledPair]) -> list[Prediction]:
    """An LLM judge's verdict on each pair (asked in both orders; a flip is a tie)."""
    from llmblend.eval.judge import JudgeItem

    items = [
        JudgeItem(prompt_text(p.instruction), "", p.answer_a, p.answer_b, p.model_a, p.model_b, p.example_id)
        for p in pairs
    ]
    verdicts = asyncio.run(judge.judge_pairs(items))
    return [v.winner for v in verdicts]


# ---------------------------------------------------------------- agreement


@dataclass(frozen=True, slots=True)
class Agreement:
    """One method on one label set; see the module docstring for how ties are counted."""

    labels: str
    method: str
    pairs: int
    accuracy: float
    correct: int
    decided: int
    predicted_ties: int
    errors: int
    tie_labels: int
    ties_matched: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(
    labels: str, method: str, pairs: Sequence[LabelledPair], predictions: Sequence[Prediction]
) -> Agreement:
    """Compare predictions with the labels of ``pairs`` (same order)."""
    if len(pairs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(pairs)} pairs")
    gold = np.array([p.label for p in pairs])
    pred = np.array(predictions)
    decided_label = gold != "tie"
    decided = decided_label & np.isin(pred, ("a", "b"))
    correct = int((decided & (gold == pred)).sum())
    return Agreement(
        labels=labels,
        method=method,
        pairs=len(pairs),
        accuracy=correct / int(decided.sum()) if decided.any() else math.nan,
        correct=correct,
        decided=int(decided.sum()),
        predicted_ties=int((decided_label & (pred == "tie")).sum()),
        errors=int((pred == "error").sum()),
        tie_labels=int((~decided_label).sum()),
        ties_matched=int(((~decided_label) & (pred == "tie")).sum()),
    )


def label_groups(name: str, pairs: Sequence[LabelledPair]) -> dict[str, list[int]]:
    """Indices of the pairs to report on: all of them under ``name``, and for a RewardBench set
    also each subset's under ``"NAME / SUBSET"`` (subsets in first-seen order)."""
    groups = {name: list(range(len(pairs)))}
    if name.startswith(REWARDBENCH):
        for index, pair in enumerate(pairs):
            subset = pair.source.partition("/")[2] or "(no subset)"
            groups.setdefault(f"{name} / {subset}", []).append(index)
    return groups


def grouped_agreement(
    labels: str, method: str, pairs: Sequence[LabelledPair], predictions: Sequence[Prediction]
) -> list[Agreement]:
    """:func:`agreement` on the whole label set, then on each of its :func:`label_groups`."""
    if len(pairs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(pairs)} pairs")
    return [
        agreement(group, method, [pairs[i] for i in indices], [predictions[i] for i in indices])
        for group, indices in label_groups(labels, pairs).items()
    ]
