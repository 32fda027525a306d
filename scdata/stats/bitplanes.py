"""The non-zeros of a Blosc bit-shuffled int16 chunk, read from its bit planes without un-shuffling.

Blosc decodes a store chunk in two steps per block: zstd, then the bit un-shuffle that turns the
block's 16 bit planes (plane b: bit b of every value, one bit per value) back into int16 values.
On sparse counts the un-shuffle is about two thirds of the decode (27 against 9 us per cell, one
thread) and produces values that are ~98% zero, which a statistics pass then scans again for the
few it needs. Here only zstd runs; a 64-bit word of the OR of the planes marks 64 values at once,
and only the marked values are assembled from their bits. The result is the chunk's non-zeros,
gene by gene in row order: exactly what ``nonzeros._compact`` gathers from a decoded block, so
every statistic is unchanged.

Where numcodecs' zstd exports its C API (``zstd_lib``), one compiled call per chunk parses the
frame, has zstd decode each block into a buffer that stays in the core's cache, and reads it; the
GIL is released throughout. Otherwise each block goes through numcodecs' Python API.

Blosc 1's frame (the format numcodecs writes): a 16-byte header (version, codec version, flags,
type size, uncompressed bytes, block bytes, compressed bytes), one int32 start offset per block,
and at each start the block as one stream (int32 compressed size, then the zstd frame) or, in
split mode, one stream per byte of the type. Anything else (another codec or shuffle, split
streams, a block stored uncompressed, blocks not a whole number of 64-value words, a big-endian
machine) is refused and the caller decodes the usual way.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
from numba import njit, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic
from numcodecs.zstd import Zstd

from . import zstd_lib

_HEADER = struct.Struct("<BBBBiii")
_BITSHUFFLE, _MEMCPYED, _DONT_SPLIT = 0x04, 0x02, 0x10
_ZSTD_FORMAT = 4
"""Blosc 1's compressor format code for zstd (flags bits 5-7)."""
_BITS = 16
SLACK = 1
"""Entries ``rows``/``values`` must hold past a chunk's values: up to this many are written ahead."""
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD = Zstd()


