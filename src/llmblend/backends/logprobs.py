"""Token logprobs in the two OpenAI reply shapes, read into :class:`~llmblend.backends.base.TokenLogprob`.

Chat (``/v1/chat/completions`` asked with ``"logprobs": true, "top_logprobs": k``)::

    choices[0].logprobs = {"content": [{"token": "Yes", "logprob": -0.1,
                                        "top_logprobs": [{"token": "Yes", "logprob": -0.1}, ...]}, ...]}

Completion (the legacy ``/v1/completions`` asked with ``"logprobs": k``)::

    choices[0].logprobs = {"tokens": ["Yes", ...], "token_logprobs": [-0.1, ...],
                           "top_logprobs": [{"Yes": -0.1, "No": -2.4}, ...]}

OpenAI, vLLM, llama.cpp's ``llama-server`` and ``llama_cpp.server`` (and llama-cpp-python in-process)
answer in these shapes. A reply whose logprobs are missing or malformed gives None, never an error:
the answer's text is still good. Alternatives are sorted most likely first (a stable sort, so a
server's own order is kept).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

from llmblend.backends.base import TokenLogprob

log = logging.getLogger(__name__)

Logprobs = tuple[TokenLogprob, ...]


class _Malformed(ValueError):
    """A logprobs object that does not have the expected shape (caught here, logged, never raised)."""


def choice_logprobs(choice: Mapping[str, Any] | None, *, chat: bool, source: str = "") -> Logprobs | None:
    """The logprobs of one reply choice (``choices[0]``), chat or completion shape; None if absent or
    malformed (logged at debug level, naming ``source``)."""
    data = choice.get("logprobs") if isinstance(choice, Mapping) else None
    if data is None:
        log.debug("no logprobs in the reply from %s", source or "the backend")
        return None
    try:
        return chat_logprobs(data) if chat else completion_logprobs(data)
    except _Malformed as exc:
        log.debug("ignoring malformed logprobs from %s: %s", source or "the backend", exc)
        return None


def chat_logprobs(data: Any) -> Logprobs:
    """The chat shape ``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}``;
    raises :class:`_Malformed` when it is not that."""
    content = data.get("content") if isinstance(data, Mapping) else None
    if not isinstance(content, list):
        raise _Malformed("logprobs.content is not a list")
    return tuple(_chat_entry(entry, i) for i, entry in enumerate(content))


def completion_logprobs(data: Any) -> Logprobs:
    """The completion shape ``{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{t: lp}]}``;
    raises :class:`_Malformed` when it is not that."""
    if not isinstance(data, Mapping):
        raise _Malformed("logprobs is not an object")
    tokens, values, tops = data.get("tokens"), data.get("token_logprobs"), data.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list):
        raise _Malformed("logprobs.tokens or logprobs.token_logprobs is not a list")
    if tops is None:
        tops = [None] * len(tokens)
    if not isinstance(tops, list) or not len(tokens) == len(values) == len(tops):
        raise _Malformed(f"{len(tokens)} tokens but {len(values)} logprobs and {_size(tops)} top_logprobs")
    return tuple(
        TokenLogprob(_token(t, i), _logprob(v, i), _top_of_mapping(top, i))
        for i, (t, v, top) in enumerate(zip(tokens, values, tops, strict=True))
    )


def _chat_entry(entry: Any, i: int) -> TokenLogprob:
    if not isinstance(entry, Mapping):
        raise _Malformed(f"content[{i}] is not an object")
    alternatives = entry.get("top_logprobs")
    if alternatives is None:
        alternatives = []
    if not isinstance(alternatives, list) or not all(isinstance(a, Mapping) for a in alternatives):
        raise _Malformed(f"content[{i}].top_logprobs is not a list of objects")
    top = [(_token(a.get("token"), i), _logprob(a.get("logprob"), i)) for a in alternatives]
    return TokenLogprob(
        _token(entry.get("token"), i), _logprob(entry.get("logprob"), i), _most_likely_first(top)
    )


def _top_of_mapping(top: Any, i: int) -> tuple[tuple[str, float], ...]:
    if top is None:
        return ()
    if not isinstance(top, Mapping):
        raise _Malformed(f"top_logprobs[{i}] is not an object of token: logprob")
    return _most_likely_first([(_token(t, i), _logprob(v, i)) for t, v in top.items()])


def _most_likely_first(pairs: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(pairs, key=lambda pair: -pair[1]))


def _token(value: Any, i: int) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"token {i} is {type(value).__name__}, not a string")
    return value


def _logprob(value: Any, i: int) -> float:
    # numbers.Real: llama-cpp-python in-process gives numpy float32 values, which are not floats
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise _Malformed(f"logprob of token {i} is {value!r}, not a number")
    return float(value)


def _size(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else type(value).__name__
