"""The non-zeros of a Blosc bit-shuffled int16 chunk, read from its bit planes without un-shuffling.

Blosc decodes a store chunk in two steps per block: zstd, then the bit un-shuffle that turns the
block's 16 bit planes (plane b: bit b of every value, one bit per value) back into int16 values.
On sparse counts the un-shuffle is most of the decode (~60% on a 1 MiB block) and produces values
that are ~98% zero, which a statistics pass then scans again to find the few it needs. Here only
zstd runs; a 64-bit word of the OR of the planes marks 64 values at once, and only the marked
values are assembled from their bits. The result is the chunk's non-zeros, gene by gene in row
order: exactly what ``stat_kernels`` gathers from a decoded block, so every statistic is unchanged.

Blosc 1's frame (the format numcodecs writes): a 16-byte header (version, codec version, flags,
type size, uncompressed bytes, block bytes, compressed bytes), one int32 start offset per block,
and at each start the block as one stream (int32 compressed size, then the zstd frame) or, in
split mode, one stream per byte of the type. Anything else (another codec or shuffle, split
streams, a stored-uncompressed chunk, blocks not a whole number of 64-value words, a big-endian
machine) returns None and the caller decodes the usual way.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros
from numcodecs.zstd import Zstd

_HEADER = struct.Struct("<BBBBiii")
_BITSHUFFLE, _MEMCPYED, _DONT_SPLIT = 0x04, 0x02, 0x10
_ZSTD_FORMAT = 4
"""Blosc 1's compressor format code for zstd (flags bits 5-7)."""
_BITS = 16
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD = Zstd()


