"""Pure conversions of one experiment's CSR counts onto the store's int16 gene axis.

The store holds exact counts where they fit in int16. Anything else is repaired and
*counted* (fractional values are rounded, values above 32,767 saturate) or rejected
(negative values), so a user can always see what the store changed. ``umi_count`` and
``gene_count`` are taken from the rounded counts before saturation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

INT16_MAX = np.iinfo(np.int16).max


class CountsError(ValueError):
    """The counts of an experiment cannot be stored (the message says why)."""


@dataclass(frozen=True, slots=True)
class CountRepairs:
    """What conversion changed, recorded per experiment in the manifest."""

    n_fractional: int = 0
    n_saturated: int = 0
    max_value: float = 0.0
    n_genes_dropped: int = 0
    n_umis_dropped: int = 0

    def as_dict(self) -> dict:
        return {
            "n_fractional": self.n_fractional,
            "n_saturated": self.n_saturated,
            "max_value": self.max_value,
            "n_genes_dropped": self.n_genes_dropped,
            "n_umis_dropped": self.n_umis_dropped,
        }


@dataclass(frozen=True, slots=True)
class StoredCounts:
    """Counts of one experiment ready to write: int16 CSR on the store's gene axis."""

    matrix: sp.csr_matrix  # (cells, store genes) int16, sorted indices
    umi_count: np.ndarray  # int64, from rounded counts before saturation
    gene_count: np.ndarray  # int32
    repairs: CountRepairs

    @property
    def n_cells(self) -> int:
        return self.matrix.shape[0]

    def checksum(self) -> str:
        """Content hash of the stored rows (independent of how they were chunked)."""
        h = hashlib.blake2b(digest_size=16)
        for part in (self.matrix.indptr.astype(np.int64), self.matrix.indices.astype(np.int32), self.matrix.data):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()


def gene_column_map(source_genes: np.ndarray, axis_index: dict[str, int]) -> np.ndarray:
    """Column index on the store axis for each source gene, -1 where the axis lacks it."""
    return np.fromiter((axis_index.get(g, -1) for g in source_genes), dtype=np.int64, count=len(source_genes))


def to_store_counts(matrix: sp.spmatrix, column_map: np.ndarray, n_axis_genes: int) -> StoredCounts:
    """Round, validate, reindex and saturate one experiment's counts.

    Raises ``CountsError`` for negative or non-finite values: a store of counts cannot
    represent them and guessing would hide a broken file.
    """
    csr = sp.csr_matrix(matrix)
    csr.sum_duplicates()
    values = np.asarray(csr.data, dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        raise CountsError(f"{int((~np.isfinite(values)).sum())} counts are NaN or infinite")
    if values.size and values.min() < 0:
        n_neg = int((values < 0).sum())
        raise CountsError(f"{n_neg} counts are negative (smallest {values.min():g}); counts must be >= 0")
    rounded = np.rint(values)
    n_fractional = int(np.count_nonzero(rounded != values))

    cols = column_map[csr.indices]
    keep = cols >= 0
    dropped_genes = int(np.count_nonzero(column_map < 0))
    dropped_umis = int(rounded[~keep].sum()) if (~keep).any() else 0

    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    rows, cols, rounded = rows[keep], cols[keep], rounded[keep]
    nonzero = rounded != 0
    rows, cols, rounded = rows[nonzero], cols[nonzero], rounded[nonzero]

    umi_count = np.bincount(rows, weights=rounded, minlength=csr.shape[0]).astype(np.int64)
    gene_count = np.bincount(rows, minlength=csr.shape[0]).astype(np.int32)
    max_value = float(rounded.max()) if rounded.size else 0.0
    n_saturated = int(np.count_nonzero(rounded > INT16_MAX))
    data = np.minimum(rounded, INT16_MAX).astype(np.int16)

    out = sp.csr_matrix((data, (rows, cols)), shape=(csr.shape[0], n_axis_genes), dtype=np.int16)
    out.sort_indices()
    repairs = CountRepairs(n_fractional, n_saturated, max_value, dropped_genes, dropped_umis)
    return StoredCounts(out, umi_count, gene_count, repairs)


def dense_rows(matrix: sp.csr_matrix, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` as a dense int16 block, the unit Zarr writes."""
    return matrix[start:stop].toarray().astype(np.int16, copy=False)
