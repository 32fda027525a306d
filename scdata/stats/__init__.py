"""Per-gene statistics: one Dask reduction over X's chunks, merged with Chan's formula.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "StatsConfig": "reduction",
    "GeneStats": "reduction",
    "compute_gene_stats": "reduction",
    "compute_clipped_sums": "reduction",
    "merge_moments": "moments",
    "mean": "moments",
    "variance": "moments",
    "Nonzeros": "nonzeros",
    "gene_nonzeros": "nonzeros",
}
_MOVED = {  # names the module scdata.stats held before 0.2, and where they are now
    "SCALES": "scdata.stats.reduction",
    "_TaskInputs": "scdata.stats.reduction",
    "_open_for_task": "scdata.stats.reduction",
    "stats_task": "scdata.stats.reduction",
    "clipped_task": "scdata.stats.reduction",
    "_split": "scdata.stats.reduction",
    "_threads": "scdata.stats.reduction",
    "stats_chunk": "scdata.stats.reduction",
    "_merge_all": "scdata.stats.reduction",
    "_merge_block_partials": "scdata.stats.reduction",
    "stats_combine": "scdata.stats.reduction",
    "_merge_open": "scdata.stats.reduction",
    "_add_arrays": "scdata.stats.reduction",
    "_fold_complete": "scdata.stats.reduction",
    "merge_top_counts": "scdata.stats.reduction",
    "clipped_chunk": "scdata.stats.reduction",
    "clipped_combine": "scdata.stats.reduction",
    "tree_reduce": "scdata.stats.reduction",
    "_blocks": "scdata.stats.reduction",
    "_compute": "scdata.stats.reduction",
    "clipped_sums_from_top": "scdata.stats.reduction",
    "__all__": "scdata.stats.reduction",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _MOVED)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .reduction import GeneStats, StatsConfig, compute_clipped_sums, compute_gene_stats
    from .moments import mean, merge_moments, variance
    from .nonzeros import Nonzeros, gene_nonzeros
