"""sczarr's data engine: scBaseCount experiments in one chunked Zarr store, written by Dask.

The names below are imported on first use (PEP 562): a Dask worker that only runs ingest tasks
then never loads xarray, dask.array or anndata, which would cost each worker process ~0.4 s of start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import remote as _remote  # noqa: F401  (sets gcsfs's environment before anything imports it)
from .ingest import IngestConfig, IngestError, IngestReport, ingest  # eager: the function shadows its module

_EXPORTS = {
    "ClusterConfig": "cluster",
    "open_store": "dataset", "to_anndata": "dataset",
    "DemoConfig": "demo", "write_demo_bucket": "demo",
    "ExperimentError": "h5ad",
    "store_info": "info",
    "Manifest": "manifest", "StoreError": "manifest", "read_manifest": "manifest",
    "SourceConfig": "source", "read_sample_metadata": "source", "select_experiments": "source",
    "StoreLayout": "store",
}
__all__ = sorted([*_EXPORTS, "IngestConfig", "IngestError", "IngestReport", "ingest"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scdata' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs
    from .cluster import ClusterConfig
    from .dataset import open_store, to_anndata
    from .demo import DemoConfig, write_demo_bucket
    from .h5ad import ExperimentError
    from .info import store_info
    from .manifest import Manifest, StoreError, read_manifest
    from .source import SourceConfig, read_sample_metadata, select_experiments
    from .store import StoreLayout
