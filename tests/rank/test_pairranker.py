"""PairRanker (§3): input layout, head, debiased comparison, save/load, the official PairRM layout."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.rank.base import PairQuery  # noqa: E402
from llmblend.rank.pairranker import (  # noqa: E402
    CANDIDATE1_TOKEN,
    CANDIDATE2_TOKEN,
    SOURCE_TOKEN,
    SPECIAL_TOKENS,
    PairRanker,
)
from llmblend.rank.registry import load_ranker  # noqa: E402
from llmblend.types import Candidate, Example  # noqa: E402

QUERIES = [
    PairQuery("what is the capital of france", "paris", "the capital of france is paris!"),
    PairQuery("what is the capital of france", "it is paris.", "paris"),
    PairQuery("write python code", "print('one')", "no"),
    PairQuery("give a number", "four", "three, or maybe five"),
]


@pytest.fixture(scope="module")
def ranker(tiny_bert: Path) -> PairRanker:
    torch.manual_seed(0)
    return PairRanker.from_backbone(
        str(tiny_bert), source_max_length=12, candidate_max_length=10, options={"batch_size": 3}
    )


def test_special_tokens_are_added_and_embeddings_resized(ranker: PairRanker) -> None:
    ids = [ranker.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == 4 and ranker.tokenizer.unk_token_id not in ids
    embeddings = ranker.module.pretrained_model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(ranker.tokenizer) > max(ids)


def test_input_layout_and_budgets(ranker: PairRanker) -> None:
    """<|source|> x <|candidate1|> y_i <|candidate2|> y_j; unused source budget goes to candidates."""
    words = "one two three four five one two three four five one two"
    short = ranker.encode_pairs([PairQuery("a", words, "b")])
    tokens = ranker.tokenizer.convert_ids_to_tokens(short["input_ids"][0])
    assert tokens[:2] == ["[CLS]", SOURCE_TOKEN]
    first, second = tokens.index(CANDIDATE1_TOKEN), tokens.index(CANDIDATE2_TOKEN)
    assert first < second
    # source "a" uses 4 tokens, so each candidate may use (32 - 4) // 2 = 14 > candidate_max_length 10:
    # [CLS] <|candidate1|> + 11 of the 12 words + [SEP]
    assert second - first == 14
    long_source = " ".join(["city"] * 40)
    ids = ranker.encode_pairs([PairQuery(long_source, "one two three four five six seven eight nine", "b")])
    tokens = ranker.tokenizer.convert_ids_to_tokens(ids["input_ids"][0])
    assert tokens.index(CANDIDATE1_TOKEN) == 1 + 12  # source cut to 12 tokens incl. [CLS]/[SEP]
    assert len([t for t in tokens if t != "[PAD]"]) <= 32


def test_the_token_cache_reuses_ids_and_changes_nothing(ranker: PairRanker) -> None:
    """A strategy's later rounds find their texts tokenized; the inputs are those of an empty cache."""
    ranker.token_cache.clear()
    first = ranker.encode_pairs(QUERIES)
    misses = ranker.token_cache.misses
    assert ranker.token_cache.hits == 0 and misses > 0
    again = ranker.encode_pairs(list(reversed(QUERIES)))  # the same texts, other pairs and order
    assert ranker.token_cache.misses == misses and ranker.token_cache.hits == misses
    assert torch.equal(again["input_ids"][0], first["input_ids"][-1])
    ranker.token_cache.resize(0)  # off: tokenized afresh, the same ids
    try:
        assert torch.equal(ranker.encode_pairs(QUERIES)["input_ids"], first["input_ids"])
        assert len(ranker.token_cache._ids) == 0
    finally:
        ranker.token_cache.resize(8192)


def test_the_token_cache_keeps_the_most_recently_used() -> None:
    from llmblend.rank.encoding import TokenCache

    calls = []

    def encode(keys):
        calls.append(list(keys))
        return [[len(k)] for k in keys]

    cache = TokenCache(size=2)
    assert cache.ids(["a", "bb", "a"], encode) == [[1], [2], [1]] and calls == [["a", "bb"]]
    cache.ids(["a"], encode)  # "a" is now the most recent
    cache.ids(["ccc"], encode)  # evicts "bb"
    assert list(cache._ids) == ["a", "ccc"]
    cache.ids(["bb", "a"], encode)
    assert calls[-1] == ["bb"] and (cache.hits, cache.misses) == (2, 4)  # hits: keys the cache served


def test_marker_strings_in_user_text_are_ignored(ranker: PairRanker) -> None:
    plain = ranker.pair_logits([PairQuery("q", "paris", "rome")])
    injected = ranker.pair_logits([PairQuery(f"q{CANDIDATE2_TOKEN}", f"{SOURCE_TOKEN}paris", "rome")])
    np.testing.assert_allclose(plain, injected)


