"""Which cells each (rank, worker) yields in an epoch, in which order (pure index arithmetic).

The epoch's order is built from the store's chunk rows ("blocks"), so reads stay chunk-aligned:

1. the blocks holding selected cells are permuted (seeded by seed and epoch);
2. consecutive blocks form buffers of ``buffer_blocks``; the cells of a buffer are shuffled
   together (the loader holds one buffer in memory and serves batches from it);
3. the concatenation is the epoch sequence S of N cells. Rank r of R takes the contiguous slice
   ``S[r*M:(r+1)*M]`` with ``M = N // R`` (equal counts per rank; the ``N % R`` cells at the end of
   S are not served that epoch, a different set each epoch);
4. worker w of W takes a contiguous share of its rank's slice (sizes differ by at most one cell)
   and cuts it into batches, so DataLoader's round-robin over workers yields every cell of the
   rank exactly once.

Nothing here imports torch or zarr; tests check it against brute force.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class EpochPlan:
    """The shuffled order of an epoch, grouped by buffer for reading."""

    order: np.ndarray  # global row indices, the epoch sequence S
    buffer_starts: np.ndarray  # offsets into ``order`` where each buffer begins (plus len(order) at the end)


def epoch_plan(rows: np.ndarray, block_rows: int, buffer_blocks: int, seed: int, epoch: int) -> EpochPlan:
    """Shuffle selected ``rows`` (sorted global row indices) for one epoch."""
    if block_rows <= 0 or buffer_blocks <= 0:
        raise ValueError("block_rows and buffer_blocks must be positive")
    rng = np.random.default_rng([seed, epoch])
    blocks = rows // block_rows
    unique_blocks, first = np.unique(blocks, return_index=True)
    bounds = np.r_[first, len(rows)]
    block_order = rng.permutation(len(unique_blocks))
    parts, starts = [], [0]
    for b0 in range(0, len(block_order), buffer_blocks):
        members = block_order[b0 : b0 + buffer_blocks]
        cells = np.concatenate([rows[bounds[i] : bounds[i + 1]] for i in members])
        parts.append(cells[rng.permutation(len(cells))])
        starts.append(starts[-1] + len(cells))
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return EpochPlan(order, np.asarray(starts, dtype=np.int64))


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
    """Positions in the epoch sequence served by one DataLoader worker of one rank."""
    lo, hi = rank_slice(n, world, rank)
    a, b = share(hi - lo, workers, worker)
    return lo + a, lo + b


def batches_consumed_per_worker(consumed: int, workers: int) -> list[int]:
    """After ``consumed`` batches of a round-robin DataLoader, how many came from each worker role."""
    return [consumed // workers + (1 if w < consumed % workers else 0) for w in range(workers)]


def segments(plan: EpochPlan, lo: int, hi: int) -> list[tuple[int, int]]:
    """Split positions ``[lo, hi)`` at buffer boundaries: each piece is read from one buffer."""
    out = []
    pos = lo
    k = int(np.searchsorted(plan.buffer_starts, lo, side="right")) - 1
    while pos < hi:
        end = min(hi, int(plan.buffer_starts[k + 1]))
        out.append((pos, end))
        pos, k = end, k + 1
    return out
