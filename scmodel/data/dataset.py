"""IterableDatasets over a store: chunk-aligned reads, buffer shuffles, exact mid-epoch resume.

``StoreDataset`` serves batches (not single cells): each DataLoader worker reads whole chunk rows
of ``obsm/X_hvg`` (or of X, restricted to a gene selection), holds one shuffle buffer, and cuts it
into batches that it normalizes and tokenizes before they cross the process boundary. Use it
with ``DataLoader(batch_size=None)``, or through ``create_dataloader`` which also keeps the
position for ``state_dict``. The store is opened inside ``__iter__`` (a plain path travels to
workers), so fork and spawn both work.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import IterableDataset

from scdata.chunkio import ChunkReader
from scdata.dataset import _committed
from scdata.hvg_io import open_hvg_matrix
from scdata.normalize import depth_scale
from scdata.store import categorical_columns, open_root, read_categories, read_strings

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
    """"train" / "val": a seeded split by experiment (``val_fraction`` of them for validation)."""
    val_fraction: float = 0.1
    metadata: tuple[str, ...] = ("cell_id", "srx_accession", "umi_count")
    token_dtype: str = "int64"
    """Dtype of token batches: "int64" (what ``nn.Embedding`` and most code expect), "int32", or
    "compact" (uint8 up to 256 tokens): 8x fewer bytes through worker queues and host-to-device
    copies; convert on the device with ``.long()``."""
    read_threads: int = 3
    """Threads that decode, normalize and tokenize the blocks of the next buffer while batches
    of the current one are served (0: read inline). Each DataLoader worker has its own. One more
    than two cores pays off: a chunk read also waits on the store's I/O."""

    def __post_init__(self) -> None:
        if self.features not in ("hvg", "all", "genes"):
            raise ValueError(f"features must be 'hvg', 'all' or 'genes', got {self.features!r}")
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
        if self.read_threads < 0:
            raise ValueError("read_threads must be >= 0")
        if self.split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {self.split!r}")

    @property
    def target(self) -> float | None:
        """normalize_total's target of the chosen normalization (None: raw counts)."""
        return {"none": None, "log1p": self.target_sum, "log_cpm": 1e6}[self.normalize]


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
            chosen = set(chosen)
            experiments = chosen if experiments is None else [e for e in experiments if e in chosen]
        self.rows = selected_rows(root, manifest, experiments, config.obs_filters)
        self.n_committed = manifest.n_committed
        self.feature_ids, self.columns = self._features(root)

    def _features(self, root) -> tuple[np.ndarray, np.ndarray | None]:
        """The served genes' IDs and, for a gene list, their columns in X (so workers need not
        read the gene axis again)."""
        gene_ids = read_strings(root["var/_index"])
        if self.config.features == "hvg":
            _, indices = open_hvg_matrix(self.config.store)
            if self.config.n_hvgs is not None and self.config.n_hvgs > len(indices):
                raise ValueError(f"n_hvgs={self.config.n_hvgs} but {self.config.store} has {len(indices)} HVGs materialized")
            return gene_ids[indices[: self.config.n_hvgs]], None
        if self.config.features == "all":
            return gene_ids, None
        index = {g: i for i, g in enumerate(gene_ids)}
        missing = [g for g in self.config.genes if g not in index]
        if missing:
            raise ValueError(f"genes not on the store's axis: {missing[:5]}")
        return np.asarray(self.config.genes, dtype=object), np.asarray([index[g] for g in self.config.genes])

    @property
    def n_features(self) -> int:
        return len(self.feature_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.resume_batches = 0

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
        pieces = segments(plan, lo, hi)
        # A segment is read only if one of its batches is still to be served (resume skips the rest).
        needed = [(b - lo - 1) // cfg.batch_size >= skip for a, b in pieces]
        wanted = [np.unique(plan.order[a:b] // self.block_rows) if need else None
                  for (a, b), need in zip(pieces, needed)]
        reader = _BlockSource(cfg, self.block_rows, self.n_committed, len(self.feature_ids), self.columns)
        try:
            pending: list[tuple[torch.Tensor, dict, np.ndarray]] = []
            pending_n = 0
            index = 0
            for k, (a, b) in enumerate(pieces):
                cells = plan.order[a:b]
                if not needed[k]:
                    index += (pending_n + len(cells)) // cfg.batch_size
                    pending, pending_n = [], (pending_n + len(cells)) % cfg.batch_size
                    continue
                ahead = next((w for w in wanted[k + 1 :] if w is not None), None)
                # one gather per segment (a buffer's share), then batches are zero-copy slices of it
                x_seg, meta_seg = reader.rows(cells, wanted[k], ahead)
                pos = 0
                while pos < len(cells):
                    take = min(cfg.batch_size - pending_n, len(cells) - pos)
                    if index >= skip:
                        pending.append((x_seg[pos : pos + take], {k2: v[pos : pos + take] for k2, v in meta_seg.items()},
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
        finally:
            reader.close()

    def _batch(self, pieces: list[tuple[torch.Tensor, dict, np.ndarray]], role: int, index: int):
        if len(pieces) == 1:
            x, meta, rows = pieces[0]
            meta = dict(meta)
        else:  # a batch that spans two buffers
            x = torch.cat([p[0] for p in pieces])
            rows = np.concatenate([p[2] for p in pieces])
            meta = {k: (np.concatenate([p[1][k] for p in pieces]) if isinstance(pieces[0][1][k], np.ndarray)
                        else torch.cat([p[1][k] for p in pieces])) for k in pieces[0][1]}
        if self.config.tokenizer is not None and self.config.token_dtype != "compact":
            x = x.to(torch.long if self.config.token_dtype == "int64" else torch.int32)
        meta.update({"row": torch.from_numpy(np.ascontiguousarray(rows)), "epoch": self.epoch, "worker_role": role,
                     "worker_batch": index})
        return x.contiguous(), meta


def token_dtype_of(config: LoaderConfig):
    """numpy dtype of transformed blocks: compact tokens, or float32 values without a tokenizer."""
    if config.tokenizer is None:
        return np.float32
    return np.uint8 if config.tokenizer.n_tokens <= 256 else np.int32


def transform_block(config: LoaderConfig, counts: np.ndarray, totals: np.ndarray,
                    out: np.ndarray | None = None) -> torch.Tensor:
    """Normalization and tokenization of a block of cells, once per block (not per batch) and only
    on its non-zeros: zeros stay zero (token 0) under every normalization and elementwise tokenizer.
    ``out`` (C-contiguous, ``counts.shape``, ``token_dtype_of(config)``) receives the result in place."""
    tokenizer = config.tokenizer
    dtype = token_dtype_of(config)
    if out is None:
        out = np.zeros(counts.shape, dtype=dtype)
    else:
        out.fill(0)
    scale = None if config.target is None else depth_scale(totals.astype(np.float32), np.float32(config.target))
    if tokenizer is not None and not getattr(tokenizer, "elementwise", True):  # per-cell quantiles need rows
        x = torch.from_numpy(counts.astype(np.float32))
        if scale is not None:
            x = torch.log1p(x / torch.from_numpy(scale).unsqueeze(1))
        out[...] = tokenizer.tokenize(x).numpy()
        return torch.from_numpy(out)
    counts = np.ascontiguousarray(counts)
    flat = counts.reshape(-1)
    where = np.flatnonzero(flat != 0)  # via a boolean mask: ~4x faster than on int16 directly
    values = flat[where].astype(np.float32)
    if scale is not None:
        per_row = np.diff(np.searchsorted(where, np.arange(counts.shape[0] + 1) * counts.shape[1]))
        np.divide(values, np.repeat(scale, per_row), out=values)
        np.log1p(values, out=values)
    if tokenizer is not None:
        if hasattr(tokenizer, "tokenize_positive"):  # values here are positive: the in-place numpy binning
            values = tokenizer.tokenize_positive(values, dtype)
        else:
            values = tokenizer.tokenize(torch.from_numpy(values)).numpy().astype(dtype)
    out.reshape(-1)[where] = values
    return torch.from_numpy(out)


class _BlockSource:
    """Chunk rows of the store, decoded and transformed (on ``read_threads`` threads, ahead of use).

    ``rows`` gathers one segment's cells; it also schedules the blocks of the segment after it,
    so decoding the next buffer overlaps serving this one. Blocks are dropped once no pending
    segment needs them: memory is about two buffers.
    """

    def __init__(self, cfg: LoaderConfig, block_rows: int, n_committed: int, n_columns: int,
                 columns: np.ndarray | None):
        self.cfg = cfg
        self.block_rows = block_rows
        self.n_committed = n_committed
        self.n_columns = n_columns
        self.columns = columns  # a gene list's columns in X; None: every gene (or the HVG matrix)
        self.root = open_root(cfg.store, mode="r")
        self.matrix = open_hvg_matrix(cfg.store)[0] if cfg.features == "hvg" else None
        self.reader = ChunkReader(self.matrix if self.matrix is not None else self.root["X"])
        # Per-cell numbers are small (a few bytes a cell): read each column once per worker instead
        # of once per block, which leaves one store request per block for the cell IDs.
        obs = self.root["obs"]
        n = n_committed
        self.numeric = {"total_counts": obs["total_counts"][:n]}
        for name in ("umi_count", "gene_count"):
            if name in cfg.metadata:
                self.numeric[name] = obs[name][:n]
        for name in categorical_columns(self.root):
            if name in cfg.metadata:
                categories = read_categories(self.root, name)
                self.numeric[name] = np.asarray(categories + [""], dtype=object)[obs[f"{name}/codes"][:n]]
        self.blocks: dict[int, dict] = {}  # first block of a scheduled segment -> its stack and read jobs
        self.id_chunks: dict[int, np.ndarray] = {}
        self.id_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(cfg.read_threads, thread_name_prefix="sczarr-read") if cfg.read_threads else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.blocks.clear()

    def _cell_ids(self, lo: int, hi: int) -> np.ndarray:
        """Cell IDs of rows [lo, hi). String chunks decode whole (tens of thousands of IDs), so a
        few decoded ones are kept rather than the whole column."""
        ids = self.root["obs/_index"]
        step = ids.chunks[0]
        parts = []
        for k in range(lo // step, (hi - 1) // step + 1):
            with self.id_lock:
                chunk = self.id_chunks.get(k)
            if chunk is None:
                chunk = np.asarray(ids[k * step : min((k + 1) * step, self.n_committed)], dtype=object)
                with self.id_lock:
                    if len(self.id_chunks) >= max(2, self.cfg.buffer_blocks):
                        self.id_chunks.pop(next(iter(self.id_chunks)))
                    self.id_chunks[k] = chunk
            a, b = max(lo, k * step) - k * step, min(hi, (k + 1) * step) - k * step
            parts.append(chunk[a:b])
        return np.concatenate(parts)

    def _load(self, b: int, out: np.ndarray | None = None) -> tuple[int, object, np.ndarray | None]:
        lo, hi = b * self.block_rows, min((b + 1) * self.block_rows, self.n_committed)
        ids = self._cell_ids(lo, hi) if "cell_id" in self.cfg.metadata else None
        if self.matrix is not None:  # whole chunk rows, decoded directly (no generic read path)
            # decoded into this thread's buffer when the transform writes its result elsewhere
            chunk = self.reader.chunk(b, 0, out=None if out is None else self.reader.thread_buffer())
            data = (np.zeros((hi - lo, self.n_columns), np.int16) if chunk is None
                    else chunk[: hi - lo, : self.n_columns])
            totals = self.numeric["total_counts"][lo:hi]
            return lo, transform_block(self.cfg, data, totals, None if out is None else out[: hi - lo]), ids
        genes, cells, values = self.reader.read_entries(lo, hi)
        data = sp.csr_matrix((values, (cells, genes)), shape=(hi - lo, self.root["X"].shape[1]))
        return lo, (data[:, self.columns] if self.columns is not None else data), ids

    def _schedule(self, blocks: np.ndarray) -> dict:
        """Start reading a segment's blocks; dense blocks land in one stacked array (slot per
        block), so the segment is later cut out of it with a single gather."""
        key = int(blocks[0])
        if key in self.blocks:
            return self.blocks[key]
        stack = None
        if self.matrix is not None:
            stack = np.empty((len(blocks) * self.block_rows, self.n_columns), dtype=token_dtype_of(self.cfg))
        jobs = []
        for slot, b in enumerate(blocks):
            out = None if stack is None else stack[slot * self.block_rows : (slot + 1) * self.block_rows]
            jobs.append(self.pool.submit(self._load, int(b), out) if self.pool is not None else (int(b), out))
        self.blocks[key] = entry = {"stack": stack, "jobs": jobs}
        return entry

    def rows(self, rows: np.ndarray, blocks: np.ndarray, ahead: np.ndarray | None) -> tuple[torch.Tensor, dict]:
        """The cells ``rows`` (from chunk rows ``blocks``), in that order; ``ahead``: the next
        segment's blocks, started now."""
        entry = self._schedule(blocks)
        if ahead is not None:
            self._schedule(ahead)
        loaded = [job.result() if hasattr(job, "result") else self._load(*job) for job in entry["jobs"]]
        del self.blocks[int(blocks[0])]
        block_of = rows // self.block_rows
        slot_of = np.searchsorted(blocks, block_of)  # ``blocks`` is sorted (np.unique)
        positions = slot_of * self.block_rows + (rows - block_of * self.block_rows)
        meta = {}
        if "cell_id" in self.cfg.metadata:
            ids = np.empty(len(blocks) * self.block_rows, dtype=object)
            for slot, (_, _, block_ids) in enumerate(loaded):
                ids[slot * self.block_rows : slot * self.block_rows + len(block_ids)] = block_ids
            meta["cell_id"] = ids[positions]
        if entry["stack"] is not None:
            x = torch.index_select(torch.from_numpy(entry["stack"]), 0, torch.from_numpy(positions))
        else:  # sparse blocks: densify and transform just the rows served, in order
            stacked = sp.vstack([data for _, data, _ in loaded], format="csr") if len(loaded) > 1 else loaded[0][1]
            starts = np.cumsum([0] + [data.shape[0] for _, data, _ in loaded])
            x = transform_block(self.cfg, stacked[starts[slot_of] + (rows - block_of * self.block_rows)].toarray(),
                                self.numeric["total_counts"][rows])
        for name, values in self.numeric.items():
            if name == "total_counts":
                continue
            picked = values[rows]
            meta[name] = picked if picked.dtype == object else torch.from_numpy(picked)
        return x, meta
