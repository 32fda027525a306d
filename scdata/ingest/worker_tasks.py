"""Functions that run on Dask workers: fetch and convert experiments, write chunk-aligned rows.

Each is a plain module-level function of picklable arguments so it runs the same on an embedded
``LocalCluster`` and on remote ``dask worker`` processes. Workers open the store by URL.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..runtime import remote
from ..store.chunks import ChunkReader, ChunkWriter
from ..source.h5ad import ExperimentError, LoadedExperiment, read_experiment
from ..store.manifest import IO
from .write_plan import COMMITTED, Write
from ..runtime.remote import MissingObjectError
from ..source.bucket import Experiment
from ..store.layout import open_array, scratch_view


def scratch_dir(configured: str | None) -> str:
    """Where a worker keeps downloads: configured, or its own temporary directory."""
    path = configured or os.path.join(tempfile.gettempdir(), "sczarr-scratch")
    os.makedirs(path, exist_ok=True)
    return path


def _local_copy(exp: Experiment, keep_dir: str | None, scratch: str | None) -> tuple[str, bool]:
    """A local path for the experiment's h5ad and whether it is a temporary copy."""
    if remote.is_local(exp.url) and not keep_dir:
        path = remote.local_path(exp.url)
        if not os.path.exists(path):
            raise MissingObjectError(f"missing object: {exp.url} does not exist")
        return path, False
    directory = keep_dir or scratch_dir(scratch)
    remote.remove_stale_parts_in(directory)  # killed downloads of any experiment, not only this one
    dest = os.path.join(directory, f"{exp.accession}.h5ad")
    remote.download(exp.url, dest)
    return dest, keep_dir is None


def load_task(
    exp: Experiment, gene_ids: np.ndarray, keep_dir: str | None = None, scratch: str | None = None
) -> LoadedExperiment:
    """Fetch (verified), read and convert one experiment onto the store's gene axis."""
    try:
        path, temporary = _local_copy(exp, keep_dir, scratch)
    except MissingObjectError as exc:  # a data fault; transient errors propagate and stop the run
        raise ExperimentError(exp.accession, exp.url, str(exc), IO) from exc
    try:
        axis_index = {g: i for i, g in enumerate(gene_ids)}
        return read_experiment(path, exp.accession, exp.url, axis_index, len(gene_ids), exp.obs_count)
    finally:
        if temporary and os.path.exists(path):
            os.remove(path)


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """What the driver needs from a loaded experiment to plan and record it: sizes, digests and
    counters, a few hundred bytes whatever its cell count. Its per-cell columns (``CellColumns``)
    stay on a worker until the experiment's unit commits: the driver of a large cluster would
    otherwise hold tens of millions of cells' barcodes and counts for the loads in its window."""

    accession: str
    n_cells: int
    repairs: dict
    nnz: int
    rows_digest: str
    file_size: int
    file_digest: str
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CellColumns:
    """An experiment's per-cell obs columns, as its commit writes them (barcodes as one string
    array, not a Python string per cell)."""

    barcodes: np.ndarray
    umi_count: np.ndarray
    total_counts: np.ndarray
    gene_count: np.ndarray
    annotations: pd.DataFrame


def summarize_task(loaded: LoadedExperiment) -> ExperimentSummary:
    counts = loaded.counts
    return ExperimentSummary(
        accession=loaded.accession,
        n_cells=loaded.n_cells,
        repairs=counts.repairs.as_dict(),
        nnz=int(counts.matrix.nnz),
        rows_digest=counts.checksum(),
        file_size=loaded.file_size,
        file_digest=loaded.file_digest,
        warnings=tuple(loaded.warnings),
    )


def cell_columns_task(loaded: LoadedExperiment) -> CellColumns:
    """Submitted with the experiment's writes; its result waits on the worker for the commit."""
    counts = loaded.counts
    return CellColumns(barcodes=np.asarray(loaded.barcodes, dtype=np.dtypes.StringDType()),  # 35 bytes a barcode, not 75
                       umi_count=counts.umi_count, total_counts=counts.total_counts, gene_count=counts.gene_count,
                       annotations=loaded.annotations)


def rows_task(loaded: LoadedExperiment, start: int, stop: int) -> sp.csr_matrix:
    """A slice of an experiment's rows, sent to the task that writes a shared chunk."""
    return loaded.counts.matrix[start:stop]


def _round_x(store_url: str, n_rows: int):
    """X as the round sees it: ``n_rows`` rows, past the committed shape that readers see (the
    shape grows only when the round commits)."""
    return scratch_view(open_array(store_url, "X", mode="r+"), n_rows)


def write_own_task(loaded: LoadedExperiment, write: Write, store_url: str, n_rows: int) -> int:
    """Write the chunk-aligned region that only this experiment fills, one chunk row at a time;
    ``n_rows`` is X's row count once the round commits."""
    (piece,) = write.pieces
    offset = piece.src_start - write.start
    writer = ChunkWriter(_round_x(store_url, n_rows))
    for lo in range(write.start, write.stop, writer.chunk_rows):
        hi = min(lo + writer.chunk_rows, write.stop)
        writer.write_rows(lo, loaded.counts.matrix[lo + offset : hi + offset])
    return write.stop - write.start


def write_seam_task(store_url: str, write: Write, parts: list[sp.csr_matrix | None], n_rows: int) -> int:
    """Write one chunk shared by several contributors (committed rows are re-read first).

    Rows before the unit are re-read from the store: the driver submits this task only after
    the write that put them there has finished (the unit before may not have committed yet).

    The pieces are stacked as sparse rows so the chunk takes the writer's sparse path (densified
    once, straight into the chunk's memory order) like every other chunk of the round.
    """
    x = _round_x(store_url, n_rows)
    rows = [
        ChunkReader(x).read_csc(piece.src_start, piece.src_stop).tocsr() if piece.owner == COMMITTED else part
        for piece, part in zip(write.pieces, parts)
    ]
    block = sp.vstack(rows, format="csr", dtype=np.int16)
    if block.shape[0] != write.stop - write.start:
        raise ValueError(f"seam [{write.start}, {write.stop}) received {block.shape[0]} rows")
    ChunkWriter(x).write_rows(write.start, block)
    return write.stop - write.start
