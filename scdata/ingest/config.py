"""What one ``scdata ingest`` run is asked to do: ``IngestConfig``.

Its own module, below the driver and the commit unit, which both read it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..runtime import remote
from ..runtime.cluster import ClusterConfig
from ..source.bucket import SourceConfig
from ..store.layout import StoreLayout
from .load_window import WindowPolicy


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Everything one ``scdata ingest`` run needs."""

    source: SourceConfig = field(default_factory=SourceConfig)
    store: str = "data/scRNA/store.zarr"
    cell_count: int = 100_000
    batch_size: int = 256
    """At most this many experiments per commit. It does not bound what is in flight: the load
    window follows the cluster's threads and memory (``window``)."""
    round_cells: int | None = 1_000_000
    """At most this many cells per commit (by metadata; a larger experiment commits alone)."""
    seed: int = 42
    filters: dict[str, list[str]] = field(default_factory=dict)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    keep_raw: bool = False
    raw_dir: str | None = None
    """Where ``keep_raw`` keeps downloaded h5ad files (default: ``raw/`` beside the store)."""
    scratch_dir: str | None = None
    layout: StoreLayout = field(default_factory=StoreLayout)
    genes_file: str | None = None
    """An explicit gene axis for a new store (``axis.read_genes_file``); by default the axis is
    the gene table of the first few readable experiments."""
    window: WindowPolicy = field(default_factory=WindowPolicy)
    """Loads in flight per worker thread and the share of worker memory they may hold; its
    per-commit caps are replaced by ``batch_size`` and ``round_cells``."""
    on_error: str = "skip"
    """'skip': record a bad experiment as rejected and go on; 'raise': stop at it."""
    retry_rejected: bool = False
    """Also try again experiments rejected for their content (negative counts, foreign gene IDs…);
    experiments rejected for I/O faults are tried again by every run."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.cell_count <= 0:
            raise ValueError(f"cell_count must be positive, got {self.cell_count}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.round_cells is not None and self.round_cells <= 0:
            raise ValueError(f"round_cells must be positive, got {self.round_cells}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")

    @property
    def policy(self) -> WindowPolicy:
        return dataclasses.replace(self.window, commit_experiments=self.batch_size, commit_cells=self.round_cells)

    @property
    def keep_dir(self) -> str | None:
        if not self.keep_raw:
            return None
        if self.raw_dir:
            return self.raw_dir
        if not remote.is_local(self.store):
            raise ValueError("--keep-raw with a remote store needs --raw-dir (a local directory)")
        return os.path.join(os.path.dirname(os.path.abspath(remote.local_path(self.store))), "raw")
