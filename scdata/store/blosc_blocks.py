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
import struct

import numpy as np

_HEADER = struct.Struct("<BBBBiii")  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes
_FULL_DECODE_FRACTION = 0.6
"""Above this fraction of a chunk's blocks, one whole-chunk decode is cheaper than a call per block."""


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
