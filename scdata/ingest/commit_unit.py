"""Commit units: the writes of a group of loaded experiments, then their commit.

A unit is the finished experiments at the head of the load window, in selection order.
``plan_unit`` submits one writer per chunk the unit touches (``write_plan``), past X's committed
shape; ``commit_units`` waits for the writes of consecutive units, writes their obs rows, grows
the shapes and appends to the manifest, as one commit. The driver's loop (``driver``) decides
when; this module is what a unit is and how it is written and committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import numpy as np

from ..source.bucket import CELL_METADATA_COLUMNS, Experiment
from ..source.h5ad import ExperimentError
from ..store.manifest import Manifest, write_manifest
from ..store.writer import STRINGS, ObsPart, StoreWriter
from .config import IngestConfig
from .errors import IngestError
from .worker_tasks import cell_columns_task, rows_task, write_own_task, write_seam_task
from .write_plan import COMMITTED, RoundPlan, plan_round


WRITE_OPTIONS = {"pure": False, "priority": 1}
"""How a unit's tasks are submitted: every time (not deduplicated), before queued loads, because
writes free worker memory."""

def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def obs_part(exp: Experiment, cells) -> ObsPart:
    """The experiment's obs rows (``cells``: its ``CellColumns``): cell ids ``<accession>:<barcode>``
    and the per-cell columns; its accession and sample metadata as one value each (per-cell
    annotations of the same name win)."""
    barcodes = np.asarray(cells.barcodes, dtype=STRINGS)
    columns = {"_index": np.strings.add(f"{exp.accession}:", barcodes), "barcode": barcodes,
               "umi_count": cells.umi_count, "total_counts": cells.total_counts, "gene_count": cells.gene_count,
               **{column: cells.annotations[column].to_numpy() for column in cells.annotations.columns}}
    constants = {"srx_accession": exp.accession,
                 **{column: exp.metadata[column] for column in CELL_METADATA_COLUMNS if column in exp.metadata}}
    return ObsPart(len(barcodes), columns, constants)


@dataclass(slots=True)
class Load:
    """One experiment from its submission to its commit unit."""

    exp: Experiment
    load: object
    """The future of the loaded experiment (held on a worker until its writes are done)."""
    summary: object
    result: object = None
    error: ExperimentError | None = None


@dataclass(slots=True)
class CommitUnit:
    """A commit unit whose writes are submitted.

    No future of a finished write is kept: the loop records its row count and lets it go
    (``harvest``). A write the driver still held would be rerun by Dask if the worker holding
    its result died, and the unit's last write shares its chunk with the next unit's first
    seam, which rewrites that chunk with the next unit's rows appended: a rerun after the seam
    would put back the chunk without them. So the seam is submitted only once the write before
    it is finished and let go (``held``), and nothing can rerun it."""

    keys: list[int]
    kept: list
    """(experiment, summary) of the unit's loaded experiments, in order."""
    cells_of: list
    """Futures of their ``CellColumns``, held on the workers until the commit reads them."""
    rejected: list[dict]
    plan: RoundPlan
    writes: list
    """Futures of the submitted writes that have not finished."""
    tail: object
    """The write of the chunk that holds the unit's last row, until it finishes (None after, or
    when the unit has no rows, or when that write is the held seam)."""
    held: tuple | None
    """(seam, parts) of the first seam, when it re-reads rows whose write had not finished when
    the unit was planned: submitted by ``release_held`` once ``before``'s tail is done."""
    before: CommitUnit | None
    """The unit whose tail the held seam waits for."""
    cells: int
    """Cells by metadata of the unit's experiments, rejected ones included (for the progress bar)."""
    rows_written: int = 0
    write_error: BaseException | None = None
    written: bool = False

    @property
    def tail_pending(self) -> bool:
        """The write of the unit's last chunk may still run (a later seam must wait for it)."""
        return self.tail is not None or self.held is not None

    def harvest(self) -> bool:
        """Record the finished writes and drop their futures; True if any finished."""
        done = [f for f in self.writes if f.done()]
        for future in done:
            self.writes.remove(future)
            try:
                self.rows_written += future.result()
            except Exception as exc:  # reported when the unit commits (committed rows stay intact)
                self.write_error = self.write_error or exc
            if future is self.tail:
                self.tail = None
            future.release()  # now: its message to the scheduler is queued before any later submit's
        return bool(done)

    def release_held(self, client, config: IngestConfig, watch) -> None:
        """Submit the held seam once the write before it has finished and been let go."""
        if self.held is None or (self.before is not None and self.before.tail_pending):
            return
        seam, parts = self.held
        self.held = self.before = None
        # The client sends its messages from its event loop in the order they were queued there; a
        # released future queues its release in two steps. Once this no-op has run on the loop,
        # the releases are queued ahead of the seam's submission: the scheduler forgets the
        # earlier write before the seam can run.
        client.sync(asyncio.sleep, 0)
        future = client.submit(write_seam_task, config.store, seam, parts, self.plan.stop, **WRITE_OPTIONS)
        watch(future)
        self.writes.append(future)
        if seam.stop == self.plan.stop:
            self.tail = future


