"""Compiled kernels for the statistics passes: one scan of each decoded chunk, no entry lists.

Each chunk of X is decoded into a (genes, rows) int16 block (the store's gene-major chunk order),
about 2% of it non-zero. A pass over a block costs what it does per entry, so the kernels do as
little as possible per zero and vectorize the work per non-zero:

1. ``_compact`` gathers each gene's non-zeros in row order, skipping eight zeros at a time (one
   OR of eight values, one branch), into per-thread buffers (a CSR view of the block), and
   divides them by their cells' normalize_total divisors;
2. numpy takes their log1p over the whole block at once (numpy's SIMD log1p, the function
   scanpy applies, about 3x a scalar one);
3. ``_reduce_moments`` sums per gene and per run of rows of one group in registers, then makes a
   second pass for the squared deviations from the group mean (zeros contribute
   ``(n - nnz) * mean**2``); blocks' partials then merge with Chan's formula
   (``moments.merge_moments``).

The compiled kernels release the GIL and numpy's ufuncs do too, so the threads of one Dask worker
run them in parallel.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

N_SCALES = 3
"""counts, normalize_total values, and their log1p (``stats.SCALES`` order)."""
_BUFFERS = threading.local()


@njit(cache=True, nogil=True)
def _replace_heap_root(heap: np.ndarray, x) -> None:
    """Put ``x`` in place of the smallest value of the min-heap ``heap`` (``x`` > ``heap[0]``)."""
    size = heap.shape[0]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= x:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = x


@njit(cache=True, nogil=True)
def _compact(block: np.ndarray, divisor: np.ndarray, rows: np.ndarray, values: np.ndarray, normalized: np.ndarray,
             starts: np.ndarray) -> int:
    """Gene g's non-zeros of the (genes, rows) ``block`` go to ``rows``/``values`` at
    ``starts[g]:starts[g + 1]``, in row order, and ``normalized`` gets each divided by its cell's
    ``divisor``; returns their number. Branch-free within a group of eight entries that holds a
    non-zero; a group of zeros costs one test."""
    n_genes, n_rows = block.shape
    whole = n_rows - n_rows % 8
    found = 0
    for g in range(n_genes):
        starts[g] = found
        for r0 in range(0, whole, 8):
            if (block[g, r0] | block[g, r0 + 1] | block[g, r0 + 2] | block[g, r0 + 3]
                    | block[g, r0 + 4] | block[g, r0 + 5] | block[g, r0 + 6] | block[g, r0 + 7]) == 0:
                continue
            for r in range(r0, r0 + 8):
                x = block[g, r]
                rows[found] = r
                values[found] = x
                found += x != 0
        for r in range(whole, n_rows):
            x = block[g, r]
            rows[found] = r
            values[found] = x
            found += x != 0
    starts[n_genes] = found
    for i in range(found):  # scanpy's normalize_total: x / (total / target_sum)
        normalized[i] = np.float64(values[i]) / divisor[rows[i]]
    return found


@njit(cache=True, nogil=True)
def _reduce_moments(starts: np.ndarray, rows: np.ndarray, values: np.ndarray, normalized: np.ndarray,
                    logged: np.ndarray, group: np.ndarray, group_n: np.ndarray, sums: np.ndarray, m2: np.ndarray,
                    nnz: np.ndarray, max_count: np.ndarray, squares: np.ndarray, top: np.ndarray) -> None:
    """Per-gene outputs of ``gene_moments`` from the compacted non-zeros. Within a run of rows of
    one group the sums stay in registers and reach the group's totals once per run (a group that
    is one run per block, as experiments are, sums exactly as an element-wise loop would)."""
    n_genes = starts.shape[0] - 1
    n_groups = group_n.shape[0]
    keep_top = top.shape[1] > 0
    for g in range(n_genes):
        lo, hi = starts[g], starts[g + 1]
        for k in range(n_groups):
            nnz[k, g] = 0
            squares[k, g] = 0.0
            for s in range(N_SCALES):
                sums[s, k, g] = 0.0
                m2[s, k, g] = 0.0
        largest = 0
        i = lo
        while i < hi:  # first pass: sums, one run of a group at a time
            k = group[rows[i]]
            s0 = s1 = s2 = sq = 0.0
            j = i
            while j < hi and group[rows[j]] == k:
                x = values[j]
                value = np.float64(x)
                s0 += value
                s1 += normalized[j]
                s2 += logged[j]
                sq += value * value
                if x > largest:
                    largest = x
                if keep_top and x > top[g, 0]:
                    _replace_heap_root(top[g], x)
                j += 1
            sums[0, k, g] += s0
            sums[1, k, g] += s1
            sums[2, k, g] += s2
            squares[k, g] += sq
            nnz[k, g] += j - i
            i = j
        max_count[g] = largest
        i = lo
        while i < hi:  # second pass: squared deviations from the group means
            k = group[rows[i]]
            n = group_n[k]
            mean0, mean1, mean2 = sums[0, k, g] / n, sums[1, k, g] / n, sums[2, k, g] / n
            a0 = a1 = a2 = 0.0
            j = i
            while j < hi and group[rows[j]] == k:
                d = np.float64(values[j]) - mean0
                a0 += d * d
                d = normalized[j] - mean1
                a1 += d * d
                d = logged[j] - mean2
                a2 += d * d
                j += 1
            m2[0, k, g] += a0
            m2[1, k, g] += a1
            m2[2, k, g] += a2
            i = j
        for k in range(n_groups):  # the zeros' share: (n - nnz) * mean**2
            zeros = group_n[k] - nnz[k, g]
            if zeros and nnz[k, g]:
                for s in range(N_SCALES):
                    mean = sums[s, k, g] / group_n[k]
                    m2[s, k, g] += zeros * mean * mean


def _buffers(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This thread's compaction buffers for a block of ``size`` entries: rows, counts,
    normalized values, log1p values. Allocated once at the largest size seen; only the pages a
    block's non-zeros touch are ever faulted in."""
    held = getattr(_BUFFERS, "moments", None)
    if held is None or held[0].shape[0] < size:
        held = _BUFFERS.moments = (np.empty(size, np.int32), np.empty(size, np.int16),
                                   np.empty(size, np.float64), np.empty(size, np.float64))
    return held


