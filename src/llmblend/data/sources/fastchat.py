"""FastChat ``llm_judge`` benchmarks → examples: MT-bench, arena-bench-v1 and LIMA-test.

Questions ``{"question_id", "turns": [...]}``, one answer file per model, optional GPT-4 reference
answers and GPT-4 single-answer judgements (score 1–10). Each question becomes one example whose
instruction is the first user turn; every model's first answer is a candidate, with the judge's
score as ``scores["gpt4_score"]`` where a judgement exists.

The second MT-bench turn is converted apart (:func:`mt_bench_two_turn_examples`): each model
answered it after its *own* first answer, so the candidates do not share one conversation. The
shared source is the first user turn, and each candidate is the model's whole continuation —
its first answer, the second question, its second answer — flattened as turns (the way
:func:`~llmblend.types.split_conversations` compares conversations whose histories differ).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llmblend.data.jsonl import read_jsonl
from llmblend.data.sources import require_file
from llmblend.types import Candidate, Example, Message, prompt_text

log = logging.getLogger(__name__)

JUDGE_SCORE = "gpt4_score"


@dataclass(frozen=True, slots=True)
class FastChatBench:
    """Where one benchmark's files are, relative to the shared data folder."""

    name: str
    folder: str
    judgments: tuple[str, ...] = ()
    reference: str | None = "reference_answer/gpt-4.jsonl"


MT_BENCH = FastChatBench("mt_bench", "mt_bench")
ARENA_BENCH = FastChatBench("arena_bench_v1", "arena_bench_v1", judgments=("model_judgment/*.jsonl.xz",))
LIMA_TEST = FastChatBench(
    "lima_test", "lima_test", judgments=("model_judgment/gpt-4_single.jsonl",), reference=None
)


def _first_turns(records: Iterable[dict]) -> dict[str, str]:
    """Question id → the first turn of the first choice, for FastChat answer records."""
    return {str(r["question_id"]): r["choices"][0]["turns"][0] for r in records}


def _answers(folder: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(model → question id → first answer, answer file's model_id → model); model = file stem."""
    answers: dict[str, dict[str, str]] = {}
    names: dict[str, str] = {}
    for path in sorted((folder / "model_answer").glob("*.jsonl")):
        model = path.name.removesuffix(".jsonl")
        records = list(read_jsonl(path))
        answers[model] = _first_turns(records)
        names.update({r["model_id"]: model for r in records})
        names[model] = model
    return answers, names


def _judge_scores(
    folder: Path, patterns: Iterable[str], names: dict[str, str]
) -> dict[tuple[str, str], float]:
    """(model, question id) → GPT-4 score of the first turn; judgements without a score are skipped."""
    scores: dict[tuple[str, str], float] = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            for record in read_jsonl(path):
                if record.get("score") is None or int(record.get("turn", 1)) != 1:
                    continue
                model = names.get(record["model"])
                if model is None:
                    log.warning("%s judges %r, which has no answer file; skipped", path, record["model"])
                    continue
                scores[model, str(record["question_id"])] = float(record["score"])
    return scores


def fastchat_examples(data_dir: Path, bench: FastChatBench) -> list[Example]:
    """One example per question, candidates in model-name order, in the question file's order."""
    folder = require_file(data_dir, bench.folder)
    questions = list(read_jsonl(require_file(folder, "question.jsonl")))
    answers, names = _answers(folder)
    scores = _judge_scores(folder, bench.judgments, names)
    references = _first_turns(read_jsonl(folder / bench.reference)) if bench.reference else {}
    examples = []
    for question in questions:
        qid = str(question["question_id"])
        candidates = [
            Candidate(model, by_question[qid], _score(scores, model, qid), "unknown")
            for model, by_question in answers.items()
            if qid in by_question
        ]
        examples.append(
            Example(
                id=f"{bench.name}/{qid}",
                instruction=question["turns"][0],
                output=references.get(qid),
                candidates=candidates,
                extra={"category": question.get("category")},
            )
        )
    return examples


def _score(scores: dict[tuple[str, str], float], model: str, qid: str) -> dict[str, float]:
    value = scores.get((model, qid))
    return {} if value is None else {JUDGE_SCORE: value}


def mt_bench_examples(data_dir: Path) -> list[Example]:
    """MT-bench: 80 questions × 32 models (first turns); GPT-4 references for 30; no judgements."""
    return fastchat_examples(data_dir, MT_BENCH)


def arena_bench_examples(data_dir: Path) -> list[Example]:
    """arena-bench-v1: 300 questions × 17 models; GPT-4 scores (given the reference) for 15."""
    return fastchat_examples(data_dir, ARENA_BENCH)


def lima_test_examples(data_dir: Path) -> list[Example]:
    """LIMA-test: 300 questions × 4 models; GPT-4 scores for the three LIMA models."""
    return fastchat_examples(data_dir, LIMA_TEST)


def mt_bench_two_turn_examples(data_dir: Path) -> list[Example]:
    """MT-bench second turns: 80 questions × 32 models' own two-turn conversations (see the module)."""
    folder = require_file(data_dir, MT_BENCH.folder)
    questions = list(read_jsonl(require_file(folder, "question.jsonl")))
    turns: dict[str, dict[str, list[str]]] = {}
    for path in sorted((folder / "model_answer").glob("*.jsonl")):
        model = path.name.removesuffix(".jsonl")
        turns[model] = {str(r["question_id"]): r["choices"][0]["turns"] for r in read_jsonl(path)}
    examples = []
    for question in questions:
        qid, (first, second) = str(question["question_id"]), question["turns"][:2]
        candidates = [
            Candidate(model, _continuation(answers[0], second, answers[1]), {}, "unknown")
            for model, by_question in turns.items()
            if len(answers := by_question.get(qid, [])) >= 2
        ]
        examples.append(
            Example(
                id=f"mt_bench_2turn/{qid}",
                instruction=first,
                candidates=candidates,
                extra={"category": question.get("category"), "second_turn": second},
            )
        )
    return examples


def _continuation(first_answer: str, second_question: str, second_answer: str) -> str:
    turns = [
        Message("assistant", first_answer),
        Message("user", second_question),
        Message("assistant", second_answer),
    ]
    return prompt_text(turns)