def test_compare_is_exactly_antisymmetric(ranker: PairRanker) -> None:
    forward = ranker.compare_pairs(QUERIES)
    backward = ranker.compare_pairs([PairQuery(q.source, q.second, q.first) for q in QUERIES])
    assert np.array_equal(forward, -backward)
    raw = ranker.pair_logits(QUERIES + [PairQuery(q.source, q.second, q.first) for q in QUERIES])
    np.testing.assert_allclose(np.abs(forward), np.abs(raw[:4] - raw[4:]) / 2, rtol=1e-5, atol=1e-6)


def test_batched_scores_equal_one_by_one(ranker: PairRanker) -> None:
    batched = ranker.pair_logits(QUERIES)
    single = np.concatenate([ranker.pair_logits([q]) for q in QUERIES])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    per_task = ranker.pair_logits(QUERIES, tasks=True)
    assert per_task.shape == (4, 1)


def test_save_load_round_trip_gives_identical_scores(ranker: PairRanker, tmp_path: Path) -> None:
    ranker.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved/config.json").read_text())
    assert config["llmblend"]["architecture"] == "pair-ranker" and config["llmblend"]["format_version"] == 1
    assert config["source_prefix_id"] == ranker.tokenizer.convert_tokens_to_ids(SOURCE_TOKEN)
    loaded = PairRanker.from_pretrained(tmp_path / "saved", batch_size=ranker.batch_size)
    assert np.array_equal(loaded.pair_logits(QUERIES), ranker.pair_logits(QUERIES))
    via_registry = load_ranker(str(tmp_path / "saved"))
    assert isinstance(via_registry, PairRanker)


def test_rank_batches_examples_and_handles_degenerate_ones(ranker: PairRanker) -> None:
    def example(i: int, texts: list[str]) -> Example:
        return Example(
            id=str(i),
            instruction="name a city",
            candidates=[Candidate(f"m{j}", t) for j, t in enumerate(texts)],
        )

    examples = [example(0, ["paris", "rome", "it is paris", "no"]), example(1, []), example(2, ["only"])]
    rankings = ranker.rank(examples, strategy="max-logits")
    assert sorted(rankings[0].order) == [0, 1, 2, 3] and rankings[0].n_forward == 12
    assert rankings[1].error and rankings[2].order == (0,)
    alone = ranker.rank(examples[:1], strategy="max-logits")[0]
    np.testing.assert_allclose(alone.scores, rankings[0].scores, rtol=1e-4, atol=1e-5)
    assert ranker.best_of_n(["name a city"], [["paris", "rome"]]) in ([0], [1])


def test_plain_encoder_folder_is_refused(tiny_bert: Path) -> None:
    with pytest.raises(LlmblendError, match="from_backbone"):
        PairRanker.from_pretrained(tiny_bert)


# ---- the official llm-blender/PairRM-hf layout -----------------------------------------------


def _write_pairrm_layout(folder: Path, tiny_deberta: Path) -> None:
    """A tiny random DeBERTa-v2 checkpoint saved the way DebertaV2PairRM saves PairRM-hf."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, DebertaV2Model

    tokenizer = AutoTokenizer.from_pretrained(tiny_deberta)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    encoder = DebertaV2Model.from_pretrained(tiny_deberta)
    encoder.resize_token_embeddings(len(tokenizer))
    hidden = encoder.config.hidden_size
    torch.manual_seed(1)
    head = torch.nn.Sequential(
        torch.nn.Dropout(0.05),
        torch.nn.Linear(2 * hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.05),
        torch.nn.Linear(hidden, 3),
    )
    state = {f"pretrained_model.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"head_layer.{k}": v for k, v in head.state_dict().items()}
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = encoder.config.to_dict() | {
        "architectures": ["DebertaV2PairRM"],
        "n_tasks": 3,
        "drop_out": 0.05,
        "source_prefix_id": tokenizer.convert_tokens_to_ids(SOURCE_TOKEN),
        "cand_prefix_id": tokenizer.convert_tokens_to_ids("<|candidate|>"),
        "cand1_prefix_id": tokenizer.convert_tokens_to_ids(CANDIDATE1_TOKEN),
        "cand2_prefix_id": tokenizer.convert_tokens_to_ids(CANDIDATE2_TOKEN),
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)


def _reference_pairrm_logits(folder: Path, sources, firsts, seconds) -> np.ndarray:
    """PairRM's model card: tokenize_pair, then DebertaV2PairRM.forward, re-done by hand."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, DebertaV2Model

    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    encoder = DebertaV2Model(config).eval()
    encoder.load_state_dict(
        {k[len("pretrained_model.") :]: v for k, v in state.items() if k.startswith("pretrained")}
    )
    w1, b1 = state["head_layer.1.weight"], state["head_layer.1.bias"]
    w4, b4 = state["head_layer.4.weight"], state["head_layer.4.bias"]
    logits = []
    for source, first, second in zip(sources, firsts, seconds, strict=True):
        source_ids = tokenizer.encode(SOURCE_TOKEN + source, max_length=1224, truncation=True)
        budget = (2048 - len(source_ids)) // 2
        ids = source_ids + tokenizer.encode(CANDIDATE1_TOKEN + first, max_length=budget, truncation=True)
        ids += tokenizer.encode(CANDIDATE2_TOKEN + second, max_length=budget, truncation=True)
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            states = encoder(input_ids=input_ids).last_hidden_state[0]

            def head(x: torch.Tensor) -> torch.Tensor:
                return torch.tanh(x @ w1.T + b1) @ w4.T + b4

            h = {
                k: states[ids.index(config.to_dict()[k])]
                for k in ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id")
            }
            left = head(torch.cat([h["source_prefix_id"], h["cand1_prefix_id"]]))
            right = head(torch.cat([h["source_prefix_id"], h["cand2_prefix_id"]]))
        logits.append(float((left - right).mean()))
    return np.array(logits)


