"""AlpacaEval → MixInstruct: many LLMs' answers to the same instructions, with a GPT-4 oracle.

The oracle is the ``weighted_alpaca_eval_gpt4_turbo`` annotator: for each model and instruction,
P(the model's answer beats ``gpt4_1106_preview``'s) = ``preference − 1``. It plays the role GPT-Rank
plays in MixInstruct (LLM-Blender §2): the score candidates are ranked by. ``NullModel`` games that
judge and is left out everywhere.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmblend.data.jsonl import read_jsonl
from llmblend.data.sources import require_file
from llmblend.types import Candidate, Example

log = logging.getLogger(__name__)

ORACLE_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
BASELINE_MODEL = "gpt4_1106_preview"
EXCLUDED_MODELS = frozenset({"NullModel"})
#: Name of the oracle score on each candidate: P(beats gpt4_1106_preview).
ORACLE_SCORE = "gpt4_win"
DECODING_METHOD = "unknown"  # AlpacaEval does not record how each model decoded

INSTRUCTIONS = "alpaca_eval/instructions.jsonl"
OUTPUTS = "alpaca_eval/model_outputs_wide.jsonl.xz"
ANNOTATIONS = "alpaca_eval/annotations.jsonl.xz"


@dataclass(frozen=True, slots=True)
class AlpacaEvalRow:
    """One instruction with the answers of the models asked for (model → text)."""

    index: int
    dataset: str
    instruction: str
    outputs: dict[str, str]

    @property
    def example_id(self) -> str:
        """``"{sub-source}/{index}"``, the same shape as MixInstruct's ids."""
        return f"{self.dataset}/{self.index}"


def read_oracle_scores(data_dir: Path) -> dict[str, dict[int, float]]:
    """model → instruction index → P(beats gpt4_1106_preview), for every judged model but NullModel.

    The file repeats some judgements (same model, same instruction); repeats agree and are merged.
    """
    scores: dict[str, dict[int, float]] = defaultdict(dict)
    for record in read_jsonl(require_file(data_dir, ANNOTATIONS)):
        if record["annotator"] != ORACLE_ANNOTATOR or record.get("preference") in (None, 0):
            continue
        model = record["results_dir"].split("/")[0]
        if model in EXCLUDED_MODELS:
            continue
        scores[model][int(record["id"])] = float(record["preference"]) - 1.0
    return dict(scores)


def iter_rows(data_dir: Path, models: Collection[str] | None = None) -> Iterator[AlpacaEvalRow]:
    """Stream the instructions with the outputs of ``models`` (all but NullModel if None).

    Missing or null outputs are left out of :attr:`AlpacaEvalRow.outputs`.
    """
    for record in read_jsonl(require_file(data_dir, OUTPUTS)):
        wanted = record["outputs"].keys() if models is None else models
        outputs = {
            m: record["outputs"][m]
            for m in wanted
            if m not in EXCLUDED_MODELS and isinstance(record["outputs"].get(m), str)
        }
        yield AlpacaEvalRow(int(record["id"]), record["dataset"], record["instruction"], outputs)


def count_rows(data_dir: Path) -> int:
    """How many instructions there are (cheap: reads the small instructions file)."""
    return sum(1 for _ in read_jsonl(require_file(data_dir, INSTRUCTIONS)))


def to_example(
    row: AlpacaEvalRow,
    models: Collection[str],
    oracle: dict[str, dict[int, float]],
    reference_model: str = BASELINE_MODEL,
) -> Example:
    """The MixInstruct example of one row: candidates from ``models`` in the given order,
    ``scores["gpt4_win"]`` from the oracle, ``output`` = the reference model's answer."""
    candidates = []
    for model in models:
        if model not in row.outputs:
            log.warning("AlpacaEval has no output of %s for %s; left out", model, row.example_id)
            continue
        score = oracle.get(model, {}).get(row.index)
        scores = {} if score is None else {ORACLE_SCORE: score}
        candidates.append(Candidate(model, row.outputs[model], scores, DECODING_METHOD))
    return Example(
        id=row.example_id,
        instruction=row.instruction,
        input="",
        output=row.outputs.get(reference_model),
        candidates=candidates,
    )


def alpaca_eval_examples(
    data_dir: Path, models: Collection[str], reference_model: str = BASELINE_MODEL
) -> Iterator[Example]:
    """Every AlpacaEval instruction as an example whose candidates come from ``models``."""
    if gaming := set(models) & EXCLUDED_MODELS:
        raise ValueError(f"{sorted(gaming)} game the judge and cannot be candidates; drop them")
    known = available_models(data_dir)
    if unknown := [m for m in [*models, reference_model] if m not in known]:
        raise ValueError(f"AlpacaEval has no outputs of {unknown}; choose from {', '.join(known)}")
    oracle = read_oracle_scores(data_dir)
    for row in iter_rows(data_dir, [*models, reference_model]):
        yield to_example(row, models, oracle, reference_model)


def available_models(data_dir: Path) -> list[str]:
    """Every model with outputs in the shared AlpacaEval files (NullModel excluded)."""
    with open(require_file(data_dir, "alpaca_eval/models.json"), encoding="utf-8") as handle:
        return sorted(set(json.load(handle)) - EXCLUDED_MODELS)