def gene_moments(block: np.ndarray, divisor: np.ndarray, group: np.ndarray, group_n: np.ndarray,
                 sums: np.ndarray, m2: np.ndarray, nnz: np.ndarray, max_count: np.ndarray,
                 squares: np.ndarray, top: np.ndarray) -> None:
    """Per-gene moments of one (genes, rows) block on the three scales.

    ``divisor[r]``: cell r's total / target_sum (normalized value = count / divisor); ``group[r]``:
    its group in ``0..n_groups-1`` with ``group_n`` rows each. Outputs (written, not added):
    ``sums``/``m2`` (3, n_groups, genes), ``nnz`` (n_groups, genes), ``max_count`` (genes,),
    ``squares`` (n_groups, genes): sums of squared counts (exact for integers). ``top`` (genes, M)
    is updated, not written: per gene a min-heap of the M largest counts seen (0: an empty slot),
    so Seurat v3 can clip the few counts above its cut-off without reading X again.
    """
    n_genes = block.shape[0]
    rows, values, normalized, logged = _buffers(block.size)
    starts = np.empty(n_genes + 1, np.int64)
    found = _compact(block, divisor, rows, values, normalized, starts)
    rows, values, normalized, logged = rows[:found], values[:found], normalized[:found], logged[:found]
    np.log1p(normalized, out=logged)
    _reduce_moments(starts, rows, values, normalized, logged, group, group_n, sums, m2, nnz, max_count, squares, top)


@njit(cache=True, nogil=True, inline="always")
def _add_clipped(x, k: int, g: int, clips: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> None:
    if x != 0:
        value = min(np.float64(x), clips[k, g])
        sums[k, g] += value
        squares[k, g] += value * value


@njit(cache=True, nogil=True)
def clipped_gene_sums(block: np.ndarray, group: np.ndarray, clips: np.ndarray, sums: np.ndarray,
                      squares: np.ndarray) -> None:
    """Seurat v3's clipped sums: per group k and gene g, add ``min(x, clips[k, g])`` and its square
    over the block's non-zeros (zeros add nothing since clips are >= 0), eight zeros at a time."""
    n_genes, n_rows = block.shape
    whole = n_rows - n_rows % 8
    for g in range(n_genes):
        for r0 in range(0, whole, 8):
            if (block[g, r0] | block[g, r0 + 1] | block[g, r0 + 2] | block[g, r0 + 3]
                    | block[g, r0 + 4] | block[g, r0 + 5] | block[g, r0 + 6] | block[g, r0 + 7]) == 0:
                continue
            for r in range(r0, r0 + 8):
                _add_clipped(block[g, r], group[r], g, clips, sums, squares)
        for r in range(whole, n_rows):
            _add_clipped(block[g, r], group[r], g, clips, sums, squares)
