"""Pure conversions of one experiment's CSR counts onto the store's int16 gene axis.

The store holds exact counts where they fit in int16. Anything else is repaired and
*counted* (fractional values are rounded, values above 32,767 saturate) or rejected
(negative values), so a user can always see what the store changed. ``umi_count`` and
``gene_count`` are taken from the rounded counts before saturation.
"""

from __future__ import annotations

import zlib
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
    total_counts: np.ndarray  # int64, sum of the stored (saturated) row: what normalization divides by
    gene_count: np.ndarray  # int32
    repairs: CountRepairs

    @property
    def n_cells(self) -> int:
        return self.matrix.shape[0]

    def checksum(self) -> str:
        """CRC-32 of the stored rows (CSR arrays), independent of how they were chunked.

        An integrity check, not a security one: CRC-32 runs at memory speed on this hot path.
        """
        crc = 0
        for part in (self.matrix.indptr.astype(np.int64), self.matrix.indices.astype(np.int32), self.matrix.data):
            crc = zlib.crc32(np.ascontiguousarray(part).view(np.uint8), crc)
        return f"crc32:{crc:08x}"


def gene_column_map(source_genes: np.ndarray, axis_index: dict[str, int]) -> np.ndarray:
    """Column index on the store axis for each source gene, -1 where the axis lacks it."""
    return np.fromiter((axis_index.get(g, -1) for g in source_genes), dtype=np.int64, count=len(source_genes))


def _row_sums(data: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per-row sums of CSR values, exact in float64 for integer counts."""
    out = np.zeros(len(indptr) - 1, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if nonempty.size:
        sums = np.add.reduceat(data, indptr[:-1][nonempty])  # native dtype: no cast of every value
        if data.dtype != np.float64 and sums.max() >= 2**24:  # float32 stops being exact for integers
            sums = np.add.reduceat(data, indptr[:-1][nonempty], dtype=np.float64)
        out[nonempty] = sums
    return out


def to_store_counts(matrix: sp.spmatrix, column_map: np.ndarray, n_axis_genes: int) -> StoredCounts:
    """Round, validate, reindex and saturate one experiment's counts.

    Raises ``CountsError`` for negative or non-finite values: a store of counts cannot
    represent them and guessing would hide a broken file. Works on the CSR arrays directly with
    fast paths for the common case (integer counts, the file's genes equal to the axis): this
    runs once per value of every ingest.
    """
    csr = matrix if sp.isspmatrix_csr(matrix) else sp.csr_matrix(matrix)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    values = csr.data if csr.data.dtype in (np.float32, np.float64) else csr.data.astype(np.float64)
    if values.size:
        smallest = values.min()
        if not np.isfinite(smallest) or not np.isfinite(values.max()):
            raise CountsError(f"{int((~np.isfinite(values)).sum())} counts are NaN or infinite")
        if smallest < 0:
            raise CountsError(f"{int((values < 0).sum())} counts are negative (smallest {smallest:g}); counts must be >= 0")
    rounded = np.rint(values)
    fractional = rounded != values
    n_fractional = int(np.count_nonzero(fractional))

    identity = len(column_map) == n_axis_genes and np.array_equal(column_map, np.arange(n_axis_genes))
    cols = csr.indices if identity else column_map[csr.indices]
    on_axis = None if identity else cols >= 0
    keep = rounded != 0 if (n_fractional or not values.all()) else None
    if on_axis is not None:
        keep = on_axis if keep is None else keep & on_axis
    dropped_umis = int(rounded[~on_axis].sum()) if on_axis is not None and not on_axis.all() else 0
    if keep is None or keep.all():
        indptr, indices, data = csr.indptr, cols, rounded
    else:
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        indptr, indices, data = kept_before[csr.indptr], cols[keep], rounded[keep]
    umi_count = _row_sums(data, indptr).astype(np.int64)
    gene_count = np.diff(indptr).astype(np.int32)
    max_value = float(data.max()) if data.size else 0.0
    n_saturated = int(np.count_nonzero(data > INT16_MAX)) if max_value > INT16_MAX else 0
    stored = (np.minimum(data, INT16_MAX) if n_saturated else data).astype(np.int16)

    out = sp.csr_matrix((stored, indices.astype(np.int32, copy=False), indptr), shape=(csr.shape[0], n_axis_genes))
    if not identity:
        kept_map = column_map[column_map >= 0]
        if not np.all(kept_map[1:] > kept_map[:-1]):  # file order differs from the axis order:
            out = out.tocsc().tocsr()  # two linear passes, ~2x faster than a per-row sort
    out.has_sorted_indices = True
    repairs = CountRepairs(n_fractional, n_saturated, max_value, int(np.count_nonzero(column_map < 0)), dropped_umis)
    total_counts = umi_count if not n_saturated else _row_sums(stored.astype(np.float64), indptr).astype(np.int64)
    return StoredCounts(out, umi_count, total_counts, gene_count, repairs)


class StoredCountsBuilder:
    """One experiment's counts assembled from row blocks converted one at a time (identical to
    converting it whole). Values and column indices go straight into arrays sized for the file's
    values (conversion only drops values), so the experiment is never held twice."""

    def __init__(self, max_nnz: int, n_axis_genes: int):
        self.data = np.empty(max_nnz, dtype=np.int16)
        self.indices = np.empty(max_nnz, dtype=np.int32)
        self.n_axis_genes = n_axis_genes
        self.filled = 0
        self.per_row: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # umi_count, total_counts, gene_count
        self.repairs: list[CountRepairs] = []

    def add(self, block: StoredCounts) -> None:
        stop = self.filled + block.matrix.nnz
        self.data[self.filled : stop] = block.matrix.data
        self.indices[self.filled : stop] = block.matrix.indices
        self.filled = stop
        self.per_row.append((block.umi_count, block.total_counts, block.gene_count))
        self.repairs.append(block.repairs)

    def build(self) -> StoredCounts:
        """The stacked counts; ``n_genes_dropped`` describes the file's gene list, the same for every block."""
        umi_count, total_counts, gene_count = (np.concatenate(parts) for parts in zip(*self.per_row))
        index_dtype = np.int32 if self.filled < 2**31 else np.int64  # scipy would otherwise copy to a common dtype
        indptr = np.concatenate([[0], np.cumsum(gene_count, dtype=np.int64)]).astype(index_dtype)  # gene_count: row nnz
        matrix = sp.csr_matrix((self.data[: self.filled], self.indices[: self.filled], indptr),
                               shape=(len(gene_count), self.n_axis_genes), copy=False)
        matrix.has_sorted_indices = True  # each block's rows are sorted; stacking keeps rows intact
        repairs = CountRepairs(
            n_fractional=sum(r.n_fractional for r in self.repairs),
            n_saturated=sum(r.n_saturated for r in self.repairs),
            max_value=max(r.max_value for r in self.repairs),
            n_genes_dropped=self.repairs[0].n_genes_dropped,
            n_umis_dropped=sum(r.n_umis_dropped for r in self.repairs),
        )
        return StoredCounts(matrix, umi_count, total_counts, gene_count, repairs)
