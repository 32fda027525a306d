"""Which cells each (rank, worker) yields in an epoch, in which order (pure index arithmetic).

The epoch's global order S is built from the store's chunk rows ("blocks"), so reads stay
chunk-aligned:

1. the blocks holding selected cells are permuted (seeded by seed and epoch);
2. consecutive blocks form buffers of ``buffer_blocks``; the cells of a buffer are shuffled
   together (seeded by seed, epoch and buffer, so any buffer is built without the others);
3. the concatenation is S, N cells.

A position in the epoch is the set of positions of S already served, ``consumed`` (sorted
disjoint intervals): it does not depend on how many ranks or workers served them. A layout (R
ranks x W workers) splits the remaining sequence S' (S without ``consumed``, in order) as follows.
Rank r takes the contiguous slice ``S'[r*M:(r+1)*M]`` with ``M = len(S') // R`` (equal counts
per rank; the ``len(S') % R`` cells at the end are not served by this layout); worker w of W takes
a contiguous share of its rank's slice (sizes differ by at most one cell, larger shares first) and
cuts it into batches, grouped ``G`` at a time into hand-offs that DataLoader collects round-robin
(a new group also starts at the batch that begins or crosses into a new buffer). After every
rank served ``k`` batches, which positions were served is a function of (S', R, W, G, the
buffers' starts, k) alone, so a restart with another R or W serves exactly the rest of the
epoch, each cell once.

Nothing here imports torch or zarr; tests check it against brute force.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


class EpochPlan:
    """The shuffled order S of one epoch, built lazily one buffer at a time (a worker holds the
    block order, O(blocks), not the whole order, O(cells))."""

    def __init__(self, rows: np.ndarray, block_rows: int, buffer_blocks: int, seed: int, epoch: int,
                 shuffle: bool = True):
        if block_rows <= 0 or buffer_blocks <= 0:
            raise ValueError("block_rows and buffer_blocks must be positive")
        self.rows = rows
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        blocks = rows // block_rows
        _, first = np.unique(blocks, return_index=True)
        self.bounds = np.r_[first, len(rows)].astype(np.int64)  # cells of selected block i: rows[bounds[i]:bounds[i+1]]
        n_blocks = len(first)
        order = np.random.default_rng([seed, epoch]).permutation(n_blocks) if shuffle else np.arange(n_blocks)
        self.block_order = order
        sizes = np.diff(self.bounds)[order]
        starts = np.arange(0, n_blocks, buffer_blocks)
        per_buffer = np.add.reduceat(sizes, starts) if n_blocks else np.zeros(0, np.int64)
        self.buffer_blocks = buffer_blocks
        self.buffer_starts = np.r_[0, np.cumsum(per_buffer)].astype(np.int64)
        self.buffer_cells = lru_cache(maxsize=4)(self._buffer_cells)

    def __len__(self) -> int:
        return int(self.buffer_starts[-1])

    @property
    def n_buffers(self) -> int:
        return len(self.buffer_starts) - 1

    def _buffer_cells(self, k: int) -> np.ndarray:
        """Global rows of buffer ``k`` in serving order."""
        members = self.block_order[k * self.buffer_blocks : (k + 1) * self.buffer_blocks]
        cells = np.concatenate([self.rows[self.bounds[i] : self.bounds[i + 1]] for i in members])
        if self.shuffle:
            cells = cells[np.random.default_rng([self.seed, self.epoch, 1 + k]).permutation(len(cells))]
        return cells

    def cells(self, a: int, b: int) -> np.ndarray:
        """Global rows at positions ``[a, b)`` of S."""
        parts = [cells for _, cells in self.pieces(np.array([[a, b]], dtype=np.int64))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def order(self) -> np.ndarray:
        """All of S (tests and small stores)."""
        return self.cells(0, len(self))

    def pieces(self, intervals: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(buffer, rows)`` for sorted position intervals, one piece per buffer touched (cells of
        one buffer on both sides of a hole form one piece, so the buffer is read once)."""
        out: list[tuple[int, list]] = []
        for a, b in intervals:
            a, b = int(a), int(b)
            k = int(np.searchsorted(self.buffer_starts, a, side="right")) - 1
            while a < b:
                lo, hi = int(self.buffer_starts[k]), int(self.buffer_starts[k + 1])
                end = min(b, hi)
                part = self.buffer_cells(k)[a - lo : end - lo]
                if out and out[-1][0] == k:
                    out[-1][1].append(part)
                else:
                    out.append((k, [part]))
                a, k = end, k + 1
        return [(k, parts[0] if len(parts) == 1 else np.concatenate(parts)) for k, parts in out]


