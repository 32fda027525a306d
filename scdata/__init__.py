"""sczarr's data engine: scBaseCount experiments in one chunked Zarr store, written by Dask."""

from . import remote as _remote  # noqa: F401  (sets gcsfs's environment before anything imports it)
from .cluster import ClusterConfig
from .dataset import StoreError, open_store, to_anndata
from .demo import DemoConfig, write_demo_bucket
from .h5ad import ExperimentError
from .info import store_info
from .ingest import IngestConfig, IngestError, IngestReport, ingest
from .manifest import Manifest, read_manifest
from .source import SourceConfig, read_sample_metadata, select_experiments
from .store import StoreLayout

__all__ = [
    "ClusterConfig", "DemoConfig", "ExperimentError", "IngestConfig", "IngestError", "IngestReport", "Manifest",
    "SourceConfig", "StoreError", "StoreLayout", "ingest", "open_store", "read_manifest", "read_sample_metadata",
    "select_experiments", "store_info", "to_anndata", "write_demo_bucket",
]