def rejection(exp: Experiment, exc: ExperimentError) -> dict:
    return {"accession": exp.accession, "url": exp.url, "reason": exc.problem, "kind": exc.kind, "at": utc_now()}


def plan_unit(client, config: IngestConfig, keys: list[int], loads: dict[int, Load], start: int,
               before: CommitUnit | None) -> CommitUnit:
    """Submit one writer per chunk the unit touches, past X's committed shape (the commit grows it).

    A seam that shares a chunk with the unit ``before`` (``COMMITTED`` rows: the rows before
    ``start``) re-reads that unit's rows, so it waits, unsubmitted, until their write is done."""
    members = [loads.pop(k) for k in keys]
    kept = [m for m in members if m.error is None]
    rejected = [rejection(m.exp, m.error) for m in members if m.error is not None]
    plan = plan_round(start, [m.result.n_cells for m in kept], config.layout.chunk_cells)
    writes, last, held = [], None, None
    for m, own in zip(kept, plan.own_writes):
        for w in own:
            writes.append(client.submit(write_own_task, m.load, w, config.store, plan.stop, **WRITE_OPTIONS))
            last = writes[-1] if w.stop == plan.stop else last
    for seam in plan.seam_writes:
        parts = [None if p.owner == COMMITTED else client.submit(rows_task, kept[p.owner].load, p.src_start,
                                                                 p.src_stop, **WRITE_OPTIONS)
                 for p in seam.pieces]
        if seam.pieces[0].owner == COMMITTED:
            held = (seam, parts)  # submitted by release_held, at once if the rows before are written
            continue
        writes.append(client.submit(write_seam_task, config.store, seam, parts, plan.stop, **WRITE_OPTIONS))
        last = writes[-1] if seam.stop == plan.stop else last
    # the per-cell columns are taken out beside the writes and wait on the workers for the commit
    cells_of = [client.submit(cell_columns_task, m.load, **WRITE_OPTIONS) for m in kept]
    # Only the writers hold the loaded experiments now: each is freed on its worker as soon as its
    # own writes (and its cell columns) are done, not when the unit commits.
    return CommitUnit(keys, [(m.exp, m.result) for m in kept], cells_of, rejected, plan, writes, last, held,
                 before if held is not None else None, sum(m.exp.obs_count for m in members))


def check_written(manifest: Manifest, unit: CommitUnit) -> None:
    """The unit's writes are done and cover its plan, or the run stops (committed rows intact)."""
    plan, exc = unit.plan, unit.write_error
    if exc is not None:  # a write failed on its worker (I/O after retries, or the worker died too often)
        raise IngestError(f"writing rows {plan.start:,}-{plan.stop:,}: {type(exc).__name__}: {exc}; "
                          f"{manifest.n_committed:,} committed cells are intact, rerun to resume") from exc
    expected = plan.stop - (plan.start // plan.chunk_rows) * plan.chunk_rows if unit.kept else 0
    if unit.rows_written != expected:
        raise IngestError(f"commit unit wrote {unit.rows_written} rows but the plan covers {expected}")


def commit_units(config: IngestConfig, manifest: Manifest, writer: StoreWriter, units: list[CommitUnit]) -> list[str]:
    """Wait for the writes of consecutive units, write their obs rows, grow the shapes, append to
    the manifest, all as one commit: after this the rows are the store."""
    for unit in units:
        check_written(manifest, unit)
    kept = [(member, rows) for unit in units for member, rows in zip(unit.kept, unit.plan.experiment_rows)]
    cells_of = [future for unit in units for future in unit.cells_of]
    stop = units[-1].plan.stop
    if kept:  # the group's per-cell columns come to the driver now, for this commit only
        try:
            parts = [obs_part(exp, future.result()) for ((exp, _), _), future in zip(kept, cells_of)]
        except Exception as exc:  # the worker holding them died and their recomputation failed
            raise IngestError(f"reading the per-cell columns of rows {units[0].plan.start:,}-{stop:,}: "
                              f"{type(exc).__name__}: {exc}; {manifest.n_committed:,} committed cells are intact, "
                              "rerun to resume") from exc
        manifest.categories = writer.write_obs_rows(units[0].plan.start, parts)
        del parts
        writer.grow_rows(stop)
    entries = []
    for (exp, s), (lo, hi) in kept:
        entries.append(
            {
                "accession": exp.accession, "row_start": lo, "row_stop": hi, "n_cells": s.n_cells,
                "source_url": exp.url, "release": config.source.release, "feature_type": config.source.feature_type,
                "organism": config.source.organism, "seed": config.seed, "requested_cells": config.cell_count,
                "file_size": s.file_size, "file_digest": s.file_digest, "rows_digest": s.rows_digest,
                "nnz": s.nnz, "counters": s.repairs, "warnings": list(s.warnings), "metadata": exp.metadata,
                "committed_at": utc_now(),
            }
        )
        manifest.nnz += s.nnz
        manifest.max_value = max(manifest.max_value, s.repairs["max_value"])
    manifest.record_commits(entries)
    manifest.record_rejections([r for unit in units for r in unit.rejected])
    manifest.n_committed = stop
    manifest.version += 1
    write_manifest(config.store, manifest, writer)
    return [e["accession"] for e in entries]
