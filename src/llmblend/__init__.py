"""llmblend: make several LLMs work as one (LLM-Blender: PairRanker + GenFuser, and more).

The core import is light: heavy extras (torch, transformers, datasets) load only where used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from llmblend.data import (
    load_mixinstruct,
    read_mixinstruct,
    read_preferences,
    write_mixinstruct,
    write_preferences,
)
from llmblend.errors import DataFormatError, LlmblendError
from llmblend.rank.pairranker import PairRanker
from llmblend.rank.registry import load_ranker
from llmblend.types import Candidate, Example, Message, PreferencePair, Ranking

try:
    __version__ = version("llmblend")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "Candidate",
    "DataFormatError",
    "Example",
    "LlmblendError",
    "Message",
    "PairRanker",
    "PreferencePair",
    "Ranking",
    "__version__",
    "load_mixinstruct",
    "load_ranker",
    "read_mixinstruct",
    "read_preferences",
    "write_mixinstruct",
    "write_preferences",
]
