"""The non-zeros of X's chunks, gene by gene in row order: what every statistics pass consumes.

A chunk is about 2% non-zero, and a pass costs what it does per stored value, so each chunk is
turned into its non-zeros once (a CSR view of the (genes, rows) chunk) and the passes work on
those. Two ways to get them, same result to the bit:

- from the chunk's bit planes (``bitplanes``), when it is Blosc zstd + bit-shuffle as the store
  writes it: zstd only, no un-shuffle, no scan of the decoded zeros;
- otherwise Blosc-decoded into a reused buffer and scanned by ``_compact``, eight zeros at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numba import njit

from . import bitplanes
from ..store.chunks import ChunkReader

_BUFFERS = threading.local()


class Nonzeros(NamedTuple):
    """Gene g's non-zeros: ``rows[starts[g]:starts[g + 1]]`` (increasing) and their ``values``."""

    starts: np.ndarray
    rows: np.ndarray
    values: np.ndarray


@njit(cache=True, nogil=True)
def _compact(block: np.ndarray, rows: np.ndarray, values: np.ndarray, starts: np.ndarray) -> int:
    """Gene g's non-zeros of the (genes, rows) ``block`` go to ``rows``/``values`` at
    ``starts[g]:starts[g + 1]``, in row order; returns their number. Branch-free within a group
    of eight entries that holds a non-zero; a group of zeros costs one test."""
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
    return found


def _buffers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's rows/values buffers for ``size`` entries, allocated once at the largest size
    seen; only the pages a chunk's non-zeros touch are ever faulted in."""
    held = getattr(_BUFFERS, "entries", None)
    size += bitplanes.SLACK
    if held is None or held[0].shape[0] < size:
        held = _BUFFERS.entries = (np.empty(size, np.int32), np.empty(size, np.int16))
    return held


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's buffer for a Blosc block's zstd output (uint64 words)."""
    held = getattr(_BUFFERS, "planes", None)
    if held is None or held.nbytes < nbytes:
        held = _BUFFERS.planes = np.empty(-(-nbytes // 8), np.uint64)
    return held


def block_nonzeros(block: np.ndarray) -> Nonzeros:
    """The non-zeros of a decoded (genes, rows) int16 block (contiguous or a strided view)."""
    rows, values = _buffers(block.size)
    starts = np.empty(block.shape[0] + 1, np.int64)
    found = _compact(block, rows, values, starts)
    return Nonzeros(starts, rows[:found], values[:found])


def gene_nonzeros(reader: ChunkReader, start: int, stop: int,
                  gene_chunks: list[int] | None = None) -> Iterator[tuple[int, Nonzeros]]:
    """The stored chunks of rows ``[start, stop)`` (one aligned chunk row; only the chunk columns
    ``gene_chunks`` when given) as ``(first gene, non-zeros)``, rows counted from ``start``;
    chunks never written (all zeros) are skipped. Each result is valid until this thread's next
    chunk."""
    reader.check_rows(start, stop)
    n_rows, n_genes = stop - start, reader.array.shape[1]
    i = start // reader.chunk_rows
    planes_ok = reader.writer.transpose
    shape = (reader.chunk_genes, reader.chunk_rows)
    for j in range(-(-n_genes // reader.chunk_genes)) if gene_chunks is None else gene_chunks:
        g0 = j * reader.chunk_genes
        width = min(reader.chunk_genes, n_genes - g0)
        raw = reader.raw(i, j)
        if raw is None:
            continue
        if planes_ok:
            rows, values = _buffers(reader.chunk_genes * reader.chunk_rows)
            starts = np.empty(width + 1, np.int64)
            try:
                found = bitplanes.nonzeros(raw, shape, width, n_rows, _scratch(2 * rows.shape[0]), rows, values, starts)
            except RuntimeError as e:  # numcodecs' zstd error
                raise ValueError(f"{reader.describe(i, j)}: cannot decode: {e}") from e
            if found is not None:
                yield g0, Nonzeros(starts, rows[:found], values[:found])
                continue
        try:
            block = reader.decode(raw, out=reader.thread_buffer())
        except RuntimeError as e:  # numcodecs' Blosc error
            raise ValueError(f"{reader.describe(i, j)}: cannot decode: {e}") from e
        yield g0, block_nonzeros(block[:width, :n_rows] if reader.writer.transpose else block[:n_rows, :width].T)


@njit(cache=True, nogil=True)
def normalized(rows: np.ndarray, values: np.ndarray, divisor: np.ndarray, out: np.ndarray) -> np.ndarray:
    """scanpy's normalize_total of each non-zero, ``x / (total / target_sum)``: ``divisor`` per row."""
    for e in range(values.shape[0]):
        out[e] = np.float64(values[e]) / divisor[rows[e]]
    return out[: values.shape[0]]
