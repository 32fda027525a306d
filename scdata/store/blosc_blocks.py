"""Decoding only the Blosc blocks of a chunk that hold the items a reader needs.

A Blosc chunk is a sequence of independently compressed blocks (``StoreLayout.blocksize``
bytes each). X's chunks are gene-major, so a gene's values for the chunk's cells are one run of
items inside one or two blocks: a query of a few genes needs a few blocks, not the 4 MiB chunk.
c-blosc's ``blosc_getitem`` decodes exactly the blocks covering an item range; numcodecs
compiles c-blosc into its extension and exports that symbol, so it is called here through
ctypes (which releases the GIL, so reader threads decode in parallel). Without the symbol every
call falls back to decoding the whole chunk, which gives the same values.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_HEADER = struct.Struct("<BBBBiii")  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes
_MEMCPYED = 0x02  # a chunk stored uncompressed: no block offsets
_FULL_DECODE_FRACTION = 0.6
"""Above this fraction of a chunk's blocks, one whole-chunk decode is cheaper than a call per block."""


_COLD_READ_S = 0.0004
"""A first chunk file that takes longer than this to read waited on the disk: the rest of the
column is then read ahead (``_read_ahead``). A warm read takes tens of microseconds, a cold
one about a millisecond here (a virtual disk)."""
_READ_AHEAD_THREADS = 16
_READ_AHEAD_FILES = 16
"""Files per read-ahead job."""
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _read_ahead_pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(_READ_AHEAD_THREADS, thread_name_prefix="sczarr-read-ahead"))
        return _POOL[0]


