"""Highly variable genes: scanpy's flavors out of core, their results in the store, the job and its figure.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "HVGConfig": "flavors",
    "FLAVORS": "flavors",
    "SeuratV3FitError": "flavors",
    "select_hvgs": "flavors",
    "run_hvg": "flavors",
    "load_hvg": "results",
    "open_hvg_matrix": "results",
    "hvg_info": "results",
    "materialize": "results",
    "HVGJob": "job",
    "run_hvg_job": "job",
    "HVGPanels": "figure",
    "draw_hvg_analysis": "figure",
}
_MOVED = {  # names the module scdata.hvg held before 0.2, and where they are now
    "log": "scdata.hvg.flavors",
    "_mad": "scdata.hvg.flavors",
    "_nth_highest": "scdata.hvg.flavors",
    "_dispersion_table": "scdata.hvg.flavors",
    "_select_dispersion": "scdata.hvg.flavors",
    "_single_batch": "scdata.hvg.flavors",
    "_dispersion_flavor": "scdata.hvg.flavors",
    "seurat_v3_clips": "scdata.hvg.flavors",
    "_seurat_v3_flavor": "scdata.hvg.flavors",
    "_seed_dispersion": "scdata.hvg.flavors",
    "FLAVOR_SCALE": "scdata.hvg.flavors",
    "TOP_COUNTS": "scdata.hvg.flavors",
    "PANEL_SCALE": "scdata.hvg.flavors",
    "batch_scales_for": "scdata.hvg.flavors",
    "_clipped_sums": "scdata.hvg.flavors",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _MOVED)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .flavors import FLAVORS, HVGConfig, SeuratV3FitError, run_hvg, select_hvgs
    from .results import hvg_info, load_hvg, materialize, open_hvg_matrix
    from .job import HVGJob, run_hvg_job
    from .figure import HVGPanels, draw_hvg_analysis
