"""sczarr's data engine: scBaseCount experiments in one chunked Zarr store, written by Dask.

The package is one folder per job (see the architecture page of the docs):
``runtime`` (remote filesystems, the Dask cluster, the figure process) < ``store`` (layout, manifest,
commit, chunk codecs) < ``source`` / ``stats`` / ``read`` < ``ingest`` / ``hvg`` < ``query`` / ``vcc`` < ``cli``.

The names below are imported on first use (PEP 562): a Dask worker that only runs ingest tasks
then never loads xarray, dask.array or anndata, which would cost each worker process ~0.4 s of start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._lazy import install_redirects, lazy_exports
from .runtime import remote as _remote  # noqa: F401  (sets gcsfs's environment before anything imports it)

_EXPORTS = {
    "IngestConfig": "ingest.config",
    "IngestError": "ingest.errors",
    "IngestReport": "ingest.driver",
    "ClusterConfig": "runtime.cluster",
    "open_store": "read.xarray_view",
    "to_anndata": "read.xarray_view",
    "DemoConfig": "source.demo_bucket",
    "write_demo_bucket": "source.demo_bucket",
    "ExperimentError": "source.h5ad",
    "store_info": "store.summary",
    "Manifest": "store.manifest",
    "StoreError": "store.manifest",
    "read_manifest": "store.manifest",
    "SourceConfig": "source.bucket",
    "read_sample_metadata": "source.bucket",
    "select_experiments": "source.bucket",
    "StoreLayout": "store.layout",
    "StatsConfig": "stats.reduction",
    "GeneStats": "stats.reduction",
    "compute_gene_stats": "stats.reduction",
    "HVGConfig": "hvg.flavors",
    "HVGJob": "hvg.job",
    "run_hvg_job": "hvg.job",
    "load_hvg": "hvg.results",
    "open_hvg_matrix": "hvg.results",
    "VCCImportConfig": "vcc.importer",
    "VCCImportError": "vcc.importer",
    "import_vcc": "vcc.importer",
    "perturbation_obs": "vcc.effects",
}

MOVED_MODULES = {
    "scdata.axis": "scdata.ingest.gene_axis",
    "scdata.bitplanes": "scdata.stats.bitplanes",
    "scdata.chunkio": "scdata.store.chunks",
    "scdata.cluster": "scdata.runtime.cluster",
    "scdata.commit": "scdata.store.writer",
    "scdata.counts": "scdata.store.int16_counts",
    "scdata.dataset": "scdata.read.xarray_view",
    "scdata.demo": "scdata.source.demo_bucket",
    "scdata.draw_process": "scdata.runtime.figure_process",
    "scdata.gene_map": "scdata.vcc.gene_map",
    "scdata.h5ad": "scdata.source.h5ad",
    "scdata.hvg_io": "scdata.hvg.results",
    "scdata.hvg_job": "scdata.hvg.job",
    "scdata.info": "scdata.store.summary",
    "scdata.lazyx": "scdata.read.lazy_counts",
    "scdata.manifest": "scdata.store.manifest",
    "scdata.moments": "scdata.stats.moments",
    "scdata.nonzeros": "scdata.stats.nonzeros",
    "scdata.plan": "scdata.ingest.write_plan",
    "scdata.plots": "scdata.hvg.figure",
    "scdata.remote": "scdata.runtime.remote",
    "scdata.stat_kernels": "scdata.stats.kernels",
    "scdata.tasks": "scdata.ingest.worker_tasks",
    "scdata.vcc_demo": "scdata.vcc.synthetic",
    "scdata.vcc_effects": "scdata.vcc.effects",
    "scdata.window": "scdata.ingest.load_window",
    "scdata.zstd_lib": "scdata.stats.zstd_lib",
}
"""Modules that moved into subpackages in 0.2: the old path still imports, with a FutureWarning.
(``scdata.hvg``, ``scdata.stats``, ``scdata.source``, ``scdata.store``, ``scdata.ingest`` and ``scdata.vcc``
are packages now; their old names are served by the package, see each ``_MOVED``.)"""
install_redirects(MOVED_MODULES)

_getattr, __dir__, _all = lazy_exports(__name__, _EXPORTS)
__all__ = sorted([*_all, "ingest"])


def __getattr__(name: str):
    if name == "ingest" or f"{__name__}.{name}" in MOVED_MODULES:  # ``scdata.ingest(config)``: the package is callable;
        return importlib.import_module(f"{__name__}.{name}")  # ``scdata.dataset`` read as an attribute: its new home
    return _getattr(name)


if TYPE_CHECKING:  # for type checkers and IDEs
    from .ingest.config import IngestConfig
    from .ingest.driver import IngestReport, ingest
    from .ingest.errors import IngestError
    from .hvg.flavors import HVGConfig
    from .hvg.job import HVGJob, run_hvg_job
    from .hvg.results import load_hvg, open_hvg_matrix
    from .read.xarray_view import open_store, to_anndata
    from .runtime.cluster import ClusterConfig
    from .source.bucket import SourceConfig, read_sample_metadata, select_experiments
    from .source.demo_bucket import DemoConfig, write_demo_bucket
    from .source.h5ad import ExperimentError
    from .stats.reduction import GeneStats, StatsConfig, compute_gene_stats
    from .store.layout import StoreLayout
    from .store.manifest import Manifest, StoreError, read_manifest
    from .store.summary import store_info
    from .vcc.effects import perturbation_obs
    from .vcc.importer import VCCImportConfig, VCCImportError, import_vcc
