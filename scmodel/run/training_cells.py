"""Training cells for what a run fits before training (cell states, gene programs): a seeded
sample of the training rows, and their HVG values normalized as the loader normalizes them.

One place, so that the codebook and the programs read cells the same way; each fit draws its own
sample (its ``stream``), as before."""

from __future__ import annotations

import numpy as np


def sample_training_rows(rows: np.ndarray, limit: int, seed: int, stream: int) -> np.ndarray:
    """Up to ``limit`` of ``rows``, sorted (all of them when there are no more): a sample seeded
    by the run's ``seed`` and the fit's ``stream``, so each fit is reproducible and independent."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng([seed, stream]).choice(rows, size=limit, replace=False))
    return rows


def hvg_log1p(store: str, rows: np.ndarray, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, totals): the ``rows``' first ``n_genes`` materialized HVGs as ``log1p(count /
    total * 1e4)`` (the loader's normalization), and each row's total counts over every gene."""
    from scdata.hvg.results import open_hvg_matrix
    from scdata.store.layout import open_root

    from ..data.perturbation import log1p_rows

    x_hvg, _ = open_hvg_matrix(store)
    totals = np.asarray(open_root(store)["obs/total_counts"][:])[rows]
    return log1p_rows(x_hvg.get_orthogonal_selection((rows, slice(0, n_genes))), totals), totals
