"""How far can a cheap learned scorer get on alpaca-blend's top-1 selection? (issue 4's top-1 target)

Only the **train** instructions are used (dev stays unseen), in 5 folds by instruction: a pairwise
logistic model (``w·(x_a − x_b)``, as PairRanker's training pairs) is fitted on four folds and picks
the top-1 of the 11 pool candidates on the fifth. Probes:

* ``surface``: 11 untruncated surface features (length, lines, list items, bold, headings,
  refusals, code blocks, final punctuation…), pairs among the pool only;
* ``tfidf pool``: word 1–2-gram TF-IDF of the whole answer, pairs among the pool only;
* ``tfidf all k=…``: the same, with up to k pairs per instruction drawn from the answers of every
  oracle-scored model (57), ≥ 0.1 apart like ``alpaca-blend/pairs_train.jsonl`` (identical texts kept).

Next to them: always answering with each pool model (the best is the target), longest, oracle. The
table tells whether a content signal learnable from this data beats the best single model at all,
and how top-1 grows with the number of training pairs per instruction.

    .venv/bin/python bench/ranker_headroom.py --out build/ranker-headroom.md
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.data.sources import alpaca_eval
from llmblend.eval.ranking import fmt_number, fmt_percent, markdown_table

ORACLE = "gpt4_win"
MIN_MARGIN = 0.1
LIST_ITEM = re.compile(r"\s*(\d+[.)]|[-*•])\s")
REFUSAL = re.compile(r"as an ai|language model|i'm sorry|i cannot|i can't")


def surface_features(text: str) -> list[float]:
    """Untruncated surface features of one answer (log counts, so differences are ratios)."""
    lines = text.split("\n")
    return [
        np.log1p(len(text)),
        np.log1p(len(text.split())),
        np.log1p(len(lines)),
        np.log1p(sum(bool(LIST_ITEM.match(line)) for line in lines)),
        np.log1p(text.count("**")),
        np.log1p(sum(line.startswith("#") for line in lines)),
        float(bool(REFUSAL.search(text.lower()))),
        float(text.rstrip()[-1:] in '.!?)"*`') if text.strip() else 0.0,
        np.log1p(text.count("\n\n")),
        float("```" in text),
    ]


def labelled_pairs(scores: np.ndarray, limit: int | None, seed: int) -> list[tuple[int, int]]:
    """(better, worse) index pairs ≥ MIN_MARGIN apart, a seeded sample of at most ``limit``."""
    eligible = [
        (a, b) if scores[a] > scores[b] else (b, a)
        for a in range(len(scores))
        for b in range(a + 1, len(scores))
        if abs(scores[a] - scores[b]) >= MIN_MARGIN
    ]
    if limit is None or len(eligible) <= limit:
        return eligible
    return random.Random(seed).sample(eligible, limit)


def fit_pairwise(features, pairs: list[tuple[int, int]], c: float) -> np.ndarray:
    """Weights of a logistic model on feature differences, both orders of every pair."""
    winners, losers = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    diff = features[winners] - features[losers]
    stacked = sparse.vstack([diff, -diff]) if sparse.issparse(diff) else np.vstack([diff, -diff])
    labels = np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]
    model = LogisticRegression(C=c, max_iter=3000, fit_intercept=False).fit(stacked, labels)
    return model.coef_[0]


class Pool:
    """The train instructions: pool candidates with oracle scores, and every scored model's answer."""

    def __init__(self, train_file: Path, data_dir: Path) -> None:
        self.examples = load_mixinstruct(train_file)
        self.models = [c.model for c in self.examples[0].candidates]
        self.scores = np.array([[c.scores[ORACLE] for c in ex.candidates] for ex in self.examples])
        self.texts = [[c.text for c in ex.candidates] for ex in self.examples]
        oracle = alpaca_eval.read_oracle_scores(data_dir)
        scored = sorted(m for m in oracle if m != "NullModel")
        rows = {row.instruction: row for row in alpaca_eval.iter_rows(data_dir, scored)}
        self.everyone: list[tuple[list[str], np.ndarray]] = []
        for ex in self.examples:
            row = rows[ex.instruction]
            models = [m for m in scored if row.index in oracle[m] and m in row.outputs]
            answers = [row.outputs[m] for m in models]
            self.everyone.append((answers, np.array([oracle[m][row.index] for m in models])))

    def pick(self, scores: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Oracle score of the top-scored candidate of each instruction in ``rows`` (default: all);
        ``scores`` is [len(rows), 11]."""
        rows = np.arange(len(self.scores)) if rows is None else rows
        return self.scores[rows, scores.argmax(axis=1)]


def cross_validated(
    pool: Pool, probe: str, limit: int | None, c: float, folds: int
) -> tuple[np.ndarray, int]:
    """Out-of-fold top-1 oracle scores of one probe, and the mean number of training pairs."""
    picked = np.zeros(len(pool.examples))
    n_pairs = []
    for train_idx, test_idx in KFold(folds, shuffle=True, random_state=0).split(picked):
        texts, pairs = [], []
        for i in train_idx:
            answers, scores = pool.everyone[i] if probe == "tfidf-all" else (pool.texts[i], pool.scores[i])
            base = len(texts)
            texts += answers
            pairs += [(base + a, base + b) for a, b in labelled_pairs(scores, limit, int(i))]
        test_texts = [t for i in test_idx for t in pool.texts[i]]
        if probe == "surface":
            train_x = np.array([surface_features(t) for t in texts])
            test_x = np.array([surface_features(t) for t in test_texts])
        else:
            vectoriser = TfidfVectorizer(
                ngram_range=(1, 2), min_df=3, sublinear_tf=True, max_features=100_000
            )
            train_x = vectoriser.fit_transform(texts)
            test_x = vectoriser.transform(test_texts)
        weights = fit_pairwise(train_x, pairs, c)
        picked[test_idx] = pool.pick((test_x @ weights).reshape(len(test_idx), -1), test_idx)
        n_pairs.append(len(pairs))
    return picked, int(np.mean(n_pairs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, default=Path("build/alpaca-blend/train.jsonl"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pairs", type=int, nargs="*", default=[16, 40, 64, 256], help="k of tfidf all")
    parser.add_argument("--c", type=float, default=3.0, help="inverse L2 strength of the logistic models")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pool = Pool(args.train, args.data_dir)
    best_model = int(pool.scores.mean(axis=0).argmax())
    best = pool.scores[:, best_model]
    rows = []

    def add(method: str, picked: np.ndarray, pairs: str = "", seconds: float | None = None) -> None:
        rows.append(
            [
                method,
                pairs,
                fmt_number(float(picked.mean())),
                fmt_percent(float(np.mean(picked >= best - 1e-12))),
                "" if seconds is None else f"{seconds:.0f}",
            ]
        )

    add("oracle", pool.scores.max(axis=1))
    for index in np.argsort(-pool.scores.mean(axis=0))[:3]:
        add(f"model: {pool.models[index]}", pool.scores[:, index])
    add("longest (characters)", pool.pick(np.array([[len(t) for t in texts] for texts in pool.texts])))
    probes = [("surface", None, "surface (pool pairs)"), ("tfidf-pool", None, "tfidf pool (all pool pairs)")]
    probes += [("tfidf-all", k, f"tfidf all models, k={k}") for k in args.pairs]
    probes.append(("tfidf-all", None, "tfidf all models, every pair"))
    for probe, limit, label in probes:
        started = time.perf_counter()
        picked, n_pairs = cross_validated(pool, probe, limit, args.c, args.folds)
        add(label, picked, str(n_pairs), time.perf_counter() - started)
        print(" | ".join(rows[-1]), flush=True)
    text = (
        f"### Top-1 selection on the {len(pool.examples)} alpaca-blend train instructions "
        f"({args.folds}-fold by instruction; mean {ORACLE}, and share ≥ {pool.models[best_model]})\n\n"
        + markdown_table((["method", "train pairs / fold", f"top-1 {ORACLE}", "≥ best model", "s"], rows))
        + "\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
