"""The report's plots (LLM-Blender §5, Figure 1): per-model win rates, the best-model distribution,
and selection/ranking quality against the number of comparisons of each PairRanker strategy.

matplotlib is imported when a plot is drawn (the Agg backend: files only, no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmblend.data.stats import dataset_stats
from llmblend.types import Example


def win_rates(examples: Sequence[Example], oracle: str) -> dict[str, float]:
    """Each model's share of head-to-head comparisons won on the same instruction (ties: half)."""
    wins: dict[str, float] = {}
    games: dict[str, int] = {}
    for example in examples:
        scored = [(c.model, c.scores[oracle]) for c in example.candidates if oracle in c.scores]
        for i, (a, sa) in enumerate(scored):
            for b, sb in scored[i + 1 :]:
                for model, result in (
                    (a, float(sa > sb) + 0.5 * (sa == sb)),
                    (b, float(sb > sa) + 0.5 * (sa == sb)),
                ):
                    wins[model] = wins.get(model, 0.0) + result
                    games[model] = games.get(model, 0) + 1
    return {m: wins[m] / games[m] for m in wins}


def _bar_plot(values: Mapping[str, float], title: str, ylabel: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(values.items(), key=lambda kv: -kv[1])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(ordered) + 2), 4.2))
    ax.bar([m for m, _ in ordered], [100 * v for _, v in ordered], color="#4C72B0")
    for x, (_, v) in enumerate(ordered):
        ax.text(x, 100 * v, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True, slots=True)
class StrategyPoint:
    """One strategy's cost and quality: mean forwards, mean top-1 oracle score, mean Spearman."""

    name: str
    n_forward: float
    top1: float
    spearman: float


def quality_vs_comparisons_plot(
    points: Sequence[StrategyPoint], references: Mapping[str, float], oracle: str, path: Path
) -> Path:
    """Top-1 quality against forwards per instruction, one point per strategy; dashed lines for
    ``references`` (e.g. best single model, random, oracle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    ordered = sorted(points, key=lambda p: p.n_forward)
    for axis, value in ((left, "top1"), (right, "spearman")):
        axis.plot([p.n_forward for p in ordered], [getattr(p, value) for p in ordered], "-", color="#BBBBBB")
        for p, marker in zip(ordered, "osD^v<>ph", strict=False):
            axis.plot(p.n_forward, getattr(p, value), marker, markersize=8, label=p.name)
    for (label, value), style in zip(references.items(), ("--", ":", "-.", (0, (1, 3))), strict=False):
        left.axhline(value, linestyle=style, color="grey", linewidth=1.2, label=f"{label} ({value:.3f})")
    left.legend(fontsize=8, loc="best")
    right.legend(fontsize=8, loc="best")
    left.set_xlabel("comparisons (forward passes) per instruction")
    left.set_ylabel(f"mean {oracle} of the top-1")
    right.set_xlabel("comparisons (forward passes) per instruction")
    right.set_ylabel(f"Spearman with {oracle}")
    left.set_title("selection quality vs comparisons")
    right.set_title("ranking quality vs comparisons")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def oracle_plots(examples: Sequence[Example], oracle: str, folder: Path) -> dict[str, Path]:
    """Per-model win rates and the best-model distribution (Figure 1), as PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    stats = dataset_stats(examples, oracle)
    return {
        "win rates": _bar_plot(
            win_rates(examples, oracle),
            f"head-to-head win rate by {oracle} (same instruction; ties count half)",
            "% of comparisons won",
            folder / "win_rates.png",
        ),
        "best-model distribution": _bar_plot(
            {m.model: m.best_share for m in stats.models},
            f"how often each model gives the best answer (by {oracle}; cf. LLM-Blender Figure 1)",
            "% of instructions where it is the best",
            folder / "best_model_distribution.png",
        ),
    }
