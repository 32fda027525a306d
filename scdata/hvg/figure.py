"""``hvg_analysis.png``: the seed's four panels, plus how much HVG variance lies between batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..stats.reduction import GeneStats


def between_batch_fraction(stats: GeneStats, scale: str = "log1p") -> np.ndarray | None:
    """Per gene, the share of its total sum of squares that lies between batch means."""
    between = stats.between_batch_ss.get(scale)
    if between is None:
        return None
    total = stats.moments[scale]["m2"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.minimum(between / total, 1.0), np.nan)


@dataclass(frozen=True)
class HVGPanels:
    """What ``hvg_analysis.png`` shows, per gene: small enough to send to the process that draws it."""

    mean: np.ndarray
    dispersion: np.ndarray
    pct: np.ndarray
    between_batch: np.ndarray | None
    order: np.ndarray
    symbols: np.ndarray
    score: np.ndarray
    score_name: str
    title: str
    batch_key: str | None
    n_batches: int


def hvg_panels(stats: GeneStats, order: np.ndarray, symbols: np.ndarray, score: np.ndarray, score_name: str,
               title: str) -> HVGPanels:
    return HVGPanels(stats.mean("counts"), stats.dispersion(unexpressed=np.nan), stats.pct_cells(),
                     between_batch_fraction(stats), np.asarray(order), np.asarray(symbols), score, score_name, title,
                     stats.batch_key, len(stats.batches))


def draw_hvg_analysis(path: str, panels: HVGPanels) -> None:
    """Write ``hvg_analysis.png`` to ``path`` (needs only ``panels``: it runs in a child process)."""
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, dispersion, pct, frac = panels.mean, panels.dispersion, panels.pct, panels.between_batch
    order, symbols, score = panels.order, panels.symbols, panels.score
    hv = np.zeros(len(mean), dtype=bool)
    hv[order] = True
    expressed = mean > 0

    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    ax = axes[0, 0]
    ax.scatter(mean[expressed & ~hv], dispersion[expressed & ~hv], s=3, c="lightgray", label="other genes", rasterized=True)
    ax.scatter(mean[hv], dispersion[hv], s=5, c="crimson", label=f"HVGs ({hv.sum():,})", rasterized=True)
    ax.set(xscale="log", yscale="log", xlabel="mean count per cell", ylabel="dispersion (variance / mean)",
           title="Dispersion vs mean expression")
    ax.legend(loc="upper left")

    ax = axes[0, 1]
    bins = np.linspace(np.log10(mean[expressed].min()), np.log10(mean[expressed].max()), 60)
    ax.hist(np.log10(mean[expressed]), bins=bins, color="lightgray", label="expressed genes")
    ax.hist(np.log10(mean[hv & expressed]), bins=bins, color="crimson", alpha=0.8, label="HVGs")
    ax.set(xlabel="log10 mean count per cell", ylabel="genes", title="HVG expression distribution")
    ax.legend()

    ax = axes[0, 2]
    bins = np.linspace(0, 100, 51)
    ax.hist(pct[expressed], bins=bins, color="lightgray", label="expressed genes")
    ax.hist(pct[hv], bins=bins, color="crimson", alpha=0.8, label="HVGs")
    ax.set(xlabel="% of cells expressing", ylabel="genes", yscale="log", title="Cell coverage")
    ax.legend()

    ax = axes[1, 0]
    top = order[:20][::-1]
    ax.barh(np.arange(len(top)), score[top], color="crimson")
    ax.set_yticks(np.arange(len(top)), [f"{symbols[i]}" for i in top], fontsize=8)
    ax.set(xlabel=panels.score_name, title="Top 20 HVGs")

    ax = axes[1, 1]
    if frac is not None:
        bins = np.linspace(0, 1, 41)
        ax.hist(frac[expressed & ~hv & np.isfinite(frac)], bins=bins, color="lightgray", density=True, label="other genes")
        ax.hist(frac[hv & np.isfinite(frac)], bins=bins, color="crimson", alpha=0.7, density=True, label="HVGs")
        ax.axvline(np.nanmedian(frac[hv]), color="crimson", ls="--", lw=1)
        ax.set(xlabel=f"share of log1p variance between {panels.batch_key} groups", ylabel="density",
               title=f"Batch effect ({panels.n_batches} {panels.batch_key} groups; "
                     f"median HVG {np.nanmedian(frac[hv]):.2f})")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no batch statistics", ha="center", va="center")
        ax.set_axis_off()

    ax = axes[1, 2]
    if frac is not None:
        ax.scatter(mean[hv], frac[hv], s=6, c="crimson", rasterized=True)
        worst = order[np.argsort(-np.nan_to_num(frac[order]))[:5]]
        for i in worst:
            ax.annotate(str(symbols[i]), (mean[i], frac[i]), fontsize=7)
        ax.set(xscale="log", xlabel="mean count per cell", ylabel="between-batch share",
               title="HVGs most driven by batch")
    else:
        ax.set_axis_off()
    for ax in axes.flat:  # decades are labelled; the unlabelled ticks between them took a third of the drawing
        ax.minorticks_off()
    fig.suptitle(panels.title)
    # Fixed margins: tight_layout measured every tick label twice and took longer than the rest.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.92, wspace=0.22, hspace=0.28)
    fig.savefig(path, dpi=110)
    plt.close(fig)
