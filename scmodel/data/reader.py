"""Filling shuffle buffers: the chunks of a segment's cells decoded straight into their slots.

A segment is the part of one shuffle buffer that one process serves, in serving order. Its
buffer is allocated once (in shared memory for a DataLoader worker, so it crosses to the main
process without a copy); one job per chunk row decodes the chunk(s) into this thread's scratch
and a compiled kernel writes each needed cell, normalized, into its slot. Batches are then views
of the buffer. Jobs run on the process's read threads; the next segment is started while the
current one is served.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from scdata.store.chunks import ChunkReader
from scdata.hvg.results import open_hvg_matrix
from scdata.normalize import depth_scale
from scdata.store.layout import categorical_columns, numeric_columns, open_root, read_categories

from .buffers import BufferPool, SharedRing
from .kernels import TILE, fill_columns, fill_rows, gather_counts
from .transform import transform_block

EMPTY = np.zeros(0, np.float32)


def _log1p(out: torch.Tensor, a: int, b: int) -> None:
    part = out[a:b].numpy()
    np.log1p(part, out=part)


class ObsColumn:
    """A 1-D obs array read one Zarr chunk at a time (a few recent chunks kept): a worker holds
    what its buffers need, not the column."""

    def __init__(self, array, n: int, keep: int = 4):
        self.array, self.n, self.keep = array, n, keep
        self.step = array.chunks[0]
        self.cache: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()

    def _chunk(self, k: int) -> np.ndarray:
        with self.lock:
            chunk = self.cache.get(k)
        if chunk is None:
            chunk = np.asarray(self.array[k * self.step : min((k + 1) * self.step, self.n)])
            with self.lock:
                if len(self.cache) >= self.keep:
                    self.cache.pop(next(iter(self.cache)))
                self.cache[k] = chunk
        return chunk

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Values at global ``rows`` (any order)."""
        if not len(rows):
            return np.asarray(self.array[0:0])
        which = rows // self.step
        lo, hi = int(which.min()), int(which.max())
        if lo == hi:
            return self._chunk(lo)[rows - lo * self.step]
        out = None
        for k in np.unique(which):
            sel = which == k
            part = self._chunk(int(k))[rows[sel] - k * self.step]
            if out is None:
                out = np.empty(len(rows), dtype=part.dtype)
            out[sel] = part
        return out