def _read_ahead(paths: list[str], index_end: int, n_blocks: int, blocks: list[int]) -> None:
    """Ask the kernel for the bytes ``decode_files`` will read from each file: its header and
    block offsets are read here (many files at once across the pool's threads, where the
    decoding threads would read one file at a time each), and the needed blocks' byte ranges
    are advised (``POSIX_FADV_WILLNEED``: queued, not waited for). Only a hint: errors are the
    reader's to report."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            head = os.pread(fd, index_end, 0)
            if len(head) < index_end:
                continue
            cbytes = int.from_bytes(head[12:16], "little")
            offsets = np.frombuffer(head, dtype="<i4", count=n_blocks, offset=_HEADER.size)
            for block in blocks:
                start = int(offsets[block])
                stop = int(offsets[block + 1]) if block + 1 < n_blocks else cbytes
                if index_end <= start < stop <= cbytes:
                    os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _getitem():
    try:
        import numcodecs.blosc as blosc_ext

        function = ctypes.CDLL(blosc_ext.__file__).blosc_getitem
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


_BLOSC_GETITEM = _getitem()


def header(raw) -> tuple[int, int, int]:
    """``(typesize, nbytes, blocksize)`` of the Blosc chunk ``raw``."""
    _, _, _, typesize, nbytes, blocksize, _ = _HEADER.unpack_from(memoryview(raw).cast("B"))
    return typesize, nbytes, blocksize


def blocks_for_runs(starts: np.ndarray, length: int, block_items: int) -> np.ndarray:
    """The blocks (sorted, unique) that items ``[s, s + length)`` for each ``s`` in ``starts`` fall in."""
    starts = np.asarray(starts, dtype=np.int64)
    first, last = starts // block_items, (starts + length - 1) // block_items
    if np.array_equal(first, last):
        return np.unique(first)
    return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(first.tolist(), last.tolist())]))


def decode_runs(raw, starts: np.ndarray, length: int, out: np.ndarray, full_decode) -> np.ndarray:
    """Make items ``[s, s + length)`` of ``out`` (a flat array of the chunk's dtype and size) hold
    the chunk's values for every ``s`` in ``starts``, decoding only the blocks that hold them.

    Items outside those runs are left as they were, except within decoded blocks. ``full_decode``
    (``raw, out -> out``) decodes the whole chunk; it is used when most blocks are needed, when
    c-blosc's ``blosc_getitem`` is unavailable, or when the chunk's item size is not ``out``'s.
    """
    view = np.frombuffer(raw, dtype=np.uint8)
    typesize, nbytes, blocksize = header(view)
    if (_BLOSC_GETITEM is None or typesize != out.itemsize or nbytes != out.nbytes or blocksize <= 0
            or blocksize % typesize):
        return full_decode(raw, out)
    block_items, n_items = blocksize // typesize, nbytes // typesize
    blocks = blocks_for_runs(starts, length, block_items)
    if len(blocks) > _FULL_DECODE_FRACTION * -(-n_items // block_items):
        return full_decode(raw, out)
    source, target = view.ctypes.data, out.ctypes.data
    for block in blocks.tolist():
        first = block * block_items
        count = min(block_items, n_items - first)
        written = _BLOSC_GETITEM(source, first, count, target + first * typesize)
        if written != count * typesize:
            raise ValueError(f"Blosc could not decode block {block} of a {len(view):,}-byte chunk (code {written})")
    return out


def read_blocks(path: str, starts: np.ndarray, length: int, buffer: np.ndarray) -> memoryview | None:
    """The Blosc chunk in file ``path`` with only what ``decode_runs`` needs for items
    ``[s, s + length)`` (each ``s`` in ``starts``) read from disk: its header, its block offsets
    and the bytes of the blocks holding those items, each at its own offset in ``buffer`` (uint8,
    reused; grown when a chunk does not fit). A query of one gene over ten million cells then
    reads ~1/32 of each chunk file it touches instead of all of it. The whole file is read when
    most blocks are needed or the chunk has no block offsets. None if the file does not exist
    (a chunk never written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, _HEADER.size, 0)
        if len(head) < _HEADER.size:
            raise ValueError(f"{path}: {len(head)} bytes is too short for a Blosc chunk")
        _, _, flags, typesize, nbytes, blocksize, cbytes = _HEADER.unpack(head)
        if len(buffer) < cbytes:
            raise BufferError(cbytes)
        addressable = (_BLOSC_GETITEM is not None and not flags & _MEMCPYED and typesize > 0 and blocksize > 0
                       and blocksize % typesize == 0)  # what decode_runs needs to decode block by block
        n_blocks = -(-nbytes // blocksize) if addressable else 0
        blocks = blocks_for_runs(starts, length, blocksize // typesize) if addressable else None
        if blocks is None or len(blocks) > _FULL_DECODE_FRACTION * n_blocks:
            view = memoryview(buffer)[:cbytes]
            if os.preadv(fd, [view], 0) != cbytes:
                raise ValueError(f"{path}: shorter than the {cbytes:,} bytes its Blosc header gives")
            return view
        index_end = _HEADER.size + 4 * n_blocks
        buffer[:_HEADER.size] = np.frombuffer(head, dtype=np.uint8)
        os.preadv(fd, [memoryview(buffer)[_HEADER.size:index_end]], _HEADER.size)
        offsets = np.frombuffer(buffer, dtype="<i4", count=n_blocks, offset=_HEADER.size).tolist()
        for block in blocks.tolist():
            start = offsets[block]
            stop = offsets[block + 1] if block + 1 < n_blocks else cbytes
            if not index_end <= start <= stop <= cbytes:
                raise ValueError(f"{path}: block {block}'s offsets ({start}, {stop}) lie outside the chunk")
            os.preadv(fd, [memoryview(buffer)[start:stop]], start)
        return memoryview(buffer)[:cbytes]
    finally:
        os.close(fd)


def decode_files(paths, starts: np.ndarray, length: int, out: np.ndarray, full_decode, buffer: np.ndarray):
    """For each chunk file in ``paths`` (one chunk column's chunks, same codec and size), yield
    ``out`` with items ``[s, s + length)`` for each ``s`` in ``starts`` decoded into it (other
    items undefined), or None for a file that does not exist (a chunk never written).

    ``read_blocks`` then ``decode_runs`` for many chunks at a few syscalls and one ctypes call per
    block each: the blocks to read are worked out once, from the first file's header, and each
    file's header and block offsets come in one read. A file whose header differs from the first
    (another block size, stored uncompressed) takes the general path. ``buffer``: uint8 scratch
    for the compressed bytes, at least a chunk's size plus Blosc's overhead.

    When the first file waited on the disk (a cold page cache), the other files' headers and
    blocks are read ahead on a pool of threads (``_read_ahead``), so the disk serves many
    requests at once instead of one per decoding thread."""
    ahead: list = []
    try:
        yield from _decode_files(list(paths), starts, length, out, full_decode, buffer, ahead)
    finally:
        for job in ahead:
            job.cancel()


def _decode_files(paths: list[str], starts, length: int, out: np.ndarray, full_decode, buffer: np.ndarray,
                  ahead: list):
    plan = None
    for k, path in enumerate(paths):
        if plan is None:
            began = time.perf_counter()
            raw = read_blocks(path, starts, length, buffer)
            waited = time.perf_counter() - began
            if raw is None:
                yield None
                continue
            head = bytes(raw[:_HEADER.size])
            _, _, flags, typesize, nbytes, blocksize, _ = _HEADER.unpack(head)
            yield decode_runs(raw, starts, length, out, full_decode)
            addressable = (_BLOSC_GETITEM is not None and not flags & _MEMCPYED and typesize == out.itemsize
                           and nbytes == out.nbytes and blocksize > 0 and blocksize % typesize == 0)
            if addressable:
                n_blocks = -(-nbytes // blocksize)
                blocks = blocks_for_runs(starts, length, blocksize // typesize)
                if len(blocks) <= _FULL_DECODE_FRACTION * n_blocks:
                    plan = (head[2:], n_blocks, blocks.tolist(), blocksize // typesize, nbytes // typesize, typesize)
                    rest = paths[k + 1:]
                    if waited > _COLD_READ_S and len(rest) > _READ_AHEAD_FILES:
                        pool, index_end = _read_ahead_pool(), _HEADER.size + 4 * n_blocks
                        ahead.extend(pool.submit(_read_ahead, rest[i:i + _READ_AHEAD_FILES], index_end, n_blocks,
                                                 plan[2]) for i in range(0, len(rest), _READ_AHEAD_FILES))
            continue
        same_header, n_blocks, blocks, block_items, n_items, typesize = plan
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            continue
        try:
            index_end = _HEADER.size + 4 * n_blocks
            read = os.preadv(fd, [memoryview(buffer)[:index_end]], 0)
            cbytes = int.from_bytes(buffer[12:16].tobytes(), "little")
            if read != index_end or buffer[2:_HEADER.size - 4].tobytes() != same_header[:-4] or cbytes > len(buffer):
                os.close(fd)
                fd = -1
                raw = read_blocks(path, starts, length, buffer)  # not like the first: the general path
                yield decode_runs(raw, starts, length, out, full_decode)
                continue
            offsets = np.frombuffer(buffer, dtype="<i4", count=n_blocks, offset=_HEADER.size)
            for block in blocks:
                start = int(offsets[block])
                stop = int(offsets[block + 1]) if block + 1 < n_blocks else cbytes
                if not index_end <= start <= stop <= cbytes:
                    raise ValueError(f"{path}: block {block}'s offsets ({start}, {stop}) lie outside the chunk")
                os.preadv(fd, [memoryview(buffer)[start:stop]], start)
        finally:
            if fd >= 0:
                os.close(fd)
        source, target = buffer.ctypes.data, out.ctypes.data
        for block in blocks:
            first = block * block_items
            count = min(block_items, n_items - first)
            if _BLOSC_GETITEM(source, first, count, target + first * typesize) != count * typesize:
                raise ValueError(f"{path}: Blosc could not decode block {block}")
        yield out