@intrinsic
def _popcount(typingctx, x):
    """The number of set bits of a uint64 (LLVM's ctpop: one instruction where the CPU has it)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(cache=True, nogil=True)
def _block_entries(planes: np.ndarray, first: int, chunk_rows: int, width: int, n_rows: int, rows: np.ndarray,
                   values: np.ndarray, starts: np.ndarray, found: int) -> int:
    """Append the non-zeros of one block to ``rows``/``values`` from position ``found``; returns
    the new count. ``planes``: the block's zstd output as 64-bit words, 16 planes one after the
    other; ``first``: the block's first word in the chunk's value order. Value e of the chunk
    (gene ``e // chunk_rows``, row ``e % chunk_rows``) is bit ``e % 64`` of word ``e // 64``. Only
    the first ``width`` genes and ``n_rows`` rows count; ``starts[g]`` is set when gene g begins.

    Most counts are 1 to 3: every non-zero gets its first two bits as it is written, and the few
    of a word where the OR of the higher planes (one vectorized sweep over the block) is set then
    get the other bits, read from the planes that are not all zeros."""
    size = planes.shape[0] // _BITS
    words_per_gene = chunk_rows // 64
    bit0 = bit1 = planes[:0]
    high = np.zeros(size, np.uint64)
    high_at = np.empty(_BITS, np.int64)
    high_bit = np.empty(_BITS, np.int64)
    n_high = 0
    for b in range(_BITS):
        plane = planes[b * size : (b + 1) * size]
        if plane.max() == 0:  # max vectorizes; an OR reduction loop does not
            continue
        if b == 0:
            bit0 = plane
        elif b == 1:
            bit1 = plane
        else:
            high_at[n_high] = b * size
            high_bit[n_high] = b
            n_high += 1
            for i in range(size):
                high[i] |= plane[i]
    if bit0.shape[0] == 0:
        bit0 = np.zeros(size, np.uint64)
    if bit1.shape[0] == 0:
        bit1 = np.zeros(size, np.uint64)
    used_words = -(-n_rows // 64)
    tail_mask = (np.uint64(1) << np.uint64(n_rows % 64)) - np.uint64(1) if n_rows % 64 else ~np.uint64(0)
    gene, w = first // words_per_gene, first % words_per_gene - 1  # counters: no division per word
    for i in range(size):
        w += 1
        if w == words_per_gene:
            gene, w = gene + 1, 0
        if gene >= width:
            break
        if w == 0:
            starts[gene] = found
        if w >= used_words:
            continue
        a0, a1 = bit0[i], bit1[i]
        marked = a0 | a1 | high[i]
        if w == used_words - 1:
            marked &= tail_mask
        count = np.int64(_popcount(marked))
        rest = marked
        # the first entry is written whether or not it exists: most words hold one or two, and an
        # unpredictable loop exit costs more than a store (SLACK)
        t = np.uint64(trailing_zeros(rest)) & np.uint64(63)
        rows[found] = w * 64 + np.int64(t)
        values[found] = np.int64((a0 >> t) & np.uint64(1)) | (np.int64((a1 >> t) & np.uint64(1)) << 1)
        rest &= rest - np.uint64(1)
        e = found + 1
        while rest != 0:  # the first two bits of every other non-zero
            t = np.uint64(trailing_zeros(rest))
            rows[e] = w * 64 + np.int64(t)
            values[e] = np.int64((a0 >> t) & np.uint64(1)) | (np.int64((a1 >> t) & np.uint64(1)) << 1)
            e += 1
            rest &= rest - np.uint64(1)
        above = high[i] & marked
        while above != 0:  # the other bits, for the few values that have them
            t = np.uint64(trailing_zeros(above))
            e = found + np.int64(_popcount(marked & ((np.uint64(1) << t) - np.uint64(1))))
            x = np.int64(values[e])
            for j in range(n_high):
                x |= np.int64((planes[high_at[j] + i] >> t) & np.uint64(1)) << high_bit[j]
            if x >= 32768:
                x -= 65536
            values[e] = x
            above &= above - np.uint64(1)
        found += count
    return found


def frames(raw) -> list[tuple[memoryview, int]] | None:
    """The zstd frame of each block of the Blosc chunk ``raw`` and the block's size in bytes, or
    None when the chunk is not one ``nonzeros`` reads (see the module docstring). Everything is
    checked before any block is decoded, so a refusal never follows partial output."""
    view = memoryview(raw).cast("B")
    if len(view) < _HEADER.size or sys.byteorder != "little":
        return None
    version, _, flags, typesize, nbytes, blocksize, cbytes = _HEADER.unpack_from(view)
    if (version != 2 or typesize != 2 or flags & _MEMCPYED or not flags & _BITSHUFFLE or not flags & _DONT_SPLIT
            or flags >> 5 != _ZSTD_FORMAT or cbytes != len(view) or blocksize <= 0
            or blocksize % 128 or nbytes % 128):
        return None
    n_blocks = -(-nbytes // blocksize)
    if len(view) < _HEADER.size + 4 * n_blocks:
        return None
    out = []
    for k, start in enumerate(np.frombuffer(view, dtype="<i4", count=n_blocks, offset=_HEADER.size).tolist()):
        size = min(blocksize, nbytes - k * blocksize)
        if not _HEADER.size <= start <= len(view) - 4:
            return None
        (stream,) = struct.unpack_from("<i", view, start)
        frame = view[start + 4 : start + 4 + stream]
        # a block Blosc stored uncompressed has no frame; zstd checks a frame against its own
        # declared size, not the block's
        if stream == size or _content_size(frame) != size:
            return None
        out.append((frame, size))
    return out


def decode_frame(frame: memoryview, out: np.ndarray) -> np.ndarray:
    """One block's zstd frame decoded into ``out`` (uint8, exactly the block's size) as 64-bit
    words."""
    _ZSTD.decode(frame, out=out)
    return out.view(np.uint64)


def _content_size(frame: memoryview) -> int | None:
    """The decompressed size a zstd frame's header declares (RFC 8878, 3.1.1.1), None if absent."""
    if len(frame) < 6 or bytes(frame[:4]) != _ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    single_segment = descriptor >> 5 & 1
    field = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    at = 5 + (not single_segment) + (0, 1, 2, 4)[descriptor & 3]
    if field == 0 or len(frame) < at + field:
        return None
    size = int.from_bytes(frame[at : at + field], "little")
    return size + 256 if field == 2 else size


@njit(cache=True, nogil=True, inline="always")
def _int32(raw: np.ndarray, at: int) -> int:
    x = np.int64(raw[at]) | np.int64(raw[at + 1]) << 8 | np.int64(raw[at + 2]) << 16 | np.int64(raw[at + 3]) << 24
    return x - (1 << 32) if x >= (1 << 31) else x


