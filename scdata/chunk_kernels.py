"""Compiled scatter of CSR rows into a gene-major dense block, and its undo (for ``ChunkWriter``).

Writing a chunk row densifies ~1,000 cells x 36,601 genes; scattering only the non-zeros into a
buffer kept at zero (and zeroing them again after encoding) replaces a CSC conversion, a dense
copy, a 72 MiB memset and a scan of every chunk for non-zeros.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def scatter_gene_major(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, out: np.ndarray,
                       chunk_genes: int, touched: np.ndarray) -> None:
    """``out[g, r] = value`` for CSR row r's entries; ``touched[g // chunk_genes]`` marks gene
    chunks that receive a non-zero value."""
    for r in range(indptr.shape[0] - 1):
        for k in range(indptr[r], indptr[r + 1]):
            value = data[k]
            if value != 0:
                g = indices[k]
                out[g, r] = value
                touched[g // chunk_genes] = True


@njit(cache=True, nogil=True)
def clear_gene_major(indptr: np.ndarray, indices: np.ndarray, out: np.ndarray) -> None:
    """Zero the entries ``scatter_gene_major`` wrote."""
    for r in range(indptr.shape[0] - 1):
        for k in range(indptr[r], indptr[r + 1]):
            out[indices[k], r] = 0
