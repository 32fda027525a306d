"""IterableDatasets over a store: chunk-aligned reads, buffer shuffles, exact mid-epoch resume.

``StoreDataset`` serves batches (not single cells): each DataLoader worker reads whole chunk rows
of ``obsm/X_hvg`` (or of X, restricted to a gene selection), holds one shuffle buffer, and cuts it
into batches that it normalizes and tokenizes before they cross the process boundary. Use it
with ``DataLoader(batch_size=None)``, or through ``create_dataloader`` which also keeps the
position for ``state_dict``. The store is opened inside ``__iter__`` (a plain path travels to
workers), so fork and spawn both work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import IterableDataset

from scdata.chunkio import ChunkReader
from scdata.dataset import _committed
from scdata.hvg_io import open_hvg_matrix
from scdata.store import categorical_columns, read_categories, read_strings

from .partition import batches_consumed_per_worker, epoch_plan, segments, worker_range
from .ranks import rank_and_world, worker_and_count
from .selection import selected_rows, split_experiments

NORMALIZATIONS = ("none", "log1p", "log_cpm")


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """What a dataset serves and how it shuffles."""

    store: str
    features: str = "hvg"
    """"hvg": ``obsm/X_hvg`` (materialized by ``scdata hvg --materialize``); "all": every gene of X;
    "genes": the Ensembl IDs in ``genes`` (read from X)."""
    genes: tuple[str, ...] = ()
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
    """"train" / "val": a seeded split by experiment (``val_fraction`` of them for validation)."""
    val_fraction: float = 0.1
    metadata: tuple[str, ...] = ("cell_id", "srx_accession", "umi_count")

    def __post_init__(self) -> None:
        if self.features not in ("hvg", "all", "genes"):
            raise ValueError(f"features must be 'hvg', 'all' or 'genes', got {self.features!r}")
        if self.features == "genes" and not self.genes:
            raise ValueError("features='genes' needs a list of gene IDs")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.batch_size <= 0 or self.buffer_blocks <= 0:
            raise ValueError("batch_size and buffer_blocks must be positive")
        if self.split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {self.split!r}")


class StoreDataset(IterableDataset):
    """Batches of ``(expression, metadata)`` from the committed cells of a store."""

    def __init__(self, config: LoaderConfig):
        super().__init__()
        self.config = config
        self.epoch = 0
        self.resume_batches = 0  # batches of this epoch already consumed (set by load_state_dict)
        root, manifest = _committed(config.store)
        self.manifest_version = manifest.version
        self.block_rows = root["X"].chunks[0]
        experiments = config.experiments
        if config.split is not None:
            train, val = split_experiments(manifest, config.val_fraction, config.seed)
            chosen = train if config.split == "train" else val
            experiments = chosen if experiments is None else [e for e in experiments if e in set(chosen)]
        self.rows = selected_rows(root, manifest, experiments, config.obs_filters)
        self.feature_ids = self._feature_ids(root)

    def _feature_ids(self, root) -> np.ndarray:
        gene_ids = read_strings(root["var/_index"])
        if self.config.features == "hvg":
            _, indices = open_hvg_matrix(self.config.store)
            return gene_ids[indices]
        if self.config.features == "all":
            return gene_ids
        index = {g: i for i, g in enumerate(gene_ids)}
        missing = [g for g in self.config.genes if g not in index]
        if missing:
            raise ValueError(f"genes not on the store's axis: {missing[:5]}")
        return np.asarray(self.config.genes, dtype=object)

    @property
    def n_features(self) -> int:
        return len(self.feature_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.resume_batches = 0

    def cells_per_rank(self) -> int:
        _, world = rank_and_world()
        return len(self.rows) // world

    def __len__(self) -> int:
        """Batches this rank yields per epoch (across its DataLoader workers)."""
        return self.batches_per_rank(1)

    def batches_per_rank(self, workers: int) -> int:
        rank, world = rank_and_world()
        total = 0
        for w in range(max(workers, 1)):
            lo, hi = worker_range(len(self.rows), world, rank, max(workers, 1), w)
            total += self._n_batches(hi - lo)
        return total

    def _n_batches(self, n: int) -> int:
        b = self.config.batch_size
        return n // b if self.config.drop_last else -(-n // b)

    # ---- worker side ------------------------------------------------------------------------

    def __iter__(self):
        cfg = self.config
        rank, world = rank_and_world()
        worker, workers = worker_and_count()
        role = (worker + self.resume_batches) % workers  # rotate so round-robin continues where it stopped
        skip = batches_consumed_per_worker(self.resume_batches, workers)[role]
        if cfg.shuffle:
            plan = epoch_plan(self.rows, self.block_rows, cfg.buffer_blocks, cfg.seed, self.epoch)
        else:
            plan = epoch_plan(self.rows, self.block_rows, 1 << 30, cfg.seed, self.epoch)
            plan = type(plan)(np.sort(plan.order), plan.buffer_starts)
        lo, hi = worker_range(len(self.rows), world, rank, workers, role)
        reader = _BlockSource(cfg, self.block_rows, self.feature_ids)
        pending: list[tuple[torch.Tensor, dict, np.ndarray]] = []
        pending_n = 0
        index = 0
        for a, b in segments(plan, lo, hi):
            cells = plan.order[a:b]
            # one gather per segment (a buffer's share), then batches are zero-copy slices of it
            x_seg, meta_seg = reader.rows(cells)
            pos = 0
            while pos < len(cells):
                take = min(cfg.batch_size - pending_n, len(cells) - pos)
                if index >= skip:
                    pending.append((x_seg[pos : pos + take], {k: v[pos : pos + take] for k, v in meta_seg.items()},
                                    cells[pos : pos + take]))
                pending_n += take
                pos += take
                if pending_n == cfg.batch_size:
                    if index >= skip:
                        yield self._batch(pending, role, index)
                    index += 1
                    pending, pending_n = [], 0
        if pending_n and not cfg.drop_last and index >= skip:
            yield self._batch(pending, role, index)

    def _batch(self, pieces: list[tuple[torch.Tensor, dict, np.ndarray]], role: int, index: int):
        if len(pieces) == 1:
            x, meta, rows = pieces[0]
            meta = dict(meta)
        else:  # a batch that spans two buffers
            x = torch.cat([p[0] for p in pieces])
            rows = np.concatenate([p[2] for p in pieces])
            meta = {k: (np.concatenate([p[1][k] for p in pieces]) if isinstance(pieces[0][1][k], np.ndarray)
                        else torch.cat([p[1][k] for p in pieces])) for k in pieces[0][1]}
        x = x.long() if self.config.tokenizer is not None else x
        meta.update({"row": torch.from_numpy(np.ascontiguousarray(rows)), "epoch": self.epoch, "worker_role": role,
                     "worker_batch": index})
        return x.contiguous(), meta


def transform_block(config: LoaderConfig, counts: np.ndarray, totals: np.ndarray) -> torch.Tensor:
    """Normalization and tokenization of a block of cells, once per block (not per batch) and only
    on its non-zeros: zeros stay zero (token 0) under every normalization and elementwise tokenizer."""
    tokenizer = config.tokenizer
    if tokenizer is not None and not getattr(tokenizer, "elementwise", True):  # per-cell quantiles need rows
        x = torch.from_numpy(counts.astype(np.float32))
        if config.normalize != "none":
            target = config.target_sum if config.normalize == "log1p" else 1e6
            scale = torch.from_numpy(totals.astype(np.float32)).unsqueeze(1) / target
            x = torch.log1p(x / torch.where(scale == 0, torch.ones_like(scale), scale))
        return tokenizer.tokenize(x).to(torch.uint8 if tokenizer.n_tokens <= 256 else torch.int32)
    flat = np.ascontiguousarray(counts).reshape(-1)
    where = np.flatnonzero(flat)
    values = flat[where].astype(np.float32)
    if config.normalize != "none":
        target = config.target_sum if config.normalize == "log1p" else 1e6
        scale = (totals.astype(np.float32) / target)[where // counts.shape[1]]
        values = np.log1p(values / np.where(scale == 0, 1, scale))
    if tokenizer is not None:
        dtype = np.uint8 if tokenizer.n_tokens <= 256 else np.int32
        values = tokenizer.tokenize(torch.from_numpy(values)).numpy().astype(dtype)
    else:
        dtype = np.float32
    out = np.zeros(counts.shape, dtype=dtype)
    out.reshape(-1)[where] = values
    return torch.from_numpy(out)


class _BlockSource:
    """Reads chunk rows on demand and keeps the current buffer's blocks in memory."""

    def __init__(self, cfg: LoaderConfig, block_rows: int, feature_ids: np.ndarray):
        from scdata.store import open_root

        self.cfg = cfg
        self.block_rows = block_rows
        self.root = open_root(cfg.store, mode="r")
        if cfg.features == "hvg":
            self.matrix, _ = open_hvg_matrix(cfg.store)
            self.reader = None
        else:
            self.matrix = None
            self.reader = ChunkReader(self.root["X"])
            if cfg.features == "genes":
                ids = read_strings(self.root["var/_index"])
                index = {g: i for i, g in enumerate(ids)}
                self.columns = np.asarray([index[g] for g in feature_ids])
            else:
                self.columns = None
        self.n_committed = _committed(cfg.store)[1].n_committed
        self.cache: dict[int, tuple] = {}
        self.categorical = {c: read_categories(self.root, c) for c in categorical_columns(self.root) if c in cfg.metadata}
        # Per-cell numbers are small (a few bytes a cell): read each column once per worker instead
        # of once per block, which leaves one store request per block for the cell IDs.
        obs = self.root["obs"]
        n = self.n_committed
        self.numeric = {"total_counts": obs["total_counts"][:n]}
        for name in ("umi_count", "gene_count"):
            if name in cfg.metadata:
                self.numeric[name] = obs[name][:n]
        for name, cats in self.categorical.items():
            self.numeric[name] = np.asarray(cats + [""], dtype=object)[obs[f"{name}/codes"][:n]]
        self.hvg_chunks = ChunkReader(self.matrix) if self.matrix is not None else None
        self.id_chunks: dict[int, np.ndarray] = {}

    def _cell_ids(self, lo: int, hi: int) -> np.ndarray:
        """Cell IDs of rows [lo, hi): string chunks decode whole, so keep a few decoded ones."""
        ids = self.root["obs/_index"]
        step = ids.chunks[0]
        parts = []
        for k in range(lo // step, (hi - 1) // step + 1):
            if k not in self.id_chunks:
                if len(self.id_chunks) >= max(2, self.cfg.buffer_blocks):
                    self.id_chunks.pop(next(iter(self.id_chunks)))
                self.id_chunks[k] = np.asarray(ids[k * step : min((k + 1) * step, self.n_committed)], dtype=object)
            a, b = max(lo, k * step) - k * step, min(hi, (k + 1) * step) - k * step
            parts.append(self.id_chunks[k][a:b])
        return np.concatenate(parts)

    def _block(self, b: int):
        if b not in self.cache:
            if len(self.cache) >= self.cfg.buffer_blocks:  # buffer moved on: drop the oldest block
                self.cache.pop(next(iter(self.cache)))
            lo, hi = b * self.block_rows, min((b + 1) * self.block_rows, self.n_committed)
            if self.matrix is not None:  # whole chunk rows, decoded directly (no generic read path)
                chunk = self.hvg_chunks._chunk(b, 0)
                data = (np.zeros((hi - lo, self.matrix.shape[1]), np.int16) if chunk is None
                        else chunk[: hi - lo, : self.matrix.shape[1]])
            else:
                genes, cells, values = self.reader.read_entries(lo, hi)
                data = sp.csr_matrix((values, (cells, genes)), shape=(hi - lo, self.root["X"].shape[1]))
                if self.columns is not None:
                    data = data[:, self.columns]
            meta = {name: values[lo:hi] for name, values in self.numeric.items()}
            if "cell_id" in self.cfg.metadata:
                meta["cell_id"] = self._cell_ids(lo, hi)
            if isinstance(data, np.ndarray):  # dense (X_hvg): transform the whole block once
                data = transform_block(self.cfg, data, meta["total_counts"])
            self.cache[b] = (lo, data, meta)
        return self.cache[b]

    def rows(self, rows: np.ndarray) -> tuple[torch.Tensor, dict]:
        blocks = rows // self.block_rows
        parts, order, meta_parts = [], [], {}
        for b in np.unique(blocks):
            lo, data, block_meta = self._block(int(b))
            where = np.flatnonzero(blocks == b)
            local = rows[where] - lo
            if isinstance(data, torch.Tensor):
                parts.append(torch.index_select(data, 0, torch.from_numpy(local)))
            else:  # sparse full-width block: densify and transform just these rows
                parts.append(transform_block(self.cfg, data[local].toarray(), block_meta["total_counts"][local]))
            order.append(where)
            for name, values in block_meta.items():
                meta_parts.setdefault(name, []).append(values[local])
        inverse = np.argsort(np.concatenate(order), kind="stable")
        x = torch.cat(parts)[torch.from_numpy(inverse)] if len(parts) > 1 else parts[0]
        meta = {}
        for name, values in meta_parts.items():
            if name == "total_counts":
                continue
            merged = np.concatenate(values)[inverse]
            meta[name] = merged if merged.dtype == object else torch.from_numpy(merged)
        return x, meta
