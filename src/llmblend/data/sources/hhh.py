"""HHH-alignment pairs (as shipped in Prometheus' evaluation set) → preference pairs.

Each item embeds the instruction and a response in a rubric-grading prompt, once with the
human-preferred response (``chosen_instruction``) and once with the other; both are cut back out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from llmblend.data.jsonl import open_text
from llmblend.types import PreferencePair

HHH_FILE = "prometheus/hhh_alignment_eval.json.xz"
_EMBEDDED = re.compile(
    r"###The instruction to evaluate:\n(?P<instruction>.*?)\n\n###Response to evaluate:\n"
    r"(?P<response>.*?)\n\n###Score Rubrics:",
    re.DOTALL,
)


def unwrap(prompt: str) -> tuple[str, str]:
    """(instruction, response) from a rubric-grading prompt; ValueError if the markers are missing."""
    match = _EMBEDDED.search(prompt)
    if match is None:
        raise ValueError("no '###The instruction to evaluate' / '###Response to evaluate' sections")
    return match["instruction"].strip(), match["response"].strip()


def hhh_pairs(path: Path) -> list[PreferencePair]:
    """One pair per item; ``source`` is ``hhh/<category>`` (harmless, helpful, honest, other)."""
    with open_text(path) as handle:
        items = json.load(handle)
    pairs = []
    for index, item in enumerate(items):
        try:
            instruction, chosen = unwrap(item["chosen_instruction"])
            rejected_instruction, rejected = unwrap(item["rejected_instruction"])
        except ValueError as exc:
            raise ValueError(f"{path}: item {index}: {exc}") from None
        if rejected_instruction != instruction:
            raise ValueError(f"{path}: item {index}: chosen and rejected embed different instructions")
        pairs.append(
            PreferencePair(instruction, chosen, rejected, f"hhh/{item['source']}", example_id=f"hhh/{index}")
        )
    return pairs
