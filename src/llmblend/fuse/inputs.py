"""What a trained fuser reads: LLM-Blender's GenFuser input (§4), for seq2seq and causal LMs.

**Seq2seq** (T5, Flan-T5, BART; the paper's GenFuser is a Flan-T5-XL). The input is LLM-Blender's
string, verbatim (``llm_blender/blender/blender_utils.py``, ``GenFuserDataset``)::

    Instruction: {x}</s>Input: {input}</s>Candidate 0: <extra_id_0>:{c0}</s>Candidate 1: <extra_id_1>:{c1}
    </s>...</s>Summarize candidates into a better one for the given instruction:

(one line; ``K = len(candidates)``, candidate ``i`` is tagged ``<extra_id_i>``, best first). A T5
tokenizer reads each ``</s>`` as its end-of-sequence token and ``<extra_id_i>`` as a sentinel, so
the official ``llm-blender/gen_fuser_3b`` sees exactly what it was trained on. As in LLM-Blender, a
candidate longer than the candidate budget is cut on a token boundary and gets ``"..."``.

**Causal LMs** (Llama, Gemma, Qwen, ...) get the same content as one user message::

    Instruction: {x}

    Input: {input}                        (left out when there is no input)

    Candidate 0:
    {c0}

    Candidate 1:
    {c1}

    Summarize candidates into a better one for the given instruction:

formatted with the tokenizer's chat template (with the generation prompt) when it has one, else
wrapped in the plain :data:`~llmblend.backends.base.COMPLETION_TEMPLATE` (``### Instruction: ...
### Response:``), the frame llmblend uses for base models everywhere. The fused answer follows it,
ended by the tokenizer's end-of-sequence token (that is what training teaches).

**Budgets.** Each candidate is first cut to ``max_candidate_tokens``; if the whole input is still
longer than ``max_source_tokens`` tokens, the longest pieces (instruction, input, candidates) are cut
to a common length (water-filling) until it fits, so the closing request is never lost. Nothing here
imports torch: a tokenizer is any Hugging Face tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

from llmblend.backends.base import COMPLETION_TEMPLATE
from llmblend.types import Prompt, prompt_text

#: The closing request of LLM-Blender's GenFuser input.
FUSE_REQUEST: Final = "Summarize candidates into a better one for the given instruction:"
#: What a cut candidate ends with (as in LLM-Blender).
CUT_MARK: Final = "..."
#: "seq2seq" (encoder-decoder) or "causal" (decoder-only).
ModelKind = Literal["seq2seq", "causal"]
MODEL_KINDS: Final = ("seq2seq", "causal")


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_to_tokens(tokenizer: Any, text: str, max_tokens: int | None, *, suffix: str = "") -> str:
    """``text`` cut to its first ``max_tokens`` tokens (special tokens not counted), decoded back.

    Text within the budget comes back unchanged (not re-decoded); a cut text ends with ``suffix``.
    ``max_tokens=None`` means no budget.
    """
    if max_tokens is None:
        return text
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    ids = token_ids(tokenizer, text)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True) + suffix


def _cut_candidates(
    candidates: Sequence[str], tokenizer: Any | None, max_candidate_tokens: int | None
) -> list[str]:
    if tokenizer is None or max_candidate_tokens is None:
        return list(candidates)
    return [truncate_to_tokens(tokenizer, c, max_candidate_tokens, suffix=CUT_MARK) for c in candidates]


def _check_candidates(candidates: Sequence[str]) -> None:
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of strings, not one string")
    if not candidates:
        raise ValueError("a fuser needs at least one candidate; got none")


def seq2seq_input(
    instruction: Prompt,
    input: str,
    candidates: Sequence[str],
    *,
    tokenizer: Any | None = None,
    max_candidate_tokens: int | None = None,
) -> str:
    """LLM-Blender's GenFuser input string (see the module notes), candidates best first.

    With ``tokenizer`` and ``max_candidate_tokens`` each candidate is first cut to that many tokens
    (plus ``"..."``). A conversation instruction is flattened with :func:`~llmblend.types.prompt_text`.
    """
    _check_candidates(candidates)
    cut = _cut_candidates(candidates, tokenizer, max_candidate_tokens)
    parts = [f"Instruction: {prompt_text(instruction)}", f"Input: {input}"]
    parts += [f"Candidate {i}: <extra_id_{i}>:{c}" for i, c in enumerate(cut)]
    return "</s>".join(parts) + "</s>" + FUSE_REQUEST


def causal_user_message(
    instruction: Prompt,
    input: str,
    candidates: Sequence[str],
    *,
    tokenizer: Any | None = None,
    max_candidate_tokens: int | None = None,
) -> str:
    """The text of the causal fuser's one user message (see the module notes)."""
    _check_candidates(candidates)
    cut = _cut_candidates(candidates, tokenizer, max_candidate_tokens)
    blocks = [f"Instruction: {prompt_text(instruction)}"]
    if input:
        blocks.append(f"Input: {input}")
    blocks += [f"Candidate {i}:\n{c}" for i, c in enumerate(cut)]
    blocks.append(FUSE_REQUEST)
    return "\n\n".join(blocks)


