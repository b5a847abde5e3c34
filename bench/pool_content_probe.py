"""Would a content scorer add to the pool? A TF-IDF pairwise scorer weighed in as the ranker term.

The shipped PairRanker gets a calibrated weight of ~0 next to the free terms
(``bench/pool_selection.py``), and the issue asks whether to retrain it *on the residual* of the
pool. Before a multi-hour CPU retrain, this probe asks the cheaper question: does *any* content
signal learnable from alpaca-blend train carry weight once pool, length, relative length and pool
consensus are in? The stand-in is ``bench/ranker_headroom.py``'s "tfidf all models" scorer (word
1–2-gram TF-IDF, a pairwise logistic model on up to ``--pairs`` pairs per instruction drawn from
the answers of all 57 oracle-scored models, ≥ 0.1 apart), whose logit difference
``w·(x_i − x_j)`` is the ``ranker`` term.

* **train** (480 instructions): the scorer is cross-fitted in the same 5 folds by instruction as
  the pool (:func:`llmblend.train.pool.instruction_folds`): each fold's candidates are scored by a
  scorer fitted on the other four. The combination (default terms + ranker) is then fitted and
  its threshold chosen by ``llmblend train pool``'s own cross-validation: its train CV top-1
  against the default terms' alone.
* **dev** (120, only evaluated): the scorer fitted on all of train, the combination on train's
  cross-fitted features; the pool-seeded pick.

    .venv/bin/python bench/pool_content_probe.py --out build/pool-content-probe.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.eval.ranking import fmt_number, markdown_table
from llmblend.rank.pool_ranker import rank_with_pool
from llmblend.train.pool import (
    DEFAULT_TERMS,
    JudgedData,
    PoolSettings,
    cross_fitted_features,
    fit_combination,
    fit_pool_from,
    instruction_folds,
    length_scale_of,
)
from pool_selection import (
    ORACLE,
    bootstrap_gain,
    cached_embed,
    dev_terms,
    embeddings_of,
    lookup_scorer,
    mean_pick,
)
from ranker_headroom import Pool, fit_pairwise, labelled_pairs


def fit_scorer(pool: Pool, rows, pairs_per_instruction: int, c: float):
    """A TF-IDF vectoriser and pairwise logistic weights fitted on the train rows' answers of every
    scored model."""
    texts, pairs = [], []
    for i in rows:
        answers, scores = pool.everyone[i]
        base = len(texts)
        texts += answers
        drawn = labelled_pairs(scores, pairs_per_instruction or None, int(i))
        pairs += [(base + a, base + b) for a, b in drawn]
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=3, sublinear_tf=True, max_features=100_000)
    weights = fit_pairwise(vectoriser.fit_transform(texts), pairs, c)
    return vectoriser, weights


def content_matrix(vectoriser, weights, texts) -> np.ndarray:
    """``D[i, j] = w·(x_i − x_j)``: the scorer's log-odds that answer i beats answer j."""
    s = np.asarray(vectoriser.transform(texts) @ weights).ravel()
    return s[:, None] - s[None, :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("build/pool-bench"))
    parser.add_argument(
        "--pairs", type=int, default=256, help="training pairs per instruction (0: every pair ≥ 0.1 apart)"
    )
    parser.add_argument("--c", type=float, default=3.0, help="inverse L2 strength of the scorer")
    parser.add_argument("--out", type=Path, default=Path("build/pool-content-probe.md"))
    args = parser.parse_args()

    pool = Pool(args.data / "train.jsonl", args.data_dir)
    train, dev = pool.examples, load_mixinstruct(args.data / "dev.jsonl")
    row_of = {ex.id: k for k, ex in enumerate(train)}
    embeddings = embeddings_of(train + dev, args.cache / "embeddings.npz")
    data, settings, length_scale = JudgedData(train, []), PoolSettings(oracle=ORACLE), length_scale_of(train)
    features = cross_fitted_features(
        data, settings, length_scale=length_scale, embed=cached_embed(embeddings, train + dev)
    )
    started = time.perf_counter()
    fold_of = dict(zip((ex.id for ex in train), instruction_folds(train), strict=True))
    for fold in sorted(set(fold_of.values())):
        scorer = fit_scorer(pool, [row_of[i] for i, f in fold_of.items() if f != fold], args.pairs, args.c)
        for k, ex in enumerate(features.examples):
            if fold_of[ex.id] == fold:
                features.terms[k]["ranker"] = content_matrix(*scorer, [c.text for c in ex.candidates])
    print(f"cross-fitted scorer: {time.perf_counter() - started:.0f} s")

    scorer = fit_scorer(pool, range(len(train)), args.pairs, args.c)
    matrices = {ex.id: content_matrix(*scorer, [c.text for c in ex.candidates]) for ex in dev}
    replay, dev_pool = lookup_scorer(matrices, dev), fit_pool_from(data, settings)
    rows = []
    for label, terms in (
        ("default terms", DEFAULT_TERMS),
        ("default terms + TF-IDF scorer", (*DEFAULT_TERMS, "ranker")),
    ):
        combo = fit_combination(features, terms, length_scale=length_scale)
        curve = combo.fitted_on["cv_top1_by_threshold"]
        cv, best_cv = curve[str(combo.threshold)], max(curve.values())
        scored = matrices if "ranker" in terms else None
        dev_features = dev_terms(dev, dev_pool, combo, settings, embeddings, scored)
        ranked = rank_with_pool(dev, dev_features, combo, replay, strategy="pool-seeded")
        gain, lo, hi = bootstrap_gain(dev, ranked, "OpenHermes-2.5-Mistral-7B")
        rows.append([
            label, fmt_number(cv), fmt_number(best_cv), fmt_number(mean_pick(dev, ranked)),
            f"{gain:+.4f} [{lo:+.4f}, {hi:+.4f}]",
            f"{combo.weight('ranker'):.3f}", str(combo.threshold),
        ])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    pairs = f"{args.pairs} pairs" if args.pairs else "every pair ≥ 0.1 apart"
    text = (
        f"### A TF-IDF content scorer as the pool's ranker term ({pairs} per train instruction)\n\n"
        + markdown_table(
            (
                [
                    "terms",
                    "train CV top-1",
                    "at the best threshold",
                    "dev top-1",
                    "dev gain vs OpenHermes [95% CI]",
                    "ranker weight",
                    "threshold",
                ],
                rows,
            )
        )
        + "\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
