"""Model-free baselines behind the :class:`~llmblend.rank.base.Ranker` interface (LLM-Blender §5).

* :class:`RandomRanker` — a uniformly random order: the floor every ranker must beat.
* :class:`LongestRanker` — the longest answer first: a length heuristic, strong when judges
  prefer detailed answers.
* :class:`MBRRanker` — minimum Bayes risk / consensus decoding (Kumar & Byrne 2004): the candidate
  most similar to all the others is the one the ensemble agrees on. The paper's MBR baselines use
  BERTScore/BLEU-like similarities; here: MiniLM embedding cosine, chrF, BLEU or token F1.

None of them imports torch; the embedding similarity loads it only when it is first used.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmblend.errors import MissingExtraError
from llmblend.rank.scoring import RankerOptionError, check_rank_options, rank_by_scores, split_sizes
from llmblend.types import Example, Ranking

if TYPE_CHECKING:
    from llmblend.rank.embeddings import SentenceEmbedder

log = logging.getLogger(__name__)

#: The similarities MBR knows, the first is the default.
SIMILARITIES = ("embedding", "chrf", "bleu", "token-f1")

_WORD = re.compile(r"\w+")


class RandomRanker:
    """A uniformly random order, the chance-level baseline.

    The permutation of an example depends only on ``seed`` and the example id, so it is
    reproducible, differs across examples, and does not depend on how examples are batched.
    """

    def __init__(self, seed: int | str = 0) -> None:
        self.seed = _parse_seed(seed)
        self.name = f"random:{self.seed}"

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        check_rank_options(self.name, strategy, top_k)
        return rank_by_scores(examples, lambda batch: [(self._scores(ex), 0) for ex in batch])

    def _scores(self, example: Example) -> np.ndarray:
        rng = np.random.default_rng([self.seed & (2**64 - 1), zlib.crc32(example.id.encode("utf-8"))])
        return rng.random(len(example.candidates))


class LongestRanker:
    """The longest answer first; length is the number of whitespace-separated words.

    Equal lengths keep the candidates' order (the first listed model wins a tie).
    """

    name = "longest"

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        check_rank_options(self.name, strategy, top_k)
        return rank_by_scores(
            examples, lambda batch: [([len(c.text.split()) for c in ex.candidates], 0) for ex in batch]
        )


class MBRRanker:
    """MBR / consensus: ``score_i = mean_{j != i} similarity(candidate_i, candidate_j)``.

    ``similarity`` is one of :data:`SIMILARITIES`: ``"embedding"`` (cosine of mean-pooled,
    L2-normalised all-MiniLM-L6-v2 embeddings; ``n_forward`` = candidates embedded), ``"chrf"``
    and ``"bleu"`` (sentence-level sacrebleu, averaged over both directions so the similarity is
    symmetric) or ``"token-f1"`` (unigram F1 of lower-cased words, no dependencies). ``embedder``
    replaces the packaged MiniLM (any :class:`~llmblend.rank.embeddings.SentenceEmbedder`).
    """

    def __init__(self, similarity: str = "embedding", *, embedder: SentenceEmbedder | None = None) -> None:
        if similarity not in SIMILARITIES:
            raise RankerOptionError(
                f"unknown MBR similarity {similarity!r}; known: {', '.join(SIMILARITIES)} (e.g. mbr:chrf)"
            )
        self.similarity = similarity
        self.name = f"mbr:{similarity}"
        self._embedder = embedder
        self._pair_similarity: Callable[[str, str], float] | None = None
        if similarity != "embedding":
            self._pair_similarity = _text_similarity(similarity)

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        check_rank_options(self.name, strategy, top_k)
        if self.similarity == "embedding":
            return rank_by_scores(examples, self._score_by_embedding)
        return rank_by_scores(examples, self._score_by_text)

    @property
    def embedder(self) -> SentenceEmbedder:
        """The sentence encoder, loaded on first use (the packaged MiniLM unless one was given)."""
        if self._embedder is None:
            from llmblend.rank.embeddings import SentenceEmbedder

            self._embedder = SentenceEmbedder.from_pretrained()
        return self._embedder

    def _score_by_text(self, batch: Sequence[Example]) -> list[tuple[np.ndarray, int]]:
        assert self._pair_similarity is not None
        similarity = self._pair_similarity
        return [(consensus(pairwise_matrix([c.text for c in ex.candidates], similarity)), 0) for ex in batch]

    def _score_by_embedding(self, batch: Sequence[Example]) -> list[tuple[np.ndarray, int]]:
        sizes = [len(ex.candidates) for ex in batch]
        vectors = self.embedder.encode([c.text for ex in batch for c in ex.candidates])
        return [(consensus(part @ part.T), len(part)) for part in split_sizes(vectors, sizes)]


def consensus(similarity: np.ndarray) -> np.ndarray:
    """Each row's mean similarity to the other candidates (the diagonal is left out)."""
    n = similarity.shape[0]
    if n < 2:
        return np.zeros(n)
    off_diagonal = similarity.sum(axis=1) - np.diagonal(similarity)
    return off_diagonal / (n - 1)


def pairwise_matrix(texts: Sequence[str], similarity: Callable[[str, str], float]) -> np.ndarray:
    """The symmetric ``N x N`` similarity matrix; each unordered pair is computed once."""
    n = len(texts)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = similarity(texts[i], texts[j])
    return matrix


def token_f1(a: str, b: str) -> float:
    """Unigram F1 of lower-cased words (SQuAD-style): 1.0 when both are empty, 0.0 when one is."""
    words_a, words_b = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    if not words_a or not words_b:
        return float(words_a == words_b)
    overlap = sum((Counter(words_a) & Counter(words_b)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(words_a), overlap / len(words_b)
    return 2 * precision * recall / (precision + recall)


def _text_similarity(similarity: str) -> Callable[[str, str], float]:
    """The symmetric similarity function of a text-based MBR option, scaled to [0, 1]."""
    if similarity == "token-f1":
        return token_f1
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError as exc:
        raise MissingExtraError("sacrebleu", "eval", f"MBR with {similarity} similarity") from exc
    metric = CHRF() if similarity == "chrf" else BLEU(effective_order=True)

    def symmetric(a: str, b: str) -> float:
        forward = metric.sentence_score(a, [b]).score
        backward = metric.sentence_score(b, [a]).score
        return (forward + backward) / 200.0

    return symmetric


def _parse_seed(seed: int | str) -> int:
    if isinstance(seed, int):
        return seed
    try:
        return int(seed)
    except ValueError:
        raise RankerOptionError(
            f"the random ranker's seed must be an integer, got {seed!r}; e.g. random:3"
        ) from None
