"""The scBaseCount source: bucket layout and experiment selection, reading h5ad files, the offline demo bucket.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "SourceConfig": "bucket",
    "Experiment": "bucket",
    "MetadataError": "bucket",
    "read_sample_metadata": "bucket",
    "select_experiments": "bucket",
    "DEFAULT_SOURCE": "bucket",
    "DEFAULT_RELEASE": "bucket",
    "RELEASES": "bucket",
    "FEATURE_TYPES": "bucket",
    "ExperimentError": "h5ad",
    "GeneTable": "h5ad",
    "LoadedExperiment": "h5ad",
    "read_experiment": "h5ad",
    "read_gene_table": "h5ad",
    "gene_table_task": "h5ad",
    "DemoConfig": "demo_bucket",
    "DemoBiology": "demo_bucket",
    "demo_biology": "demo_bucket",
    "sample_counts": "demo_bucket",
    "write_demo_bucket": "demo_bucket",
}
_MOVED = {  # names the module scdata.source held before 0.2, and where they are now
    "LIVE_BUCKET": "scdata.source.bucket",
    "RETIRED_BUCKETS": "scdata.source.bucket",
    "DEFAULT_FEATURE_TYPE": "scdata.source.bucket",
    "DEFAULT_ORGANISM": "scdata.source.bucket",
    "SAMPLE_COLUMNS_2025": "scdata.source.bucket",
    "SAMPLE_COLUMNS_2026": "scdata.source.bucket",
    "REQUIRED_COLUMNS": "scdata.source.bucket",
    "CELL_METADATA_COLUMNS": "scdata.source.bucket",
    "_RELEASE_RE": "scdata.source.bucket",
    "parse_filters": "scdata.source.bucket",
    "seeded_order": "scdata.source.bucket",
    "take_budget": "scdata.source.bucket",
    "_plain": "scdata.source.bucket",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _MOVED)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .bucket import (
        DEFAULT_RELEASE,
        DEFAULT_SOURCE,
        Experiment,
        FEATURE_TYPES,
        MetadataError,
        RELEASES,
        SourceConfig,
        read_sample_metadata,
        select_experiments,
    )
    from .h5ad import ExperimentError, GeneTable, LoadedExperiment, gene_table_task, read_experiment, read_gene_table
    from .demo_bucket import DemoBiology, DemoConfig, demo_biology, sample_counts, write_demo_bucket
