"""zstd's C API, callable from compiled kernels: numcodecs' own zstd, no new dependency.

numcodecs builds zstd into its ``numcodecs.zstd`` extension module and exports its functions.
Declared here as numba external functions (resolved by name, so compiled kernels stay cacheable),
a kernel can decode a chunk's zstd frames itself, with the GIL released and without a Python call
per frame. Where this build of numcodecs does not export them, ``AVAILABLE`` is False and callers
decode through numcodecs' Python API instead.
"""

from __future__ import annotations

import ctypes
import threading

import llvmlite.binding as llvm
import numcodecs.zstd
from numba import types

_REQUIRED = ("ZSTD_createDCtx", "ZSTD_decompressDCtx", "ZSTD_isError", "ZSTD_getFrameContentSize")


def _load() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(numcodecs.zstd.__file__)
        addresses = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in _REQUIRED}
    except (OSError, AttributeError):
        return None
    llvm.load_library_permanently(numcodecs.zstd.__file__)  # kernels link to the symbols by name
    # Other extensions bundle a zstd of their own (numcodecs' blosc does): use these only if the
    # names resolve to this copy, whose contexts are made here.
    if any(llvm.address_of_symbol(name) != address for name, address in addresses.items()):
        return None
    lib.ZSTD_createDCtx.restype = ctypes.c_void_p
    return lib


_LIB = _load()
AVAILABLE = _LIB is not None

decompress_dctx = types.ExternalFunction(
    "ZSTD_decompressDCtx", types.uintp(types.voidptr, types.voidptr, types.uintp, types.voidptr, types.uintp))
"""``(dctx, dst, dst_capacity, src, src_size) -> decompressed size or an error code``."""
is_error = types.ExternalFunction("ZSTD_isError", types.uint32(types.uintp))
frame_content_size = types.ExternalFunction("ZSTD_getFrameContentSize", types.uint64(types.voidptr, types.uintp))
"""The decompressed size a frame's header declares; 2**64 - 1 (unknown) or 2**64 - 2 (error) otherwise."""

_CONTEXTS = threading.local()


def thread_context() -> int:
    """This thread's decompression context (zstd's reusable state, ~100 kB, kept for the thread's
    life: one per chunk would be allocated and freed per call)."""
    dctx = getattr(_CONTEXTS, "dctx", None)
    if dctx is None:
        if _LIB is None:
            raise RuntimeError("numcodecs' zstd does not export the zstd API")
        dctx = _CONTEXTS.dctx = _LIB.ZSTD_createDCtx()
        if not dctx:
            raise MemoryError("ZSTD_createDCtx failed")
    return dctx
