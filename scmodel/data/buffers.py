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

The main process also keeps each slot it has received mapped, and says so in the same array:
the worker then hands over later views of that slot as ``(offset, rows)`` instead of a tensor.
Passing a tensor costs a file descriptor through a socket, an authentication handshake and, in
the main process, a fresh ``mmap`` whose pages fault again when read: measured ~1.2 ms per
hand-off, about 8% of the rate with 8,192-cell hand-offs on 2 cores.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

RING_SLOTS = 6
"""Buffers a worker keeps: one being served, one read ahead, one prefetched for the next epoch,
two whose hand-offs are queued (``prefetch_factor``) and one the main process is letting go."""
RELEASED, MAPPED, RECEIVED = 0, 1, 2
"""Fields of the shared flags, per (worker, slot): hand-offs dropped and hand-offs received (each
generation << 32 | count); whether the main process holds the slot's storage. Hand-offs handed
out but never received were discarded by DataLoader when an iteration was left early."""


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

    def settle(self) -> None:
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

    def settle(self) -> None:
        """At a new iteration: hand-offs the main process never received (DataLoader discards
        those in flight when an iteration is left early) will never be dropped either, so a slot
        waits only for those it received."""
        for i, slot in enumerate(self.slots):
            if self.flags is not None and slot["views"]:
                value = int(self.flags[self.worker, i, RECEIVED])
                slot["views"] = min(slot["views"], value & 0xFFFFFFFF if value >> 32 == slot["gen"] else 0)

    def mapped(self, slot: tuple) -> bool:
        """Whether the main process holds ``slot``'s buffer: a view of it can travel as offsets."""
        return self.flags is not None and bool(self.flags[self.worker, slot[0], MAPPED])

    def done(self, slot: tuple) -> None:
        """The worker no longer reads ``slot``'s buffer: it is free once its hand-offs are dropped."""
        i, gen = slot
        s = self.slots[i]
        if s["gen"] == gen:
            s["views"], s["handed"] = s["handed"], 0

    def _released(self, i: int, slot: dict) -> bool:
        if slot["views"] == 0:
            return True
        value = int(self.flags[self.worker, i, RELEASED])
        return value >> 32 == slot["gen"] and value & 0xFFFFFFFF == slot["views"]


class ReleaseCounter:
    """The main process's side: reports, per (worker, slot, generation), the hand-offs nothing in
    this process uses any more. A hand-off's storage is watched rather than its tensor: batch
    views, and numpy arrays made from them, hold the storage (its use count) but not
    necessarily the tensor object. Polled as hand-offs arrive."""

    def __init__(self, workers: int):
        self.flags = torch.zeros((max(workers, 1), RING_SLOTS, 3), dtype=torch.int64).share_memory_()
        self.live: list[tuple[torch.UntypedStorage, tuple[int, int, int]]] = []
        # (worker, slot): its storage, kept mapped, and dtype
        self.storages: dict[tuple[int, int], tuple[torch.UntypedStorage, torch.dtype]] = {}

    def receive(self, x: torch.Tensor | None, tag, offsets=None) -> torch.Tensor:
        """A hand-off's tensor: ``x`` itself (its slot's storage is kept, and the worker told), or
        the view ``offsets`` describes of a slot received before."""
        worker, slot = int(tag[0]), int(tag[1])
        self._count(worker, slot, int(tag[2]), RECEIVED)
        if offsets is None:
            if (worker, slot) not in self.storages and x.is_shared():  # not a pinned copy: the slot itself
                self.storages[(worker, slot)] = x.untyped_storage(), x.dtype
                self.flags[worker, slot, MAPPED] = 1
        else:
            first, rows, width = (int(v) for v in offsets)
            storage, dtype = self.storages[(worker, slot)]
            x = torch.empty(0, dtype=dtype).set_(storage, first, (rows, width))
        self.watch(x, tag)
        return x

    def watch(self, x: torch.Tensor, tag) -> None:
        self.live.append((x.untyped_storage(), tuple(int(v) for v in tag)))
        self.poll()

    def poll(self) -> None:
        keep = []
        for storage, tag in self.live:
            # a storage has one Python object, however often it is asked for: beyond its reference,
            # each tensor on it (hand-offs, batches, arrays made from them) holds one
            if torch._C._storage_Use_Count(storage._cdata) > 1:
                keep.append((storage, tag))
            else:
                self._count(*tag, RELEASED)
        self.live = keep

    def _count(self, worker: int, slot: int, gen: int, field: int) -> None:
        value = int(self.flags[worker, slot, field])
        self.flags[worker, slot, field] = value + 1 if value >> 32 == gen else (gen << 32) | 1
