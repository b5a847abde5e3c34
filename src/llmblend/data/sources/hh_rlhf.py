"""Anthropic hh-rlhf → preference pairs.

Each line holds two transcripts, ``"\\n\\nHuman: … \\n\\nAssistant: …"``, that share every turn but the
last assistant one. The shared turns become the prompt (a conversation when there are several),
the two last turns the chosen and rejected answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from llmblend.data.jsonl import iter_lines, parse_line
from llmblend.errors import DataFormatError, DataProblem
from llmblend.types import Message, PreferencePair, as_prompt

log = logging.getLogger(__name__)

HARMLESS_TEST = "hh_rlhf/harmless-base_test.jsonl.gz"
_TURN = re.compile(r"\n\n(Human|Assistant): ")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[Message]:
    """The messages of an hh-rlhf transcript; ValueError if it does not start with a turn marker."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError(f"transcript does not start with a Human/Assistant turn: {parts[0][:40]!r}")
    return [
        Message(_ROLE[role], content.strip()) for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def split_pair(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], str, str] | None:
    """(shared prompt, chosen answer, rejected answer), or None when the two do not share a prompt."""
    if not chosen or not rejected or chosen[-1].role != "assistant" or rejected[-1].role != "assistant":
        return None
    if chosen[:-1] != rejected[:-1] or not chosen[:-1]:
        return None
    return chosen[:-1], chosen[-1].content, rejected[-1].content


def hh_rlhf_pairs(path: Path, source: str = "hh_rlhf") -> Iterator[PreferencePair]:
    """Stream the pairs of an hh-rlhf file; lines whose two transcripts diverge before the last
    turn (or do not parse) are skipped and counted in a warning."""
    skipped = 0
    for number, line in iter_lines(path):
        record = parse_line(path, number, line)
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in ("chosen", "rejected")
        ):
            problem = DataProblem(str(path), number, "chosen/rejected", "expected two transcript strings")
            raise DataFormatError(problem)
        try:
            parts = split_pair(parse_transcript(record["chosen"]), parse_transcript(record["rejected"]))
        except ValueError:
            parts = None
        if parts is None:
            skipped += 1
            continue
        prompt, chosen, rejected = parts
        yield PreferencePair(
            as_prompt(prompt), chosen, rejected, source, example_id=f"{Path(path).name}:{number}"
        )
    if skipped:
        log.warning("%s: skipped %d pair(s) whose transcripts differ before the last turn", path, skipped)
