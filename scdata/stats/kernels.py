"""Compiled kernels for the statistics passes, on each chunk's non-zeros (``nonzeros``).

A chunk of X is about 2% non-zero; ``nonzeros`` gives its non-zeros gene by gene in row order
(read from the chunk's bit planes, or compacted from a decoded block), and the kernels here work
per non-zero only:

1. each non-zero is divided by its cell's normalize_total divisor (``nonzeros.normalized``) and
   numpy takes the log1p of the whole chunk's at once (numpy's SIMD log1p, the function scanpy
   applies, about 3x a scalar one);
2. ``_reduce_moments`` sums per gene and per run of rows of one group in registers, then makes a
   second pass for the squared deviations from the group mean (zeros contribute
   ``(n - nnz) * mean**2``); chunks' partials then merge with Chan's formula
   (``moments.merge_moments``).

The compiled kernels release the GIL and numpy's ufuncs do too, so the threads of one Dask worker
run them in parallel.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from .nonzeros import Nonzeros, normalized

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


@njit(cache=True, nogil=True, inline="always")
def _run_end(rows: np.ndarray, group: np.ndarray, i: int, hi: int) -> int:
    """The end of the run of entries from ``i`` whose rows are in ``i``'s group."""
    k = group[rows[i]]
    j = i + 1
    while j < hi and group[rows[j]] == k:
        j += 1
    return j


@njit(cache=True, nogil=True, inline="always")
def _run_sums(values: np.ndarray, normalized: np.ndarray, logged: np.ndarray, lo: int, hi: int, heap: np.ndarray,
              keep_top: bool, largest):
    """Sums over entries ``[lo, hi)`` on the three scales and of squared counts, in registers, and
    the largest count so far; counts above the heap's root enter the heap (its root stays in a
    register)."""
    s0 = s1 = s2 = sq = 0.0
    smallest_kept = heap[0] if keep_top else 0
    for j in range(lo, hi):
        x = values[j]
        value = np.float64(x)
        s0 += value
        s1 += normalized[j]
        s2 += logged[j]
        sq += value * value
        if x > largest:
            largest = x
        if keep_top and x > smallest_kept:
            _replace_heap_root(heap, x)
            smallest_kept = heap[0]
    return s0, s1, s2, sq, largest


@njit(cache=True, nogil=True, inline="always")
def _run_deviations(values: np.ndarray, normalized: np.ndarray, logged: np.ndarray, lo: int, hi: int,
                    mean0: float, mean1: float, mean2: float):
    """Squared deviations of entries ``[lo, hi)`` from the three scales' means."""
    a0 = a1 = a2 = 0.0
    for j in range(lo, hi):
        d = np.float64(values[j]) - mean0
        a0 += d * d
        d = normalized[j] - mean1
        a1 += d * d
        d = logged[j] - mean2
        a2 += d * d
    return a0, a1, a2


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
            k, j = group[rows[i]], _run_end(rows, group, i, hi)
            s0, s1, s2, sq, largest = _run_sums(values, normalized, logged, i, j, top[g], keep_top, largest)
            sums[0, k, g] += s0
            sums[1, k, g] += s1
            sums[2, k, g] += s2
            squares[k, g] += sq
            nnz[k, g] += j - i
            i = j
        max_count[g] = largest
        i = lo
        while i < hi:  # second pass: squared deviations from the group means
            k, j = group[rows[i]], _run_end(rows, group, i, hi)
            n = group_n[k]
            a0, a1, a2 = _run_deviations(values, normalized, logged, i, j, sums[0, k, g] / n, sums[1, k, g] / n,
                                         sums[2, k, g] / n)
            m2[0, k, g] += a0
            m2[1, k, g] += a1
            m2[2, k, g] += a2
            i = j
        _add_zeros_share(g, group_n, nnz, sums, m2)


@njit(cache=True, nogil=True, inline="always")
def _add_zeros_share(g: int, group_n: np.ndarray, nnz: np.ndarray, sums: np.ndarray, m2: np.ndarray) -> None:
    """Gene g's zeros in each group add ``(n - nnz) * mean**2`` to its M2."""
    for k in range(group_n.shape[0]):
        zeros = group_n[k] - nnz[k, g]
        if zeros and nnz[k, g]:
            for s in range(N_SCALES):
                mean = sums[s, k, g] / group_n[k]
                m2[s, k, g] += zeros * mean * mean


