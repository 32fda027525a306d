"""Sample-quality metrics: how close a set of cells is to real held-out cells.

Pure numpy / scipy / scikit-learn on dense (cells, genes) arrays of expression (log1p scale), so
each function can be checked against a hand computation. Every comparison in an evaluation uses
the same number of cells and the same PCA space and kernel bandwidth, so the numbers of different
cell sets (samples, baselines, the real-vs-real floor) are comparable.

* ``mmd_unbiased``: squared MMD with a Gaussian kernel, the U-statistic (Gretton et al. 2012,
  eq. 3), which is unbiased: its mean over two samples of one distribution is 0 (single values can
  be negative). The biased V-statistic adds a positive term that shrinks with the sample size, so
  sets of different sizes cannot be compared with it.
* ``mmd_permutation_pvalue``: the permutation test of the same statistic.
* ``classifier_auc``: cross-validated ROC AUC of a k-nearest-neighbour classifier telling real
  from other cells in PCA space (0.5: indistinguishable). kNN rather than a linear model, because
  cells whose genes were shuffled independently keep every gene's mean and a linear classifier
  on mean-preserving differences stays at 0.5.
* ``marginal_agreement``: per-gene means, variances and fractions of zeros, and the gene-gene
  correlation matrix of the most variable genes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class PCASpace:
    """A PCA projection fitted on real training cells, plus the Gaussian kernel bandwidth (the
    median squared distance between those cells' projections) shared by every MMD."""

    mean: np.ndarray
    components: np.ndarray  # (genes, k)
    bandwidth: float

    def project(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components


def fit_pca(train: np.ndarray, n_components: int = 20, max_cells: int = 2048, seed: int = 0) -> PCASpace:
    x = np.asarray(train, dtype=np.float64)
    if len(x) > max_cells:
        x = x[np.random.default_rng(seed).choice(len(x), max_cells, replace=False)]
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[: min(n_components, vt.shape[0])].T
    z = (x - mean) @ components
    d2 = sq_dists(z, z)
    bandwidth = float(np.median(d2[np.triu_indices(len(z), k=1)])) if len(z) > 1 else 1.0
    return PCASpace(mean=mean, components=components, bandwidth=bandwidth if bandwidth > 0 else 1.0)


def sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``x`` and ``y`` (clipped at 0)."""
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.maximum(d2, 0.0)


def _kernels(x: np.ndarray, y: np.ndarray, bandwidth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.exp(-sq_dists(x, x) / bandwidth), np.exp(-sq_dists(y, y) / bandwidth),
            np.exp(-sq_dists(x, y) / bandwidth))


def _mmd_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def mmd_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased squared MMD between samples ``x`` (m, d) and ``y`` (n, d), Gaussian kernel
    ``exp(-|a - b|^2 / bandwidth)``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"MMD needs at least 2 cells per set, got {len(x)} and {len(y)}")
    return _mmd_from_kernels(*_kernels(x, y, bandwidth))


def mmd_permutation_pvalue(x: np.ndarray, y: np.ndarray, bandwidth: float, n_permutations: int = 200,
                           seed: int = 0) -> float:
    """P-value of ``mmd_unbiased(x, y)`` under the null that both come from one distribution:
    the share of random relabellings of the pooled cells whose MMD is at least as large
    (with the +1 correction, so never 0)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    z = np.vstack([x, y])
    k = np.exp(-sq_dists(z, z) / bandwidth)
    m = len(x)
    observed = _mmd_from_kernels(k[:m, :m], k[m:, m:], k[:m, m:])
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(n_permutations):
        p = rng.permutation(len(z))
        a, b = p[:m], p[m:]
        if _mmd_from_kernels(k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]) >= observed:
            exceed += 1
    return (exceed + 1) / (n_permutations + 1)


def classifier_auc(real: np.ndarray, other: np.ndarray, n_neighbors: int = 10, folds: int = 5, seed: int = 0) -> float:
    """Held-out ROC AUC of a kNN classifier separating ``real`` from ``other`` (stratified k-fold:
    each cell is scored by a classifier that did not see it). 0.5 = indistinguishable."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.metrics import roc_auc_score

    x = np.vstack([real, other]).astype(np.float64)
    y = np.r_[np.ones(len(real)), np.zeros(len(other))]
    folds = min(folds, len(real), len(other))
    if folds < 2:
        raise ValueError("classifier_auc needs at least 2 cells in each set")
    k = min(n_neighbors, len(x) - len(x) // folds - 1)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(KNeighborsClassifier(n_neighbors=k), x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def marginal_agreement(real: np.ndarray, other: np.ndarray, top_genes: int = 50) -> dict[str, float]:
    """Per-gene agreement of ``other`` with ``real`` (both (cells, genes), log1p scale):
    Pearson correlation of per-gene means and of variances, mean absolute difference of the
    fraction of zeros per gene, and the mean absolute error of the gene-gene correlation matrix
    (upper triangle) over ``real``'s ``top_genes`` most variable genes (a constant gene in
    ``other`` counts as correlation 0)."""
    real, other = np.asarray(real, dtype=np.float64), np.asarray(other, dtype=np.float64)
    var_real = real.var(axis=0)
    top = np.argsort(var_real)[::-1][: min(top_genes, real.shape[1])]
    iu = np.triu_indices(len(top), k=1)
    return {
        "mean_corr": _pearson(real.mean(0), other.mean(0)),
        "var_corr": _pearson(var_real, other.var(0)),
        "zero_fraction_error": float(np.abs((real == 0).mean(0) - (other == 0).mean(0)).mean()),
        "gene_corr_error": float(np.abs(_corr(real[:, top])[iu] - _corr(other[:, top])[iu]).mean()),
    }


def _corr(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the columns, 0 for constant columns (np.corrcoef would give NaN)."""
    centred = x - x.mean(0)
    norm = np.sqrt((centred**2).sum(0))
    norm[norm == 0] = np.inf
    unit = centred / norm
    return unit.T @ unit


def gene_shuffled(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each gene's values permuted independently across cells: the per-gene marginals kept exactly,
    every co-expression removed."""
    rng = np.random.default_rng(seed)
    out = np.array(x, copy=True)
    for j in range(out.shape[1]):
        out[:, j] = rng.permutation(out[:, j])
    return out
