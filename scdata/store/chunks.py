"""Writing whole chunks of X with the array's own codecs, without Zarr's per-item write path.

Ingest writes whole, aligned chunks only, so the general machinery of ``Array.__setitem__``
(selection, read-modify-write, and a transpose codec applied to strided views) is pure overhead:
it halves throughput on this path. ``ChunkWriter`` produces exactly the bytes Zarr would (same
codec chain, same padding of edge chunks, empty chunks not stored; a test compares them) and puts
them in the store under the array's chunk keys.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import zarr
import zarr.storage
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .blosc_blocks import decode_files, decode_runs, read_blocks

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_THREAD_BUFFERS = threading.local()
_ADVISE_MOST = 1024
"""Chunk files a whole-chunk read asks the kernel for up front, at most (``advise_chunks``)."""


def thread_buffer(purpose: str, shape: tuple[int, ...]) -> np.ndarray:
    """An int16 array of ``shape`` owned by this thread and reused for ``purpose`` (contents left
    over from its last use): a fresh multi-MiB allocation per chunk costs a page fault per 4 KiB,
    which is as long as decoding or densifying the chunk. Readers and writers created per task
    share them, so a thread allocates each once."""
    buffers = _THREAD_BUFFERS.__dict__
    buffer = buffers.get(purpose)
    if buffer is None or buffer.shape != shape:
        buffer = buffers[purpose] = np.zeros(shape, dtype=np.int16)
    return buffer


def _compressed_buffer(size: int) -> np.ndarray:
    """This thread's uint8 buffer for a chunk's compressed bytes, at least ``size`` long."""
    buffer = _THREAD_BUFFERS.__dict__.get("compressed")
    if buffer is None or len(buffer) < size:
        buffer = _THREAD_BUFFERS.__dict__["compressed"] = np.empty(size, dtype=np.uint8)
    return buffer


class ChunkWriter:
    """Encode and store full-width row blocks of a 2-D array, one chunk at a time."""

    def __init__(self, array: zarr.Array):
        meta = array.metadata
        filters, serializer, compressors = array.filters, array.serializer, array.compressors
        self.transpose = bool(filters) and isinstance(filters[0], TransposeCodec) and tuple(filters[0].order) == (1, 0)
        supported = (
            len(filters) == int(self.transpose)
            and isinstance(serializer, BytesCodec)
            and len(compressors) == 1
            and isinstance(compressors[0], BloscCodec)
            and array.dtype == np.dtype("int16")
            and getattr(serializer.endian, "value", "little") == "little"
        )
        if not supported:
            raise ValueError(f"ChunkWriter supports int16 arrays with [transpose] + bytes + blosc codecs, not {meta.codecs}")
        blosc = compressors[0]
        self.blosc = Blosc.from_config(
            {"cname": blosc.cname.name, "clevel": blosc.clevel, "shuffle": _SHUFFLE[blosc.shuffle.name],
             "blocksize": blosc.blocksize, "typesize": blosc.typesize}
        )
        self.array = array
        self.chunk_rows, self.chunk_genes = array.chunks
        self.store = array.store
        self._prefix = f"{array.path}/" if array.path else ""
        self.prototype = default_buffer_prototype()
        # A local store's chunks go through its synchronous methods (the same files, the same
        # atomic writes): a round trip through Zarr's event loop thread per chunk cost ~8% of a
        # write and doubled the time of a statistics pass. Other stores go through the loop.
        if isinstance(self.store, zarr.storage.LocalStore):
            self._get = lambda key: self.store.get_sync(key, prototype=self.prototype)
            self._set, self._delete = self.store.set_sync, self.store.delete_sync
        else:
            self._get = lambda key: sync(self.store.get(key, prototype=self.prototype))
            self._set = lambda key, value: sync(self.store.set(key, value))
            self._delete = lambda key: sync(self.store.delete(key))

    def key(self, i: int, j: int) -> str:
        return self._prefix + self.array.metadata.encode_chunk_key((i, j))

    def write_rows(self, start: int, block: np.ndarray | sp.csr_matrix) -> None:
        """Write rows ``[start, start+len(block))``: whole chunks, or the array's last rows.

        ``block`` may be dense or CSR. With a transposed layout a CSR block is densified one chunk
        at a time, straight into the chunk's gene-major order in a small per-thread buffer that
        is encoded while it is still in cache.
        """
        rows, n_genes = block.shape
        if start % self.chunk_rows:
            raise ValueError(f"row {start} is not aligned to chunks of {self.chunk_rows} rows")
        if n_genes != self.array.shape[1]:
            raise ValueError(f"block has {n_genes} genes, the array {self.array.shape[1]}")
        for lo in range(0, rows, self.chunk_rows):
            part = block[lo : lo + self.chunk_rows]
            if part.shape[0] < self.chunk_rows and start + lo + part.shape[0] != self.array.shape[0]:
                raise ValueError("a partial chunk can only be the array's last rows")
            i = (start + lo) // self.chunk_rows
            chunks = self._sparse_chunks(part) if self.transpose and sp.issparse(part) else self._dense_chunks(part)
            for j, chunk in chunks:
                key = self.key(i, j)
                if chunk is None:  # Zarr stores no chunk that is all fill value
                    self._delete(key)
                    continue
                payload = self.blosc.encode(chunk.view(np.uint8).reshape(-1))
                self._set(key, self.prototype.buffer.from_bytes(payload))

    def _sparse_chunks(self, part: sp.spmatrix) -> Iterator[tuple[int, np.ndarray | None]]:
        """Gene-major chunks of a CSR row block, each densified from its genes' CSC columns."""
        n_rows, n_genes = part.shape
        csc = part.tocsc()
        full = (self.chunk_genes, self.chunk_rows)
        buffer = thread_buffer("chunk", full)
        for j, g0 in enumerate(range(0, n_genes, self.chunk_genes)):
            g1 = min(g0 + self.chunk_genes, n_genes)
            lo, hi = csc.indptr[g0], csc.indptr[g1]
            if not csc.data[lo:hi].any():
                yield j, None
                continue
            genes_major = csc[:, g0:g1].T  # (genes, rows) CSR
            if n_rows == self.chunk_rows:
                genes_major.toarray(out=buffer[: g1 - g0])  # leading rows: contiguous; toarray zeroes them
                buffer[g1 - g0 :] = 0  # edge chunk: zero padding, as Zarr pads it
            else:  # the array's last, partial chunk row
                buffer[:] = 0
                buffer[: g1 - g0, :n_rows] = genes_major.toarray()
            yield j, buffer

    def _dense_chunks(self, part: np.ndarray | sp.spmatrix) -> Iterator[tuple[int, np.ndarray | None]]:
        """Chunks of a row block in storage order, zero-padded at the edges."""
        n_genes = part.shape[1]
        dense = part.toarray() if sp.issparse(part) else np.asarray(part)
        major = np.ascontiguousarray(dense.T) if self.transpose else dense
        shape = (self.chunk_genes, self.chunk_rows) if self.transpose else (self.chunk_rows, self.chunk_genes)
        for j, g0 in enumerate(range(0, n_genes, self.chunk_genes)):
            slab = major[g0 : g0 + self.chunk_genes] if self.transpose else major[:, g0 : g0 + self.chunk_genes]
            if not slab.any():
                yield j, None
                continue
            if slab.shape != shape:
                padded = np.zeros(shape, dtype=np.int16)
                padded[: slab.shape[0], : slab.shape[1]] = slab
                slab = padded
            yield j, np.ascontiguousarray(slab)


