"""The model-free baselines (random, longest, MBR) and their registry names."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from llmblend.rank.base import Ranker
from llmblend.rank.baselines import (
    SIMILARITIES,
    LongestRanker,
    MBRRanker,
    RandomRanker,
    consensus,
    token_f1,
)
from llmblend.rank.registry import load_ranker
from llmblend.rank.scoring import RankerOptionError
from llmblend.types import Candidate, Example


def example(id_: str, *texts: str, source: str = "what is the capital of france?") -> Example:
    return Example(
        id=id_, instruction=source, candidates=[Candidate(f"m{i}", t) for i, t in enumerate(texts)]
    )


PARIS = example(
    "paris",
    "the capital of france is paris.",
    "paris is the capital of france.",
    "i like turtles and pizza very much.",
    "the capital city of france is paris, of course.",
)


def mixed_batch() -> list[Example]:
    return [example("none"), PARIS, example("one", "only answer"), example("two", "a b c", "a b")]


def test_random_is_a_reproducible_permutation_that_varies_across_examples():
    examples = [example(f"e{i}", *(f"answer {j}" for j in range(8))) for i in range(5)]
    first = RandomRanker(7).rank(examples)
    again = RandomRanker("7").rank(examples)
    assert [r.order for r in first] == [r.order for r in again]
    assert all(sorted(r.order) == list(range(8)) for r in first)
    assert len({r.order for r in first}) > 1
    assert [r.order for r in RandomRanker(8).rank(examples)] != [r.order for r in first]
    # independent of batching: ranking one example alone gives the same order
    assert RandomRanker(7).rank(examples[3:4])[0].order == first[3].order


def test_random_rejects_a_bad_seed():
    with pytest.raises(RankerOptionError, match="'abc'"):
        RandomRanker("abc")


def test_longest_counts_words_and_keeps_candidate_order_on_ties():
    ex = example("x", "one two three", "one two three four", "a b c", "", "w1 w2 w3 w4")
    ranking = LongestRanker().rank([ex])[0]
    assert ranking.scores == (3.0, 4.0, 3.0, 0.0, 4.0)
    assert ranking.order == (1, 4, 0, 2, 3)
    assert ranking.n_forward == 0


@pytest.mark.parametrize("similarity", ["token-f1", "chrf", "bleu"])
def test_mbr_text_similarities_find_the_consensus(similarity):
    ranking = MBRRanker(similarity).rank([PARIS])[0]
    assert ranking.order[-1] == 2  # the off-topic answer agrees with nobody
    assert ranking.best in (0, 1)
    assert ranking.n_forward == 0


def test_token_f1_and_consensus():
    assert token_f1("The cat sat", "the cat sat") == 1.0
    assert token_f1("a b", "c d") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("a", "") == 0.0
    assert token_f1("a b c d", "a b") == pytest.approx(2 / 3)
    matrix = np.array([[1.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.0]])
    np.testing.assert_allclose(consensus(matrix), [0.3, 0.4, 0.2])


def test_mbr_rejects_an_unknown_similarity_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"cosine.*embedding, chrf, bleu, token-f1"):
        MBRRanker("cosine")


@pytest.mark.parametrize(
    "ranker", [RandomRanker(), LongestRanker(), MBRRanker("token-f1"), MBRRanker("chrf")]
)
def test_mixed_batch_with_empty_and_single_candidate_examples(ranker):
    assert isinstance(ranker, Ranker)
    rankings = ranker.rank(mixed_batch())
    assert len(rankings) == 4
    assert not rankings[0].ok and rankings[0].order == ()
    assert rankings[2].order == (0,) and rankings[2].n_forward == 0
    assert sorted(rankings[1].order) == [0, 1, 2, 3] and sorted(rankings[3].order) == [0, 1]
    assert ranker.rank([]) == []


def test_scoring_rankers_ignore_a_pair_strategy_and_check_top_k():
    # `llmblend eval ranker --strategy` passes the strategy to every ranker compared
    assert LongestRanker().rank([PARIS], strategy="max-logits", top_k=1)[0].best == 3
    with pytest.raises(RankerOptionError, match="top_k must be at least 1, got 0"):
        LongestRanker().rank([PARIS], top_k=0)


def test_mbr_embedding_with_a_given_embedder_counts_forward_passes(tiny_bert):
    from llmblend.rank.embeddings import SentenceEmbedder

    embedder = SentenceEmbedder.from_pretrained(tiny_bert, device="cpu", batch_size=3)
    vectors = embedder.encode(["a b", "the capital of france", "x"])
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embedder.encode(["the capital of france"])[0], vectors[1], atol=1e-5)
    rankings = MBRRanker("embedding", embedder=embedder).rank(mixed_batch())
    assert [r.n_forward for r in rankings] == [0, 4, 0, 2]


@pytest.mark.slow
def test_mbr_embedding_with_the_packaged_minilm():
    ex = example(
        "minilm",
        "Paris is the capital of France.",
        "The capital of France is Paris.",
        "France's capital city is Paris.",
        "Bananas are rich in potassium and taste sweet.",
    )
    ranking = MBRRanker().rank([ex])[0]
    assert ranking.order[-1] == 3
    assert ranking.n_forward == 4
    # each paraphrase averages ~0.9 with the other two and ~0 with the banana sentence
    assert min(ranking.scores[:3]) > 0.5 > 0.2 > ranking.scores[3]
    vectors = MBRRanker().embedder.encode([c.text for c in ex.candidates[:2]])
    assert float(vectors[0] @ vectors[1]) > 0.9


def test_registry_builds_the_baselines():
    assert isinstance(load_ranker("longest"), LongestRanker)
    mbr = load_ranker("mbr:token-f1")
    assert isinstance(mbr, MBRRanker) and mbr.similarity == "token-f1" and mbr.name == "mbr:token-f1"
    random_ranker = load_ranker("random:3")
    assert isinstance(random_ranker, RandomRanker) and random_ranker.seed == 3
    assert load_ranker("mbr").similarity == SIMILARITIES[0] == "embedding"


def test_baselines_do_not_import_torch():
    code = "import sys, llmblend.rank.baselines as b; b.MBRRanker('chrf'); print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
