"""Training data from a store: chunk-aligned IterableDatasets, exact resume, the seed's names.

    from scmodel.data import create_hvg_dataloader
    loader = create_hvg_dataloader("data/scRNA/store.zarr", batch_size=64, num_workers=2)
    for expression, metadata in loader:   # expression: (64, 2000) float32, log1p(normalize_total)
        ...                                # metadata: row, srx_accession (int32 codes), umi_count
    loader.dataset.categories["srx_accession"]  # what the codes mean; metadata_strings=True serves strings
"""

from __future__ import annotations

from .config import LoaderConfig
from .dataset import StoreDataset
from .loader import StoreDataLoader


def ScRNADataset(store: str, batch_size: int = 32, **options) -> StoreDataset:  # noqa: N802 (the seed's name)
    """All genes of X (the seed's full-width dataset), log1p(normalize_total) by default."""
    return StoreDataset(LoaderConfig(store=store, features="all", batch_size=batch_size, **options))


def HVGDataset(store: str, n_hvgs: int | None = None, batch_size: int = 64, **options) -> StoreDataset:  # noqa: N802
    """The materialized HVG matrix (``scdata hvg --materialize``)."""
    dataset = StoreDataset(LoaderConfig(store=store, features="hvg", batch_size=batch_size, **options))
    if n_hvgs is not None and dataset.n_features != n_hvgs:
        raise ValueError(f"{store} has {dataset.n_features} materialized HVGs, not {n_hvgs}: rerun `scdata hvg --n-hvgs {n_hvgs} --materialize`")
    return dataset


def _loader(dataset: StoreDataset, num_workers: int, pin_memory: bool, prefetch_factor: int | None) -> StoreDataLoader:
    return StoreDataLoader(dataset, num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor)


def create_dataloader(store: str, batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False,
                      prefetch_factor: int | None = None, **options) -> StoreDataLoader:
    return _loader(ScRNADataset(store, batch_size=batch_size, **options), num_workers, pin_memory, prefetch_factor)


def create_hvg_dataloader(store: str, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False,
                          prefetch_factor: int | None = None, n_hvgs: int | None = None, **options) -> StoreDataLoader:
    return _loader(HVGDataset(store, n_hvgs=n_hvgs, batch_size=batch_size, **options), num_workers, pin_memory, prefetch_factor)


__all__ = ["HVGDataset", "LoaderConfig", "ScRNADataset", "StoreDataLoader", "StoreDataset", "create_dataloader",
           "create_hvg_dataloader"]
