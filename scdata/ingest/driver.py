"""Ingest chosen scBaseCount experiments into one store through a Dask cluster.

1. Planning: the gene axis comes from a few files' gene tables (``axis``) or ``--genes``; the
   empty store is created.
2. Loads: one task per experiment fetches (verified), reads and converts it onto the gene axis;
   the result stays in the worker's memory. A window (``window.LoadWindow``) keeps as many loads
   in flight as the cluster's threads and memory allow, in selection order.
3. Commit units (``commit_unit``): the finished experiments at the head of the window, in
   selection order. The driver plans chunk-aligned writes from their row counts (``write_plan``):
   each experiment writes the chunks it fills alone, one seam task writes each shared chunk (after
   the unit before has written it). One unit writes while the one before commits.
4. Commit (``commit_unit.commit_units``): the driver writes the unit's obs rows, grows X's and
   obs' shapes over the new rows and appends to the manifest.

This module is the loop that decides when: loads through the window, units planned, commits one
at a time on a committer thread.

Rows are written past the committed shape and the shapes grow only in the commit, so a reader of
any array sees committed rows only. A killed run leaves at most scratch past ``n_committed``; the
rerun truncates it and goes on, so the store is identical to an uninterrupted run, and to a run
on any number of workers (the rows' order is the selection's, whatever the units were).

Rejected experiments are replaced by the next ones in the seeded order (top-ups) until the cell
budget is met. A rerun tries I/O rejections again (a repaired file is committed, after the rows
already there); content rejections stay out unless ``retry_rejected``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import deque
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..runtime import remote
from .gene_axis import PLAN_TABLES, axis_from_tables, read_genes_file
from ..runtime.cluster import dask_client, recomputable
from ..runtime.wakeup import Wakeup
from ..source.h5ad import ExperimentError, gene_table_task
from ..store.manifest import Manifest, read_manifest, rejection_kind, write_manifest
from ..source.bucket import (
    CELL_METADATA_COLUMNS,
    Experiment,
    read_sample_metadata,
    seeded_order,
    take_budget,
)
from ..store.writer import StoreWriter
from ..store.layout import create_store, gene_axis_digest, open_root, truncate
from .selection import ExperimentSelection as _Selection
from .worker_tasks import load_task, summarize_task
from .commit_unit import CommitUnit, Load, commit_units, plan_unit, utc_now
from .config import IngestConfig
from .errors import IngestError
from .load_window import Capacity, EarlyStarts, LoadWindow, commit_group

log = logging.getLogger(__name__)
WINDOW_REFRESH_S = 5.0
"""How often the driver asks the scheduler for its workers (the window follows the cluster)."""


@dataclass(slots=True)
class IngestReport:
    manifest: Manifest
    added: list[str]
    rejected: list[dict]
    skipped: list[str]
    top_ups: list[str] = field(default_factory=list)
    """Committed this run past the budget's seeded selection, in place of rejected experiments."""


def _read_tables(client, config: IngestConfig):
    """``axis_from_tables``'s reader: one gene-table task per experiment of a batch, on the cluster."""

    def read(batch: list[Experiment]) -> list:
        futures = client.map(gene_table_task, batch, pure=False)
        out = []
        for future in futures:
            try:
                out.append(future.result())
            except ExperimentError as exc:
                out.append(exc)
            finally:
                future.release()
        return out

    return read