class SegmentReader:
    """Reads segments of one dataset's cells into buffers (one instance per process)."""

    def __init__(self, cfg, block_rows: int, n_committed: int, feature_ids: np.ndarray, columns: np.ndarray | None,
                 dtype, shared: bool, release_flags: torch.Tensor | None = None, worker: int = 0, threads: int = 2,
                 max_cells: int | None = None):
        self.cfg, self.block_rows, self.n_committed = cfg, block_rows, n_committed
        self.n_features = len(feature_ids)
        self.dtype, self.shared = dtype, shared
        self.root = open_root(cfg.store, mode="r")
        array = open_hvg_matrix(cfg.store)[0] if cfg.features == "hvg" else self.root["X"]
        self.reader = ChunkReader(array)
        self.transposed = self.reader.writer.transpose
        n_genes = array.shape[1]
        cg = self.reader.chunk_genes
        # per chunk column: (chunk index, source columns in it, destination columns of the output)
        src = np.arange(self.n_features) if columns is None else np.asarray(columns)
        dst = np.arange(len(src))
        self.plan = []
        for j in range(-(-n_genes // cg)):
            sel = (src >= j * cg) & (src < (j + 1) * cg)
            if sel.any():
                s, d = (src[sel] - j * cg).astype(np.int64), dst[sel].astype(np.int64)
                contiguous = len(s) == s[-1] - s[0] + 1 and np.array_equal(d, d[0] + s - s[0]) and s[0] == 0
                self.plan.append((j, s, d, contiguous))
        obs = self.root["obs"]
        self.totals = ObsColumn(obs["total_counts"], n_committed)
        self.numeric = {name: ObsColumn(obs[name], n_committed) for name in numeric_columns(self.root)
                        if name in cfg.metadata}
        self.categorical = {name: (ObsColumn(obs[f"{name}/codes"], n_committed),
                                   np.asarray(read_categories(self.root, name) + [""], dtype=object))
                            for name in categorical_columns(self.root) if name in cfg.metadata}
        self.ids = ObsColumn(obs["_index"], n_committed, keep=max(4, cfg.buffer_blocks)) \
            if "cell_id" in cfg.metadata else None
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sczarr-read") if threads else None
        capacity = min(cfg.buffer_blocks * block_rows, max_cells or cfg.buffer_blocks * block_rows)
        # a worker's hand-off starts in an earlier buffer only for its first batch (see
        # ``partition.handoff_sizes``): those few cells are copied into the rows just before the
        # buffer's own, so the hand-off is a view of one shared buffer, like any other
        self.head = cfg.batch_size if shared else 0
        self.buffers = SharedRing(capacity + self.head, release_flags, worker) if shared else BufferPool(capacity)
        self.ahead: dict | None = None  # a segment begun by ``prefetch``

    def close(self) -> None:
        if self.ahead is not None:
            self.drop(self.ahead)
            self.ahead = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    # ---- one segment --------------------------------------------------------------------

    def start(self, rows: np.ndarray, claim: bool = False) -> dict:
        """Begin filling a buffer with the cells ``rows`` (global rows, serving order). With
        ``claim`` (an iteration's first buffer), the one ``prefetch`` began, if it holds the same
        rows: any other prefetched buffer is dropped."""
        if claim and self.ahead is not None:
            ahead, self.ahead = self.ahead, None
            if np.array_equal(ahead["rows"], rows):
                return ahead
            self.drop(ahead)
        base, slot = self.buffers.get(self.head + len(rows), self.n_features, np.dtype(self.dtype))
        out = base[self.head :]
        blocks = rows // self.block_rows
        order = np.argsort(blocks, kind="stable")
        bounds = np.flatnonzero(np.diff(blocks[order])) + 1
        parts = np.split(order, bounds) if len(rows) else []
        segment = {"rows": rows, "base": base, "out": out, "slot": slot, "left": len(parts), "lock": threading.Lock(),
                   "post": []}
        jobs = []
        for idx in parts:
            b = int(blocks[idx[0]])
            args = (b, (rows[idx] - b * self.block_rows).astype(np.int64), idx.astype(np.int64), rows[idx], out)
            jobs.append(self.pool.submit(self._fill_then_log, segment, args) if self.pool is not None else args)
        segment["jobs"] = jobs
        return segment

    def prefetch(self, rows: np.ndarray | None) -> None:
        """Begin filling the buffer the next iteration most likely starts with (the next epoch's
        first), while the last one of this iteration is served: epochs then follow each other
        without a stall. The next iteration's first ``start`` claims it or drops it."""
        if self.ahead is not None:
            self.drop(self.ahead)
            self.ahead = None
        if self.pool is not None and rows is not None and len(rows):
            self.ahead = self.start(rows)

    def drop(self, segment: dict) -> None:
        """A buffer nobody will serve (prefetched for nothing, or read ahead by an iteration left
        early): its fills end, then its slot is free again once its hand-offs are dropped."""
        for job in segment["jobs"]:
            job.result() if hasattr(job, "result") else None
        for job in segment["post"]:
            job.result()
        self.done(segment["slot"])

    def settle(self) -> None:
        """At a new iteration (see ``SharedRing.settle``)."""
        self.buffers.settle()

    def _log_ranges(self, out: torch.Tensor) -> list[tuple[int, int]]:
        if self.cfg.tokenizer is not None or self.cfg.target is None or not len(out):
            return []
        n = len(out)
        parts = max(1, self.threads)
        return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]

    def _fill_then_log(self, segment: dict, args: tuple) -> None:
        """A block's fill; the segment's last one starts ``log1p`` over its row ranges."""
        self._fill(*args)
        with segment["lock"]:
            segment["left"] -= 1
            if segment["left"] == 0:
                out = segment["out"]
                segment["post"] = [self.pool.submit(_log1p, out, a, b) for a, b in self._log_ranges(out)]

    def finish(self, segment: dict) -> tuple[torch.Tensor, dict]:
        """The filled buffer and its metadata (per cell, serving order)."""
        for job in segment["jobs"]:
            job.result() if hasattr(job, "result") else self._fill(*job)
        if self.pool is None:
            for a, b in self._log_ranges(segment["out"]):
                _log1p(segment["out"], a, b)
        for job in segment["post"]:
            job.result()
        rows = segment["rows"]
        # numeric columns stay numpy in a worker (pickled with the hand-off: a tensor would travel as
        # one more shared-memory segment and file descriptor per hand-off); StoreDataLoader makes
        # each batch's slice a tensor
        as_out = (lambda a: a) if self.shared else torch.from_numpy
        meta = {"row": as_out(rows.astype(np.int64))}
        if self.ids is not None:
            meta["cell_id"] = self.ids.take(rows).astype(object)
        for name, column in self.numeric.items():
            meta[name] = as_out(np.ascontiguousarray(column.take(rows)))
        for name, (codes, categories) in self.categorical.items():
            values = codes.take(rows)
            meta[name] = categories[values] if self.cfg.metadata_strings else as_out(values.astype(np.int32))
        return segment["out"], meta

    def joined(self, segment: dict, before: list[np.ndarray], take: int) -> torch.Tensor | None:
        """``before`` (rows of earlier buffers) followed by the segment's first ``take`` rows, as
        one view of its buffer: ``before`` is copied into the rows ahead of the segment's (None
        when they do not fit)."""
        n = sum(len(b) for b in before)
        if n > self.head:
            return None
        view = segment["base"][self.head - n : self.head + take]
        dest, pos = view.numpy(), 0
        for part in before:
            dest[pos : pos + len(part)] = part
            pos += len(part)
        return view

    def tag(self, slot) -> list[int] | None:
        """What a hand-off that is a view of ``slot``'s buffer carries (None: nothing to report)."""
        return None if slot is None or not isinstance(self.buffers, SharedRing) else self.buffers.tag(slot)

    def offsets(self, slot, view: torch.Tensor) -> list[int] | None:
        """Where ``view`` lies in ``slot``'s buffer (first element, rows, width), when the main
        process maps that buffer already (see ``buffers``)."""
        if slot is None or not isinstance(self.buffers, SharedRing) or not self.buffers.mapped(slot):
            return None
        return [view.storage_offset(), view.shape[0], view.shape[1]]

    def done(self, slot) -> None:
        """This process no longer reads the buffer of ``slot`` (see ``SharedRing``)."""
        if slot is not None:
            self.buffers.done(slot)

    def _fill(self, b: int, local: np.ndarray, slots: np.ndarray, rows: np.ndarray, out: torch.Tensor) -> None:
        cfg = self.cfg
        target = cfg.target
        divisor = EMPTY if target is None else depth_scale(self.totals.take(rows).astype(np.float32),
                                                            np.float32(target)).astype(np.float32)
        dest = out.numpy()
        if cfg.tokenizer is None:
            for j, src, dst, contiguous in self.plan:
                chunk = self.reader.chunk(b, j, out=self.reader.thread_buffer())
                if chunk is None:
                    dest[slots[:, None], dst[None, :]] = 0
                    continue
                view = chunk.T if self.transposed else chunk
                tile = TILE if self.transposed else max(len(src), 1)
                if contiguous:
                    fill_rows(view[:, : len(src)], local, slots, divisor, int(dst[0]), dest, tile)
                else:
                    fill_columns(view, local, slots, divisor, src, dst, dest, tile)
            return
        counts = np.zeros((len(local), self.n_features), np.int16)
        for j, src, dst, _ in self.plan:
            chunk = self.reader.chunk(b, j, out=self.reader.thread_buffer())
            if chunk is not None:
                view = chunk.T if self.transposed else chunk
                if np.array_equal(dst, np.arange(dst[0], dst[0] + len(dst))):
                    gather_counts(view, local, src, int(dst[0]), counts)
                else:
                    tmp = np.zeros((len(local), len(src)), np.int16)
                    gather_counts(view, local, src, 0, tmp)
                    counts[:, dst] = tmp
        dest[slots] = transform_block(cfg, counts, self.totals.take(rows)).numpy()