def causal_messages(
    instruction: Prompt,
    input: str,
    candidates: Sequence[str],
    *,
    tokenizer: Any | None = None,
    max_candidate_tokens: int | None = None,
) -> list[dict[str, str]]:
    """``[{"role": "user", "content": ...}]``: the causal fuser's request as chat messages."""
    content = causal_user_message(
        instruction, input, candidates, tokenizer=tokenizer, max_candidate_tokens=max_candidate_tokens
    )
    return [{"role": "user", "content": content}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def causal_prompt(
    tokenizer: Any,
    instruction: Prompt,
    input: str,
    candidates: Sequence[str],
    *,
    max_candidate_tokens: int | None = None,
) -> str:
    """The text a causal fuser reads: its chat template (with the generation prompt) over
    :func:`causal_messages` when the tokenizer has one, else :data:`COMPLETION_TEMPLATE` around the
    same user message."""
    messages = causal_messages(
        instruction, input, candidates, tokenizer=tokenizer, max_candidate_tokens=max_candidate_tokens
    )
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return COMPLETION_TEMPLATE.replace("{prompt}", messages[0]["content"])


def _water_level(lengths: Sequence[int], budget: int) -> int:
    """The largest cap ``T >= 0`` with ``sum(min(length, T)) <= budget``; -1 when even T = 0 fails."""
    if budget < 0:
        return -1
    low, high = 0, max(lengths, default=0)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(n, middle) for n in lengths) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def encode_source(
    tokenizer: Any,
    kind: ModelKind,
    instruction: Prompt,
    input: str,
    candidates: Sequence[str],
    *,
    max_candidate_tokens: int | None = None,
    max_source_tokens: int | None = None,
) -> list[int]:
    """The token ids a fuser of ``kind`` reads for one request, at most ``max_source_tokens`` long.

    Seq2seq: :func:`seq2seq_input` tokenized with the tokenizer's special tokens (T5 appends
    ``</s>``). Causal: :func:`causal_prompt`, with special tokens (a BOS) only when no chat template
    (which writes its own) is used. Candidates are cut to ``max_candidate_tokens`` first; then, if
    needed, the longest of instruction, input and candidates are cut to a common length. ValueError
    when even empty pieces do not fit (the budget is smaller than the frame).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    _check_candidates(candidates)
    pieces = [prompt_text(instruction), input, *_cut_candidates(candidates, tokenizer, max_candidate_tokens)]
    render = _renderer(tokenizer, kind)
    ids = render(pieces)
    if max_source_tokens is None or len(ids) <= max_source_tokens:
        return ids
    lengths = [len(token_ids(tokenizer, piece)) for piece in pieces]
    excess = len(ids) - max_source_tokens
    for _ in range(8):
        cap = _water_level(lengths, sum(lengths) - excess)
        if cap < 0:
            break
        cut = [
            truncate_to_tokens(tokenizer, piece, cap, suffix=CUT_MARK) if n > cap else piece
            for piece, n in zip(pieces, lengths, strict=True)
        ]
        ids = render(cut)
        if len(ids) <= max_source_tokens:
            return ids
        excess += len(ids) - max_source_tokens  # re-tokenising a cut piece (and "...") costs a little more
    raise ValueError(
        f"the fuser input does not fit in max_source_tokens={max_source_tokens} even with the instruction "
        f"and {len(candidates)} candidates cut short ({len(ids)} tokens); raise max_source_tokens or "
        "pass fewer candidates"
    )


def _renderer(tokenizer: Any, kind: ModelKind) -> Callable[[Sequence[str]], list[int]]:
    """pieces ``[instruction, input, *candidates]`` → the model's input ids."""
    if kind == "seq2seq":

        def render(pieces: Sequence[str]) -> list[int]:
            return list(tokenizer(seq2seq_input(pieces[0], pieces[1], pieces[2:]))["input_ids"])

        return render
    chat = has_chat_template(tokenizer)

    def render_causal(pieces: Sequence[str]) -> list[int]:
        text = causal_prompt(tokenizer, pieces[0], pieces[1], pieces[2:])
        return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])

    return render_causal
