"""Compiled fill kernels: decoded int16 chunk rows -> depth-scaled float32 rows of a shuffle buffer.

One pass per decoded chunk writes each needed cell straight into its slot of the buffer (the
slot is its place in serving order, so batches are later cut as views, with no gather), scaled
by ``1 / divisor`` (normalize_total). ``log1p`` is applied afterwards to whole row ranges of the
buffer with numpy, whose float32 ``log1p`` is vectorized: measured on HVG rows, scale-then-numpy
took ~0.7x the time of a per-value ``log1p`` lookup table in the kernel, and ~0.5x numpy's
non-zero scan + gather + scatter. The kernels release the GIL: read threads run them in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit


TILE = 32
"""Genes per pass over a block's cells for a gene-major (transposed) chunk: a tile of gene rows
stays in cache while every cell takes its values from it, and each cell's values for the tile
land in one or two cache lines of its output row. A row-major chunk is filled a whole row at a
time (tiling it would re-read every row once per tile)."""


@njit(cache=True, nogil=True)
def _inverse(divisor: np.ndarray, n: int) -> np.ndarray:
    inv = np.ones(n, np.float32)
    if divisor.shape[0] > 0:
        for k in range(n):
            inv[k] = np.float32(1.0) / np.float32(divisor[k])
    return inv


@njit(cache=True, nogil=True)
def fill_rows(chunk: np.ndarray, rows: np.ndarray, slots: np.ndarray, divisor: np.ndarray, col0: int,
              out: np.ndarray, tile: int) -> None:
    """``out[slots[k], col0:col0+w] = chunk[rows[k], :w] / divisor[k]`` with ``w = chunk.shape[1]``.

    ``chunk`` is (rows, genes), C- or F-ordered (a transposed store's chunk is passed as ``.T``);
    values are not scaled when ``divisor`` is empty. ``tile``: genes per pass (``TILE`` for a
    gene-major chunk; the whole width for a row-major one, whose rows are contiguous)."""
    width = chunk.shape[1]
    inv = _inverse(divisor, rows.shape[0])
    for g0 in range(0, width, tile):
        g1 = min(g0 + tile, width)
        for k in range(rows.shape[0]):
            # 1-D slices indexed from 0: the inner loop vectorizes (2-D or offset indexing did not: ~8x slower)
            src = chunk[rows[k], g0:g1]
            dst = out[slots[k], col0 + g0 : col0 + g1]
            f = inv[k]
            for g in range(g1 - g0):
                dst[g] = np.float32(src[g]) * f


@njit(cache=True, nogil=True)
def fill_columns(chunk: np.ndarray, rows: np.ndarray, slots: np.ndarray, divisor: np.ndarray, src: np.ndarray,
                 dst: np.ndarray, out: np.ndarray, tile: int) -> None:
    """``out[slots[k], dst[m]] = chunk[rows[k], src[m]] / divisor[k]``: a gene list's columns of one chunk."""
    inv = _inverse(divisor, rows.shape[0])
    n = src.shape[0]
    for m0 in range(0, n, tile):
        m1 = min(m0 + tile, n)
        for k in range(rows.shape[0]):
            row = chunk[rows[k]]
            target = out[slots[k]]
            f = inv[k]
            for m in range(m0, m1):
                target[dst[m]] = np.float32(row[src[m]]) * f


@njit(cache=True, nogil=True)
def gather_counts(chunk: np.ndarray, rows: np.ndarray, src: np.ndarray, col0: int, out: np.ndarray) -> None:
    """Raw counts ``out[k, col0 + m] = chunk[rows[k], src[m]]`` (the tokenizer path)."""
    for k in range(rows.shape[0]):
        row = chunk[rows[k]]
        target = out[k]
        for m in range(src.shape[0]):
            target[col0 + m] = row[src[m]]


def warm() -> None:
    """Compile (or load from numba's cache) the kernels for the chunk layouts a store has: called
    before DataLoader forks its workers, so each worker does not load them again every epoch."""
    base = np.zeros((4, 4), np.int16)
    rows = slots = np.arange(2, dtype=np.int64)
    divisor = np.ones(2, np.float32)
    out = np.zeros((2, 4), np.float32)
    for chunk in (base, base.T, base[:, :3], base.T[:, :3]):  # row-major, gene-major (transposed), cut
        fill_rows(chunk, rows, slots, divisor, 0, out, TILE)
        fill_columns(chunk, rows, slots, divisor, rows, rows, out, TILE)
