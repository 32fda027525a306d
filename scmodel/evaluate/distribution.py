"""The generative-model field's protocol for generated cells, so that our numbers read in the
terms of the papers users compare us with (scLDM, CFGen, scDiffusion).

Every metric works in one space: ``PROTOCOL_PCS`` (30) principal components fitted on real
*training* cells; generated and held-out cells are projected after subtracting the training mean.
Each function is pure numpy / scipy on (cells, dims) arrays, small enough to check by hand.

* ``wasserstein``: W1 / W2 between the two empirical distributions (exact optimal transport, as
  CFGen's ``ot.emd2``; for equal-size sets with uniform weights an optimal plan is a permutation,
  so ``scipy.optimize.linear_sum_assignment`` gives the exact value without POT).
* ``mmd_rbf_mix``: CFGen's RBF MMD, the sum of Gaussian kernels ``exp(-d^2 / (2 sigma^2))`` over
  ``sigma`` in (0.01, 0.1, 1, 10, 100), biased (V-statistic) estimate as in its ``mix_rbf_mmd2``.
* ``nn1_accuracy``: leave-one-out 1-nearest-neighbour accuracy on the pooled sets (equal counts):
  each cell is labelled by its nearest other cell; 0.5 means the sets cannot be told apart, 1.0
  that every cell's nearest neighbour is from its own set (scLDM's headline metric).
* ``prdc``: precision, recall, density and coverage (Naeem et al. 2020) with k-nearest-neighbour
  balls (k=5, Euclidean, as the ``prdc`` package): precision = generated cells inside some real
  cell's ball, recall = real cells inside some generated cell's ball, density = the mean number
  of real balls holding a generated cell / k, coverage = real cells whose ball holds a generated cell.
"""

from __future__ import annotations

import numpy as np

from .metrics import PCASpace, fit_pca, sq_dists

PROTOCOL_PCS = 30
MMD_SIGMAS = (0.01, 0.1, 1.0, 10.0, 100.0)
PRDC_K = 5


def protocol_space(train: np.ndarray, max_cells: int = 4096, seed: int = 0) -> PCASpace:
    """``PROTOCOL_PCS`` components fitted on real training cells (log1p scale)."""
    return fit_pca(train, n_components=PROTOCOL_PCS, max_cells=max_cells, seed=seed)


def wasserstein(x: np.ndarray, y: np.ndarray, power: int = 2) -> float:
    """Exact W1 (``power=1``) or W2 (``power=2``) between the uniform empirical measures on the
    rows of ``x`` and ``y``, which must have as many rows (the protocol draws equal counts)."""
    from scipy.optimize import linear_sum_assignment

    if power not in (1, 2):
        raise ValueError(f"power must be 1 or 2, got {power}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"wasserstein needs two non-empty sets of equal size, got {len(x)} and {len(y)}")
    cost = sq_dists(x, y)
    if power == 1:
        cost = np.sqrt(cost)
    rows, cols = linear_sum_assignment(cost)
    value = float(cost[rows, cols].mean())
    return value if power == 1 else float(np.sqrt(value))


def mmd_rbf_mix(x: np.ndarray, y: np.ndarray, sigmas: tuple[float, ...] = MMD_SIGMAS) -> float:
    """Squared MMD (biased estimate) with the sum of Gaussian kernels of widths ``sigmas``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = sq_dists(a, b)
        return sum(np.exp(-d2 / (2.0 * s * s)) for s in sigmas)

    return float(kernel(x, x).mean() + kernel(y, y).mean() - 2.0 * kernel(x, y).mean())


def nn1_accuracy(real: np.ndarray, other: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy of telling ``real`` from ``other`` (equal counts; ties to the
    lower index of the pooled order, real first)."""
    real, other = np.asarray(real, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if len(real) != len(other) or len(real) < 2:
        raise ValueError(f"nn1_accuracy needs two sets of equal size (at least 2), got {len(real)} and {len(other)}")
    pooled = np.vstack([real, other])
    labels = np.r_[np.ones(len(real), bool), np.zeros(len(other), bool)]
    d2 = sq_dists(pooled, pooled)
    np.fill_diagonal(d2, np.inf)
    return float((labels[d2.argmin(axis=1)] == labels).mean())


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest other row."""
    d = np.sqrt(sq_dists(x, x))
    return np.sort(d, axis=1)[:, k]  # column 0 is the row itself (distance 0)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` with respect to ``real``."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"prdc with k={k} needs more than {k} cells per set, got {len(real)} and {len(fake)}")
    real_radius, fake_radius = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    d = np.sqrt(sq_dists(real, fake))  # (real, fake)
    inside_real = d < real_radius[:, None]
    return {"precision": float(inside_real.any(axis=0).mean()),
            "recall": float((d < fake_radius[None, :]).any(axis=1).mean()),
            "density": float(inside_real.sum(axis=0).mean() / k),
            "coverage": float((d.min(axis=1) < real_radius).mean())}


def protocol_metrics(space: PCASpace, reference: np.ndarray, cells: np.ndarray) -> dict[str, float]:
    """Every protocol metric of ``cells`` against the real ``reference`` cells (log1p scale, as
    many of each), in ``space``: ``nn1_accuracy``, ``w1``, ``w2``, ``mmd_rbf``, ``precision``,
    ``recall``, ``density``, ``coverage``."""
    n = min(len(reference), len(cells))
    ref_z, z = space.project(reference[:n]), space.project(cells[:n])
    return {"nn1_accuracy": nn1_accuracy(ref_z, z), "w1": wasserstein(ref_z, z, 1), "w2": wasserstein(ref_z, z, 2),
            "mmd_rbf": mmd_rbf_mix(ref_z, z), **prdc(ref_z, z)}
