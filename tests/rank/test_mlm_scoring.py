"""Masked-LM pseudo-log-likelihood scoring on a tiny random BertForMaskedLM."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from llmblend.rank.mlm_scoring import EMPTY_GAP, MLMScoringRanker  # noqa: E402
from llmblend.rank.registry import load_ranker  # noqa: E402
from llmblend.rank.scoring import RankerOptionError  # noqa: E402
from llmblend.types import Candidate, Example  # noqa: E402

# the conftest tiny vocabulary gives "five" an id past the embedding table; avoid that word
EXAMPLES = [
    Example(
        "a",
        "what is the capital of france?",
        candidates=[Candidate("x", "paris"), Candidate("y", "it is paris, the city")],
    ),
    Example(
        "b",
        "write python code",
        candidates=[Candidate("x", "print(1)"), Candidate("y", "no"), Candidate("z", "code")],
    ),
]


def mlm(folder, **options) -> MLMScoringRanker:
    return MLMScoringRanker.from_pretrained(
        folder, device="cpu", source_max_length=16, candidate_max_length=8, **options
    )


def manual_pll(ranker: MLMScoringRanker, source: str, candidate: str) -> float:
    """Salazar et al.'s PLL the slow way: one full forward per masked token."""
    tokenizer, model = ranker.tokenizer, ranker.model
    encoded = tokenizer(source, candidate, return_tensors="pt")
    positions = [i for i, seq in enumerate(encoded.sequence_ids(0)) if seq == 1]
    total = 0.0
    with torch.no_grad():
        model.eval()
        for position in positions:
            ids = encoded["input_ids"].clone()
            target = int(ids[0, position])
            ids[0, position] = tokenizer.mask_token_id
            logits = model(
                input_ids=ids,
                attention_mask=encoded["attention_mask"],
                token_type_ids=encoded["token_type_ids"],
            ).logits
            total += float(torch.log_softmax(logits[0, position], dim=-1)[target])
    return total


def test_batched_scores_equal_one_at_a_time_and_the_manual_pll(tiny_mlm):
    batched = mlm(tiny_mlm, batch_size=7, aggregate="sum")
    single = mlm(tiny_mlm, batch_size=1, aggregate="sum")
    together = batched.rank(EXAMPLES)
    for ranking, ex in zip(together, EXAMPLES, strict=True):
        np.testing.assert_allclose(ranking.scores, single.rank([ex])[0].scores, rtol=1e-5, atol=1e-5)
        expected = [manual_pll(single, ex.source, c.text) for c in ex.candidates]
        np.testing.assert_allclose(ranking.scores, expected, rtol=1e-5, atol=1e-5)


def test_n_forward_counts_masked_sequences_and_mean_is_sum_over_tokens(tiny_mlm):
    ranker = mlm(tiny_mlm)
    assert ranker.aggregate == "mean"
    counts = [
        [len(ranker.tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in ex.candidates]
        for ex in EXAMPLES
    ]
    means = ranker.rank(EXAMPLES)
    sums = mlm(tiny_mlm, aggregate="sum").rank(EXAMPLES)
    assert [r.n_forward for r in means] == [sum(c) for c in counts]
    for mean, total, n in zip(means, sums, counts, strict=True):
        np.testing.assert_allclose(np.array(mean.scores) * n, total.scores, rtol=1e-5)


def test_full_logits_path_matches_the_head_only_path(tiny_mlm):
    ranker = mlm(tiny_mlm)
    assert ranker.head is not None  # BertForMaskedLM's cls head is applied at masked positions only
    fast = ranker.rank(EXAMPLES)
    ranker.head = None
    slow = ranker.rank(EXAMPLES)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def test_long_candidates_are_capped_and_empty_ones_rank_last(tiny_mlm):
    ranker = mlm(tiny_mlm)
    ex = Example(
        "c",
        "q",
        candidates=[Candidate("x", "one two three " * 10), Candidate("y", ""), Candidate("z", "yes")],
    )
    ranking = ranker.rank([ex])[0]
    assert ranking.n_forward == 8 + 0 + 1  # candidate_max_length caps the masked copies
    assert ranking.order[-1] == 1
    assert ranking.scores[1] == pytest.approx(min(ranking.scores[0], ranking.scores[2]) - EMPTY_GAP)


def test_mixed_batch_and_registry(tiny_mlm):
    ranker = load_ranker(f"mlm:{tiny_mlm}")
    assert isinstance(ranker, MLMScoringRanker) and ranker.name == "mlm"
    rankings = ranker.rank(
        [Example("none", "q"), EXAMPLES[0], Example("one", "q", candidates=[Candidate("x", "y")])]
    )
    assert not rankings[0].ok
    assert sorted(rankings[1].order) == [0, 1] and rankings[1].n_forward > 0
    assert rankings[2].order == (0,) and rankings[2].n_forward == 0


def test_unknown_aggregate_is_rejected(tiny_mlm):
    with pytest.raises(RankerOptionError, match=r"'max'.*mean, sum"):
        mlm(tiny_mlm, aggregate="max")
