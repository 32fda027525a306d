"""What a store dataset serves and how it shuffles: ``LoaderConfig``.

Its own module, below everything that reads with it: ``dataset`` (the IterableDataset),
``reader`` (the buffer fills) and ``transform`` (normalization and tokenization) all take a
``LoaderConfig`` and none of them needs another to describe one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NORMALIZATIONS = ("none", "log1p", "log_cpm")
SPLITS = ("experiment", "cell")


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """What a dataset serves and how it shuffles."""

    store: str
    features: str = "hvg"
    """"hvg": ``obsm/X_hvg`` (materialized by ``scdata hvg --materialize``); "all": every gene of X;
    "genes": the Ensembl IDs in ``genes`` (read from X)."""
    genes: tuple[str, ...] = ()
    n_hvgs: int | None = None
    """With ``features="hvg"``: only the top ``n_hvgs`` HVGs by rank (the first columns of X_hvg)."""
    batch_size: int = 64
    buffer_blocks: int = 8
    """Chunk rows per shuffle buffer: cells mix across this many chunks (memory grows with it)."""
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    normalize: str = "log1p"
    target_sum: float = 1e4
    tokenizer: object | None = None
    experiments: tuple[str, ...] | None = None
    obs_filters: dict = field(default_factory=dict)
    split: str | None = None
    """"train" / "val": a seeded split (``val_fraction`` held out for validation), by ``split_by``."""
    split_by: str = "experiment"
    """"experiment": whole experiments held out (a model of experiments it has not seen);
    "cell": ``val_fraction`` of every experiment's cells held out (the generative-model field's
    split: held-out cells of the datasets trained on)."""
    rows: np.ndarray | None = field(default=None, compare=False)
    """Only these global rows (e.g. a perturbation store's per-cell split), with the other filters."""
    val_fraction: float = 0.1
    metadata: tuple[str, ...] = ("srx_accession", "umi_count")
    """Per-cell obs columns carried with each batch, besides ``row`` (the store row, always):
    numeric ones as tensors; categorical ones (``srx_accession``, ``tissue``, ...) as int32 code
    tensors (-1: missing) whose strings are ``StoreDataset.categories[name]``; ``cell_id`` as
    strings (``StoreDataset.cell_ids(rows)`` reads them for any rows after the fact). ``()`` is
    cheapest. Strings per batch cost: an object array is built, sliced and (from a DataLoader
    worker) pickled per hand-off, where codes are a view."""
    metadata_strings: bool = False
    """Categorical columns as object arrays of strings (the seed's form) instead of codes."""
    token_dtype: str = "int64"
    """Dtype of token batches: "int64" (what ``nn.Embedding`` and most code expect), "int32", or
    "compact" (uint8 up to 256 tokens): 8x fewer bytes through worker queues and host-to-device
    copies; convert on the device with ``.long()``."""
    read_threads: int | None = None
    """Threads that decode, normalize and tokenize the chunks of the next buffer while batches
    of the current one are served (0: read inline). Each DataLoader worker has its own; None:
    the process's cores shared out over the workers (at least 1, at most 8 each)."""
    handoff_cells: int = 8192
    """Cells a DataLoader worker hands to the main process at a time (whole batches, at least
    one; fewer at a buffer's end): one queue transfer per hand-off instead of per batch.
    ``prefetch_factor`` counts hand-offs. They are views of the worker's buffers, so their size
    costs no memory."""

    def __post_init__(self) -> None:
        if self.features not in ("hvg", "all", "genes"):
            raise ValueError(f"features must be 'hvg', 'all' or 'genes', got {self.features!r}")
        if self.split not in (None, "train", "val") or self.split_by not in SPLITS:
            raise ValueError(f"split must be 'train', 'val' or None and split_by one of {SPLITS}, got "
                             f"{self.split!r}, {self.split_by!r}")
        if self.features == "genes" and not self.genes:
            raise ValueError("features='genes' needs a list of gene IDs")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.n_hvgs is not None and (self.features != "hvg" or self.n_hvgs <= 0):
            raise ValueError("n_hvgs (a positive count) applies to features='hvg' only")
        if self.batch_size <= 0 or self.buffer_blocks <= 0:
            raise ValueError("batch_size and buffer_blocks must be positive")
        if self.token_dtype not in ("int64", "int32", "compact"):
            raise ValueError(f"token_dtype must be 'int64', 'int32' or 'compact', got {self.token_dtype!r}")
        if self.handoff_cells <= 0:
            raise ValueError("handoff_cells must be positive")
        if self.read_threads is not None and self.read_threads < 0:
            raise ValueError("read_threads must be >= 0")
        if self.split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {self.split!r}")

    @property
    def target(self) -> float | None:
        """normalize_total's target of the chosen normalization (None: raw counts)."""
        return {"none": None, "log1p": self.target_sum, "log_cpm": 1e6}[self.normalize]