# ---- sets of positions as sorted disjoint [a, b) intervals ------------------------------------

def as_intervals(value) -> np.ndarray:
    """An (m, 2) int64 array from a list of pairs (what a state dict holds)."""
    arr = np.asarray(value if value is not None else [], dtype=np.int64).reshape(-1, 2)
    return arr


def union(*sets: np.ndarray) -> np.ndarray:
    """Sorted, merged union of interval sets (empty intervals dropped)."""
    arr = np.concatenate([as_intervals(s) for s in sets]) if sets else np.zeros((0, 2), np.int64)
    arr = arr[arr[:, 1] > arr[:, 0]]
    if not len(arr):
        return np.zeros((0, 2), np.int64)
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    out = [list(arr[0])]
    for a, b in arr[1:]:
        if a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.asarray(out, dtype=np.int64)


def complement(consumed: np.ndarray, n: int) -> np.ndarray:
    """Intervals of ``[0, n)`` not in ``consumed``."""
    consumed = union(consumed)
    edges = np.r_[0, consumed.reshape(-1), n].reshape(-1, 2)
    return edges[edges[:, 1] > edges[:, 0]]


def n_positions(intervals: np.ndarray) -> int:
    intervals = as_intervals(intervals)
    return int((intervals[:, 1] - intervals[:, 0]).sum())


