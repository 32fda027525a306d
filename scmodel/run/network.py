"""The network a run's settings describe: one place that turns a ``TrainConfig`` into the model,
so that training, evaluation and generation build the same one (a setting added to the model is
passed here once, not in every command)."""

from __future__ import annotations

from .config import TrainConfig


def build_run_model(config: TrainConfig, n_genes: int):
    """``scmodel.models.build_model`` with the run's model, genes, tokens, cell states and
    expert parallelism (weights not loaded, cell-state codebook not fitted)."""
    from ..models import build_model

    return build_model(config.model, n_genes, config.n_tokens, n_states=config.n_states,
                       depth_bins=config.state_depth_bins, tokenizer_max=config.tokenizer_max, ep_size=config.ep_size,
                       state_prior=config.state_prior)
