"""Compiled kernels for the statistics passes: one scan of each decoded chunk, no entry lists.

Each chunk of X is decoded into a (genes, rows) int16 block (the store's gene-major chunk order).
Extracting its non-zeros as (gene, cell, value) arrays and reducing those with numpy costs more
than decoding it; these kernels read each block once, in memory order, and accumulate per gene
directly. They release the GIL, so the threads of one Dask worker run them in parallel.

Per gene and per group of rows (the batches present in the chunk row) the moments kernel makes
two passes over the gene's values, which sit together in cache: sums first, then squared
deviations from the group mean (zeros contribute ``(n - nnz) * mean**2``); blocks' partials
then merge with Chan's formula (``moments.merge_moments``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

N_SCALES = 3
"""counts, normalize_total values, and their log1p (``stats.SCALES`` order)."""


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
    n_genes, n_rows = block.shape
    n_groups = group_n.shape[0]
    local_sum = np.zeros((N_SCALES, n_groups))
    local_squares = np.zeros(n_groups)
    local_nnz = np.zeros(n_groups, dtype=np.int64)
    keep_top = top.shape[1] > 0
    rows = np.empty(n_rows, dtype=np.int64)
    values = np.empty((N_SCALES, n_rows))
    for g in range(n_genes):
        local_sum[:] = 0.0
        local_squares[:] = 0.0
        local_nnz[:] = 0
        largest = 0
        found = 0
        for r in range(n_rows):  # first pass: the gene's non-zeros, kept for the second, and sums
            x = block[g, r]
            if x != 0:
                k = group[r]
                value = np.float64(x)
                normalized = value / divisor[r]
                logged = np.log1p(normalized)
                rows[found] = r
                values[0, found] = value
                values[1, found] = normalized
                values[2, found] = logged
                found += 1
                local_sum[0, k] += value
                local_sum[1, k] += normalized
                local_sum[2, k] += logged
                local_squares[k] += value * value
                local_nnz[k] += 1
                if x > largest:
                    largest = x
                if keep_top and x > top[g, 0]:
                    _replace_heap_root(top[g], x)
        max_count[g] = largest
        for k in range(n_groups):
            nnz[k, g] = local_nnz[k]
            squares[k, g] = local_squares[k]
            for s in range(N_SCALES):
                sums[s, k, g] = local_sum[s, k]
                m2[s, k, g] = 0.0
        for i in range(found):  # second pass: squared deviations from the group means
            k = group[rows[i]]
            for s in range(N_SCALES):
                d = values[s, i] - local_sum[s, k] / group_n[k]
                m2[s, k, g] += d * d
        for k in range(n_groups):  # the zeros' share: (n - nnz) * mean**2
            zeros = group_n[k] - local_nnz[k]
            if zeros and local_nnz[k]:
                for s in range(N_SCALES):
                    mean = local_sum[s, k] / group_n[k]
                    m2[s, k, g] += zeros * mean * mean


@njit(cache=True, nogil=True)
def clipped_gene_sums(block: np.ndarray, group: np.ndarray, clips: np.ndarray, sums: np.ndarray,
                      squares: np.ndarray) -> None:
    """Seurat v3's clipped sums: per group k and gene g, add ``min(x, clips[k, g])`` and its square
    over the block's non-zeros (zeros add nothing since clips are >= 0)."""
    n_genes, n_rows = block.shape
    for g in range(n_genes):
        for r in range(n_rows):
            x = block[g, r]
            if x != 0:
                k = group[r]
                value = min(np.float64(x), clips[k, g])
                sums[k, g] += value
                squares[k, g] += value * value
