"""A pair's score never depends on its batch-mates, on every runtime (fp32, bf16, onnx, onnx-int8).

``llmblend rank`` results must not change with ``--chunk-size``, ``--batch-size``, a resume, or the
worker a record lands on; dynamic int8 quantization (one activation scale per batch) broke that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from llmblend.rank import pairranker  # noqa: E402
from llmblend.rank.base import PairQuery  # noqa: E402
from llmblend.rank.pairranker import RUNTIMES, PairRanker  # noqa: E402
from llmblend.types import Candidate, Example  # noqa: E402

QUERIES = [
    PairQuery("what is the capital of france", "paris", "paris , a city on the seine"),
    PairQuery("write python code", "print one two three four five six seven eight", "no"),
    PairQuery("give a number", "four", "three or maybe five"),
    PairQuery("what is the capital of france", "it is paris", "paris"),
    PairQuery("why is the sky blue", "light scatters", "air scatters blue light more"),
]


@pytest.fixture(scope="module")
def folder(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("batch-independence") / "ranker"
    PairRanker.from_backbone(
        str(tiny_bert), source_max_length=12, candidate_max_length=14, length_feature=True
    ).save_pretrained(out)
    return out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_pair_scores_the_same_alone_and_in_any_batch(folder: Path, runtime: str, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path))
    ranker = PairRanker.from_pretrained(folder, runtime=runtime, batch_size=4)
    alone = np.array([ranker.pair_logits([q])[0] for q in QUERIES])
    for batch_size in (2, 3, 16):
        ranker.batch_size = batch_size
        np.testing.assert_allclose(ranker.pair_logits(QUERIES), alone, atol=1e-5, rtol=0)
    margins_alone = np.array([ranker.compare_pairs([q])[0] for q in QUERIES])
    np.testing.assert_allclose(ranker.compare_pairs(QUERIES), margins_alone, atol=1e-5, rtol=0)


def test_int8_would_depend_on_the_batch_without_one_pair_per_forward(folder: Path, monkeypatch, tmp_path):
    """The guard above is not vacuous: batched int8 forwards do move a pair's logit."""
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path))
    ranker = PairRanker.from_pretrained(folder, runtime="onnx-int8", batch_size=16)
    alone = np.array([ranker.pair_logits([q])[0] for q in QUERIES])
    monkeypatch.setattr(pairranker, "PER_PAIR_RUNTIMES", frozenset())
    assert np.abs(ranker.pair_logits(QUERIES) - alone).max() > 1e-5


def test_rankings_do_not_depend_on_the_chunk(folder: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path))
    ranker = PairRanker.from_pretrained(folder, runtime="onnx-int8", batch_size=8)
    texts = ["paris", "it is paris", "the capital is paris", "berlin", "no", "paris , on the seine"]
    examples = [
        Example(
            f"ex/{k}",
            "what is the capital of france",
            candidates=[Candidate(f"m{i}", t) for i, t in enumerate(texts[k:] + texts[:k])],
        )
        for k in range(4)
    ]
    together = ranker.rank(examples, strategy="sparse-refine")
    alone = [ranker.rank([ex], strategy="sparse-refine")[0] for ex in examples]
    for a, b in zip(together, alone, strict=True):
        assert a.order == b.order
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
