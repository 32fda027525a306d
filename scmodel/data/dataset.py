"""IterableDatasets over a store: chunk-aligned reads, buffer shuffles, mid-epoch resume at any scale.

``StoreDataset`` serves runs of batches (not single cells): each process reads whole chunk rows
of ``obsm/X_hvg`` (or of X, restricted to a gene selection) straight into one shuffle buffer,
normalized (and tokenized) on the way in, in serving order, and cuts batches as views of it. A
DataLoader worker hands over ``handoff_cells`` at a time (views of a shared-memory buffer, so
nothing is copied or pickled per batch); ``StoreDataLoader`` cuts them into batches and keeps
the epoch position for ``state_dict``. The store is opened inside ``__iter__`` (a plain path
travels to workers), so fork and spawn both work.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import IterableDataset

from scdata.store.manifest import open_committed
from scdata.hvg.results import open_hvg_matrix
from scdata.store.layout import categorical_columns, numeric_columns, open_root, read_categories, read_strings

from .config import LoaderConfig
from .partition import (EpochPlan, complement, n_batches, n_positions, positions_before, role_handoffs,
                        served_per_role, sub_intervals, worker_range)
from .ranks import rank_and_world, worker_and_count
from .reader import SegmentReader
from .selection import selected_rows, split_cells, split_experiments
from .transform import token_dtype_of


class StoreDataset(IterableDataset):
    """Runs of batches ``(expression, metadata)`` from the committed cells of a store.

    The epoch position is ``start`` (positions of the epoch order served before the current
    layout began, see ``partition``) plus ``resume_batches`` (batches each rank has consumed
    since); ``StoreDataLoader.load_state_dict`` sets both."""

    def __init__(self, config: LoaderConfig):
        super().__init__()
        self.config = config
        self.epoch = 0
        self.start = np.zeros((0, 2), np.int64)
        self.resume_batches = 0
        self.release_flags = None  # set by StoreDataLoader while its workers run (see buffers.SharedRing)
        self.control = None
        """Set by ``StoreDataLoader`` for persistent workers: a shared int64 tensor through which the
        main process tells the workers' copies the epoch and position of each new iteration."""
        self._reader = None  # this process's SegmentReader, kept across epochs (buffers, threads)
        self._reader_key = None
        root, manifest = open_committed(config.store)
        self.manifest_version = manifest.version
        self.block_rows = root["X"].chunks[0]
        experiments = config.experiments
        if config.split is not None and config.split_by == "experiment":
            train, val = split_experiments(manifest, config.val_fraction, config.seed)
            chosen = train if config.split == "train" else val
            chosen = set(chosen)
            experiments = chosen if experiments is None else [e for e in experiments if e in chosen]
        self.rows = selected_rows(root, manifest, experiments, config.obs_filters)
        if config.split is not None and config.split_by == "cell":
            train_rows, val_rows = split_cells(manifest, config.val_fraction, config.seed)
            self.rows = np.intersect1d(self.rows, train_rows if config.split == "train" else val_rows)
        if config.rows is not None:
            self.rows = np.intersect1d(self.rows, np.asarray(config.rows, dtype=np.int64))
        self.n_committed = manifest.n_committed
        self.feature_ids, self.columns = self._features(root)
        categorical = categorical_columns(root)
        unknown = [m for m in config.metadata if m != "cell_id" and m not in categorical and m not in numeric_columns(root)]
        if unknown:
            raise ValueError(f"metadata columns {unknown} are not per-cell columns of {config.store} (it has: cell_id, "
                             f"{', '.join(numeric_columns(root) + categorical)})")
        self.categories = {name: np.asarray(read_categories(root, name), dtype=object)
                           for name in categorical if name in config.metadata}
        """What the codes of each categorical metadata column mean: ``categories[name][codes]`` (a
        code of -1 is a missing value)."""

    def cell_ids(self, rows) -> np.ndarray:
        """The cell IDs of store ``rows`` (e.g. a batch's ``metadata["row"]``), as strings: for the
        few batches one looks at, without carrying strings in every batch."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_committed):
            raise IndexError(f"rows outside the {self.n_committed:,} committed cells of {self.config.store}")
        unique, back = np.unique(rows, return_inverse=True)
        if not len(unique):
            return np.zeros(0, dtype=object)
        ids = open_root(self.config.store, mode="r")["obs/_index"]
        span = np.asarray(ids[int(unique[0]) : int(unique[-1]) + 1], dtype=object) \
            if unique[-1] - unique[0] < 4 * len(unique) + 65_536 else None
        values = span[unique - unique[0]] if span is not None else \
            np.asarray(ids.get_coordinate_selection(unique), dtype=object)
        return values[back]

    def _features(self, root) -> tuple[np.ndarray, np.ndarray | None]:
        """The served genes' IDs and, for a gene list, their columns in X (so workers need not
        read the gene axis again)."""
        gene_ids = read_strings(root["var/_index"])
        if self.config.features == "hvg":
            _, indices = open_hvg_matrix(self.config.store)
            if self.config.n_hvgs is not None and self.config.n_hvgs > len(indices):
                raise ValueError(f"n_hvgs={self.config.n_hvgs} but {self.config.store} has {len(indices)} HVGs "
                                 "materialized: rerun `scdata hvg --materialize` with more")
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
        self.reset_position()

    def reset_position(self) -> None:
        self.start = np.zeros((0, 2), np.int64)
        self.resume_batches = 0

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The order of ``epoch`` (the current one by default)."""
        cfg = self.config
        return EpochPlan(self.rows, self.block_rows, cfg.buffer_blocks, cfg.seed,
                         self.epoch if epoch is None else epoch, cfg.shuffle)

    def remaining(self) -> np.ndarray:
        """Positions of the epoch order not served before the current layout (intervals)."""
        return complement(self.start, len(self.rows))

    def handoff_batches(self, workers: int) -> int:
        """Batches per hand-off: 1 in-process, ``handoff_cells`` worth from a DataLoader worker."""
        return 1 if workers == 0 else max(1, self.config.handoff_cells // self.config.batch_size)

    def handoff_cuts(self, plan: EpochPlan | None = None) -> np.ndarray:
        """Where buffers start in the remaining sequence: no worker's hand-off crosses one but
        for a single batch (see ``partition.handoff_sizes``)."""
        plan = plan or self.plan()
        return positions_before(self.remaining(), plan.buffer_starts[1:-1])

    def role_batches(self, world: int, rank: int, workers: int) -> tuple[list[tuple[int, int]], list[int]]:
        """Per worker role of this rank: its range of the remaining sequence and its batch count."""
        n = n_positions(self.remaining())
        ranges = [worker_range(n, world, rank, max(workers, 1), w) for w in range(max(workers, 1))]
        return ranges, [n_batches(hi - lo, self.config.batch_size, self.config.drop_last) for lo, hi in ranges]

    def __len__(self) -> int:
        """Batches this rank yields in the current layout (a whole epoch unless resumed elsewhere)."""
        return self.batches_per_rank(1)

    def batches_per_rank(self, workers: int) -> int:
        rank, world = rank_and_world()
        return sum(self.role_batches(world, rank, workers)[1])

    # ---- worker side ------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"], state["_reader_key"] = None, None  # threads and buffers stay in their process
        return state

    def _segment_reader(self, in_worker: bool, worker: int):
        """This process's reader, reused by every epoch: its buffers are already paged in (and, in a
        worker, their reuse protocol with the main process continues) and its threads started."""
        key = (os.getpid(), in_worker, worker, id(self.release_flags))
        if self._reader is None or self._reader_key != key:
            workers = worker_and_count()[1] if in_worker else 0
            _, world = rank_and_world()
            # a process reads at most its share of the cells: no buffer need be larger (a buffer
            # spanning the whole selection, for a random permutation, is cut over the workers)
            share = -(-len(self.rows) // (world * max(workers, 1))) + 1
            self._reader = SegmentReader(self.config, self.block_rows, self.n_committed, self.feature_ids, self.columns,
                                         token_dtype_of(self.config), shared=in_worker,
                                         release_flags=self.release_flags, worker=worker,
                                         threads=read_threads(self.config, workers), max_cells=share)
            self._reader_key = key
        return self._reader

    def write_control(self, control: torch.Tensor) -> None:
        """The main process's epoch and position, for persistent workers (see ``read_control``)."""
        n = len(self.start)
        if 3 + 2 * n > len(control):
            raise ValueError(f"{n} start intervals do not fit the control block")
        control[0], control[1], control[2] = self.epoch, self.resume_batches, n
        control[3 : 3 + 2 * n] = torch.from_numpy(self.start.reshape(-1).astype(np.int64))

    def read_control(self) -> None:
        c = self.control
        self.epoch, self.resume_batches, n = int(c[0]), int(c[1]), int(c[2])
        self.start = c[3 : 3 + 2 * n].numpy().reshape(n, 2).copy()

    def __iter__(self):
        cfg = self.config
        rank, world = rank_and_world()
        worker, workers = worker_and_count()
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker and self.control is not None:
            self.read_control()
        per_handoff = self.handoff_batches(workers if in_worker else 0)
        plan = self.plan()
        remaining = self.remaining()
        ranges, items = role_handoffs(n_positions(remaining), world, rank, workers, cfg.batch_size, cfg.drop_last,
                                      per_handoff, self.handoff_cuts(plan) if per_handoff > 1 else ())
        served, first = served_per_role(items, self.resume_batches)
        role = (worker + first) % workers  # rotate so the round-robin continues where it stopped
        lo, hi = ranges[role]
        skip = served[role]
        stop = lo + min(hi - lo, sum(items[role]) * cfg.batch_size)  # drop_last: whole batches only
        pieces = plan.pieces(sub_intervals(remaining, lo + skip * cfg.batch_size, stop))
        reader = self._segment_reader(in_worker, worker)
        reader.settle()
        upcoming = lambda: self._next_epoch_first_rows(world, rank, workers, worker)  # noqa: E731
        yield from self._serve(reader, pieces, role, skip, np.cumsum(items[role]), stop - lo, upcoming)

    def _next_epoch_first_rows(self, world: int, rank: int, workers: int, worker: int) -> np.ndarray | None:
        """The rows this process reads first if the next iteration is the next epoch from its
        start (the usual training loop; without shuffling, any epoch's)."""
        cfg = self.config
        n = len(self.rows)
        plan = self.plan(self.epoch + 1)
        lo, hi = worker_range(n, world, rank, workers, worker)  # a fresh epoch: each worker plays its own role
        stop = lo + min(hi - lo, n_batches(hi - lo, cfg.batch_size, cfg.drop_last) * cfg.batch_size)
        pieces = plan.pieces(np.array([[lo, stop]], np.int64)) if stop > lo else []
        return pieces[0][1] if pieces else None

    def _serve(self, reader, pieces, role: int, batch: int, ends: np.ndarray, role_cells: int, upcoming):
        """Hand-offs ending after the role's batches ``ends`` (cumulative; so a resumed role
        finishes the hand-off it was in). ``upcoming()``: the rows the next iteration most likely
        reads first, prefetched while the last buffer is served (and claimed if it does)."""
        size = self.config.batch_size
        pending, pending_n = [], 0

        def need(batch: int) -> int:
            k = int(np.searchsorted(ends, batch, side="right"))
            return min(int(ends[k]) * size if k < len(ends) else role_cells, role_cells) - batch * size

        def flush():
            item = self._handoff(pending, role, batch, reader, current)
            slots = {p[2] for p in pending if p[2] is not None}
            return item, slots

        held = {}  # slot -> segment, for the buffers this iteration still reads

        def begin(rows, claim=False):
            segment = reader.start(rows, claim=claim)
            if segment["slot"] is not None:
                held[segment["slot"]] = segment
            return segment

        def release(slot):
            held.pop(slot, None)
            reader.done(slot)

        try:
            want = need(batch)
            started = begin(pieces[0][1], claim=True) if pieces else None
            for k in range(len(pieces)):
                current = started
                started = begin(pieces[k + 1][1]) if k + 1 < len(pieces) else None  # read ahead
                if started is None:
                    reader.prefetch(upcoming())
                x, meta = reader.finish(current)
                slot = current["slot"]
                pos = 0
                while pos < len(x):
                    take = min(want - pending_n, len(x) - pos)
                    pending.append((x[pos : pos + take], _slice(meta, pos, pos + take), slot))
                    pending_n += take
                    pos += take
                    if pending_n == want:
                        item, slots = flush()
                        yield item
                        for old in slots - {slot}:  # an earlier buffer's tail, now copied out
                            release(old)
                        batch += -(-want // size)
                        pending, pending_n = [], 0
                        want = need(batch)
                if not any(p[2] == slot for p in pending):
                    release(slot)
            if pending_n:
                item, slots = flush()
                yield item
                for old in slots:
                    release(old)
        finally:  # left early (DataLoader's reset, a break): the buffers still held are let go
            for segment in list(held.values()):
                reader.drop(segment)

    def _handoff(self, pieces: list, role: int, batch: int, reader, segment: dict):
        """One hand-off from ``pieces`` (consecutive rows of buffers; the last from ``segment``)."""
        x, meta, slot = pieces[-1]
        if len(pieces) > 1:  # spans buffers: joined in the last one's buffer (else numpy's copy, not
            # torch.cat, whose intra-op threads contend with the read threads)
            joined = reader.joined(segment, [p[0].numpy() for p in pieces[:-1]], len(x))
            x = joined if joined is not None else torch.from_numpy(np.concatenate([p[0].numpy() for p in pieces]))
            slot = slot if joined is not None else None
            meta = {k: (np.concatenate([p[1][k] for p in pieces]) if isinstance(pieces[0][1][k], np.ndarray)
                        else torch.cat([p[1][k] for p in pieces])) for k in pieces[0][1]}
        meta = dict(meta)
        if self.config.tokenizer is not None and self.config.token_dtype != "compact":
            x = x.to(torch.long if self.config.token_dtype == "int64" else torch.int32)
            slot = None  # a converted copy, no longer a view of the buffer
        tag = reader.tag(slot)
        if tag is not None:
            meta["_slot"] = tag  # a view of a reused buffer: the main process reports when it drops it
            offsets = reader.offsets(slot, x)
            if offsets is not None:  # the main process maps that buffer already: only where the rows lie travels
                meta["_view"], x = offsets, None
        meta.update({"epoch": self.epoch, "worker_role": role, "worker_batch": batch})
        return x, meta


def _slice(meta: dict, a: int, b: int) -> dict:
    return {k: v[a:b] for k, v in meta.items()}


def read_threads(config: LoaderConfig, workers: int) -> int:
    """A process's read threads: the configured number, or its cores shared out over the
    DataLoader workers (measured on 2 cores: 2 workers x 1 thread beat 2 x 2 by ~3%)."""
    if config.read_threads is not None:
        return config.read_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(workers, 1)))
