"""The data of a run: its training and held-out loaders, built from its ``TrainConfig``.

Shared by the ``Trainer`` and ``python -m scmodel.evaluate`` (which must read a run's own held-out
cells), so neither takes it from the other. The store's kind picks the loaders: a perturbation
store (``scdata vcc import``) gives training batches that carry conditioning.
"""

from __future__ import annotations

from .config import TrainConfig


def is_perturbation_store(store: str) -> bool:
    """Whether ``store`` was written by ``scdata vcc import`` (False for anything unreadable: the
    loaders report that)."""
    from scdata.store.layout import open_root

    try:
        return open_root(store).attrs.asdict().get("sczarr", {}).get("kind") == "perturbation"
    except Exception:
        return False


def build_loaders(config: TrainConfig, tokenizer):
    """Training and held-out loaders; on a perturbation store the training batches carry conditioning."""
    from scdata.hvg.results import open_hvg_matrix

    from ..data import LoaderConfig, StoreDataLoader, StoreDataset

    n_hvgs = config.n_hvgs
    if n_hvgs is not None:  # "the top N": a store with fewer materialized HVGs gives all of them
        n_hvgs = min(n_hvgs, len(open_hvg_matrix(config.store)[1]))
    common = dict(store=config.store, features="hvg", n_hvgs=n_hvgs, batch_size=config.batch_size, seed=config.seed,
                  tokenizer=tokenizer, val_fraction=config.val_fraction, drop_last=True, token_dtype="compact")
    if not is_perturbation_store(config.store):
        common["split_by"] = config.split_by
        train = StoreDataLoader(StoreDataset(LoaderConfig(split="train", **common)), num_workers=config.num_workers)
        val = StoreDataLoader(StoreDataset(LoaderConfig(split="val", shuffle=False, **{**common, "drop_last": False})))
        return train, val
    from scdata.vcc.effects import perturbation_obs

    from ..data.perturbation import Conditioning, PerturbationLoader, split_cells

    if not config.model.startswith(("conditional", "moe")):
        raise ValueError(f"{config.store} is a perturbation store: fine-tune a conditional or MoE model on it, not {config.model!r}")
    split = split_cells(perturbation_obs(config.store), config.val_fraction, config.seed, config.holdout_targets)
    conditioning = Conditioning(config.store, split.train, n_hvgs, config.control_set_size, config.seed,
                                effect_rows=split.train)
    train = StoreDataLoader(StoreDataset(LoaderConfig(rows=split.train, **common)), num_workers=config.num_workers)
    val = StoreDataLoader(StoreDataset(LoaderConfig(rows=split.val, shuffle=False, **{**common, "drop_last": False})))
    return PerturbationLoader(train, conditioning, config.seed), val
