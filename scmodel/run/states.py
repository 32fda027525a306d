"""The cell states of a run (``scmodel.models.states``): fitted before training from the training
split's cells, read from the store as the loader would tokenize them, and put into the model's
codebook (saved with its weights).

Here, with the rest of a run's set-up, because it reads the store; the clustering itself is pure
and lives in ``scmodel.models.states``.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import TrainConfig
from .training_cells import hvg_log1p, sample_training_rows


def fit_run_states(config: TrainConfig, rows: np.ndarray, n_genes: int, tokenizer) -> dict[str, np.ndarray]:
    """The codebook of up to ``config.states_cells`` of the training ``rows`` (a seeded sample),
    over the model's ``n_genes`` HVGs: each cell normalized and tokenized like the loader's
    batches, its tokens' bin centres clustered and its detected genes binned (``fit_states``);
    with ``state_prior``, each state's token frequencies too."""
    from ..models.states import fit_states

    rows = sample_training_rows(rows, config.states_cells, config.seed, stream=71)
    values, _ = hvg_log1p(config.store, rows, n_genes)
    tokens = tokenizer.tokenize(torch.from_numpy(values))
    try:
        return fit_states(tokenizer.detokenize(tokens).numpy(), config.n_states, seed=config.seed,
                          depth_bins=config.state_depth_bins, tokens=tokens.numpy() if config.state_prior else None,
                          n_tokens=config.n_tokens)
    except ValueError as exc:
        raise ValueError(f"{config.store}: {exc}") from None
