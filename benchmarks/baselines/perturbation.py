"""Baselines for perturbations never seen in fine-tuning, as the field's critics run them.

Each turns "the effect of knocking down target t" into per-gene expression ratios; the cells are
then made exactly as the model's delta predictions are (``scmodel.delta_cells``: the same real
control cells, thinned or boosted gene by gene), so every method is scored on its ratios alone.

* ``mean_of_training``: every unseen perturbation gets the mean effect of the training
  perturbations (Ahlmann-Eltze, Huber & Anders 2025: no deep model beat it for unseen ones).
* ``coexpression``: each gene regressed on the target's log expression across the atlas's cells,
  the fitted slope applied to the knockdown of the target in each real control cell.
* ``pca_ridge``: Ahlmann-Eltze et al.'s linear model ``Y = G W P^T + b``: gene embeddings ``G``
  from the PCA of the atlas (or of the training cells), a perturbation's embedding the embedding of
  its target gene, ``W`` fitted by ridge on the training perturbations' effects, ``b`` their mean.

Effects are log ratios of means per 10k (perturbed over control); knockdowns of unseen targets keep
the median fraction the training targets kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EPS = 1e-2
"""Pseudo-count (per 10k) of every ratio of means."""


def cp10k(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return counts * (1e4 / np.maximum(totals, 1.0))


def training_effects(adata, control: str, pert_col: str = "target_gene") -> tuple[pd.DataFrame, float]:
    """(targets x genes) log ratio of each training perturbation's mean per 10k to the controls',
    and the median fraction of its own mRNA a target kept."""
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    norm = cp10k(x.astype(np.float64))
    labels = adata.obs[pert_col].astype(str).to_numpy()
    base = norm[labels == control].mean(axis=0)
    rows, kept = {}, []
    for target in sorted(set(labels) - {control}):
        mean = norm[labels == target].mean(axis=0)
        rows[target] = np.log((mean + EPS) / (base + EPS))
        if target in adata.var_names:
            j = adata.var_names.get_loc(target)
            kept.append((mean[j] + EPS) / (base[j] + EPS))
    fold = float(np.median(kept)) if kept else 0.15
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(adata.var_names)), fold


def with_knockdown(log_ratio: np.ndarray, genes: list[str], target: str, fold: float) -> np.ndarray:
    """Ratios with the target's own entry set to the knockdown."""
    ratio = np.exp(log_ratio)
    if target in genes:
        ratio[genes.index(target)] = fold
    return ratio


def mean_of_training(effects: pd.DataFrame, targets: list[str], fold: float) -> dict[str, np.ndarray]:
    genes = list(effects.columns)
    mean = effects.to_numpy().mean(axis=0)
    return {t: with_knockdown(mean, genes, t, fold) for t in targets}


def coexpression(atlas_log1p: np.ndarray, controls_log1p: np.ndarray, genes: list[str], targets: list[str],
                 fold: float) -> dict[str, np.ndarray]:
    """Per target: every gene's least-squares slope on the target's log1p expression across atlas
    cells, applied to each control cell's knocked-down target; the ratio of the mean expressions."""
    x = atlas_log1p - atlas_log1p.mean(axis=0)
    out = {}
    base = np.expm1(controls_log1p).mean(axis=0)
    for target in targets:
        j = genes.index(target)
        var = float(np.dot(x[:, j], x[:, j]))
        slope = x.T @ x[:, j] / var if var > 0 else np.zeros(len(genes))
        change = np.log1p(np.expm1(controls_log1p[:, j]) * fold) - controls_log1p[:, j]  # per control cell
        predicted = controls_log1p + change[:, None] * slope[None, :]
        ratio = (np.expm1(np.clip(predicted, 0, None)).mean(axis=0) + EPS) / (base + EPS)
        ratio[j] = fold
        out[target] = ratio
    return out


def gene_embedding(log1p_values: np.ndarray, n_components: int = 10) -> np.ndarray:
    """(genes x K) loadings of the top principal components of cells' centred log1p expression."""
    centred = log1p_values - log1p_values.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return (vt[:n_components] * s[:n_components, None]).T / np.sqrt(max(len(centred) - 1, 1))


def pca_ridge(embedding: np.ndarray, effects: pd.DataFrame, genes: list[str], targets: list[str], fold: float,
              ridge: float = 0.1) -> dict[str, np.ndarray]:
    """Ahlmann-Eltze et al.'s ``Y = G W P^T + b``: ``G`` the genes' embedding, ``P`` the training
    targets' rows of it, ``b`` the training mean; ``W`` by ridge (``ridge``) on both sides."""
    g = embedding
    index = [genes.index(t) for t in effects.index]
    y = effects.to_numpy().T  # (genes, training targets)
    b = y.mean(axis=1, keepdims=True)
    p = g[index]  # (training targets, K)
    k = g.shape[1]
    left = np.linalg.solve(g.T @ g + ridge * np.eye(k), g.T @ (y - b))  # (K, T)
    w = np.linalg.solve(p.T @ p + ridge * np.eye(k), (left @ p).T).T  # (K, K)
    out = {}
    for target in targets:
        predicted = g @ w @ g[genes.index(target)] + b[:, 0]
        out[target] = with_knockdown(predicted, genes, target, fold)
    return out