def _plan_store(client, experiments: list[Experiment], config: IngestConfig, echo) -> Manifest:
    """Planning pass: the gene axis from a few files (or ``--genes``), then the empty store."""
    explicit = read_genes_file(config.genes_file) if config.genes_file else (None, None)
    n_tables = 1 if config.genes_file else PLAN_TABLES  # with --genes: only the cell annotation columns
    try:
        axis = axis_from_tables(experiments, _read_tables(client, config), n_tables, config.on_error, *explicit)
    except ExperimentError as exc:
        raise IngestError(f"{exc} (nothing is committed yet; fix or filter it out and rerun)") from exc
    except ValueError as exc:
        raise IngestError(str(exc)) from exc
    how = f"--genes {config.genes_file}" if config.genes_file else f"the gene tables of {axis.tables_read} experiments"
    echo(f"Planning: gene axis from {how} ({len(axis.rejected)} unreadable)")
    if not axis.agreed:
        echo("  warning: the gene tables read differ; the axis is their union (give --genes FILE for a fixed axis)")
    metadata_columns = [c for c in CELL_METADATA_COLUMNS if any(c in e.metadata for e in experiments)]
    create_store(config.store, axis.gene_ids, axis.gene_symbols, metadata_columns + list(axis.annotation_columns),
                 config.layout)
    manifest = Manifest(n_genes=len(axis.gene_ids), gene_axis_digest=gene_axis_digest(axis.gene_ids))
    write_manifest(config.store, manifest)
    echo(f"Created {config.store}: {len(axis.gene_ids):,} genes, chunks ({config.layout.chunk_cells}, "
         f"{config.layout.chunk_genes})")
    return manifest


def _start_selection(config: IngestConfig, order: list[Experiment], manifest: Manifest, echo) -> _Selection:
    """The run's selection, after saying what an earlier run left (committed, rejected, to retry)."""
    committed = manifest.committed_accessions()
    excluded = manifest.lasting_rejections(config.retry_rejected)
    selection = _Selection(order, config.cell_count, set(excluded), set(committed))
    todo = {e.accession for e in selection.todo()}
    retry = [e for e in manifest.rejected if e["accession"] in todo]
    if committed or excluded:
        echo(f"Resuming: {len(committed)} experiments committed, {len(excluded)} rejected and left out, "
             f"{len(todo)} to go")
    if retry:
        kinds = sorted({rejection_kind(e) for e in retry})
        echo(f"Retrying {len(retry)} rejected experiments ({' and '.join(kinds)} faults): "
             + ", ".join(e["accession"] for e in retry[:5]) + (" …" if len(retry) > 5 else ""))
    return selection


def ingest(config: IngestConfig, echo=print) -> IngestReport:
    """Select, plan and ingest; resumes whatever an earlier run of the same store committed."""
    echo = remote.redacting(echo)
    table = read_sample_metadata(config.source)
    order = seeded_order(table, config.source, config.seed, config.filters)
    selected = take_budget(order, config.cell_count)
    echo(
        f"Selected {len(selected)} experiments ({sum(e.obs_count for e in selected):,} cells by metadata) "
        f"from {config.source.source} for a budget of {config.cell_count:,} cells (seed {config.seed})"
    )
    with dask_client(config.cluster, echo=echo) as client, _stops_cleanly(config.store):
        manifest = read_manifest(config.store)
        if manifest is None:
            manifest = _plan_store(client, selected, config, echo)
        root = open_root(config.store, mode="r+")
        truncate(root, manifest.n_committed, manifest.categories)
        selection = _start_selection(config, order, manifest, echo)
        left = selection.done | selection.excluded
        skipped = [e.accession for e in selected if e.accession in left]
        gene_ids = np.asarray([str(g) for g in root["var/_index"][:]])
        gene_ids_future = recomputable(client, gene_ids)
        manifest.runs.append(
            {"started": utc_now(), "source": config.source.source, "cell_count": config.cell_count, "seed": config.seed,
             "filters": config.filters, "selected": len(selected), "retry_rejected": config.retry_rejected}
        )
        try:
            added, rejected = _run_units(client, config, manifest, selection, gene_ids_future, echo)
        except futures.CancelledError as exc:  # the scheduler went away (or cancelled our tasks) mid-run
            lost = "connection" in str(exc).lower()
            raise IngestError(
                ("lost the connection to the Dask scheduler" if lost else "the Dask scheduler cancelled the run's tasks")
                + f" ({type(exc).__name__}); {manifest.n_committed:,} committed cells in {remote.redact(config.store)} "
                "are intact: rerun to resume once the cluster is back") from exc
        chosen = {e.accession for e in selected}
        top_ups = [a for a in added if a not in chosen]
        # Run bookkeeping only: the version counts data commits, so derived data stays fresh.
        manifest.runs[-1].update({"finished": utc_now(), "top_ups": top_ups})
        write_manifest(config.store, manifest)
    echo(f"Committed {manifest.n_committed:,} cells from {len(manifest.experiments)} experiments "
         f"(+{len(added)} this run, {len(top_ups)} of them top-ups for rejected ones; {len(rejected)} rejected) "
         f"in {config.store}")
    return IngestReport(manifest, added, rejected, skipped, top_ups)


