"""Reading one scBaseCount experiment (h5ad) into rows for the store, with specific errors.

Only ``X`` and the few ``obs``/``var`` columns the store keeps are read: the 2026-01-12 release
adds large fractional layers (``UniqueAndMult-EM``…) that the store does not hold, so
``anndata.read_h5ad`` would waste time and memory on them. A CSR ``X`` is read and converted in row blocks of bounded size, so a
worker's memory does not depend on how large an experiment is beyond its converted int16 rows.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..store.int16_counts import CountRepairs, CountsError, StoredCounts, StoredCountsBuilder, gene_column_map, to_store_counts
from ..store.manifest import CONTENT, IO, REJECTION_KINDS
from ..runtime import remote
from ..runtime.remote import MissingObjectError, redact

if TYPE_CHECKING:
    from .bucket import Experiment

ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
BLOCK_NNZ = 1 << 21
"""Stored values per row block read from a CSR ``X`` (~40 MB of temporaries each to convert)."""
CELL_ANNOTATION_COLUMNS = ("cell_type", "cell_ontology_term_id")
"""Per-cell annotations some releases carry in the h5ad's obs (kept when present)."""


class ExperimentError(ValueError):
    """An experiment cannot be stored; the message names the experiment, its file and the fault.

    ``kind`` is decided where the fault is found, the only place that knows it: ``IO`` (the file
    could not be read; a rerun tries again) or ``CONTENT`` (its data break the store's rules)."""

    def __init__(self, accession: str, url: str, problem: str, kind: str = CONTENT):
        if kind not in REJECTION_KINDS:
            raise ValueError(f"rejection kind must be one of {REJECTION_KINDS}, got {kind!r}")
        self.accession, self.url, self.problem, self.kind = accession, url, problem, kind
        # the message travels (worker logs, the manifest, the terminal); the URL's credentials do not
        super().__init__(redact(f"experiment {accession} ({url}): {problem}"))

    def __reduce__(self):  # keep the fields across Dask's pickling
        return (type(self), (self.accession, self.url, self.problem, self.kind))


@dataclass(frozen=True, slots=True)
class GeneTable:
    """What the planning pass needs from a file: its genes and optional cell annotations."""

    gene_ids: np.ndarray
    gene_symbols: np.ndarray
    annotation_columns: tuple[str, ...]
    n_cells: int


@dataclass(slots=True)
class LoadedExperiment:
    """An experiment converted to the store's gene axis, held in a worker until written."""

    accession: str
    url: str
    counts: StoredCounts
    barcodes: np.ndarray
    annotations: pd.DataFrame
    file_size: int
    file_digest: str
    warnings: list[str] = field(default_factory=list)

    @property
    def n_cells(self) -> int:
        return self.counts.n_cells


