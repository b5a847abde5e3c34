"""The trainable single-candidate rankers: pointwise cross-encoder and dual encoder (tiny random BERT)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.rank.base import CONFIG_KEY, PairQuery, TrainableRanker  # noqa: E402
from llmblend.rank.dual_encoder import DualEncoderRanker  # noqa: E402
from llmblend.rank.encoding import encode_pair_features  # noqa: E402
from llmblend.rank.pointwise import PointwiseRanker  # noqa: E402
from llmblend.rank.registry import load_ranker  # noqa: E402
from llmblend.types import Candidate, Example  # noqa: E402

# NB: the conftest tiny vocabulary lists "a" twice, so its last word ("five") gets an id past the
# embedding table; these tests avoid that word.
LENGTHS = dict(source_max_length=12, candidate_max_length=10)
KINDS = {"pointwise": (PointwiseRanker, 2), "dual-encoder": (DualEncoderRanker, 1)}

QUERIES = [
    PairQuery("what is the capital of france?", "paris is the capital", "i do not know"),
    PairQuery("write python code", "print one two three", "no"),
    PairQuery("name a number", "four", "the answer is three, or maybe four"),
]


def example(id_: str, *texts: str) -> Example:
    return Example(
        id=id_,
        instruction=f"question {id_}: explain why",
        candidates=[Candidate(f"m{i}", t) for i, t in enumerate(texts)],
    )


EXAMPLES = [
    example("a", "good answer", "a bad answer that is long", "yes"),
    example("b", "one", "two three"),
    example("c", "the capital is paris", "paris", "it is france", "wrong"),
]


@pytest.fixture(params=list(KINDS))
def kind(request) -> str:
    return request.param


def build(kind: str, backbone, **options):
    cls, n_tasks = KINDS[kind]
    return cls.from_backbone(str(backbone), n_tasks=n_tasks, device="cpu", **LENGTHS, **options)


def test_encode_pairs_and_module_give_left_right_per_task(kind, tiny_bert):
    ranker = build(kind, tiny_bert)
    assert isinstance(ranker, TrainableRanker)
    assert ranker.name == kind and ranker.batch_size == 32 and ranker.device.type == "cpu"
    batch = ranker.encode_pairs(QUERIES)
    assert all(value.device.type == "cpu" for value in batch.values())
    left, right = ranker.module(**batch)
    assert left.shape == right.shape == (len(QUERIES), KINDS[kind][1])
    assert left.dtype == torch.float32


def test_one_optimizer_step_changes_every_trainable_parameter(kind, tiny_bert):
    torch.manual_seed(0)
    ranker = build(kind, tiny_bert)
    params = {name: p for name, p in ranker.module.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    ranker.module.train()
    left, right = ranker.module(**ranker.encode_pairs(QUERIES))
    loss = -torch.nn.functional.logsigmoid(left - right).mean()
    loss.backward()
    optimizer.step()
    unchanged = [name for name, p in params.items() if torch.equal(p.detach(), before[name])]
    assert not unchanged


def test_save_and_load_round_trip_gives_identical_scores(kind, tiny_bert, tmp_path):
    ranker = build(kind, tiny_bert)
    ranker.save_pretrained(tmp_path / "model")
    settings = json.loads((tmp_path / "model" / "config.json").read_text())[CONFIG_KEY]
    assert settings["architecture"] == kind
    assert settings["source_max_length"] == 12 and settings["candidate_max_length"] == 10
    cls = KINDS[kind][0]
    loaded = cls.from_pretrained(tmp_path / "model", device="cpu")
    assert loaded.settings() == ranker.settings()
    assert [r.scores for r in loaded.rank(EXAMPLES)] == [r.scores for r in ranker.rank(EXAMPLES)]
    np.testing.assert_array_equal(loaded.compare_pairs(QUERIES), ranker.compare_pairs(QUERIES))
    via_registry = load_ranker(str(tmp_path / "model"))
    assert type(via_registry) is cls
    assert [r.scores for r in via_registry.rank(EXAMPLES)] == [r.scores for r in ranker.rank(EXAMPLES)]


def test_loading_the_wrong_architecture_names_it(tiny_bert, tmp_path):
    build("pointwise", tiny_bert).save_pretrained(tmp_path / "pw")
    with pytest.raises(LlmblendError, match="'pointwise' ranker, not 'dual-encoder'"):
        DualEncoderRanker.from_pretrained(tmp_path / "pw")


def test_rank_batched_across_examples_equals_per_example(kind, tiny_bert):
    ranker = build(kind, tiny_bert)
    ranker.batch_size = 4  # batches cut across examples
    together = ranker.rank(EXAMPLES)
    alone = [ranker.rank([ex])[0] for ex in EXAMPLES]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert a.n_forward == b.n_forward
    extra = 1 if kind == "dual-encoder" else 0  # the dual encoder also embeds the source
    assert [r.n_forward for r in together] == [len(ex.candidates) + extra for ex in EXAMPLES]


def test_compare_pairs_is_the_score_difference_and_antisymmetric(kind, tiny_bert):
    ranker = build(kind, tiny_bert)
    forward = ranker.compare_pairs(QUERIES)
    assert forward.dtype == np.float64 and forward.shape == (len(QUERIES),)
    swapped = ranker.compare_pairs([PairQuery(q.source, q.second, q.first) for q in QUERIES])
    np.testing.assert_allclose(forward, -swapped, atol=1e-5)
    pair_examples = [
        Example(str(i), q.source, candidates=[Candidate("x", q.first), Candidate("y", q.second)])
        for i, q in enumerate(QUERIES)
    ]
    differences = [r.scores[0] - r.scores[1] for r in ranker.rank(pair_examples)]
    np.testing.assert_allclose(forward, differences, atol=1e-5)
    assert ranker.compare_pairs([]).shape == (0,)


def test_mixed_batch_with_empty_and_single_candidate_examples(kind, tiny_bert):
    ranker = build(kind, tiny_bert)
    rankings = ranker.rank([Example("none", "q"), EXAMPLES[0], example("one", "only")])
    assert not rankings[0].ok
    assert sorted(rankings[1].order) == [0, 1, 2]
    assert rankings[2].order == (0,) and rankings[2].n_forward == 0


def test_dual_encoder_has_exactly_one_task(tiny_bert):
    with pytest.raises(ValueError, match="n_tasks must be 1, got 3"):
        DualEncoderRanker.from_backbone(str(tiny_bert), n_tasks=3)


def test_source_and_candidate_are_truncated_separately(tiny_bert):
    ranker = build("pointwise", tiny_bert)
    long_text = "the answer is " + "one two three " * 20
    [feature] = encode_pair_features(ranker.tokenizer, [long_text], ["paris is good"], 12, 10)
    candidate_ids = ranker.tokenizer("paris is good", add_special_tokens=False)["input_ids"]
    assert [feature.input_ids[p] for p in feature.second_positions] == candidate_ids
    assert len(feature.input_ids) == 12 + len(candidate_ids) + 3
    assert feature.token_type_ids[feature.second_positions[0]] == 1
