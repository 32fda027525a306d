"""Per-gene moments of sparse blocks and their exact parallel merge.

A block's partial is ``{"n": cells, "sum": (G,), "m2": (G,)}`` in float64, where ``m2`` is the
sum of squared deviations from the block mean. The mean is ``sum / n``: for counts the sum is
exact, so the mean is bit-identical to what an in-memory tool computes (loess fits downstream
amplify 1e-16 differences between tied genes), and no running mean travels beside it. Partials
merge with the pairwise update of Chan, Golub & LeVeque (1979), as generalised by Pébay (2008):

    n = na + nb,  delta = sum_b / nb - sum_a / na,
    sum = sum_a + sum_b,
    m2 = m2_a + m2_b + delta**2 * na * nb / n

which is exact in exact arithmetic and stable in floating point, so any split of the cells and
any merge order give the same statistics to rounding (property-tested against numpy). The merge
is one compiled loop over the genes: the formula's numpy expression, in the same operations and
order (the same bits, tested), made six temporaries per merge, and a statistics pass merges every
chunk row's partial.
"""

from __future__ import annotations

import numpy as np
from numba import njit

Moments = dict  # {"n": int, "sum": ndarray, "m2": ndarray}


def empty_moments(n_genes: int) -> Moments:
    return {"n": 0, "sum": np.zeros(n_genes), "m2": np.zeros(n_genes)}


@njit(cache=True, nogil=True)
def _merge(sum_a: np.ndarray, m2_a: np.ndarray, n_a: float, sum_b: np.ndarray, m2_b: np.ndarray, n_b: float,
           weight: float, out_sum: np.ndarray, out_m2: np.ndarray) -> None:
    for g in range(sum_a.shape[0]):
        delta = sum_b[g] / n_b - sum_a[g] / n_a
        out_m2[g] = (m2_a[g] + m2_b[g]) + delta * delta * weight
        out_sum[g] = sum_a[g] + sum_b[g]


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan's pairwise merge of two partials."""
    if a["n"] == 0:
        return b
    if b["n"] == 0:
        return a
    n = a["n"] + b["n"]
    out_sum, out_m2 = np.empty_like(a["sum"]), np.empty_like(a["m2"])
    weight = a["n"] * b["n"] / n  # in Python's exact integers, then one rounding
    _merge(a["sum"], a["m2"], float(a["n"]), b["sum"], b["m2"], float(b["n"]), weight, out_sum, out_m2)
    return {"n": n, "sum": out_sum, "m2": out_m2}


def mean(m: Moments) -> np.ndarray:
    """Per-gene mean as ``sum / n`` (exact for integer data)."""
    return m["sum"] / m["n"] if m["n"] else np.zeros_like(m["sum"])


def variance(m: Moments, ddof: int = 1) -> np.ndarray:
    """Per-gene variance (ddof=1: the unbiased estimator scanpy and Seurat report)."""
    if m["n"] - ddof <= 0:
        return np.full_like(m["sum"], np.nan)
    return m["m2"] / (m["n"] - ddof)
