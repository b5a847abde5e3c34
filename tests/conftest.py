"""Shared fixtures: the shared data folder, the hand-written MixInstruct sample, a built alpaca-blend."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmblend.data.alpaca_blend import AlpacaBlendSummary, build_alpaca_blend
from llmblend.data.sources import locate_data_dir
from llmblend.errors import DataNotFoundError

#: The scripted OpenAI-compatible server (``scripted_server``, ``refused_url``) for every test folder.
pytest_plugins = ["scripted_http"]

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


# ---- a tiny random T5 (no network): word-level tokenizer with </s>, <pad>, <unk> and 4 sentinels ----

_TINY_T5_WORDS = [
    *_TINY_WORDS,
    "instruction",
    "input",
    "candidate",
    "candidates",
    "summarize",
    "into",
    "given",
    "can",
    "you",
    "my",
    "i",
    "me",
    "do",
    "at",
    "by",
    "as",
    "so",
    "all",
    "more",
    "most",
    "some",
    "word",
    "words",
    "sentence",
    "fact",
    "facts",
    "here",
    "there",
    "cat",
    "dog",
    "sat",
    "mat",
    "ran",
    "park",
    "red",
    "blue",
    "green",
]


def make_tiny_t5(folder: Path) -> Path:
    """A randomly initialised 2-layer T5 (d_model 32) with a lowercasing word-level tokenizer.

    Ids: pad 0, eos ``</s>`` 1, unk 2, then ``<extra_id_0>``..``<extra_id_3>`` (special tokens, so the
    GenFuser input's sentinels and ``</s>`` separators are single tokens), then words and punctuation.
    The tokenizer appends ``</s>`` like T5's.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    sentinels = [f"<extra_id_{i}>" for i in range(4)]
    punctuation = list(".,:;!?'\"()-") + [str(d) for d in range(10)]
    words = list(dict.fromkeys(_TINY_T5_WORDS + punctuation))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for token in sentinels + words:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=sentinels,
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        initializer_factor=3.0,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random T5 folder (seq2seq) with a word-level tokenizer; see :func:`make_tiny_t5`."""
    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_ranker_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from llmblend.rank.pairranker import PairRanker

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ranker") / "model"
    PairRanker.from_backbone(str(tiny_bert), source_max_length=12, candidate_max_length=12).save_pretrained(
        folder
    )
    return folder
