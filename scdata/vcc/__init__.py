"""Perturbation data (the Virtual Cell Challenge's layout): import, gene mapping, target effects, synthetic files.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "VCCImportConfig": "importer",
    "VCCImportError": "importer",
    "VCCImportReport": "importer",
    "import_vcc": "importer",
    "GeneMapping": "gene_map",
    "map_genes": "gene_map",
    "map_targets": "gene_map",
    "perturbation_obs": "effects",
    "target_effects": "effects",
    "target_log2fc": "effects",
    "VCCDemoConfig": "synthetic",
    "write_vcc_demo": "synthetic",
}
_MOVED = {  # names the module scdata.vcc held before 0.2, and where they are now
    "KIND": "scdata.vcc.importer",
    "NUMERIC_COLUMNS": "scdata.vcc.importer",
    "CATEGORICAL_COLUMNS": "scdata.vcc.importer",
    "SourceTable": "scdata.vcc.importer",
    "_open": "scdata.vcc.importer",
    "_column": "scdata.vcc.importer",
    "read_source_table": "scdata.vcc.importer",
    "_x_shape": "scdata.vcc.importer",
    "axis_genes": "scdata.vcc.importer",
    "import_block_task": "scdata.vcc.importer",
    "_now": "scdata.vcc.importer",
    "_create": "scdata.vcc.importer",
    "_obs_frame": "scdata.vcc.importer",
    "_commit": "scdata.vcc.importer",
    "_check_resumable": "scdata.vcc.importer",
    "_materialize_hvgs": "scdata.vcc.importer",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _MOVED)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .importer import VCCImportConfig, VCCImportError, VCCImportReport, import_vcc
    from .gene_map import GeneMapping, map_genes, map_targets
    from .effects import perturbation_obs, target_effects, target_log2fc
    from .synthetic import VCCDemoConfig, write_vcc_demo
