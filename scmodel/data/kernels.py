"""Compiled fill kernels: decoded int16 chunk rows -> normalized float32 rows of a shuffle buffer.

One pass per decoded chunk writes each needed cell straight into its slot of the buffer (the
slot is its place in serving order, so batches are later cut as views, with no gather):
``log1p(count / divisor)`` for non-zeros, 0 elsewhere. Counts are small integers, so each cell
first tabulates its ``LUT`` smallest values (0 included) and looks them up: 16 ``log1p`` calls a
cell instead of one per non-zero (measured 5x faster on HVG rows, same float32 results).
The kernels release the GIL: the read threads of one process run them in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LUT = 16


@njit(cache=True, nogil=True, inline="always")
def _table(tab: np.ndarray, divisor: np.ndarray, k: int, log: bool) -> np.float32:
    scale = divisor.shape[0] > 0
    inv = np.float32(1.0) / np.float32(divisor[k]) if scale else np.float32(1.0)
    tab[0] = 0.0
    for v in range(1, tab.shape[0]):
        x = np.float32(v) * inv
        tab[v] = np.log1p(x) if log else x
    return inv


@njit(cache=True, nogil=True)
def fill_rows(chunk: np.ndarray, rows: np.ndarray, slots: np.ndarray, divisor: np.ndarray, log: bool,
              col0: int, out: np.ndarray) -> None:
    """``out[slots[k], col0:col0+w] = f(chunk[rows[k], :w])`` with ``w = chunk.shape[1]``.

    ``chunk`` is (rows, genes), C- or F-ordered (a transposed store's chunk is passed as ``.T``);
    ``divisor[k]``: the cell's total / target (values are not scaled when ``divisor`` is empty)."""
    width = chunk.shape[1]
    tab = np.empty(LUT, np.float32)
    for k in range(rows.shape[0]):
        r = rows[k]
        s = slots[k]
        inv = _table(tab, divisor, k, log)
        for g in range(width):
            v = chunk[r, g]
            if v < LUT:
                out[s, col0 + g] = tab[v]
            else:
                x = np.float32(v) * inv
                out[s, col0 + g] = np.log1p(x) if log else x


@njit(cache=True, nogil=True)
def fill_columns(chunk: np.ndarray, rows: np.ndarray, slots: np.ndarray, divisor: np.ndarray, log: bool,
                 src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    """``out[slots[k], dst[m]] = f(chunk[rows[k], src[m]])``: a gene list's columns of one chunk."""
    tab = np.empty(LUT, np.float32)
    for k in range(rows.shape[0]):
        r = rows[k]
        s = slots[k]
        inv = _table(tab, divisor, k, log)
        for m in range(src.shape[0]):
            v = chunk[r, src[m]]
            if v < LUT:
                out[s, dst[m]] = tab[v]
            else:
                x = np.float32(v) * inv
                out[s, dst[m]] = np.log1p(x) if log else x


@njit(cache=True, nogil=True)
def gather_counts(chunk: np.ndarray, rows: np.ndarray, src: np.ndarray, col0: int, out: np.ndarray) -> None:
    """Raw counts ``out[k, col0 + m] = chunk[rows[k], src[m]]`` (the tokenizer path)."""
    for k in range(rows.shape[0]):
        r = rows[k]
        for m in range(src.shape[0]):
            out[k, col0 + m] = chunk[r, src[m]]
