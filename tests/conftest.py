"""Shared fixtures: the shared data folder, the hand-written MixInstruct sample, a built alpaca-blend."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmblend.data.alpaca_blend import AlpacaBlendSummary, build_alpaca_blend
from llmblend.data.sources import locate_data_dir
from llmblend.errors import DataNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data: tests and CI always have it beside the checkout."""
    try:
        return locate_data_dir()
    except DataNotFoundError as exc:
        pytest.fail(f"these tests read the shared data: {exc}")


@pytest.fixture
def sample_file() -> Path:
    return FIXTURES / "mixinstruct_sample.jsonl"


@pytest.fixture(scope="session")
def alpaca_blend(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AlpacaBlendSummary]:
    """alpaca-blend built once with the default config."""
    out = tmp_path_factory.mktemp("alpaca-blend")
    return out, build_alpaca_blend(data_dir, out)


# ---- tiny random models (no network): a WordPiece tokenizer and BERT/DeBERTa-v2/masked-LM folders ----

_TINY_WORDS = [
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "be",
    "to",
    "of",
    "and",
    "or",
    "in",
    "on",
    "for",
    "with",
    "what",
    "how",
    "why",
    "which",
    "who",
    "write",
    "give",
    "list",
    "answer",
    "question",
    "good",
    "bad",
    "better",
    "best",
    "short",
    "long",
    "longer",
    "correct",
    "wrong",
    "yes",
    "no",
    "not",
    "it",
    "this",
    "that",
    "explain",
    "name",
    "capital",
    "city",
    "france",
    "paris",
    "python",
    "code",
    "number",
    "one",
    "two",
    "three",
    "four",
    "five",
]


def _tiny_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:'\"()-_/+*=<>|#%&@$")
    return list(dict.fromkeys(specials + chars + [f"##{c}" for c in chars] + _TINY_WORDS))


def make_tiny_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer whose vocabulary covers any lowercase ASCII text."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(_tiny_vocab())}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _tiny_sizes(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


def make_tiny_bert(folder: Path, *, masked_lm: bool = False) -> Path:
    """A randomly initialised 2-layer BERT (or BertForMaskedLM) with the tiny tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    tokenizer = make_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(**_tiny_sizes(len(tokenizer)))
    model = (BertForMaskedLM if masked_lm else BertModel)(config)
    model.save_pretrained(folder)
    return folder


def make_tiny_deberta(folder: Path) -> Path:
    """A randomly initialised 2-layer DeBERTa-v2 encoder with the tiny tokenizer."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    tokenizer = make_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = DebertaV2Config(**_tiny_sizes(len(tokenizer)), relative_attention=True, position_buckets=16)
    DebertaV2Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-mlm"), masked_lm=True)


@pytest.fixture(scope="session")
def tiny_deberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_deberta(tmp_path_factory.mktemp("tiny-deberta"))


# ---- a tiny random causal LM (no network): byte-level BPE tokenizer with bos/eos/pad, Llama decoder ----

#: The tiny causal LM's chat template: "<|role|>\ncontent<|eos|>\n" per turn, then "<|assistant|>\n".
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_TINY_LM_TEXT = [
    "### Instruction:\nwhat is the capital of france?\n\n### Response:\nthe capital of france is paris.",
    "### Instruction:\nwrite a short python code.\n\n### Response:\nprint('one two three')",
    "<|user|>\nexplain why the answer is correct.<|eos|>\n<|assistant|>\nit is correct: two is better.",
    "which one is better, a long answer or a short answer? the best answer is not always the longest.",
]


def make_tiny_causal_tokenizer(folder: Path, *, chat_template: bool):
    """A byte-level BPE tokenizer (any text round-trips) with ``<|bos|>``, ``<|eos|>`` and ``<|pad|>``.

    It adds no special tokens on its own; ``chat_template`` sets :data:`TINY_CHAT_TEMPLATE`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|pad|>", "<|bos|>", "<|eos|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_LM_TEXT * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    if chat_template:
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_tiny_causal_lm(folder: Path, *, chat_template: bool, max_positions: int = 256) -> Path:
    """A randomly initialised 2-layer Llama causal LM (hidden 32, 2 heads) with the byte-level tokenizer.

    ``initializer_range`` is large so that the random logits are far apart: greedy decoding then does
    not flip on float noise (batched vs unbatched) and the outputs vary with the prompt.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_causal_tokenizer(folder, chat_template=chat_template)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM folder whose tokenizer has a chat template."""
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal-lm"), chat_template=True)


@pytest.fixture(scope="session")
def tiny_causal_lm_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM folder without a chat template (a base model)."""
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal-lm-plain"), chat_template=False)
