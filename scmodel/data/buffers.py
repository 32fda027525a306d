"""Shuffle buffers that are reused instead of allocated per buffer.

A fresh multi-MB buffer costs a page fault per page on first write: measured on HVG rows,
filling a fresh ``torch.empty`` buffer took 4.4x as long as filling a reused one (numpy's
allocation, which asks for huge pages, 1.7x), and a fresh shared-memory buffer, which is what a
DataLoader worker hands over, 2.2x as long again. Batches are views of a buffer, so a buffer may
be reused only once nothing reads it any more:

* ``BufferPool`` (in-process): its reference count says so; a caller that keeps batches simply
  gets new buffers.
* ``SharedRing`` (a DataLoader worker): the main process says so. Each hand-off that is a view of
  a ring slot carries ``(worker, slot, generation)``; ``StoreDataLoader`` counts, per slot, the
  hand-offs nothing uses any more (their storage's use count) into a shared int64 array, and the
  worker reuses a slot once that count equals the number of views it handed out from it and it
  is done with the slot itself. Without that array (the dataset iterated by a plain DataLoader) every buffer is new.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

RING_SLOTS = 4
"""Buffers a worker keeps: one being filled, one read ahead, and two whose hand-offs are queued."""


def shared_buffer(shape: tuple[int, int], dtype) -> torch.Tensor:
    """An uninitialized tensor in shared memory: torch hands it to the main process by handle."""
    dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
    itemsize = torch.empty(0, dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(max(1, shape[0] * shape[1] * itemsize))
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class BufferPool:
    """In-process buffers, reused once no batch (or anything else) refers to them."""

    def __init__(self, capacity: int, keep: int = 3):
        self.capacity, self.keep = capacity, keep
        self.arrays: list[np.ndarray] = []

    def get(self, rows: int, width: int, dtype) -> tuple[torch.Tensor, None]:
        for i in range(len(self.arrays)):
            if sys.getrefcount(self.arrays[i]) != 2:  # the list and getrefcount's argument: nobody else
                continue
            a = self.arrays[i]
            if a.shape[0] >= rows and a.shape[1] == width and a.dtype == dtype:
                return torch.from_numpy(a[:rows]), None
        a = np.empty((max(rows, self.capacity), width), dtype)
        if len(self.arrays) < self.keep:
            self.arrays.append(a)
        return torch.from_numpy(a[:rows]), None

    def done(self, slot) -> None:
        pass


class SharedRing:
    """A worker's shared-memory buffers, reused when the main process has dropped their hand-offs."""

    def __init__(self, capacity: int, flags: torch.Tensor | None, worker: int, keep: int = RING_SLOTS):
        self.capacity, self.flags, self.worker = capacity, flags, worker
        self.keep = keep if flags is not None else 0
        self.slots: list[dict] = []

    def get(self, rows: int, width: int, dtype) -> tuple[torch.Tensor, tuple | None]:
        tdtype = torch.from_numpy(np.zeros(0, dtype)).dtype
        for i, slot in enumerate(self.slots):
            if slot["views"] is not None and self._released(i, slot) and slot["buffer"].shape[1] == width \
                    and slot["buffer"].dtype == tdtype and len(slot["buffer"]) >= rows:
                slot["gen"] += 1
                slot["views"] = None
                return slot["buffer"][:rows], (i, slot["gen"])
        if len(self.slots) < self.keep:
            self.slots.append({"buffer": shared_buffer((max(rows, self.capacity), width), dtype), "gen": 1,
                               "views": None, "handed": 0})
            return self.slots[-1]["buffer"][:rows], (len(self.slots) - 1, 1)
        return shared_buffer((rows, width), dtype), None

    def tag(self, slot: tuple) -> list[int]:
        """The tag of a hand-off that is a view of ``slot``'s buffer (counted)."""
        i, gen = slot
        self.slots[i]["handed"] += 1
        return [self.worker, i, gen]

    def done(self, slot: tuple) -> None:
        """The worker no longer reads ``slot``'s buffer: it is free once its hand-offs are dropped."""
        i, gen = slot
        s = self.slots[i]
        if s["gen"] == gen:
            s["views"], s["handed"] = s["handed"], 0

    def _released(self, i: int, slot: dict) -> bool:
        if slot["views"] == 0:
            return True
        value = int(self.flags[self.worker, i])
        return value >> 32 == slot["gen"] and value & 0xFFFFFFFF == slot["views"]


class ReleaseCounter:
    """The main process's side: reports, per (worker, slot, generation), the hand-offs nothing in
    this process uses any more. A hand-off's storage is watched rather than its tensor: batch
    views, and numpy arrays made from them, hold the storage (its use count) but not
    necessarily the tensor object. Polled as hand-offs arrive."""

    def __init__(self, workers: int):
        self.flags = torch.zeros((max(workers, 1), RING_SLOTS), dtype=torch.int64).share_memory_()
        self.live: list[tuple[torch.UntypedStorage, tuple[int, int, int]]] = []

    def watch(self, x: torch.Tensor, tag) -> None:
        self.live.append((x.untyped_storage(), tuple(int(v) for v in tag)))
        self.poll()

    def poll(self) -> None:
        ours: dict[int, int] = {}
        for storage, _ in self.live:
            ours[storage._cdata] = ours.get(storage._cdata, 0) + 1
        keep = []
        for storage, tag in self.live:
            if torch._C._storage_Use_Count(storage._cdata) > ours[storage._cdata]:
                keep.append((storage, tag))
            else:
                self._dropped(*tag)
        self.live = keep

    def _dropped(self, worker: int, slot: int, gen: int) -> None:
        value = int(self.flags[worker, slot])
        self.flags[worker, slot] = value + 1 if value >> 32 == gen else (gen << 32) | 1
