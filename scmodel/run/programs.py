"""The atlas's gene programs of a run (``scmodel.coexpression``): fitted by a pretraining run from
its training cells, inherited by a fine-tune from its ``init_from`` checkpoint, saved with the
weights (``checkpoint["programs"]``).

The programs cover more genes than the model: the model's HVGs plus the ``programs_genes`` genes
of highest mean expression in the store. Why: an unseen perturbation is scored over the screen's
whole gene list (the challenge's 18,080 genes), and most of a knockdown's effect can fall on genes
that are not highly variable in the atlas. Measured on ``benchmarks/bench_transfer.py``'s screen,
scoring in-silico effects over the model's genes only (674 of the screen's 2,000) capped even the
true effects at 0.28 against cell-eval's cell-mean baseline, against 0.42 over all 2,000.

Here, with the rest of a run's set-up, because it reads the store (the model's genes, the
training split's cells) and the checkpoint; the estimation itself is pure and lives in
``scmodel.coexpression``.
"""

from __future__ import annotations

import numpy as np

from ..coexpression import ProgramsConfig, WithinStateCovariance, cell_states
from ..engines.state import safe_load
from .config import TrainConfig
from .training_cells import hvg_log1p, sample_training_rows

BLOCK_CELLS = 4096
"""Cells read (all program genes) and added to the covariance at a time."""


def program_genes(root, hvg_positions: np.ndarray, n_top: int) -> np.ndarray:
    """Gene-axis positions the programs cover: the model's genes, then the ``n_top`` genes of
    highest mean in the store's per-gene statistics (``var/means``, written by ``scdata hvg``)."""
    positions = [int(p) for p in hvg_positions]
    if n_top > 0 and "means" in root["var"]:
        means = np.nan_to_num(np.asarray(root["var/means"][:], dtype=np.float64), nan=-np.inf)
        chosen = set(positions)
        positions += [int(p) for p in np.argsort(-means, kind="stable")[:n_top] if int(p) not in chosen]
    return np.asarray(positions, dtype=np.int64)


def fit_run_programs(config: TrainConfig, rows: np.ndarray, n_genes: int) -> dict:
    """Programs of up to ``config.programs_cells`` of the training ``rows`` (seeded sample): cell
    states from the model's ``n_genes`` HVGs, the within-state covariance over ``program_genes``
    read a block of cells at a time; a checkpoint entry."""
    from scdata.hvg.results import open_hvg_matrix
    from scdata.read.lazy_counts import DirectX, sparse_rows
    from scdata.store.layout import open_root, read_strings
    from scdata.store.manifest import open_committed

    from ..data.perturbation import log1p_rows

    rows = sample_training_rows(rows, config.programs_cells, config.seed, stream=53)
    root = open_root(config.store)
    _, hvg_positions = open_hvg_matrix(config.store)
    values, totals = hvg_log1p(config.store, rows, n_genes)
    programs_config = ProgramsConfig(components=config.programs_components, seed=config.seed)
    states = cell_states(values, programs_config)
    positions = program_genes(root, np.asarray(hvg_positions)[:n_genes], config.programs_genes)
    covariance = WithinStateCovariance(len(positions))
    x = DirectX(config.store, open_committed(config.store)[1].n_committed)  # each chunk decoded once, its non-zeros kept
    for start in range(0, len(rows), BLOCK_CELLS):
        block = slice(start, start + BLOCK_CELLS)
        counts = sparse_rows(x, rows[block], positions).toarray()
        covariance.add(log1p_rows(counts, totals[block]), states[block])
    gene_ids = np.asarray(read_strings(root["var/_index"]), dtype=str)[positions]
    programs = covariance.programs(config.programs_components, gene_ids)
    return {**programs.to_state(), "store": config.store}


def inherited_programs(init_from: str) -> dict | None:
    """The programs an ``init_from`` checkpoint carries (None: a checkpoint of a run that fitted none)."""
    return safe_load(init_from).get("programs")
