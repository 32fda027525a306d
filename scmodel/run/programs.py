"""The atlas's gene programs of a run (``scmodel.coexpression``): fitted by a pretraining run from
its training cells, inherited by a fine-tune from its ``init_from`` checkpoint, saved with the
weights (``checkpoint["programs"]``).

Here, with the rest of a run's set-up, because it reads the store (the model's genes, the
training split's cells) and the checkpoint; the estimation itself is pure and lives in
``scmodel.coexpression``.
"""

from __future__ import annotations

import numpy as np

from ..coexpression import ProgramsConfig, fit_programs
from ..engines.state import safe_load
from .config import TrainConfig


def fit_run_programs(config: TrainConfig, rows: np.ndarray, n_genes: int) -> dict:
    """Programs of up to ``config.programs_cells`` of the training ``rows`` (seeded sample), over
    the run's ``n_genes`` modelled genes; a checkpoint entry."""
    from scdata.hvg.results import open_hvg_matrix
    from scdata.store.layout import open_root

    from ..data.perturbation import log1p_rows

    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if len(rows) > config.programs_cells:
        rows = np.sort(np.random.default_rng([config.seed, 53]).choice(rows, size=config.programs_cells, replace=False))
    x_hvg, _ = open_hvg_matrix(config.store)
    counts = x_hvg.get_orthogonal_selection((rows, slice(0, n_genes)))
    totals = np.asarray(open_root(config.store)["obs/total_counts"][:])[rows]
    programs = fit_programs(log1p_rows(counts, totals), ProgramsConfig(seed=config.seed))
    return {**programs.to_state(), "store": config.store}


def inherited_programs(init_from: str) -> dict | None:
    """The programs an ``init_from`` checkpoint carries (None: a checkpoint of a run that fitted none)."""
    return safe_load(init_from).get("programs")