def sub_intervals(intervals: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The positions at indices ``[lo, hi)`` of the sequence that ``intervals`` enumerate."""
    intervals = as_intervals(intervals)
    lengths = intervals[:, 1] - intervals[:, 0]
    offsets = np.r_[0, np.cumsum(lengths)]
    out = []
    for i in range(int(np.searchsorted(offsets, lo, side="right")) - 1, len(intervals)):
        if offsets[i] >= hi:
            break
        a = intervals[i, 0] + max(lo - offsets[i], 0)
        b = intervals[i, 0] + min(hi - offsets[i], lengths[i])
        if b > a:
            out.append((a, b))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


# ---- layouts ---------------------------------------------------------------------------------

def share(n: int, parts: int, index: int) -> tuple[int, int]:
    """``[lo, hi)`` of the ``index``-th of ``parts`` near-equal contiguous shares of ``n``."""
    base, extra = divmod(n, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def rank_slice(n: int, world: int, rank: int) -> tuple[int, int]:
    """Equal counts per rank: ``M = n // world`` cells each, the remainder dropped."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of {world}")
    m = n // world
    return rank * m, (rank + 1) * m


def worker_range(n: int, world: int, rank: int, workers: int, worker: int) -> tuple[int, int]:
    """Indices into the remaining sequence served by one DataLoader worker (role) of one rank."""
    lo, hi = rank_slice(n, world, rank)
    a, b = share(hi - lo, workers, worker)
    return lo + a, lo + b


def n_batches(n_cells: int, batch_size: int, drop_last: bool) -> int:
    return n_cells // batch_size if drop_last else -(-n_cells // batch_size)


def handoff_sizes(batches: int, per_handoff: int, starts=()) -> list[int]:
    """Batches in each hand-off of a worker serving ``batches``: groups of ``per_handoff``, and a
    new group at each batch in ``starts`` (those that begin at or cross into a new buffer, so a
    hand-off is a view of one buffer but for that batch's few cells of the buffer before)."""
    edges = sorted({0, batches} | {int(b) for b in starts if 0 < b < batches})
    sizes = []
    for a, b in zip(edges, edges[1:]):
        full, rest = divmod(b - a, per_handoff)
        sizes += [per_handoff] * full + ([rest] if rest else [])
    return sizes


def positions_before(remaining: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each position ``p`` of S, how many positions of ``remaining`` lie before it: ``p``'s
    place in the remaining sequence S' (buffer starts there are where hand-offs are cut)."""
    remaining = as_intervals(remaining)
    points = np.asarray(points, dtype=np.int64)
    if not len(remaining):
        return np.zeros(len(points), np.int64)
    a, b = remaining[:, 0], remaining[:, 1]
    offsets = np.r_[0, np.cumsum(b - a)]
    i = np.searchsorted(a, points, side="right") - 1
    inside = np.clip(points - a[np.maximum(i, 0)], 0, (b - a)[np.maximum(i, 0)])
    return np.where(i < 0, 0, offsets[np.maximum(i, 0)] + inside)


def role_handoffs(n: int, world: int, rank: int, workers: int, batch_size: int, drop_last: bool, per_handoff: int,
                  cuts: np.ndarray = ()) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Each worker role of a rank over a remaining sequence of ``n``: its range, and the batches of
    each of its hand-offs (``cuts``: positions of S' where a buffer starts)."""
    ranges = [worker_range(n, world, rank, workers, w) for w in range(workers)]
    cuts = np.asarray(cuts, dtype=np.int64)
    items = []
    for lo, hi in ranges:
        inside = cuts[(cuts > lo) & (cuts < hi)]
        items.append(handoff_sizes(n_batches(hi - lo, batch_size, drop_last), per_handoff,
                                   np.unique((inside - lo) // batch_size)))
    return ranges, items


def served_per_role(items: list[list[int]], consumed: int) -> tuple[list[int], int]:
    """After a rank handed out ``consumed`` batches (hand-offs, of ``items[role]`` batches each,
    taken round-robin over the worker roles, exhausted roles skipped, as torch's DataLoader
    does): batches served per role, and the role whose hand-off comes next (the one a resumed
    DataLoader's worker 0 must play)."""
    workers = len(items)
    served = [0] * workers
    left = consumed
    lap = 0
    while left > 0:
        progressed = False
        for role in range(workers):
            if lap >= len(items[role]):
                continue
            progressed = True
            take = min(items[role][lap], left)
            served[role] += take
            left -= take
            if left == 0:
                if take < items[role][lap]:
                    return served, role  # mid hand-off: this role continues it
                return served, _next_role(items, lap, role)
        if not progressed:
            raise ValueError(f"{consumed} batches consumed, but the layout serves only {sum(map(sum, items))}")
        lap += 1
    return served, 0


def _next_role(items: list[list[int]], lap: int, role: int) -> int:
    workers = len(items)
    for step in range(1, workers + 1):
        r = (role + step) % workers
        lap_r = lap + (role + step) // workers
        if lap_r < len(items[r]):
            return r
    return 0


def served_intervals(remaining: np.ndarray, world: int, workers: int, batch_size: int, drop_last: bool,
                     per_handoff: int, consumed: int, cuts: np.ndarray = ()) -> np.ndarray:
    """Positions of S served once every rank of a layout over ``remaining`` handed out
    ``consumed`` batches (ranks step together, as DDP does)."""
    n = n_positions(remaining)
    parts = []
    for rank in range(world):
        ranges, items = role_handoffs(n, world, rank, workers, batch_size, drop_last, per_handoff, cuts)
        served, _ = served_per_role(items, consumed)
        for (lo, hi), b in zip(ranges, served):
            parts.append(sub_intervals(remaining, lo, min(hi, lo + b * batch_size)))
    return union(*parts)