def _open(path: str, accession: str, url: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ExperimentError(accession, url, f"not a readable HDF5 file (truncated or corrupt?): {exc}", IO) from exc


def _require(f: h5py.File, name: str, accession: str, url: str):
    if name not in f:
        raise ExperimentError(accession, url, f"missing object {name!r} (an h5ad needs X, obs and var)", IO)
    return f[name]


def _read_elem(node, accession: str, url: str):
    from anndata.io import read_elem

    try:
        return read_elem(node)
    except Exception as exc:  # h5py/anndata raise many types for damaged datasets
        raise ExperimentError(accession, url, f"cannot read {node.name!r}: {exc}", IO) from exc


def frame_column(frame: h5py.Group, name: str | None, accession: str, url: str) -> np.ndarray:
    """One column of an AnnData dataframe group (its index when ``name`` is None) as strings.

    Only these few columns are needed, and the encodings scBaseCount files use (string arrays,
    categoricals of strings) are read with h5py directly: reading the whole frame through
    anndata reads every column, and importing anndata costs each Dask worker ~0.3 s at start.
    Other encodings go through anndata. Missing categorical values read as "nan", as pandas'
    ``astype(str)`` gives them.
    """
    key = frame.attrs.get("_index", "_index") if name is None else name
    if key not in frame:
        what = "index" if name is None else f"column {name!r}"
        raise ExperimentError(accession, url, f"{frame.name} has no {what} ({key!r})", IO)
    node = frame[key]
    kind = node.attrs.get("encoding-type")
    try:
        if kind == "string-array" and isinstance(node, h5py.Dataset):
            return node.asstr()[:].astype(object)
        if kind == "categorical" and node["categories"].attrs.get("encoding-type") == "string-array":
            codes = np.asarray(node["codes"][:], dtype=np.int64)
            categories = node["categories"].asstr()[:].astype(object)
            if codes.size and codes.max() >= len(categories):
                raise ValueError(f"category code {codes.max()} with {len(categories)} categories")
            return np.where(codes >= 0, categories[np.maximum(codes, 0)] if len(categories) else "nan", "nan").astype(object)
    except ExperimentError:
        raise
    except Exception as exc:  # h5py raises many types for damaged datasets
        raise ExperimentError(accession, url, f"cannot read {node.name!r}: {exc}", IO) from exc
    return np.asarray(pd.Series(_read_elem(node, accession, url)).astype(str), dtype=object)


def _gene_table(f: h5py.File, accession: str, url: str) -> GeneTable:
    var = _require(f, "var", accession, url)
    obs_node = _require(f, "obs", accession, url)
    ids = frame_column(var, None, accession, url)
    bad = next((g for g in ids if not ENSEMBL_ID.match(g)), None)
    if bad is not None:
        raise ExperimentError(
            accession, url, f"var index is not Ensembl gene IDs (found {bad!r}); the store's gene axis is Ensembl IDs"
        )
    if len(set(ids)) != len(ids):
        dup = pd.Index(ids)[pd.Index(ids).duplicated()][0]
        raise ExperimentError(accession, url, f"gene {dup!r} appears more than once in var")
    symbols = frame_column(var, "gene_symbols", accession, url) if "gene_symbols" in var else ids.copy()
    columns = tuple(c for c in CELL_ANNOTATION_COLUMNS if c in obs_node)
    index_key = obs_node.attrs.get("_index", "_index")
    n_cells = int(obs_node[index_key].shape[0]) if index_key in obs_node else 0
    return GeneTable(ids, symbols, columns, n_cells)


def read_gene_table(path_or_file, accession: str, url: str) -> GeneTable:
    """Genes of one file (cheap: reads var and the obs index only)."""
    with _open(path_or_file, accession, url) as f:
        return _gene_table(f, accession, url)


def file_digest(path: str) -> str:
    """CRC-32 of the file (what was ingested), cheap enough to take for every experiment."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc:08x}"


def _is_csr(node) -> bool:
    return isinstance(node, h5py.Group) and node.attrs.get("encoding-type") == "csr_matrix"


def _check_shape(shape: tuple[int, int], n_obs: int, genes: GeneTable, accession: str, url: str) -> None:
    if tuple(shape) != (n_obs, len(genes.gene_ids)):
        raise ExperimentError(
            accession, url, f"X has shape {tuple(shape)} but obs has {n_obs} cells and var {len(genes.gene_ids)} genes"
        )
    if shape[0] == 0:
        raise ExperimentError(accession, url, "the experiment has no cells")


def _convert(matrix: sp.spmatrix, column_map: np.ndarray, n_axis_genes: int, accession: str, url: str) -> StoredCounts:
    try:
        return to_store_counts(matrix, column_map, n_axis_genes)
    except CountsError as exc:
        raise ExperimentError(accession, url, str(exc)) from exc


def _whole_counts(matrix, n_obs: int, genes: GeneTable, column_map: np.ndarray, n_axis_genes: int,
                  accession: str, url: str) -> StoredCounts:
    """A dense or CSC ``X`` (rare in the bucket): read whole, then converted."""
    if not sp.issparse(matrix):
        matrix = sp.csr_matrix(np.asarray(matrix))
    _check_shape(matrix.shape, n_obs, genes, accession, url)
    return _convert(matrix, column_map, n_axis_genes, accession, url)


def _csr_counts_in_blocks(node: h5py.Group, n_obs: int, genes: GeneTable, column_map: np.ndarray, n_axis_genes: int,
                          accession: str, url: str) -> StoredCounts:
    """A CSR ``X`` read and converted ``BLOCK_NNZ`` values at a time (whole rows per block)."""
    try:
        shape = tuple(int(v) for v in node.attrs["shape"])
        data, indices = node["data"], node["indices"]
        indptr = np.asarray(node["indptr"][:], dtype=np.int64)
    except Exception as exc:  # h5py raises many types for damaged groups
        raise ExperimentError(accession, url, f"cannot read 'X': {exc}", IO) from exc
    _check_shape(shape, n_obs, genes, accession, url)
    if len(indptr) != shape[0] + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] > data.shape[0]:
        raise ExperimentError(accession, url, f"X's CSR index pointer is inconsistent with its {data.shape[0]} values")
    counts = StoredCountsBuilder(int(indptr[-1]), n_axis_genes)
    start = 0
    while start < shape[0]:
        stop = max(start + 1, int(np.searchsorted(indptr, indptr[start] + BLOCK_NNZ, side="right")) - 1)
        stop = min(stop, shape[0])
        lo, hi = int(indptr[start]), int(indptr[stop])
        try:
            block = sp.csr_matrix((data[lo:hi], indices[lo:hi], indptr[start : stop + 1] - lo), shape=(stop - start, shape[1]))
        except Exception as exc:
            raise ExperimentError(accession, url, f"cannot read 'X' rows {start}-{stop}: {exc}", IO) from exc
        counts.add(_convert(block, column_map, n_axis_genes, accession, url))
        start = stop
    return counts.build()


def _read_ahead(path: str) -> None:
    """Ask the kernel to read the whole file now, in large sequential requests.

    HDF5 reads a CSR ``X`` as many small chunks alternating between ``data`` and ``indices``,
    which defeats the kernel's readahead: from a cold page cache, 100k cells took 21 s to
    ingest instead of 14 s, waiting on thousands of small reads. The file is read in full anyway
    (its checksum), so asking for all of it up front costs nothing.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def read_experiment(
    path: str,
    accession: str,
    url: str,
    axis_index: dict[str, int],
    n_axis_genes: int,
    expected_cells: int | None = None,
) -> LoadedExperiment:
    """Read, validate and convert one experiment onto the store's gene axis."""
    _read_ahead(path)
    with _open(path, accession, url) as f:
        genes = _gene_table(f, accession, url)
        x_node = _require(f, "X", accession, url)
        barcodes = frame_column(f["obs"], None, accession, url)
        annotations = {c: frame_column(f["obs"], c, accession, url) for c in genes.annotation_columns}
        for column, values in annotations.items():
            if len(values) != len(barcodes):
                raise ExperimentError(accession, url, f"obs column {column!r} has {len(values)} values for {len(barcodes)} cells")
        column_map = gene_column_map(genes.gene_ids, axis_index)
        if _is_csr(x_node):
            counts = _csr_counts_in_blocks(x_node, len(barcodes), genes, column_map, n_axis_genes, accession, url)
        else:
            counts = _whole_counts(_read_elem(x_node, accession, url), len(barcodes), genes, column_map, n_axis_genes,
                                   accession, url)
    if pd.Index(barcodes).has_duplicates:
        dup = pd.Index(barcodes)[pd.Index(barcodes).duplicated()][0]
        raise ExperimentError(accession, url, f"cell barcode {dup!r} appears more than once in obs")

    warnings = []
    if expected_cells is not None and expected_cells != counts.n_cells:
        warnings.append(f"metadata obs_count is {expected_cells} but the file has {counts.n_cells} cells")
    return LoadedExperiment(
        accession=accession,
        url=url,
        counts=counts,
        barcodes=barcodes,
        annotations=pd.DataFrame(annotations, index=pd.RangeIndex(counts.n_cells)),
        file_size=os.path.getsize(path),
        file_digest=file_digest(path),
        warnings=warnings,
    )


__all__ = [
    "CELL_ANNOTATION_COLUMNS", "CountRepairs", "ExperimentError", "GeneTable", "LoadedExperiment",
    "gene_table_task", "read_experiment", "read_gene_table",
]


def gene_table_task(exp: Experiment) -> GeneTable:
    """Planning pass: the genes of one experiment, read in place (no full download).

    h5py reads its metadata from all over the file; a block cache keeps the blocks it fetched, so
    a table costs ~10 requests instead of ~180 (each a round trip to the bucket)."""
    if remote.is_local(exp.url):
        path = remote.local_path(exp.url)
        if not os.path.exists(path):
            raise ExperimentError(exp.accession, exp.url, "missing object: the h5ad does not exist", IO)
        return read_gene_table(path, exp.accession, exp.url)
    fs, path = remote.url_to_fs(exp.url)
    try:
        handle = remote.with_retries(lambda: fs.open(path, "rb", block_size=2**20, cache_type="blockcache"),
                                     f"open {exp.url}")
    except (FileNotFoundError, MissingObjectError) as exc:
        raise ExperimentError(exp.accession, exp.url, f"missing object: {exc}", IO) from exc
    with handle:
        return read_gene_table(handle, exp.accession, exp.url)