@contextlib.contextmanager
def _stops_cleanly(store: str) -> Iterator[None]:
    """The store's own I/O failing after its retries (the driver's reads and writes: obs rows,
    shapes, manifest, consolidated metadata) stops the run with an ``IngestError`` that names the
    object; the units committed before are intact."""
    try:
        yield
    except remote.SourceError as exc:
        raise IngestError(f"{exc}; the rounds committed in {remote.redact(store)} are intact, rerun to resume") from exc


def cluster_capacity(client) -> Capacity:
    return Capacity.from_workers(client.scheduler_info(n_workers=-1)["workers"])


def _run_units(client, config: IngestConfig, manifest: Manifest, selection: _Selection, gene_ids_future, echo):
    """Load, write and commit until the budget is met; returns (added, rejected).

    Loads run through the window in selection order; whenever the head of the window has
    finished, it becomes a commit unit (``LoadWindow.take_unit``); units commit in order, one at
    a time on a committer thread, while this loop keeps the window full (a commit's obs rows and
    manifest take the driver seconds at scale). The next experiments are chosen after each
    rejection is known, so top-ups follow at once."""
    added, rejected = [], []
    window = LoadWindow(config.policy, cluster_capacity(client))
    loads: dict[int, Load] = {}
    loading: dict[int, Load] = {}
    units: deque[CommitUnit] = deque()
    writer = StoreWriter(config.store)
    next_row, fatal, seq = manifest.n_committed, None, 0
    last: CommitUnit | None = None
    """The latest unit with rows: the next unit's first seam may re-read its last chunk."""
    committing = None
    """(units, future) of the commit under way on the committer thread."""
    committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sczarr-commit")
    wakeup = Wakeup()
    """Set when any load, summary, write or commit finishes: the loop sleeps until then."""
    refreshed = time.monotonic()
    initial = selection.todo()
    bar = _progress(config.progress, initial)
    planned = {e.accession for e in initial}  # later ones are top-ups: the bar's total grows

    early = EarlyStarts([e.obs_count for e in selection.order], window.policy)
    started: dict[str, Load] = {}
    """Loads started ahead of their turn, by accession."""

    def submit_load(exp: Experiment, priority: int) -> Load:
        load = client.submit(load_task, exp, gene_ids_future, config.keep_dir, config.scratch_dir,
                             pure=False, priority=-priority)
        summary = client.submit(summarize_task, load, pure=False, priority=-priority)
        wakeup.watch(summary)  # a failed load fails its summary too
        return Load(exp, load, summary)

    try:
        while True:
            if time.monotonic() - refreshed > WINDOW_REFRESH_S:
                window.resize(cluster_capacity(client))
                refreshed = time.monotonic()
            if fatal is None:  # large experiments first, ahead of their turn (as urgent as the next in turn)
                for position in early.due(selection.cursor, window.capacity):
                    if not selection.may_start_early(position, early.cells_between(selection.cursor, position)):
                        early.started(position)  # committed, rejected or past the budget: not ahead
                        continue
                    exp = selection.order[position]
                    if not window.admits_early(exp.obs_count):
                        break
                    early.started(position)
                    started[exp.accession] = submit_load(exp, seq)
                    window.started_early(exp.obs_count)
            while fatal is None and (exp := selection.peek()) is not None and (
                    exp.accession in started or window.admits(exp.obs_count)):
                selection.take()
                # earlier experiments first: the head of the window is what the next commit waits for
                if exp.accession in started:
                    loading[seq] = loads[seq] = started.pop(exp.accession)
                    window.submitted(seq, exp.obs_count, early=True)
                else:
                    loading[seq] = loads[seq] = submit_load(exp, seq)
                    window.submitted(seq, exp.obs_count)
                if bar is not None and exp.accession not in planned:
                    bar.total += exp.obs_count
                    bar.refresh()
                seq += 1
            for key in [k for k, m in loading.items() if m.summary.done()]:
                fatal = _finish_load(config, manifest, window, selection, key, loading.pop(key), fatal, echo)
            while (keys := window.take_unit(stop_before=fatal)) is not None:
                unit = plan_unit(client, config, keys, loads, next_row, last)
                wakeup.watch(*unit.writes, *unit.cells_of)
                next_row = unit.plan.stop
                last = unit if unit.kept else last
                units.append(unit)
            for unit in units:  # in order: a held seam goes out once the unit before has written its tail
                unit.harvest()
                unit.release_held(client, config, wakeup.watch)
                if not unit.written and not unit.writes and unit.held is None and all(f.done() for f in unit.cells_of):
                    unit.written = True
                    window.written(unit.keys)  # the workers hold its experiments no more
            if committing is not None and committing[1].done():
                group, future = committing
                committing = None
                added += future.result()
                for unit in group:
                    rejected += unit.rejected
                    unit.cells_of = []  # read by the commit: the workers may free them
                    window.committed(unit.keys)
                if bar is not None:
                    bar.update(sum(unit.cells for unit in group))
                    bar.set_postfix(experiments=f"{len(added)}+{len(rejected)} rejected",
                                    committed=f"{manifest.n_committed:,}")
                continue
            if committing is None and units and units[0].written:
                # one commit at a time, in order, on the committer thread: this loop goes on
                # admitting loads and planning units meanwhile; a commit takes every written unit
                # at the head (up to the policy's group), so commits keep up with the writes
                written = [u.plan.stop - u.plan.start for u in itertools.takewhile(lambda u: u.written, units)]
                group = [units.popleft() for _ in range(commit_group(written, window.policy))]
                committing = (group, committer.submit(commit_units, config, manifest, writer, group))
                wakeup.watch(committing[1])
                continue
            if fatal is not None and not units and committing is None and next(iter(loads), None) == fatal:
                raise IngestError(f"{loads[fatal].error} (committed rounds are intact; fix or filter it out and rerun)")
            if not units and not loads and committing is None and selection.peek() is None:
                break
            wakeup.wait(WINDOW_REFRESH_S)  # until a watched future finishes (or the window's refresh)
    finally:
        for m in started.values():  # a run stopped with loads started ahead: they are not needed
            m.summary.cancel()
            m.load.cancel()
        if committing is not None:  # an error stops the run: the commit under way ends first (or fails)
            with contextlib.suppress(Exception):
                committing[1].result()
        committer.shutdown()
        if bar is not None:
            bar.close()
    return added, rejected


def _finish_load(config: IngestConfig, manifest: Manifest, window: LoadWindow, selection: _Selection, key: int,
                 m: Load, fatal, echo):
    """Record a finished load in the window; returns the key of the first experiment that stops
    the run (``on_error='raise'``), if any."""
    try:
        m.result = m.summary.result()
    except ExperimentError as exc:
        m.error, m.load, m.summary = exc, None, None
        window.failed(key)
        selection.reject(m.exp)
        if config.on_error == "raise":
            return key if fatal is None else min(fatal, key)
        echo(f"  rejected {exc}")
        return fatal
    except Exception as exc:  # transient after retries, or a worker died: stop, keep commits
        raise IngestError(
            f"experiment {m.exp.accession} ({m.exp.url}): {type(exc).__name__}: {exc}; "
            f"{manifest.n_committed:,} committed cells are intact, rerun to resume"
        ) from exc
    m.summary = None
    window.loaded(key)
    for warning in m.result.warnings:
        echo(f"  warning: experiment {m.exp.accession}: {warning}")
    return fatal


def _progress(enabled: bool, todo: list[Experiment]):
    if not enabled or not todo:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=sum(e.obs_count for e in todo), unit="cells", unit_scale=True, desc="ingest")
