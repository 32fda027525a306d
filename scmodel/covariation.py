"""In-silico knockdowns of unseen targets over a prediction's whole gene list, read from the
fine-tuning store's control cells (``scmodel.coexpression`` does the arithmetic).

Why over the output genes and not the model's: a perturbation is scored on every gene of the
screen's list, and the model covers only its HVGs (on ``benchmarks/bench_transfer.py``'s screen,
674 of 2,000 genes; the true effects restricted to them score 0.28 against cell-eval's cell-mean
baseline instead of 0.42). The controls' co-variation with the target exists for every measured
gene; the atlas's programs (``AtlasPrograms``, fitted by pretraining over the model's genes plus
the atlas's most expressed ones) clean it where they cover the gene, matched by gene ID.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .coexpression import AtlasPrograms, knockdown_ratio


@dataclass(frozen=True, kw_only=True)
class CovariationConfig:
    max_cells: int = 4096
    """Control cells the co-variation is estimated from (a seeded sample when there are more):
    memory grows with cells x output genes."""
    correct_attenuation: bool = True
    """Divide the slopes by the target's measurement reliability (``coexpression``)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_cells < 2:
            raise ValueError(f"max_cells must be at least 2, got {self.max_cells}")


class CovariationKnockdown:
    """Knockdown ratios over output genes from control cells at those genes."""

    def __init__(self, x, rows: np.ndarray, totals: np.ndarray, positions: np.ndarray, gene_ids: np.ndarray,
                 programs: AtlasPrograms | None, config: CovariationConfig = CovariationConfig()):
        """``x``: the store's counts; ``rows``: its control cells (``totals`` their depths);
        ``positions``: each output gene's axis position (-1: not on the axis, never predicted);
        ``gene_ids``: the store's gene IDs (axis order), to match the ``programs``' genes."""
        from .data.perturbation import log1p_rows

        rows = np.asarray(rows, dtype=np.int64)
        totals = np.asarray(totals, dtype=np.float64)
        if len(rows) < 2:
            raise ValueError("in-silico knockdowns need at least two control cells in the run's training split")
        if len(rows) > config.max_cells:
            keep = np.sort(np.random.default_rng([config.seed, 47]).choice(len(rows), size=config.max_cells, replace=False))
            rows, totals = rows[keep], totals[keep]
        order = np.argsort(rows, kind="stable")
        rows, totals = rows[order], totals[order]
        self.on_axis = np.flatnonzero(np.asarray(positions) >= 0)
        axis = np.asarray(positions)[self.on_axis]
        counts = np.asarray(x.get_orthogonal_selection((rows, axis)), dtype=np.float32)
        self.values = log1p_rows(counts, totals)
        self.totals = totals if config.correct_attenuation else None
        self.n_output = len(positions)
        self.column = {int(j): k for k, j in enumerate(self.on_axis)}
        self.view = None if programs is None else programs.on(np.asarray(gene_ids, dtype=str)[axis])
        self.covered = 0 if self.view is None else int(self.view.covered.sum())

    def measured(self, output_column: int) -> bool:
        """Whether the target (its column among the output genes) varies in the control cells."""
        k = self.column.get(int(output_column))
        return k is not None and float(np.var(self.values[:, k])) > 0

    def ratio(self, output_column: int, fold: float) -> np.ndarray:
        """(output genes,) predicted knocked-down / control expression ratio; 1 off the axis."""
        k = self.column[int(output_column)]
        out = np.ones(self.n_output)
        out[self.on_axis] = knockdown_ratio(self.values, k, fold, self.view, self.totals)
        return out
