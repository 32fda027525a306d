"""Ingest on Dask: the driver, the worker tasks, the chunk-aligned write plan, the load window, the gene axis.

Public names are imported on first use (see ``scdata._lazy``). The package is also callable:
``scdata.ingest(config)`` runs :func:`scdata.ingest.driver.ingest`, so the function and the package
that holds it can share the name that users call without either shadowing the other.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "IngestConfig": "config",
    "IngestError": "errors",
    "IngestReport": "driver",
    "ingest": "driver",
    "RoundPlan": "write_plan",
    "Write": "write_plan",
    "plan_round": "write_plan",
    "LoadWindow": "load_window",
    "WindowPolicy": "load_window",
    "Capacity": "load_window",
    "GeneAxis": "gene_axis",
    "axis_from_tables": "gene_axis",
    "read_genes_file": "gene_axis",
}
_MOVED = {  # names the module scdata.ingest held before 0.2, and where they are now
    "log": "scdata.ingest.driver",
    "WINDOW_REFRESH_S": "scdata.ingest.driver",
    "_read_tables": "scdata.ingest.driver",
    "_plan_store": "scdata.ingest.driver",
    "_Selection": "scdata.ingest.driver",
    "ExperimentSelection": "scdata.ingest.selection",
    "_start_selection": "scdata.ingest.driver",
    "_stops_cleanly": "scdata.ingest.driver",
    "cluster_capacity": "scdata.ingest.driver",
    "_run_units": "scdata.ingest.driver",
    "_finish_load": "scdata.ingest.driver",
    "_progress": "scdata.ingest.driver",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _MOVED)


class _IngestPackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .driver import ingest

        return ingest(*args, **kwargs)


sys.modules[__name__].__class__ = _IngestPackage

if TYPE_CHECKING:  # for type checkers and IDEs
    from .config import IngestConfig
    from .driver import IngestReport, ingest
    from .errors import IngestError
    from .write_plan import RoundPlan, Write, plan_round
    from .load_window import Capacity, LoadWindow, WindowPolicy
    from .gene_axis import GeneAxis, axis_from_tables, read_genes_file
