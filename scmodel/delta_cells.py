"""Predicted perturbed cells made from real control cells and per-gene expression ratios.

Why one module: every perturbation prediction here (the model's delta mode, the no-model
references, the linear and mean baselines of ``benchmarks/bench_transfer.py``) turns "gene g changes
by a factor r_g" into cells the same way, so that methods are compared on their ratios alone: real
control cells, their counts thinned (r < 1) or boosted (r > 1) gene by gene, each cell keeping its
own depth and noise.
"""

from __future__ import annotations

import numpy as np

MATCH_LIMIT = 4.0
"""How far ``match_means`` may rescale a gene of the drawn controls towards all controls' mean."""


RATIO_EPS = 1e-2
"""Added to both means of an expression ratio (counts per 10k): genes near zero in both stay near 1."""


def expression_ratio(perturbed: np.ndarray, control: np.ndarray) -> np.ndarray:
    """(genes,) per-gene ratio of two mean expressions (counts per 10k), each offset by ``RATIO_EPS``."""
    return (np.asarray(perturbed) + RATIO_EPS) / (np.asarray(control) + RATIO_EPS)


def cp10k_mean(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """(genes,) mean of counts per 10k of each cell's total."""
    return (counts * (1e4 / np.maximum(totals, 1.0))[:, None]).mean(0)


def scale_counts(counts: np.ndarray, ratio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts scaled by ``ratio`` per gene, kept integer: binomial thinning below 1, added Poisson
    counts above (a zero stays zero: the cell's own detection is kept)."""
    counts = counts.astype(np.int64)
    down = np.minimum(ratio, 1.0)
    out = rng.binomial(counts, np.broadcast_to(down, counts.shape))
    up = np.maximum(ratio - 1.0, 0.0)
    return out + rng.poisson(counts * up)


def delta_cells(base: np.ndarray, totals: np.ndarray, ratio: np.ndarray, rng: np.random.Generator,
                reference: np.ndarray | None = None) -> np.ndarray:
    """``base`` (drawn control cells' counts, cells x genes, with their ``totals``) scaled by ``ratio``.

    ``reference`` (the mean per 10k of all control cells): the drawn cells are first scaled to it,
    so that a prediction's mean is the method's, not the method's plus which few controls were drawn."""
    factor = np.asarray(ratio, dtype=np.float64).copy()
    if reference is not None:
        drawn = cp10k_mean(base, totals)
        factor *= np.where(drawn > 0, np.clip(reference / np.maximum(drawn, 1e-12), 1 / MATCH_LIMIT, MATCH_LIMIT), 1.0)
    return scale_counts(base, factor, rng)
