"""Reading, writing, validating and building data sets (MixInstruct JSONL, preference pairs)."""

from llmblend.data.mixinstruct import (
    load_hub_mixinstruct,
    load_mixinstruct,
    read_mixinstruct,
    validate_mixinstruct,
    write_mixinstruct,
)
from llmblend.data.preferences import read_preferences, validate_preferences, write_preferences

__all__ = [
    "load_hub_mixinstruct",
    "load_mixinstruct",
    "read_mixinstruct",
    "read_preferences",
    "validate_mixinstruct",
    "validate_preferences",
    "write_mixinstruct",
    "write_preferences",
]
