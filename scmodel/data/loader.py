"""A DataLoader that knows where it is in the epoch: ``state_dict`` / ``load_state_dict``.

The saved position is a set of positions of the epoch's global order (``consumed``: what every
rank has been served, as intervals), so it does not depend on the number of ranks or workers. A
restart with the same ranks, workers and batch size continues in exactly the same order; with
others it serves exactly the cells of the epoch not yet served, each once (see ``partition``).
The state is plain data (ints, lists, dicts), loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from .buffers import ReleaseCounter
from .dataset import StoreDataset
from .kernels import warm
from .partition import as_intervals, n_positions, served_intervals, union
from .ranks import rank_and_world

ORDER_KEYS = ("seed", "n_cells", "buffer_blocks", "shuffle", "block_rows")
CONTROL_INTERVALS = 256
"""Start intervals a persistent worker can be told (a position resumed many times over may have more)."""
"""What fixes an epoch's order: a state saved under other values cannot be resumed."""


def pin_memory(batch):
    """Page-locked copies of a batch's tensors (what DataLoader's ``pin_memory`` does), when CUDA is there."""
    if not torch.cuda.is_available():
        return batch
    x, meta = batch
    return x.pin_memory(), {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in meta.items()}


def as_handed(item):
    """DataLoader's collate for hand-offs: none. Its default (``default_convert``) would make the
    numpy columns tensors, each one more shared-memory segment and file descriptor per hand-off."""
    return item


def _cut(v, a: int, b: int):
    if isinstance(v, np.ndarray):
        return torch.from_numpy(v[a:b]) if v.dtype.kind in "iuf" else v[a:b]
    return v[a:b] if isinstance(v, torch.Tensor) else v


def split_batches(item, batch_size: int):
    """A worker's hand-off cut into batches: views of its tensors and arrays (numeric numpy
    columns become tensors, as in-process batches have them)."""
    x, meta = item
    first = meta.get("worker_batch", 0)
    for i, a in enumerate(range(0, len(x), batch_size)):
        b = a + batch_size
        part = {k: _cut(v, a, b) for k, v in meta.items()}
        part["worker_batch"] = first + i
        yield x[a:b], part


class StoreDataLoader:
    """Iterates a ``StoreDataset`` through torch's DataLoader (workers, pinning, prefetch) and
    counts the batches handed out, for an exact mid-epoch resume."""

    def __init__(self, dataset: StoreDataset, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, multiprocessing_context=None):
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.consumed = 0
        self._workers = None  # (DataLoader with persistent workers, ReleaseCounter, control tensor)

    def __len__(self) -> int:
        return self.dataset.batches_per_rank(self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.consumed = 0

    def __iter__(self):
        size = self.dataset.config.batch_size
        counter = None
        if self.num_workers:
            loader, counter = self._worker_iterator()
        else:  # in-process: the dataset's batches are already tensors, DataLoader would only add overhead
            loader = map(pin_memory, iter(self.dataset)) if self.pin_memory else iter(self.dataset)
        self.consumed = self.dataset.resume_batches
        for item in loader:
            tag = item[1].pop("_slot", None)
            if tag is not None:
                item = (counter.receive(item[0], tag, item[1].pop("_view", None)), item[1])
            for i, batch in enumerate(split_batches(item, size)):
                self.consumed += 1
                yield batch
                if i == 0 and counter is not None:
                    counter.poll()  # the previous hand-off's last batch has just been let go: its slot is free
            del item
        self.dataset.reset_position()  # the epoch is done: iterating again serves it whole

    def _worker_iterator(self):
        """An iteration over the workers, which persist across epochs: each new epoch tells them its
        epoch and position through a shared control block, instead of starting new processes (a
        fork, imports and kernel loading each time) and new shared-memory buffers."""
        if len(self.dataset.start) > CONTROL_INTERVALS:
            self._shutdown()  # a position too fragmented for the control block: fresh workers take it by pickle
            return self._start_workers(persistent=False)
        if self._workers is None:
            return self._start_workers(persistent=True)
        loader, counter, control = self._workers
        self.dataset.write_control(control)
        return iter(loader), counter

    def _start_workers(self, persistent: bool):
        warm()  # forked workers inherit the compiled kernels
        counter = ReleaseCounter(self.num_workers)
        control = torch.zeros(3 + 2 * CONTROL_INTERVALS, dtype=torch.int64).share_memory_()
        self.dataset.write_control(control) if persistent else None
        self.dataset.release_flags, self.dataset.control = counter.flags, control if persistent else None
        extra = {"prefetch_factor": self.prefetch_factor} if self.prefetch_factor else {}
        loader = DataLoader(self.dataset, batch_size=None, collate_fn=as_handed, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, multiprocessing_context=self.multiprocessing_context,
                            persistent_workers=persistent, **extra)
        it = iter(loader)  # starts the workers, which take their copy of the dataset now
        self.dataset.release_flags, self.dataset.control = None, None
        if persistent:
            self._workers = (loader, counter, control)
        return it, counter

    def _shutdown(self) -> None:
        if self._workers is not None:
            loader = self._workers[0]
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
            self._workers = None

    def __del__(self):
        try:
            self._shutdown()
        except Exception:
            pass

    # ---- position ---------------------------------------------------------------------------

    def _layout(self) -> dict:
        _, world = rank_and_world()
        workers = max(self.num_workers, 1)
        cfg = self.dataset.config
        return {"world": world, "workers": workers, "batch_size": cfg.batch_size, "drop_last": cfg.drop_last,
                "handoff": self.dataset.handoff_batches(self.num_workers)}

    def _order(self) -> dict:
        cfg = self.dataset.config
        return {"seed": cfg.seed, "n_cells": int(len(self.dataset.rows)), "buffer_blocks": cfg.buffer_blocks,
                "shuffle": cfg.shuffle, "block_rows": int(self.dataset.block_rows)}

    def consumed_positions(self) -> np.ndarray:
        """Positions of the epoch order served so far by every rank (ranks step together)."""
        layout = self._layout()
        cuts = self.dataset.handoff_cuts() if layout["handoff"] > 1 else ()
        served = served_intervals(self.dataset.remaining(), layout["world"], layout["workers"], layout["batch_size"],
                                  layout["drop_last"], layout["handoff"], self.consumed, cuts)
        return union(self.dataset.start, served)

    def state_dict(self) -> dict:
        consumed = self.consumed_positions()
        return {"epoch": self.dataset.epoch, **self._order(), "manifest_version": self.dataset.manifest_version,
                "num_workers": self.num_workers, "layout": self._layout(), "batches": self.consumed,
                "start": self.dataset.start.tolist(), "consumed": consumed.tolist(),
                "cells_consumed": n_positions(consumed)}

    def load_state_dict(self, state: dict) -> None:
        order = self._order()
        if "consumed" not in state:
            raise ValueError("cannot resume exactly: the checkpoint's loader state predates scale-free positions "
                             "(no 'consumed'); restart the epoch")
        mismatched = {k: (state.get(k), v) for k, v in order.items() if state.get(k) != v}
        if mismatched:
            raise ValueError(f"cannot resume exactly: the epoch order differs from the checkpoint's in {mismatched} "
                             "(saved, now)")
        self.dataset.epoch = state["epoch"]
        if state["layout"] == self._layout():  # same scale: continue in exactly the same order
            self.dataset.start = as_intervals(state["start"])
            self.dataset.resume_batches = state["batches"]
        else:  # another scale: the cells not yet served, split over this layout
            self.dataset.start = as_intervals(state["consumed"])
            self.dataset.resume_batches = 0
        self.consumed = self.dataset.resume_batches
