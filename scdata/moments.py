"""Per-gene moments of sparse blocks and their exact parallel merge (pure numpy).

A block's partial is ``{"n": cells, "sum": (G,), "mean": (G,), "m2": (G,)}`` in float64, where
``m2`` is the sum of squared deviations from the block mean. The plain ``sum`` is kept beside the
running mean because for counts it is exact, and ``sum / n`` is then bit-identical to what an
in-memory tool computes (loess fits downstream amplify 1e-16 differences between tied genes). Partials merge with the pairwise update of
Chan, Golub & LeVeque (1979), as generalised by Pébay (2008):

    n = na + nb,  delta = mean_b - mean_a,
    mean = mean_a + delta * nb / n,
    m2 = m2_a + m2_b + delta**2 * na * nb / n

which is exact in exact arithmetic and stable in floating point, so any split of the cells and
any merge order give the same statistics to rounding (property-tested against numpy).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

Moments = dict  # {"n": int, "sum": ndarray, "mean": ndarray, "m2": ndarray}


def empty_moments(n_genes: int) -> Moments:
    return {"n": 0, "sum": np.zeros(n_genes), "mean": np.zeros(n_genes), "m2": np.zeros(n_genes)}


def sparse_moments(block: sp.csc_matrix) -> Moments:
    """Two-pass moments of a (cells, genes) CSC block, counting its implicit zeros."""
    n, n_genes = block.shape
    if n == 0:
        return empty_moments(n_genes)
    data = block.data.astype(np.float64, copy=False)
    per_gene = np.diff(block.indptr)
    genes = np.repeat(np.arange(n_genes), per_gene)
    total = np.bincount(genes, weights=data, minlength=n_genes)
    mean = total / n
    deviation = data - mean[genes]
    m2 = np.bincount(genes, weights=deviation * deviation, minlength=n_genes) + (n - per_gene) * mean * mean
    return {"n": n, "sum": total, "mean": mean, "m2": m2}


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan's pairwise merge of two partials."""
    if a["n"] == 0:
        return b
    if b["n"] == 0:
        return a
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * (b["n"] / n)
    m2 = a["m2"] + b["m2"] + delta * delta * (a["n"] * b["n"] / n)
    return {"n": n, "sum": a["sum"] + b["sum"], "mean": mean, "m2": m2}


def mean(m: Moments) -> np.ndarray:
    """Per-gene mean as ``sum / n`` (exact for integer data)."""
    return m["sum"] / m["n"] if m["n"] else np.zeros_like(m["sum"])


def variance(m: Moments, ddof: int = 1) -> np.ndarray:
    """Per-gene variance (ddof=1: the unbiased estimator scanpy and Seurat report)."""
    if m["n"] - ddof <= 0:
        return np.full_like(m["mean"], np.nan)
    return m["m2"] / (m["n"] - ddof)


def clipped_sums(block: sp.csc_matrix, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene sum and sum of squares of ``min(x, clip)`` over a block's non-zeros.

    Zeros contribute nothing (``clip`` >= 0), which is what Seurat v3's clipped variance needs.
    """
    n_genes = block.shape[1]
    genes = np.repeat(np.arange(n_genes), np.diff(block.indptr))
    values = np.minimum(block.data.astype(np.float64), clip[genes])
    return (np.bincount(genes, weights=values, minlength=n_genes),
            np.bincount(genes, weights=values * values, minlength=n_genes))