@njit(cache=True, nogil=True)
def _native_chunk(raw: np.ndarray, scratch: np.ndarray, dctx: int, chunk_genes: int, chunk_rows: int, width: int,
                  n_rows: int, rows: np.ndarray, values: np.ndarray, starts: np.ndarray) -> int:
    """``nonzeros`` in one compiled call: the Blosc frame parsed and checked (``frames``), each
    block's zstd frame decoded by zstd itself into ``scratch`` (uint64, at least one block) and read
    by ``_block_entries``. Returns the number of non-zeros, -1 for a chunk this does not read, -2
    for a zstd error."""
    n = raw.shape[0]
    if n < 16 or raw[0] != 2 or raw[3] != 2:
        return -1
    flags = raw[2]
    nbytes, blocksize, cbytes = _int32(raw, 4), _int32(raw, 8), _int32(raw, 12)
    if (flags & _MEMCPYED or not flags & _BITSHUFFLE or not flags & _DONT_SPLIT or flags >> 5 != _ZSTD_FORMAT
            or cbytes != n or blocksize <= 0 or blocksize % 128 or nbytes != 2 * chunk_genes * chunk_rows
            or chunk_rows % 64 or 8 * scratch.shape[0] < blocksize):
        return -1
    n_blocks = -(-nbytes // blocksize)
    if n < 16 + 4 * n_blocks:
        return -1
    base = raw.ctypes.data
    for k in range(n_blocks):  # every block checked before any is decoded: a refusal has no partial output
        start, size = _int32(raw, 16 + 4 * k), min(blocksize, nbytes - k * blocksize)
        if start < 16 or start > n - 4:
            return -1
        stream = _int32(raw, start)
        if stream == size or stream <= 0 or start + 4 + stream > n:  # stored uncompressed, or cut short
            return -1
        if np.int64(zstd_lib.frame_content_size(base + np.uintp(start + 4), np.uintp(stream))) != size:
            return -1
    found = 0
    words_per_gene = chunk_rows // 64
    for k in range(n_blocks):
        first = k * (blocksize // 128)
        if first // words_per_gene >= width:  # the padding genes of an edge chunk
            break
        start, size = _int32(raw, 16 + 4 * k), min(blocksize, nbytes - k * blocksize)
        stream = _int32(raw, start)
        got = zstd_lib.decompress_dctx(dctx, scratch.ctypes.data, np.uintp(size), base + np.uintp(start + 4),
                                       np.uintp(stream))
        if zstd_lib.is_error(got) or np.int64(got) != size:
            return -2
        found = _block_entries(scratch[: size // 8], first, chunk_rows, width, n_rows, rows, values, starts, found)
    starts[width] = found
    return found


def nonzeros(raw, chunk_shape: tuple[int, int], width: int, n_rows: int, scratch: np.ndarray, rows: np.ndarray,
             values: np.ndarray, starts: np.ndarray) -> int | None:
    """The non-zeros of the gene-major (genes, rows) chunk ``raw`` of ``chunk_shape``, first
    ``width`` genes and ``n_rows`` rows: gene g's rows and values at ``starts[g]:starts[g + 1]``;
    returns their number, or None when the frame is not one this reads (decode it instead).

    ``scratch``: a uint64 buffer of at least one Blosc block; each block is decoded into it and
    read while it is still in this core's cache (a whole 4 MiB chunk would not be). A zstd error
    raises RuntimeError."""
    chunk_genes, chunk_rows = chunk_shape
    if min(len(rows), len(values)) < chunk_genes * chunk_rows + SLACK:
        raise ValueError(f"rows and values need {chunk_genes * chunk_rows + SLACK} entries for a {chunk_shape} chunk")
    if zstd_lib.AVAILABLE and sys.byteorder == "little":
        found = _native_chunk(np.frombuffer(raw, np.uint8), scratch, zstd_lib.thread_context(), chunk_genes,
                              chunk_rows, width, n_rows, rows, values, starts)
        if found == -2:
            raise RuntimeError("Zstd decompression error: invalid input data")
        return None if found < 0 else found
    blocks = frames(raw) if chunk_rows % 64 == 0 else None
    if blocks is None or sum(size for _, size in blocks) != 2 * chunk_genes * chunk_rows \
            or scratch.nbytes < max(size for _, size in blocks):
        return None
    found, first = 0, 0
    bytes_scratch = scratch.view(np.uint8)
    for frame, size in blocks:
        if first // (chunk_rows // 64) >= width:  # the padding genes of an edge chunk
            break
        planes = decode_frame(frame, bytes_scratch[:size])
        found = _block_entries(planes, first, chunk_rows, width, n_rows, rows, values, starts, found)
        first += size // 128
    starts[width] = found
    return found
