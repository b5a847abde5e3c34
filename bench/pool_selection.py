"""Pool-aware, calibrated selection on alpaca-blend: does the pick beat the best model in the pool?

Protocol (dev is only ever evaluated; nothing is chosen on it):

* Strengths, length statistics, combination weights and the switching threshold come from the
  480 **train** instructions only, exactly as ``llmblend train pool train.jsonl --oracle gpt4_win``
  fits them: features cross-fitted in 5 folds by instruction, the threshold by cross-validated
  top-1. The configuration to ship is the one with the best *cross-validated* top-1 on train.
* The ranker term needs instructions the ranker never trained on: **H**, the 48 train instructions
  its trainer held out (:func:`held_out_sources`), with strengths fitted on the other 432
  (``llmblend train pool ... --calibrate H``).
* dev (120 instructions × 11 models): top-1 mean ``gpt4_win``, share ≥ the best single model, share
  in the oracle top 3, Spearman, forwards per instruction, and a paired bootstrap interval of the
  top-1 gain over always answering with the best single model; the threshold trade-off plot.
* Whether pool-seeded's 2(N−1) forwards pick what full's N(N−1) pick: the same strategies with
  the ranker term calibrated on H, for the shipped ranker and for simulated rankers that carry
  weight (:func:`simulated_matrices`).

The ranker's raw logits for every ordered pair of H ∪ dev are computed once and cached; strategies
replay them through the library's own code (:func:`llmblend.rank.pool_ranker.rank_with_pool`),
which is exactly what live calls return. Embeddings (consensus) are cached too.

    .venv/bin/python bench/pool_selection.py --out build/pool-selection.md
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.eval.ranking import correlation, fmt_number, fmt_percent, markdown_table, selection_quality
from llmblend.eval.ranking_measures import pairwise_accuracy
from llmblend.rank.base import PairQuery, rank_items
from llmblend.rank.combine import Combination
from llmblend.rank.pool_ranker import rank_with_pool
from llmblend.rank.strategies import run_strategy
from llmblend.train.pool import (
    DEFAULT_TERMS,
    DEFAULT_THRESHOLD_RULE,
    JudgedData,
    PoolSettings,
    cross_fits,
    cross_fitted_features,
    example_features,
    fit_combination,
    fit_pool_from,
    length_scale_of,
)
from llmblend.types import prompt_text

ORACLE = "gpt4_win"
FREE = DEFAULT_TERMS
ABLATIONS = {
    "pool only": ("pool",),
    "pool + length": ("pool", "length"),
    "pool + length + rel. length": ("pool", "length", "rel_length"),
    "pool + length + consensus": ("pool", "length", "consensus"),
    "pool + length + consensus + rel. length": ("pool", "length", "consensus", "rel_length"),
    "pool + length + rel. length + pool consensus": FREE,
}


#: Systematic noise τ of the simulated rankers (in gpt4_win units; :func:`simulated_matrices`).
SIMULATED_NOISE = (0.25, 0.5, 1.0)


def simulated_matrices(examples, tau: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Raw logits of a simulated ranker that matters: f(i, j) = 4 (p_i − p_j) + 0.5 + ε_ij, where
    p = gpt4_win + N(0, τ²) per candidate (it misjudges an answer in every comparison) and
    ε ~ N(0, 0.25²) per ordered pair. It shows whether pool-seeded's 2(N−1) forwards pick what
    full's N(N−1) pick when the ranker term carries weight, which the shipped ranker's does not."""
    rng = np.random.default_rng(seed)
    out = {}
    for ex in examples:
        p = np.array([c.scores[ORACLE] for c in ex.candidates]) + rng.normal(0, tau, len(ex.candidates))
        m = 4 * (p[:, None] - p[None, :]) + 0.5 + rng.normal(0, 0.25, (len(p), len(p)))
        np.fill_diagonal(m, np.nan)
        out[ex.id] = m
    return out