@njit(cache=True, nogil=True)
def _reduce_one_group(starts: np.ndarray, values: np.ndarray, normalized: np.ndarray, logged: np.ndarray, n: float,
                      sums: np.ndarray, m2: np.ndarray, nnz: np.ndarray, max_count: np.ndarray, squares: np.ndarray,
                      top: np.ndarray) -> None:
    """``_reduce_moments`` for a chunk whose rows are all one group (most chunks: experiments are
    contiguous): each gene's entries are one run, found without a group lookup per non-zero."""
    keep_top = top.shape[1] > 0
    group_n = np.full(1, n)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        s0, s1, s2, sq, largest = _run_sums(values, normalized, logged, lo, hi, top[g], keep_top, 0)
        sums[0, 0, g], sums[1, 0, g], sums[2, 0, g] = 0.0 + s0, 0.0 + s1, 0.0 + s2
        squares[0, g] = 0.0 + sq
        nnz[0, g] = hi - lo
        max_count[g] = largest
        a0, a1, a2 = _run_deviations(values, normalized, logged, lo, hi, sums[0, 0, g] / n, sums[1, 0, g] / n,
                                     sums[2, 0, g] / n)
        m2[0, 0, g], m2[1, 0, g], m2[2, 0, g] = 0.0 + a0, 0.0 + a1, 0.0 + a2
        _add_zeros_share(g, group_n, nnz, sums, m2)


def _scale_buffers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's normalized and log1p buffers for ``size`` non-zeros (allocated once at the
    largest size seen)."""
    held = getattr(_BUFFERS, "scales", None)
    if held is None or held[0].shape[0] < size:
        held = _BUFFERS.scales = (np.empty(size, np.float64), np.empty(size, np.float64))
    return held


def gene_moments(nonzeros: Nonzeros, divisor: np.ndarray, group: np.ndarray, group_n: np.ndarray,
                 sums: np.ndarray, m2: np.ndarray, nnz: np.ndarray, max_count: np.ndarray,
                 squares: np.ndarray, top: np.ndarray) -> None:
    """Per-gene moments of one chunk on the three scales, from its ``nonzeros``.

    ``divisor[r]``: cell r's total / target_sum (normalized value = count / divisor); ``group[r]``:
    its group in ``0..n_groups-1`` with ``group_n`` rows each. Outputs (written, not added):
    ``sums``/``m2`` (3, n_groups, genes), ``nnz`` (n_groups, genes), ``max_count`` (genes,),
    ``squares`` (n_groups, genes): sums of squared counts (exact for integers). ``top`` (genes, M)
    is updated, not written: per gene a min-heap of the M largest counts seen (0: an empty slot),
    so Seurat v3 can clip the few counts above its cut-off without reading X again.
    """
    starts, rows, values = nonzeros
    norm_buffer, logged = _scale_buffers(len(values))
    scaled = normalized(rows, values, divisor, norm_buffer)
    logged = np.log1p(scaled, out=logged[: len(values)])
    if len(group_n) == 1:
        _reduce_one_group(starts, values, scaled, logged, group_n[0], sums, m2, nnz, max_count, squares, top)
    else:
        _reduce_moments(starts, rows, values, scaled, logged, group, group_n, sums, m2, nnz, max_count, squares, top)


@njit(cache=True, nogil=True)
def _clipped_sums(starts: np.ndarray, rows: np.ndarray, values: np.ndarray, group: np.ndarray, clips: np.ndarray,
                  sums: np.ndarray, squares: np.ndarray) -> None:
    for g in range(starts.shape[0] - 1):
        for e in range(starts[g], starts[g + 1]):
            k = group[rows[e]]
            value = min(np.float64(values[e]), clips[k, g])
            sums[k, g] += value
            squares[k, g] += value * value


def clipped_gene_sums(nonzeros: Nonzeros, group: np.ndarray, clips: np.ndarray, sums: np.ndarray,
                      squares: np.ndarray) -> None:
    """Seurat v3's clipped sums: per group k and gene g, add ``min(x, clips[k, g])`` and its square
    over the chunk's ``nonzeros`` (zeros add nothing since clips are >= 0)."""
    _clipped_sums(*nonzeros, group, clips, sums, squares)

