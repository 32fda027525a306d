"""Per-gene moments of sparse blocks and their exact parallel merge (pure numpy).

A block's partial is ``{"n": cells, "sum": (G,), "m2": (G,)}`` in float64, where ``m2`` is the
sum of squared deviations from the block mean. The mean is ``sum / n``: for counts the sum is
exact, so the mean is bit-identical to what an in-memory tool computes (loess fits downstream
amplify 1e-16 differences between tied genes), and no running mean travels beside it. Partials
merge with the pairwise update of Chan, Golub & LeVeque (1979), as generalised by Pébay (2008):

    n = na + nb,  delta = sum_b / nb - sum_a / na,
    sum = sum_a + sum_b,
    m2 = m2_a + m2_b + delta**2 * na * nb / n

which is exact in exact arithmetic and stable in floating point, so any split of the cells and
any merge order give the same statistics to rounding (property-tested against numpy).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

Moments = dict  # {"n": int, "sum": ndarray, "m2": ndarray}


def empty_moments(n_genes: int) -> Moments:
    return {"n": 0, "sum": np.zeros(n_genes), "m2": np.zeros(n_genes)}


def sparse_moments(block: sp.csc_matrix) -> Moments:
    """Two-pass moments of a (cells, genes) CSC block, counting its implicit zeros."""
    n, n_genes = block.shape
    if n == 0:
        return empty_moments(n_genes)
    genes = np.repeat(np.arange(n_genes), np.diff(block.indptr))
    return entry_moments(genes, block.data.astype(np.float64, copy=False), n, n_genes)


def entry_moments(genes: np.ndarray, values: np.ndarray, n: int, n_genes: int) -> Moments:
    """Two-pass moments over ``n`` cells from their non-zeros, given as (gene, value) entries
    sorted by gene (segment sums instead of scattered ``bincount`` adds: the hot loop of a pass)."""
    if n == 0:
        return empty_moments(n_genes)
    total = np.zeros(n_genes)
    m2 = np.zeros(n_genes)
    if len(genes):
        starts = np.flatnonzero(np.r_[True, genes[1:] != genes[:-1]])
        present = genes[starts]
        per_gene = np.diff(np.r_[starts, len(genes)])
        sums = np.add.reduceat(values, starts)
        means = sums / n
        deviation = values - np.repeat(means, per_gene)
        # zeros of a present gene deviate by -mean each; absent genes have m2 = 0
        m2[present] = np.add.reduceat(deviation * deviation, starts) + (n - per_gene) * means * means
        total[present] = sums
    return {"n": n, "sum": total, "m2": m2}


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan's pairwise merge of two partials."""
    if a["n"] == 0:
        return b
    if b["n"] == 0:
        return a
    n = a["n"] + b["n"]
    delta = b["sum"] / b["n"] - a["sum"] / a["n"]
    m2 = a["m2"] + b["m2"] + delta * delta * (a["n"] * b["n"] / n)
    return {"n": n, "sum": a["sum"] + b["sum"], "m2": m2}


def mean(m: Moments) -> np.ndarray:
    """Per-gene mean as ``sum / n`` (exact for integer data)."""
    return m["sum"] / m["n"] if m["n"] else np.zeros_like(m["sum"])


def variance(m: Moments, ddof: int = 1) -> np.ndarray:
    """Per-gene variance (ddof=1: the unbiased estimator scanpy and Seurat report)."""
    if m["n"] - ddof <= 0:
        return np.full_like(m["sum"], np.nan)
    return m["m2"] / (m["n"] - ddof)