class ChunkReader:
    """Decode row blocks of a 2-D int16 array straight from its chunks, as sparse matrices.

    Whole-row reductions (gene statistics, HVG passes) want every gene of a block of cells and
    only its non-zeros. Zarr's read path would decode, transpose back to row-major and copy;
    here each chunk is decoded once and its non-zeros taken in the chunk's own memory order
    (gene-major for the transposed layout, which is already CSC order).
    """

    def __init__(self, array: zarr.Array):
        self.writer = ChunkWriter(array)  # validates the codec chain and knows the keys
        self.array = array
        self.chunk_rows, self.chunk_genes = array.chunks
        # A local store's chunks are files: a few genes' blocks are read from them by offset.
        self._local_root = str(array.store.root) if isinstance(array.store, zarr.storage.LocalStore) else None

    def raw(self, i: int, j: int):
        """Chunk (i, j)'s stored bytes (a buffer), or None if it was never written (all zeros)."""
        stored = self.writer._get(self.writer.key(i, j))
        return None if stored is None else stored.as_buffer_like()

    def describe(self, i: int, j: int) -> str:
        """Where chunk (i, j) is, for error messages."""
        return f"chunk {self.writer.key(i, j)} of {self.array.store} (rows from {i * self.chunk_rows})"

    def decode(self, raw, out: np.ndarray | None = None) -> np.ndarray:
        """Stored bytes ``raw`` as the chunk in storage order: (genes, rows) if transposed, else
        (rows, genes); decoded into ``out`` (a flat int16 array of the chunk's size) when given."""
        shape = (self.chunk_genes, self.chunk_rows) if self.writer.transpose else (self.chunk_rows, self.chunk_genes)
        if out is not None:
            return self.writer.blosc.decode(raw, out=out).view("<i2").reshape(shape)
        return np.frombuffer(self.writer.blosc.decode(raw), dtype="<i2").reshape(shape)

    def chunk(self, i: int, j: int, out: np.ndarray | None = None) -> np.ndarray | None:
        """Chunk (i, j) decoded (see ``decode``), or None if it was never written."""
        raw = self.raw(i, j)
        return None if raw is None else self.decode(raw, out)

    def chunk_of_genes(self, i: int, j: int, genes: np.ndarray, out: np.ndarray) -> np.ndarray | None:
        """Chunk (i, j) as ``chunk`` gives it, with only the values of ``genes`` (positions within
        the chunk) guaranteed: in the gene-major layout only the Blosc blocks holding those genes
        are decoded (``blosc_blocks``), so a few genes cost a few blocks, not the chunk. ``out`` is
        required (a flat buffer of the chunk's size); None if the chunk was never written."""
        starts = np.asarray(genes, dtype=np.int64) * self.chunk_rows
        if self.writer.transpose and self._local_root is not None:  # read only the blocks' bytes from disk
            raw = self._read_blocks(i, j, starts)
        else:
            raw = self.raw(i, j)
        if raw is None:
            return None
        if not self.writer.transpose:  # every row holds every gene: nothing to skip
            return self.decode(raw, out)
        decode_runs(raw, starts, self.chunk_rows, out, lambda data, target: self.writer.blosc.decode(data, out=target))
        return out.view("<i2").reshape(self.chunk_genes, self.chunk_rows)

    def advise_chunks(self, rows: list[int], columns, most: int | None = None) -> None:
        """Tell the kernel that the chunk files of ``rows`` x ``columns`` will be read whole
        (``POSIX_FADV_WILLNEED``, queued and not waited for), so a cold read of a few chunk rows
        keeps the disk busy with all their files instead of one per reading thread. Only for a
        local store and at most ``most`` files (a larger read is bound by decoding, and would
        only push other pages out of the cache)."""
        if self._local_root is None or not hasattr(os, "posix_fadvise"):
            return
        columns = list(columns)
        if len(rows) * len(columns) > (_ADVISE_MOST if most is None else most):
            return
        for i in rows:
            for j in columns:
                try:
                    fd = os.open(os.path.join(self._local_root, self.writer.key(i, j)), os.O_RDONLY)
                except OSError:  # never written (all zeros), or unreadable: the read reports it
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)

    def chunks_of_genes(self, rows: list[int], j: int, genes: np.ndarray) -> Iterator[np.ndarray | None]:
        """``chunk_of_genes(i, j, genes, ...)`` for each chunk row ``i`` of ``rows`` in turn (each view
        valid until the next is yielded): from a local store, each file's needed blocks are found
        once for the whole column (``blosc_blocks.decode_files``), which is what keeps one gene over
        ten million cells (9,766 chunks) within a second."""
        if not (self.writer.transpose and self._local_root is not None):
            for i in rows:
                yield self.chunk_of_genes(i, j, genes, out=self.thread_buffer())
            return
        out = self.thread_buffer()
        buffer = _compressed_buffer(out.nbytes + (64 << 10))  # a chunk's bytes and Blosc's overhead
        paths = (os.path.join(self._local_root, self.writer.key(i, j)) for i in rows)
        shape = (self.chunk_genes, self.chunk_rows)
        decoded = decode_files(paths, np.asarray(genes, dtype=np.int64) * self.chunk_rows, self.chunk_rows, out,
                               lambda data, target: self.writer.blosc.decode(data, out=target), buffer)
        for chunk in decoded:
            yield None if chunk is None else chunk.view("<i2").reshape(shape)

    def _read_blocks(self, i: int, j: int, starts: np.ndarray):
        path = os.path.join(self._local_root, self.writer.key(i, j))
        size = 2 * self.chunk_rows * self.chunk_genes + 4096  # a chunk's bytes, Blosc's overhead and some
        while True:
            buffer = _compressed_buffer(size)
            try:
                return read_blocks(path, starts, self.chunk_rows, buffer)
            except BufferError as exc:  # incompressible data: a chunk larger than its values
                size = int(exc.args[0])

    def thread_buffer(self) -> np.ndarray:
        """This thread's reusable decode buffer (one flat chunk), for ``chunk(..., out=...)``."""
        return thread_buffer("decode", (self.chunk_rows * self.chunk_genes,))

    def check_rows(self, start: int, stop: int) -> None:
        if start % self.chunk_rows or stop - start > self.chunk_rows or stop > self.array.shape[0] or stop < start:
            raise ValueError(f"rows [{start}, {stop}) are not within one chunk row of {self.chunk_rows}")

    def gene_blocks(self, start: int, stop: int, gene_chunks: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The stored chunks of rows ``[start, stop)`` (one aligned chunk row; only the chunk
        columns ``gene_chunks`` when given), one at a time, as ``(first gene, (genes, rows) int16
        view)``; chunks never written (all zeros) are skipped.

        Each view is valid until this thread's next read: a thread decodes into one reused buffer
        (``thread_buffer``)."""
        self.check_rows(start, stop)
        n_rows, n_genes = stop - start, self.array.shape[1]
        i = start // self.chunk_rows
        for j in range(-(-n_genes // self.chunk_genes)) if gene_chunks is None else gene_chunks:
            g0 = j * self.chunk_genes
            chunk = self.chunk(i, j, out=self.thread_buffer())
            if chunk is None:
                continue
            width = min(self.chunk_genes, n_genes - g0)
            yield g0, (chunk[:width, :n_rows] if self.writer.transpose else chunk[:n_rows, :width].T)

    def read_entries(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-zeros of rows ``[start, stop)`` (one aligned chunk row) as ``(gene, cell, value)``
        arrays, sorted by gene then cell; ``cell`` counts from ``start``."""
        self.check_rows(start, stop)
        n_rows, n_genes = stop - start, self.array.shape[1]
        i = start // self.chunk_rows
        genes, cells, values = [], [], []
        for j, g0 in enumerate(range(0, n_genes, self.chunk_genes)):
            chunk = self.chunk(i, j, out=self.thread_buffer())  # the non-zeros below are copies
            if chunk is None:
                continue
            width = min(self.chunk_genes, n_genes - g0)
            if self.writer.transpose:
                slab = np.ascontiguousarray(chunk[:width, :n_rows]) if n_rows < self.chunk_rows else chunk[:width]
                flat = slab.reshape(-1)
                where = np.flatnonzero(flat != 0)  # ~6x faster than np.nonzero on 2-D
                g, c = np.divmod(where, n_rows)
            else:
                slab = np.ascontiguousarray(chunk[:n_rows, :width])
                flat = slab.reshape(-1)
                where = np.flatnonzero(flat != 0)
                c, g = np.divmod(where, width)
                order = np.lexsort((c, g))
                where, c, g = where[order], c[order], g[order]
            genes.append((g + g0).astype(np.int32))
            cells.append(c.astype(np.int32))
            values.append(flat[where])
        if not values:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int16)
        return np.concatenate(genes), np.concatenate(cells), np.concatenate(values)

    def read_csc(self, start: int, stop: int) -> sp.csc_matrix:
        """Rows ``[start, stop)`` (one chunk row, aligned) as a (cells, genes) CSC matrix of int16."""
        genes, cells, values = self.read_entries(start, stop)
        n_genes = self.array.shape[1]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(genes, minlength=n_genes))])
        return sp.csc_matrix((values, cells, indptr), shape=(stop - start, n_genes))