def pair_accuracy(examples, matrices, margin: float = 0.1) -> float:
    """Share of candidate pairs ≥ ``margin`` apart in gpt4_win whose debiased logit orders them right
    (:func:`~llmblend.eval.ranking_measures.pairwise_accuracy`)."""
    margins = []
    for ex in examples:
        g = np.array([c.scores[ORACLE] for c in ex.candidates])
        m = matrices[ex.id]
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                if abs(g[i] - g[j]) >= margin:
                    margins.append((m[i, j] - m[j, i]) * np.sign(g[i] - g[j]))
    return pairwise_accuracy(margins).accuracy


def held_out_sources(pairs_file: Path, fraction: float = 0.1, seed: int = 0) -> set[str]:
    """The instructions ``llmblend train ranker`` holds out (val_fraction, seed): never trained on."""
    sources = sorted({prompt_text(p.prompt) for p in read_preferences(pairs_file)})
    return set(random.Random(seed).sample(sources, max(1, round(fraction * len(sources)))))


def raw_matrices(ranker, examples, cache: Path) -> dict[str, np.ndarray]:
    """Raw single-order logits ``[N, N]`` of every example (NaN diagonal), cached in ``cache``."""
    stored = dict(np.load(cache)) if cache.is_file() else {}
    todo = [ex for ex in examples if ex.id not in stored]
    if todo:
        started = time.perf_counter()
        queries = [
            PairQuery(ex.source, a.text, b.text)
            for ex in todo
            for i, a in enumerate(ex.candidates)
            for j, b in enumerate(ex.candidates)
            if i != j
        ]
        unique = list(dict.fromkeys(queries))
        table = dict(zip(unique, ranker.pair_logits(unique), strict=True))
        for ex in todo:
            n = len(ex.candidates)
            m = np.full((n, n), np.nan)
            for i, a in enumerate(ex.candidates):
                for j, b in enumerate(ex.candidates):
                    if i != j:
                        m[i, j] = table[PairQuery(ex.source, a.text, b.text)]
            stored[ex.id] = m
        seconds = time.perf_counter() - started
        print(f"scored {len(unique)} pairs in {seconds:.0f} s ({len(unique) / seconds:.1f} pairs/s)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stored)
    return stored


def embeddings_of(examples, cache: Path) -> dict[str, np.ndarray]:
    stored = dict(np.load(cache)) if cache.is_file() else {}
    todo = [ex for ex in examples if ex.id not in stored]
    if todo:
        from llmblend.rank.embeddings import SentenceEmbedder

        embedder = SentenceEmbedder.from_pretrained()
        for ex in todo:
            stored[ex.id] = embedder.encode([c.text for c in ex.candidates])
        np.savez(cache, **stored)
    return stored


def lookup_scorer(matrices, examples):
    table = {}
    for ex in examples:
        m = matrices[ex.id]
        for i, a in enumerate(ex.candidates):
            for j, b in enumerate(ex.candidates):
                if i != j:
                    table[PairQuery(ex.source, a.text, b.text)] = m[i, j]
    return lambda batch: np.array([table[q] for q in batch], dtype=np.float64)


def cached_embed(embeddings, examples):
    """An ``embed(texts)`` that reads the cache (every text of ``examples`` is in it)."""
    vectors = {c.text: embeddings[ex.id][k] for ex in examples for k, c in enumerate(ex.candidates)}
    return lambda texts: np.array([vectors[t] for t in texts])


def bootstrap_gain(examples, rankings, best_model: str, draws: int = 10000, seed: int = 0):
    """Mean top-1 gain over always answering with ``best_model``, and its 95% paired bootstrap interval."""
    picked = np.array(
        [ex.candidates[r.best].scores[ORACLE] for ex, r in zip(examples, rankings, strict=True)]
    )
    best = np.array([ex.candidate(best_model).scores[ORACLE] for ex in examples])
    gain = picked - best
    rng = np.random.default_rng(seed)
    means = gain[rng.integers(0, len(gain), (draws, len(gain)))].mean(axis=1)
    return float(gain.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def dev_terms(dev, pool, combination, settings, embeddings, matrices=None):
    features = example_features(
        dev, pool, oracle=ORACLE, length_scale=combination.length_scale, settings=settings,
        embeddings=[embeddings[ex.id] for ex in dev],
        matrices=None if matrices is None else [matrices[ex.id] for ex in dev],
    )  # fmt: skip
    return features.terms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend"))
    parser.add_argument("--model", default=None, help="a PairRanker folder (default: the shipped one)")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--cache", type=Path, default=Path("build/pool-bench"))
    parser.add_argument("--out", type=Path, default=Path("build/pool-selection.md"))
    parser.add_argument("--plot", type=Path, default=Path("build/pool-selection.png"))
    parser.add_argument(
        "--threshold-rule", default=DEFAULT_THRESHOLD_RULE, help="gated, best or one-se (llmblend train pool)"
    )
    parser.add_argument("--simulation-seed", type=int, default=0, help="seed of the simulated rankers")
    args = parser.parse_args()

    from llmblend.rank.pairranker import PairRanker

    train = load_mixinstruct(args.data / "train.jsonl")
    dev = load_mixinstruct(args.data / "dev.jsonl")
    held = held_out_sources(args.data / "pairs_train.jsonl")
    h = [ex for ex in train if ex.source in held]
    print(f"train {len(train)} (held out {len(h)}), dev {len(dev)}")
    options = {"runtime": args.runtime, "batch_size": 16}
    ranker = (
        PairRanker.from_pretrained(args.model, **options) if args.model else PairRanker.default(**options)
    )
    tag = f"{Path(args.model).name if args.model else 'default'}-{args.runtime}-{ranker.config.max_length}"
    matrices = raw_matrices(ranker, h + dev, args.cache / f"ranker-{tag}.npz")
    embeddings = embeddings_of(train + dev, args.cache / "embeddings.npz")
    embed = cached_embed(embeddings, train + dev)
    data = JudgedData(train, [])
    length_scale = length_scale_of(train)
    scorer = lookup_scorer(matrices, h + dev)

    rankings = {
        "pairranker alone (full)": run_strategy("full", rank_items(dev), scorer),
        "pairranker alone (sparse-refine)": run_strategy("sparse-refine", rank_items(dev), scorer),
        "pairranker alone (knockout)": run_strategy("knockout", rank_items(dev), scorer),
        "pairranker alone (bubble)": run_strategy("bubble", rank_items(dev), scorer),
    }
    cv, combos, full_of, full_cv, started = {}, {}, {}, {}, time.perf_counter()
    for categories in (False, True):
        settings = PoolSettings(oracle=ORACLE, categories=categories)
        features = cross_fitted_features(data, settings, length_scale=length_scale, embed=embed)
        pool = fit_pool_from(data, settings)
        for name, terms in ABLATIONS.items():
            label = f"{name}{' (per category)' if categories else ''}"
            combo = fit_combination(
                features, terms, length_scale=length_scale, threshold_rule=args.threshold_rule
            )
            combos[label] = combo
            cv[label] = combo.fitted_on["cv_top1_by_threshold"][str(combo.threshold)]
            terms_dev = dev_terms(dev, pool, combo, settings, embeddings)
            rankings[label] = rank_with_pool(dev, terms_dev, combo, scorer, strategy="pool-seeded")
            full_of[label] = rank_with_pool(dev, terms_dev, combo, scorer, strategy="full")
            full_cv[label] = full_cv_top1(features, terms, length_scale, combo.threshold, scorer)
        # + the ranker, calibrated on H with strengths that never saw H
        suffix = " (per category)" if categories else ""
        rankers = {f"all free terms + ranker, calibrated on H{suffix}": matrices}
        if not categories:
            for tau in SIMULATED_NOISE:
                sim = simulated_matrices(h + dev, tau, args.simulation_seed)
                acc = pair_accuracy(dev, sim)
                rankers[f"all free terms + simulated ranker (τ={tau}, {acc:.0%} dev pairs), on H"] = sim
        held_pool = fit_pool_from(data.without(held), settings)
        for label, ranker_logits in rankers.items():
            h_features = example_features(
                h,
                held_pool,
                oracle=ORACLE,
                length_scale=length_scale,
                settings=settings,
                embeddings=[embeddings[ex.id] for ex in h],
                matrices=[ranker_logits[ex.id] for ex in h],
            )
            combo = fit_combination(
                h_features, (*FREE, "ranker"), length_scale=length_scale, threshold_rule=args.threshold_rule
            )
            combos[label] = combo
            terms_dev = dev_terms(dev, pool, combo, settings, embeddings, ranker_logits)
            replay = lookup_scorer(ranker_logits, h + dev)
            rankings[label] = rank_with_pool(dev, terms_dev, combo, replay, strategy="pool-seeded")
            full_of[label] = rankings[f"{label}, full"] = rank_with_pool(
                dev, terms_dev, combo, replay, strategy="full"
            )
            full_cv[label] = full_cv_top1(
                h_features, (*FREE, "ranker"), length_scale, combo.threshold, replay
            )
    print(f"fits: {time.perf_counter() - started:.0f} s")
    ship = max((k for k in cv), key=lambda k: cv[k])
    same_pick = {
        label: (same_top1(rankings[label], full), mean_pick(dev, full), full_cv[label])
        for label, full in full_of.items()
    }
    print(f"the ranker orders {pair_accuracy(dev, matrices):.1%} of dev pairs >= 0.1 apart right")
    write_report(args, dev, rankings, combos, cv, ship, len(h), same_pick)
    threshold_plot(args.plot, dev, data, combos[ship], ship, embeddings, scorer, length_scale)
    forwards_plot(args.plot.with_name(args.plot.stem + "-forwards.png"), dev, rankings, ship)


def mean_pick(examples, rankings) -> float:
    """Mean oracle score of the picked candidates (top-1)."""
    return float(
        np.mean([ex.candidates[r.best].scores[ORACLE] for ex, r in zip(examples, rankings, strict=True)])
    )


def full_cv_top1(features, terms, length_scale: float, threshold: float, scorer) -> float:
    """Train cross-validated top-1 of the ``full`` strategy: in each fold, the bias and weights
    fitted on the other folds and the threshold the pool-seeded strategy's cross-validation chose;
    ``scorer`` replays the ranker's logits (asked only when the ranker is a term)."""
    picked = []
    for bias, weights, test in cross_fits(features, terms):
        combo = Combination(weights, length_scale=length_scale, threshold=threshold, bias=bias)
        examples, fold_terms = [features.examples[k] for k in test], [features.terms[k] for k in test]
        ranked = rank_with_pool(examples, fold_terms, combo, scorer, strategy="full")
        picked += [features.truth[k][r.best] for k, r in zip(test, ranked, strict=True)]
    return float(np.mean(picked))


def same_top1(a, b) -> float:
    """The share of examples where two rankings pick the same candidate."""
    return float(np.mean([x.best == y.best for x, y in zip(a, b, strict=True)]))


def forwards_plot(path, dev, rankings, ship) -> None:
    """Dev top-1 against ranker forwards per instruction, one point per selection method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, ranked in rankings.items():
        if "per category" in label or "simulated" in label:
            continue
        forwards = float(np.mean([r.n_forward for r in ranked]))
        marker = "*" if label == ship else ("o" if label.startswith("pairranker") else "s")
        name = f"{label} (shipped)" if label == ship else label
        ax.scatter(
            forwards, mean_pick(dev, ranked), marker=marker, s=120 if label == ship else 36, label=name
        )
    models = {c.model for c in dev[0].candidates}
    best = max(np.mean([ex.candidate(m).scores[ORACLE] for ex in dev]) for m in models)
    ax.axhline(best, color="grey", ls="--", lw=1, label="best single model")
    ax.set_xlabel("PairRanker forwards per instruction (N = 11)")
    ax.set_ylabel("dev top-1 (mean gpt4_win of the pick)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def write_report(args, dev, rankings, combos, cv, ship, n_held, same_pick) -> None:
    selection = selection_quality(dev, rankings, ORACLE)
    rho = {m: correlation(dev, r, ORACLE, m).spearman for m, r in rankings.items()}
    best_model = selection.best_model
    header = ["method", "fwd/instr.", "train CV top-1", "dev top-1", f"≥ {best_model}", "oracle top-3",
              "Spearman", "dev gain vs best [95% CI]"]  # fmt: skip
    rows = []
    for row in selection.rows:
        if row.kind == "model" and row.method != f"model: {best_model}":
            continue
        gain = ""
        if row.method in rankings:
            g, lo, hi = bootstrap_gain(dev, rankings[row.method], best_model)
            gain = f"{g:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        method = f"**{row.method}** (shipped)" if row.method == ship else row.method
        rows.append([
            method, "" if row.mean_forward is None else f"{row.mean_forward:.0f}",
            fmt_number(cv.get(row.method)), fmt_number(row.mean_score), fmt_percent(row.at_least_best),
            fmt_percent(row.top3), fmt_number(rho.get(row.method), 3), gain,
        ])  # fmt: skip
    lines = [
        f"# Pool-aware selection on alpaca-blend dev ({len(dev)} instructions × 11 models)\n",
        "Strengths, weights and thresholds from the 480 train instructions only (features cross-fitted in 5 "
        f"folds; threshold by cross-validated top-1); the ranker term calibrated on the {n_held} train "
        "instructions the ranker never trained on. 'train CV top-1' is what chose the shipped row; the "
        "best single model scores 0.1155 there.\n",
        markdown_table((header, rows)),
        "\n**Pool-seeded vs full** (the same combination and threshold; full's ranker evidence from "
        "strengths fitted to every pair): the share of dev instructions with the same pick, and full's dev "
        "top-1 and train CV top-1 (the ranker rows: CV on the held-out train instructions):\n",
        *(
            f"- {k}: {fmt_percent(same)}% same pick; full {fmt_number(top1)} (CV {fmt_number(full)})"
            for k, (same, top1, full) in same_pick.items()
        ),
        "\n**Fitted combinations** (bias, weights, threshold, in-sample ECE of P(challenger beats "
        "favourite)):\n",
    ]
    for name, c in combos.items():
        ece = c.calibration
        alone = f" (ranker alone {ece['ece_ranker_alone']})" if "ece_ranker_alone" in ece else ""
        lines.append(
            f"- {name}: bias {c.bias}, {c.weights}, threshold {c.threshold}, "
            f"ECE {ece.get('ece_combination')}{alone}"
        )
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


def threshold_plot(path, dev, data, combo, label, embeddings, scorer, length_scale) -> None:
    """Dev top-1 and the share of instructions where the favourite is replaced, against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = PoolSettings(oracle=ORACLE, categories="per category" in label)
    pool = fit_pool_from(data, settings)
    taus = np.linspace(0.2, 0.9, 29)
    top, switched = [], []
    for tau in taus:
        c = Combination(combo.weights, combo.length_scale, float(tau), combo.bias)
        terms = dev_terms(dev, pool, c, settings, embeddings)
        ranked = rank_with_pool(dev, terms, c, scorer)
        fav = [int(np.argmax(t["pool"].sum(axis=1))) for t in terms]
        top.append(np.mean([ex.candidates[r.best].scores[ORACLE] for ex, r in zip(dev, ranked, strict=True)]))
        switched.append(np.mean([r.best != f for r, f in zip(ranked, fav, strict=True)]))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(taus, top, label="dev top-1 (mean gpt4_win)")
    ax.axhline(0.0649, color="grey", ls="--", label="best single model")
    ax.axvline(combo.threshold, color="green", ls=":", label=f"chosen on train CV ({combo.threshold})")
    ax.set_xlabel("threshold on P(challenger beats the pool's favourite)")
    ax.set_ylabel("mean gpt4_win of the pick")
    ax2 = ax.twinx()
    ax2.plot(taus, switched, color="orange", label="share switched")
    ax2.set_ylabel("share of instructions where the favourite is replaced")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
