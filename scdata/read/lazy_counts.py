"""X as a dask array whose blocks are decoded straight from the stored chunks.

X's chunks are stored gene-major (a transpose codec). Zarr's read path decodes a chunk and then
transposes it back into a row-major output: 33 ms per 1024 x 2048 chunk where the Blosc decode
alone takes 5 ms. ``DirectX`` is an array-like for ``dask.array.from_array`` that decodes each
chunk once (``ChunkReader``) and copies out only the selected genes, in the chunk's own order;
the result of a block is a (cells, genes) view of the gene-major copy, so nothing is transposed
unless the caller needs contiguous rows. Dask fuses slices and single indices of a query
(``counts[:, g]``) into this getter, so one gene across every cell copies one gene per chunk.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..store.chunks import ChunkReader
from ..store.layout import open_array


def _positions(key, size: int) -> tuple[np.ndarray | slice, bool]:
    """``key`` along one axis as a slice (kept when contiguous) or int positions; ``True`` if the
    axis is dropped (an integer key)."""
    if isinstance(key, (int, np.integer)):
        k = int(key) + (size if key < 0 else 0)
        if not 0 <= k < size:
            raise IndexError(f"index {key} out of range for axis of size {size}")
        return slice(k, k + 1), True
    if isinstance(key, slice):
        start, stop, step = key.indices(size)
        return (slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)), False
    arr = np.asarray(key)
    if arr.dtype == bool:
        return np.flatnonzero(arr), False
    arr = arr.astype(np.int64)
    return np.where(arr < 0, arr + size, arr), False


class DirectX:
    """A read-only (cells, genes) int16 array over X's chunks for the first ``n`` rows.

    Picklable (it holds the store URL, not open handles), so a distributed cluster's workers
    open the store themselves.
    """

    def __init__(self, store: str, n: int, path: str = "X"):
        self.store, self.path, self.n = store, path, n
        array = self._array()
        self.shape = (n, array.shape[1])
        self.chunks = array.chunks
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2
        ChunkReader(array)  # refuse a codec chain the direct path does not handle, at open time

    def _array(self) -> zarr.Array:
        return open_array(self.store, self.path)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_reader"}

    @property
    def reader(self) -> ChunkReader:
        reader = self.__dict__.get("_reader")
        if reader is None:
            reader = self.__dict__["_reader"] = ChunkReader(self._array())
        return reader

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (2 - len(key))
        rows, drop_row = _positions(key[0], self.shape[0])
        genes, drop_gene = _positions(key[1], self.shape[1])
        out = self._read(rows, genes)
        if drop_row and drop_gene:
            return out[0, 0]
        return out[0] if drop_row else out[:, 0] if drop_gene else out

    def _read(self, rows: np.ndarray | slice, genes: np.ndarray | slice) -> np.ndarray:
        """(len(rows), len(genes)) int16, filled gene-major from each overlapping chunk."""
        gene_pos = np.arange(genes.start, genes.stop) if isinstance(genes, slice) else genes
        n_rows = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        if n_rows and (rows.start < 0 or rows.stop > self.shape[0] if isinstance(rows, slice)
                       else rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"cell positions out of range for {self.shape[0]} committed cells")
        if len(gene_pos) and (gene_pos.min() < 0 or gene_pos.max() >= self.shape[1]):
            raise IndexError(f"gene positions out of range for {self.shape[1]} genes")
        out_t = np.zeros((len(gene_pos), n_rows), dtype=self.dtype)  # gene-major, like the chunks
        if not n_rows or not len(gene_pos):
            return out_t.T
        crow, cgene = self.chunks
        reader = self.reader
        row_groups = _row_groups(rows, crow)
        for j, g_out in _groups(gene_pos // cgene):
            g_in = gene_pos[g_out] - j * cgene
            g_src, g_dst = _compact(g_in), _compact(g_out)
            chunks = reader.chunks_of_genes([i for i, _, _ in row_groups], j, g_in)
            for (i, r_src, r_dst), chunk in zip(row_groups, chunks):
                if chunk is None:
                    continue  # never written: all zeros
                if not reader.writer.transpose:
                    chunk = chunk.T
                block = chunk[g_src][:, r_src]  # (genes, rows) of this chunk, a copy or a view
                if isinstance(g_dst, slice) or isinstance(r_dst, slice):
                    out_t[g_dst, r_dst] = block
                else:
                    out_t[np.ix_(g_dst, r_dst)] = block
        return out_t.T


def _row_groups(rows: np.ndarray | slice, crow: int) -> list[tuple[int, np.ndarray | slice, np.ndarray | slice]]:
    """``(chunk row, positions within it, positions in the output)`` for each chunk row that
    ``rows`` touch; a run of rows (a slice) by arithmetic alone, so a task of hundreds of chunk
    rows does no per-chunk array work."""
    if isinstance(rows, slice):
        start, stop = rows.start, rows.stop
        return [(i, slice(max(start, i * crow) - i * crow, min(stop, (i + 1) * crow) - i * crow),
                 slice(max(start, i * crow) - start, min(stop, (i + 1) * crow) - start))
                for i in range(start // crow, (stop - 1) // crow + 1)]
    return [(i, _compact(rows[r_out] - i * crow), _compact(r_out)) for i, r_out in _groups(rows // crow)]


def _groups(keys: np.ndarray):
    """``(key, positions)`` for each distinct value of ``keys``, in increasing key order; positions
    in increasing order. Linear for sorted keys (a selection's usual case): a task of many chunk
    rows would otherwise compare every row with every chunk row."""
    order = None if len(keys) < 2 or np.all(keys[1:] >= keys[:-1]) else np.argsort(keys, kind="stable")
    ordered = keys if order is None else keys[order]
    bounds = (np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist()
    for a, b in zip([0, *bounds], [*bounds, len(keys)]):
        yield int(ordered[a]), (np.arange(a, b) if order is None else order[a:b])


def _compact(pos: np.ndarray) -> np.ndarray | slice:
    """A run of consecutive positions as a slice (a view, not a gather)."""
    if len(pos) and pos[-1] - pos[0] == len(pos) - 1 and np.all(np.diff(pos) == 1):
        return slice(int(pos[0]), int(pos[-1]) + 1)
    return pos


_REGISTRY: dict[str, tuple[DirectX, np.ndarray | None, np.ndarray | None]] = {}
_REGISTRY_SIZE = 64
_MAX_GENES_PER_TASK = 4096
"""A selection of up to this many genes is one block wide: a task decodes every chunk column it
needs for its rows and copies out only the selected genes."""
_TASK_BYTES = 32 << 20
"""A task's output at most (a block of X itself: 8 chunk rows of 2,048 genes)."""
_MIN_TASKS = 32
"""Tasks a large narrow selection is split into at least: enough to keep every core busy. Fewer
and larger tasks than one per chunk row: one gene over ten million cells is 9,766 chunk rows,
and the scheduler's ~0.1-0.2 ms per task would cost more than reading the gene."""


class CountsArray(da.Array):
    """X, or an orthogonal selection of it, as a dask array whose indexing by integers, slices,
    and integer or boolean arrays (what xarray's ``isel`` and ``sel`` pass down) reads X's
    chunks directly (``subset``): one gene across ten million cells becomes a few dozen tasks
    that decode only that gene's Blosc blocks, where dask's own slicing would make one task per
    block of X (1,164 at 9.5M cells, whose scheduling cost more than the decoding). Any other key
    (None, Ellipsis, dask arrays) and every computation on it are plain dask."""

    def __getitem__(self, index):
        parsed = _orthogonal_key(index, self.shape)
        fast = None if parsed is None else subset(self, parsed[0], parsed[1])
        if fast is None:
            return super().__getitem__(index)
        dropped = tuple(0 if drop else slice(None) for drop in parsed[2])
        return da.Array.__getitem__(fast, dropped) if any(parsed[2]) else fast


def _orthogonal_key(index, shape: tuple[int, int]):
    """``(rows, genes, (drop rows?, drop genes?))`` for a key of ints, slices and 1-D integer or
    boolean arrays (positions, None for a whole axis), or None for any other key."""
    key = index if isinstance(index, tuple) else (index,)
    if len(key) > 2:
        return None
    key = key + (slice(None),) * (2 - len(key))
    picked, drops = [], []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            picked.append(None if k == slice(None) else np.arange(n)[k])
            drops.append(False)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            picked.append(np.arange(n)[[k]])  # IndexError when out of range, as numpy's
            drops.append(True)
        elif isinstance(k, (list, np.ndarray)) and np.ndim(k) == 1:
            arr = np.asarray(k)
            if arr.dtype == bool:
                if len(arr) != n:
                    raise IndexError(f"boolean index of length {len(arr)} for an axis of {n}")
                arr = np.flatnonzero(arr)
            elif arr.dtype.kind not in "iu" and len(arr):
                return None
            picked.append(np.arange(n)[arr.astype(np.int64)])
            drops.append(False)
        else:
            return None
    return picked[0], picked[1], tuple(drops)


def as_dask(x: DirectX, rows: np.ndarray | None = None, genes: np.ndarray | None = None) -> da.Array:
    """X, or its orthogonal selection ``rows`` x ``genes`` (positions), as a dask array.

    X's blocks are whole chunk rows, several per block (up to ``_TASK_BYTES``), one chunk column
    wide. A selection gets one task per few runs of rows within chunk rows (``_tasks``; split by
    chunk column only when it spans more than ``_MAX_GENES_PER_TASK`` genes), so each stored
    chunk is decoded once and only the selected cells and genes are copied. Dask's own fancy
    indexing would materialize every touched chunk in full and then gather from it. The array is
    registered by name, so a selection of a selection (``subset``) still reads X directly.
    """
    crow, cgene = x.chunks
    if rows is None and genes is None:
        per_block = max(1, min(_TASK_BYTES // (2 * crow * cgene), -(-x.shape[0] // crow) // _MIN_TASKS))
        plain = da.from_array(x, chunks=(crow * per_block, cgene), asarray=False,
                              name=f"sczarr-X-{tokenize(x.store, x.path, x.n, x.shape)}")
        arr = CountsArray(plain.dask, plain.name, plain.chunks, meta=plain._meta)
    else:
        rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        genes = np.arange(x.shape[1]) if genes is None else np.asarray(genes, dtype=np.int64)
        gene_runs = [(0, len(genes))] if len(genes) <= _MAX_GENES_PER_TASK else _runs(genes // cgene)
        span = _span(rows, x.shape[0])
        runs = _chunk_runs(*span, crow) if span is not None else _runs(rows // crow)
        row_runs = _tasks(runs, 2 * max(g1 - g0 for g0, g1 in gene_runs))
        # a run of rows travels to its tasks as slices: no positions to hash, hold or index
        take = (lambda r0, r1: slice(span[0] + r0, span[0] + r1)) if span is not None else (lambda r0, r1: rows[r0:r1])
        name = f"sczarr-sel-{tokenize(x.store, x.path, x.n, span if span is not None else rows, genes)}"
        graph = {(name, i, j): (_read_block, x, take(r0, r1), genes[g0:g1])
                 for i, (r0, r1) in enumerate(row_runs) for j, (g0, g1) in enumerate(gene_runs)}
        chunks = (tuple(r1 - r0 for r0, r1 in row_runs), tuple(g1 - g0 for g0, g1 in gene_runs))
        arr = CountsArray(HighLevelGraph.from_collections(name, graph, dependencies=()), name, chunks=chunks,
                          dtype=x.dtype, meta=np.empty((0, 0), dtype=x.dtype))
    _REGISTRY[arr.name] = (x, rows, genes)
    while len(_REGISTRY) > _REGISTRY_SIZE:
        _REGISTRY.pop(next(iter(_REGISTRY)))
    return arr


def subset(arr: da.Array, rows: np.ndarray | None = None, genes: np.ndarray | None = None) -> da.Array | None:
    """``arr[rows][:, genes]`` (positions within ``arr``) read straight from X, if ``arr`` is X or
    a selection of it made here; ``None`` for any other array (e.g. after arithmetic)."""
    entry = _REGISTRY.get(getattr(arr, "name", None))
    if entry is None:
        return None
    x, base_rows, base_genes = entry
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64) if base_rows is None else base_rows[rows]
    else:
        rows = base_rows
    if genes is not None:
        genes = np.asarray(genes, dtype=np.int64) if base_genes is None else base_genes[genes]
    else:
        genes = base_genes
    if rows is None and genes is None:
        return arr
    return as_dask(x, rows, genes)


def _tasks(runs: list[tuple[int, int]], row_bytes: int) -> list[tuple[int, int]]:
    """Consecutive runs merged into tasks of at most ``_TASK_BYTES`` of output and at most
    ``len(runs) / _MIN_TASKS`` runs each."""
    most_rows = max(1, _TASK_BYTES // max(row_bytes, 1))
    most_runs = max(1, -(-len(runs) // _MIN_TASKS))
    tasks: list[tuple[int, int]] = []
    start, count = runs[0][0], 0
    for r0, r1 in runs:
        if count and (count == most_runs or r1 - start > most_rows):
            tasks.append((start, r0))
            start, count = r0, 0
        count += 1
    tasks.append((start, runs[-1][1]))
    return tasks


def _span(rows: np.ndarray | None, n: int) -> tuple[int, int] | None:
    """``(start, stop)`` when ``rows`` (None: every row) is one run of consecutive rows, else None."""
    if rows is None:
        return 0, n
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return int(rows[0]), int(rows[-1]) + 1
    return None


def _chunk_runs(start: int, stop: int, crow: int) -> list[tuple[int, int]]:
    """``_runs(np.arange(start, stop) // crow)`` by arithmetic: positions of the span within each chunk row."""
    if stop <= start:
        return [(0, 0)]
    edges = np.arange((start // crow + 1) * crow, stop, crow) - start
    return list(zip([0, *edges.tolist()], [*edges.tolist(), stop - start]))


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of equal consecutive values; one empty run for no values."""
    if not len(keys):
        return [(0, 0)]
    edges = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(keys)]])
    return list(zip(starts.tolist(), stops.tolist()))


def _read_block(x: DirectX, rows: np.ndarray | slice, genes: np.ndarray) -> np.ndarray:
    n_rows = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
    if not n_rows or not len(genes):
        return np.zeros((n_rows, len(genes)), x.dtype)
    return x[rows if isinstance(rows, slice) else _compact(rows), _compact(genes)]


def registered(arr: da.Array) -> tuple[DirectX, np.ndarray | None, np.ndarray | None] | None:
    """``(X, rows, genes)`` behind a dask array made by ``as_dask``, else ``None``."""
    return _REGISTRY.get(getattr(arr, "name", None))


def _nonzero_positions(flat: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(flat)`` for a contiguous int16 array, ~6x faster on sparse counts: find
    the non-zero 8-byte words first, then the non-zero values within those words only."""
    if flat.dtype.itemsize != 2 or flat.size % 4 or not flat.flags.c_contiguous:
        return np.flatnonzero(flat)
    words = np.flatnonzero(flat.view(np.uint64) != 0)  # a boolean mask is numpy's fast nonzero path
    lanes = np.flatnonzero(np.take(flat.reshape(-1, 4), words, axis=0).reshape(-1) != 0)
    return words[lanes >> 2] * 4 + (lanes & 3)


def _chunk_row_csc(x: DirectX, i: int, rows: np.ndarray, genes: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Rows ``rows`` (positions within chunk row ``i``) of the sorted genes ``genes`` (every gene
    if None) as CSC arrays ``(indptr, cell indices, float32 values)``.

    Each chunk holding a selected gene is decoded once (only its blocks holding selected genes,
    see ``ChunkReader.chunk_of_genes``); its non-zeros are taken in stored order (CSC) by numpy.
    Plain numpy on purpose: a compiled kernel costs its JIT's start-up (0.2-0.4 s) on the first
    query of a session, more than it saves.
    """
    reader = x.reader
    cgene = x.chunks[1]
    n_genes = x.shape[1]
    if genes is None:
        spans = [(j, g0, slice(0, min(cgene, n_genes - g0))) for j, g0 in enumerate(range(0, n_genes, cgene))]
        width = n_genes
    else:
        gene_chunk = genes // cgene
        bounds = np.flatnonzero(np.diff(gene_chunk)) + 1
        spans = [(int(gene_chunk[a]), int(a), _compact(genes[a:b] - gene_chunk[a] * cgene))
                 for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(genes)])]
        width = len(genes)
    r_src = _compact(rows)
    n_rows = len(rows)
    per_gene = np.zeros(width + 1, dtype=np.int64)
    cells, values = [], []
    for j, first, local in spans:
        if isinstance(local, slice):
            n_local = local.stop - local.start
            chunk = reader.chunk(i, j, out=reader.thread_buffer()) if genes is None else \
                reader.chunk_of_genes(i, j, np.arange(local.start, local.stop), out=reader.thread_buffer())
        else:
            n_local = len(local)
            chunk = reader.chunk_of_genes(i, j, local, out=reader.thread_buffer())
        if chunk is None:
            continue  # never written: all zeros
        block = chunk if reader.writer.transpose else chunk.T
        sub = block[local][:, r_src] if not isinstance(local, slice) else block[local, r_src]
        flat = np.ascontiguousarray(sub).reshape(-1)
        where = _nonzero_positions(flat)
        gene_of, cell = np.divmod(where, n_rows)
        per_gene[first + 1:first + n_local + 1] = np.bincount(gene_of, minlength=n_local)
        cells.append(cell.astype(np.int32))
        values.append(flat[where].astype(np.float32))
    indptr = np.cumsum(per_gene, out=per_gene)
    index_type = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    if not cells:
        return indptr.astype(index_type), np.zeros(0, index_type), np.zeros(0, np.float32)
    return indptr.astype(index_type), np.concatenate(cells).astype(index_type, copy=False), np.concatenate(values)


def _assemble_rows(parts: list[tuple[np.ndarray, ...]], n_rows: list[int], width: int, pool) -> sp.csr_matrix | None:
    """Chunk rows' CSC parts (in output row order) as one CSR matrix, each part turned into rows
    straight into its slice of the result by scipy's own conversion routine (no per-part CSR
    and no stacking copy: at 19M non-zeros each copy costs ~0.15 s, mostly page faults). None
    when that routine is not available (a scipy without the private ``_sparsetools``)."""
    try:
        from scipy.sparse._sparsetools import csr_tocsc
    except ImportError:
        return None
    nnz = [len(p[2]) for p in parts]
    total = int(sum(nnz))
    index_type = np.int32 if max(total, width) < np.iinfo(np.int32).max else np.int64
    data = np.empty(total, dtype=np.float32)
    indices = np.empty(total, dtype=index_type)
    indptr = np.empty(sum(n_rows) + 1, dtype=index_type)
    indptr[0] = 0
    value_starts = np.concatenate([[0], np.cumsum(nnz)]).tolist()
    row_starts = np.concatenate([[0], np.cumsum(n_rows)]).tolist()

    def convert(k: int) -> None:
        gene_ptr, cells, values = (a.astype(index_type, copy=False) if a.dtype.kind == "i" else a for a in parts[k])
        v0, v1, r0 = value_starts[k], value_starts[k + 1], row_starts[k]
        row_ptr = np.empty(n_rows[k] + 1, dtype=index_type)
        csr_tocsc(width, n_rows[k], gene_ptr, cells, values, row_ptr, indices[v0:v1], data[v0:v1])  # CSC of X = CSR of X.T
        indptr[r0 + 1:r0 + n_rows[k] + 1] = row_ptr[1:] + v0

    list(pool.map(convert, range(len(parts))))
    return sp.csr_matrix((data, indices, indptr), shape=(sum(n_rows), width))


def sparse_rows(x: DirectX, rows: np.ndarray | None, genes: np.ndarray | None, threads: int | None = None) -> sp.csr_matrix:
    """The selection as CSR float32, built from each chunk's non-zeros in its stored order.

    Densifying and converting rows (what a dask array offers) costs a transposing copy and two
    dense scans per block; here each chunk holding a selected gene is decoded once (only the
    blocks holding selected genes) and scanned once (``_chunk_row_csc``), and each chunk row's
    non-zeros are turned into rows in place in the result (``_assemble_rows``). Chunk rows run on
    a thread pool (decoding, numpy's scans and scipy's conversion release the GIL).
    """
    rows = np.arange(x.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(np.unique(rows)) != len(rows):
        raise ValueError("a cell selected twice has no sparse row layout; select each cell once")
    column_order = None
    if genes is not None:
        genes = np.asarray(genes, dtype=np.int64)
        if len(np.unique(genes)) != len(genes):
            raise ValueError("a gene selected twice has no sparse row layout; select each gene once")
        if np.any(np.diff(genes) < 0):  # read in stored order, then put the columns in the order asked
            column_order = np.argsort(np.argsort(genes))
            genes = np.sort(genes)
    crow = x.chunks[0]
    chunk_of = rows // crow
    touched = np.unique(chunk_of)
    width = x.shape[1] if genes is None else len(genes)
    if not len(touched):
        return sp.csr_matrix((0, width), dtype=np.float32)

    def one(i: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        out_pos = np.flatnonzero(chunk_of == i)
        return _chunk_row_csc(x, i, rows[out_pos] - i * crow, genes), out_pos

    # chunk columns read (nearly) whole: ask the disk for all their files at once
    cgene = x.chunks[1]
    per_column = np.bincount((np.arange(x.shape[1]) if genes is None else genes) // cgene)
    x.reader.advise_chunks(touched.tolist(), np.flatnonzero(per_column >= cgene // 2).tolist())

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        parts = list(pool.map(one, touched.tolist()))
        order = np.concatenate([p[1] for p in parts])
        in_order = bool(np.all(np.diff(order) > 0))
        matrix = _assemble_rows([p[0] for p in parts], [len(p[1]) for p in parts], width, pool) if in_order else None
    if matrix is None:
        blocks = [sp.csc_matrix((p[0][2], p[0][1], p[0][0]), shape=(len(p[1]), width)).tocsr() for p in parts]
        matrix = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
        if not in_order:
            matrix = matrix[np.argsort(order)]
    return matrix if column_order is None else matrix[:, column_order]
