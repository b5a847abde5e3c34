"""A model folder's ``tokenizer.json`` through the ``tokenizers`` library alone, without transformers.

A Hugging Face fast tokenizer is a thin layer over a ``tokenizers.Tokenizer`` read from that file;
importing transformers (and with it torch) takes about 5 s here, reading the file 0.06 s.
:class:`TokenizerFile` offers the part of the fast tokenizer's interface that PairRanker encodes
with (the call, ``pad_token_id``, ``convert_tokens_to_ids``) and gives the same ids: it truncates
from the right before the special tokens are added, as transformers' default ``longest_first``
does for one sequence. PairRanker uses it when its ONNX graph is already cached, so scoring starts
without torch (:meth:`llmblend.rank.pairranker.PairRanker.from_pretrained`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmblend.errors import LlmblendError, MissingExtraError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


class TokenizerFile:
    """The tokenizer of a folder with ``tokenizer.json`` (and ``tokenizer_config.json`` naming the
    pad token)."""

    is_fast = True

    def __init__(self, folder: str | Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingExtraError("tokenizers", "ml", "reading tokenizer.json") from exc
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise LlmblendError(f"{folder} has no {TOKENIZER_FILE}; load its tokenizer with transformers")
        self.backend = Tokenizer.from_file(str(path))
        # truncation and padding are applied per call, as transformers does, never from the file
        self.backend.no_truncation()
        self.backend.no_padding()
        self.pad_token_id = self._pad_id(folder)

    def _pad_id(self, folder: Path) -> int | None:
        config_path = folder / CONFIG_FILE
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        token = config.get("pad_token")
        if isinstance(token, dict):  # an AddedToken written out in full
            token = token.get("content")
        return None if token is None else self.backend.token_to_id(token)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        truncation: bool = False,
        add_special_tokens: bool = True,
        return_length: bool = False,
        verbose: bool = True,
    ) -> dict[str, Any]:
        """``{"input_ids": ...}`` (and ``"length"``) for one text or a list, like a fast tokenizer."""
        single = isinstance(texts, str)
        limit = max_length if truncation else None
        encodings = self._encode([texts] if single else list(texts), limit, add_special_tokens)
        if add_special_tokens:
            encodings = [self.backend.post_process(encoding) for encoding in encodings]
        ids = [encoding.ids for encoding in encodings]
        out: dict[str, Any] = {"input_ids": ids[0] if single else ids}
        if return_length:
            out["length"] = [len(row) for row in ids]
        return out

    def _encode(self, texts: list[str], max_length: int | None, special: bool) -> list[Any]:
        """The encodings without special tokens, cut from the right so that they fit ``max_length``
        once the ``special`` tokens are added."""
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        if max_length is not None:
            room = max_length - (self.backend.num_special_tokens_to_add(False) if special else 0)
            for encoding in encodings:
                encoding.truncate(max(room, 0))
        return encodings