@njit(cache=True, nogil=True)
def _live_planes(planes: np.ndarray, block_words: int, live: np.ndarray, live_bit: np.ndarray,
                 n_live: np.ndarray) -> None:
    """Per block k, the word offsets of its planes that hold a set bit (``live[k, :n_live[k]]``)
    and the bits they stand for (``live_bit``). Counts rarely reach the high bits, so most blocks'
    upper planes are all zeros and never read again. (``max`` is the vectorized test: an OR
    reduction loop does not vectorize.)"""
    n_words = planes.shape[0]
    for k in range(n_live.shape[0]):
        base = k * _BITS * block_words
        stride = min(block_words, (n_words - base) // _BITS)
        count = 0
        for b in range(_BITS):
            if planes[base + b * stride : base + (b + 1) * stride].max() != 0:
                live[k, count] = base + b * stride
                live_bit[k, count] = b
                count += 1
        n_live[k] = count


@njit(cache=True, nogil=True)
def _plane_entries(planes: np.ndarray, block_words: int, width: int, chunk_rows: int, n_rows: int,
                   rows: np.ndarray, values: np.ndarray, starts: np.ndarray) -> int:
    """Gene g's non-zeros (of the first ``width`` genes, rows below ``n_rows``) go to
    ``rows``/``values`` at ``starts[g]:starts[g + 1]`` in row order; returns their number.

    ``planes``: the chunk's zstd output as 64-bit words; block k (``block_words`` words per plane,
    the last block possibly shorter) holds 16 planes one after the other. Value e of the chunk
    (gene ``e // chunk_rows``, row ``e % chunk_rows``) is bit ``e % 64`` of word ``e // 64`` of its
    block's planes. Most counts are 1 to 3: a value's first two bits are read for every non-zero,
    its other bits only where the OR of the higher planes (one vectorized sweep per block) is set.
    """
    words_per_gene = chunk_rows // 64
    n_words = planes.shape[0]
    n_blocks = -(-n_words // (_BITS * block_words))
    live = np.empty((n_blocks, _BITS), np.int64)
    live_bit = np.empty((n_blocks, _BITS), np.int64)
    n_live = np.empty(n_blocks, np.int64)
    _live_planes(planes, block_words, live, live_bit, n_live)
    zeros = np.zeros(block_words, np.uint64)
    high = np.empty(block_words, np.uint64)
    high_at = np.empty(_BITS, np.int64)
    high_bit = np.empty(_BITS, np.int64)
    used_words = -(-n_rows // 64)
    tail_mask = (np.uint64(1) << np.uint64(n_rows % 64)) - np.uint64(1) if n_rows % 64 else ~np.uint64(0)
    found = 0
    for k in range(n_blocks):
        first = k * block_words  # the block's first word in the chunk's value order
        size = min(block_words, (n_words - k * _BITS * block_words) // _BITS)
        if first // words_per_gene >= width:
            break
        bit0, bit1, n_high = zeros[:size], zeros[:size], 0
        for j in range(n_live[k]):
            plane = planes[live[k, j] : live[k, j] + size]
            if live_bit[k, j] == 0:
                bit0 = plane
            elif live_bit[k, j] == 1:
                bit1 = plane
            else:
                high_at[n_high] = live[k, j]
                high_bit[n_high] = live_bit[k, j]
                n_high += 1
        high[:size] = 0
        for j in range(n_high):
            plane = planes[high_at[j] : high_at[j] + size]
            for i in range(size):
                high[i] |= plane[i]
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
            a0, a1, above = bit0[i], bit1[i], high[i]
            marked = a0 | a1 | above
            if w == used_words - 1:
                marked &= tail_mask
            while marked != 0:
                t = np.uint64(trailing_zeros(marked))
                x = np.int64((a0 >> t) & np.uint64(1)) | (np.int64((a1 >> t) & np.uint64(1)) << 1)
                if (above >> t) & np.uint64(1):
                    for j in range(n_high):
                        x |= np.int64((planes[high_at[j] + i] >> t) & np.uint64(1)) << high_bit[j]
                if x >= 32768:
                    x -= 65536
                rows[found] = w * 64 + np.int64(t)
                values[found] = x
                found += 1
                marked &= marked - np.uint64(1)
    starts[width] = found
    return found


def bit_planes(raw, out: np.ndarray) -> np.ndarray | None:
    """The zstd output of every block of the Blosc chunk ``raw`` in ``out`` (a flat uint8 buffer of
    at least the chunk's uncompressed size) as 64-bit words, or None when the frame is not one
    ``nonzeros`` reads (see the module docstring)."""
    view = memoryview(raw).cast("B")
    if len(view) < _HEADER.size or sys.byteorder != "little":
        return None
    version, _, flags, typesize, nbytes, blocksize, cbytes = _HEADER.unpack_from(view)
    if (version != 2 or typesize != 2 or flags & _MEMCPYED or not flags & _BITSHUFFLE or not flags & _DONT_SPLIT
            or flags >> 5 != _ZSTD_FORMAT or cbytes != len(view) or blocksize <= 0
            or blocksize % 128 or nbytes % 128 or out.nbytes < nbytes):
        return None
    n_blocks = -(-nbytes // blocksize)
    offsets = np.frombuffer(view, dtype="<i4", count=n_blocks, offset=_HEADER.size)
    for k, start in enumerate(offsets.tolist()):
        size = min(blocksize, nbytes - k * blocksize)
        (stream,) = struct.unpack_from("<i", view, start)
        if stream == size:  # Blosc stored this block uncompressed
            return None
        frame = view[start + 4 : start + 4 + stream]
        if _content_size(frame) != size:  # zstd checks a frame against its declared size, not ours
            return None
        _ZSTD.decode(frame, out=out[k * blocksize : k * blocksize + size])
    return out[:nbytes].view(np.uint64)


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


def nonzeros(raw, chunk_shape: tuple[int, int], width: int, n_rows: int, out: np.ndarray, rows: np.ndarray,
             values: np.ndarray, starts: np.ndarray) -> int | None:
    """The non-zeros of the gene-major (genes, rows) chunk ``raw`` of ``chunk_shape``, first
    ``width`` genes and ``n_rows`` rows: gene g's rows and values at ``starts[g]:starts[g + 1]``;
    returns their number, or None when the frame is not one this reads (decode it instead).
    ``out``: scratch for the zstd output (at least the chunk's bytes)."""
    chunk_genes, chunk_rows = chunk_shape
    if chunk_rows % 64 or out.nbytes < 2 * chunk_genes * chunk_rows:
        return None
    planes = bit_planes(raw, out)
    if planes is None or planes.nbytes != 2 * chunk_genes * chunk_rows:
        return None
    blocksize = _HEADER.unpack_from(memoryview(raw).cast("B"))[5]
    return _plane_entries(planes, blocksize // 128, width, chunk_rows, n_rows, rows, values, starts)
