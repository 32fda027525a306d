"""``samples.png``: generated cells beside real held-out cells and the baselines, as a person
would look at them: the PCA plane of real training cells, and per-gene means and variances."""

from __future__ import annotations

import numpy as np

from .metrics import PCASpace

STYLE = {"real": ("real held-out (other half)", "tab:blue"), "samples": ("generated", "tab:red"),
         "gene_shuffled": ("gene-shuffled real", "tab:green"), "marginal": ("per-gene marginals", "tab:purple")}


def plot_samples(cells: dict[str, np.ndarray], pca: PCASpace, out: str) -> None:
    """``cells``: "reference" (real held-out cells) and the compared sets of ``STYLE``, each
    (cells, genes) on the log1p scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = cells["reference"]
    ref_z = pca.project(reference)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    for ax, name in zip(axes[0], ("samples", "gene_shuffled", "marginal")):
        z = pca.project(cells[name])
        ax.scatter(ref_z[:, 0], ref_z[:, 1], s=6, alpha=0.45, c="tab:blue", label="real held-out")
        label, colour = STYLE[name]
        ax.scatter(z[:, 0], z[:, 1], s=6, alpha=0.45, c=colour, label=label)
        ax.set(xlabel="PC 1 (real training cells)", ylabel="PC 2", title=f"{label} vs real held-out cells")
        ax.legend(loc="best", fontsize=8, markerscale=2)
    ref_mean, ref_var = reference.mean(0), reference.var(0)
    for ax, stat, ref_stat, title in ((axes[1, 0], np.mean, ref_mean, "per-gene mean (log1p)"),
                                      (axes[1, 1], np.var, ref_var, "per-gene variance (log1p)")):
        top = max(ref_stat.max(), 1e-6)
        for name in ("samples", "gene_shuffled", "marginal"):
            label, colour = STYLE[name]
            ax.scatter(ref_stat, stat(cells[name], axis=0), s=5, alpha=0.6, c=colour, label=label)
            top = max(top, float(stat(cells[name], axis=0).max()))
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.set(xlabel=f"real held-out cells: {title}", ylabel=title, title=title)
        ax.legend(loc="upper left", fontsize=8, markerscale=2)
    ax = axes[1, 2]
    ref_zero = (reference == 0).mean(0)
    for name in ("real", "samples", "gene_shuffled", "marginal"):
        label, colour = STYLE[name]
        ax.scatter(ref_zero, (cells[name] == 0).mean(0), s=5, alpha=0.6, c=colour, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="real held-out cells: fraction of zeros per gene", ylabel="fraction of zeros per gene",
           title="zeros per gene")
    ax.legend(loc="upper left", fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