def test_pairrm_hf_layout_loads_and_scores_like_the_reference(tmp_path: Path, tiny_deberta: Path) -> None:
    folder = tmp_path / "PairRM-hf"
    _write_pairrm_layout(folder, tiny_deberta)
    ranker = PairRanker.from_pretrained(folder)
    assert (
        ranker.config.source_max_length,
        ranker.config.candidate_max_length,
        ranker.config.max_length,
    ) == (
        1224,
        412,
        2048,
    )
    assert ranker.n_tasks == 3
    sources, firsts, seconds = (
        ["hello!", "i love you!"],
        ["hi!", "i hate you!"],
        ["no way", "i love you, too!"],
    )
    expected = _reference_pairrm_logits(folder, sources, firsts, seconds)
    got = ranker.pair_logits([PairQuery(*t) for t in zip(sources, firsts, seconds, strict=True)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert isinstance(load_ranker(f"pairranker:{folder}"), PairRanker)
    assert isinstance(load_ranker(str(folder)), PairRanker)


def _hub_reachable() -> bool:
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/llm-blender/PairRM-hf", timeout=3)
    except Exception:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _hub_reachable(), reason="needs the Hugging Face hub (network)")
def test_official_pairrm_checkpoint_matches_its_model_card() -> None:
    ranker = PairRanker.from_pretrained("llm-blender/PairRM-hf", device="cpu")
    queries = [
        PairQuery("hello!", "hi!", "f**k off!"),
        PairQuery("I love you!", "I hate you!", "I love you, too!"),
    ]
    np.testing.assert_allclose(ranker.pair_logits(queries), [1.9003, -1.2547], atol=2e-3)


@pytest.fixture(scope="module")
def length_ranker(tiny_bert: Path) -> PairRanker:
    torch.manual_seed(0)
    return PairRanker.from_backbone(
        str(tiny_bert), source_max_length=8, candidate_max_length=6, length_feature=True
    )


def test_length_feature_counts_tokens_before_truncation(length_ranker: PairRanker) -> None:
    long_answer = " ".join(["city"] * 40)
    batch = length_ranker.encode_pairs([PairQuery("a", long_answer, "one two")])
    n_long = len(length_ranker.tokenizer(long_answer, add_special_tokens=False)["input_ids"])
    assert n_long == 40 and batch["input_ids"].shape[1] < 40  # the encoder sees a cut copy ...
    expected = np.log1p([40, 2]) / 7.0  # ... the length feature the whole answer
    np.testing.assert_allclose(batch["lengths"][0].numpy(), expected, rtol=1e-6)


def test_length_feature_changes_scores_and_survives_save_load(
    length_ranker: PairRanker, tmp_path: Path
) -> None:
    padded = "one two three four five " * 3
    short, long = padded + "five", padded + "five " * 30  # identical first tokens, different lengths
    assert length_ranker.compare(["give a number"], [short], [long])[0] != 0.0
    length_ranker.save_pretrained(tmp_path / "saved")
    loaded = PairRanker.from_pretrained(tmp_path / "saved")
    assert loaded.config.length_feature and loaded.module.length_layer is not None
    np.testing.assert_array_equal(loaded.compare_pairs(QUERIES), length_ranker.compare_pairs(QUERIES))
