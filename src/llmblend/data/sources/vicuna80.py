"""Vicuna-80 → examples: 80 questions × 8 answer sets, GPT-4 pairwise reviews as ``cmp_results``.

Each review gives a score pair (1–10) to two answers; it becomes the MixInstruct verdict
"A is better" / "B is better", or for equal scores "Same good" when the shared score is at least
:data:`GOOD_SCORE` and "Same bad" below it. The model name is the answer file's stem
(``answer_gpt35.jsonl`` → ``gpt35``).
"""

from __future__ import annotations

from pathlib import Path

from llmblend.data.jsonl import read_jsonl
from llmblend.data.sources import require_file
from llmblend.types import Candidate, Example

GOOD_SCORE = 5.0


def verdict(score_a: float, score_b: float) -> str:
    """The MixInstruct verdict of a review's score pair."""
    if score_a > score_b:
        return "A is better"
    if score_b > score_a:
        return "B is better"
    return "Same good" if score_a >= GOOD_SCORE else "Same bad"


def vicuna80_examples(data_dir: Path) -> list[Example]:
    folder = require_file(data_dir, "vicuna80")
    answers: dict[str, dict[int, str]] = {}
    model_of_answer: dict[str, str] = {}
    for path in sorted((folder / "answer").glob("answer_*.jsonl")):
        model = path.name.removeprefix("answer_").removesuffix(".jsonl")
        records = list(read_jsonl(path))
        answers[model] = {r["question_id"]: r["text"] for r in records}
        model_of_answer.update({r["answer_id"]: model for r in records})
    cmp_results: dict[int, dict[str, str]] = {}
    for path in sorted((folder / "review").glob("*/*.jsonl")):
        for review in read_jsonl(path):
            pair = f"{model_of_answer[review['answer1_id']]},{model_of_answer[review['answer2_id']]}"
            cmp_results.setdefault(review["question_id"], {})[pair] = verdict(*review["score"])
    return [
        Example(
            id=f"vicuna80/{q['question_id']}",
            instruction=q["text"],
            candidates=[
                Candidate(model, by_question[q["question_id"]], {}, "unknown")
                for model, by_question in answers.items()
                if q["question_id"] in by_question
            ],
            cmp_results=cmp_results.get(q["question_id"]),
            extra={"category": q.get("category")},
        )
        for q in read_jsonl(folder / "question.jsonl")
    ]
