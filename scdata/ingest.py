"""Ingest chosen scBaseCount experiments into one store through a Dask cluster.

Per round of ``batch_size`` experiments:

1. one task per experiment fetches (verified), reads and converts it onto the gene axis; the
   result stays in the worker's memory;
2. the driver plans chunk-aligned writes from the experiments' row counts (``plan``): each
   experiment writes the chunks it fills alone, one seam task writes each shared chunk;
3. the driver writes the round's obs rows, grows X's and obs' shapes over the new rows and
   replaces the manifest: the commit.

Rows are written past the committed shape and the shapes grow only in the commit, so a reader of
any array sees committed rows only. A killed run leaves at most scratch past ``n_committed``; the
rerun truncates it and redoes the round, so the store is identical to an uninterrupted run.

Rejected experiments are replaced by the next ones in the seeded order (top-ups) until the cell
budget is met. A rerun tries I/O rejections again (a repaired file is committed, after the rows
already there); content rejections stay out unless ``retry_rejected``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import remote
from .cluster import ClusterConfig, dask_client, recomputable
from .h5ad import ExperimentError
from .manifest import Manifest, read_manifest, rejection_kind, write_manifest
from .plan import COMMITTED, plan_round, split_rounds
from .source import (
    CELL_METADATA_COLUMNS,
    Experiment,
    SourceConfig,
    read_sample_metadata,
    seeded_order,
    take_budget,
)
from .store import StoreLayout, create_store, gene_axis_digest, grow_rows, open_root, truncate, write_obs_rows
from .tasks import gene_table_task, load_task, rows_task, summarize_task, write_own_task, write_seam_task

log = logging.getLogger(__name__)
PREFETCH_ROUNDS = 1


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Everything one ``scdata ingest`` run needs."""

    source: SourceConfig = field(default_factory=SourceConfig)
    store: str = "data/scRNA/store.zarr"
    cell_count: int = 100_000
    batch_size: int = 10
    """Experiments per round (one commit per round)."""
    round_cells: int | None = 40_000
    """At most this many cells per round (by metadata; a larger experiment is a round alone), so
    the memory of the rounds in flight does not depend on which experiments come together."""
    seed: int = 42
    filters: dict[str, list[str]] = field(default_factory=dict)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    keep_raw: bool = False
    raw_dir: str | None = None
    """Where ``keep_raw`` keeps downloaded h5ad files (default: ``raw/`` beside the store)."""
    scratch_dir: str | None = None
    layout: StoreLayout = field(default_factory=StoreLayout)
    on_error: str = "skip"
    """'skip': record a bad experiment as rejected and go on; 'raise': stop at it."""
    retry_rejected: bool = False
    """Also try again experiments rejected for their content (negative counts, foreign gene IDs…);
    experiments rejected for I/O faults are tried again by every run."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.cell_count <= 0:
            raise ValueError(f"cell_count must be positive, got {self.cell_count}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.round_cells is not None and self.round_cells <= 0:
            raise ValueError(f"round_cells must be positive, got {self.round_cells}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")

    @property
    def keep_dir(self) -> str | None:
        if not self.keep_raw:
            return None
        if self.raw_dir:
            return self.raw_dir
        if not remote.is_local(self.store):
            raise ValueError("--keep-raw with a remote store needs --raw-dir (a local directory)")
        return os.path.join(os.path.dirname(os.path.abspath(remote.local_path(self.store))), "raw")


@dataclass(slots=True)
class IngestReport:
    manifest: Manifest
    added: list[str]
    rejected: list[dict]
    skipped: list[str]
    top_ups: list[str] = field(default_factory=list)
    """Committed this run past the budget's seeded selection, in place of rejected experiments."""


class IngestError(RuntimeError):
    """The ingest stopped; committed rounds are intact and a rerun resumes."""

    def __init__(self, message: str):
        super().__init__(remote.redact(message))  # URLs in it may carry credentials


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _plan_store(client, experiments: list[Experiment], config: IngestConfig, echo) -> Manifest:
    """Planning pass: read every selected file's gene table and create the empty store."""
    echo(f"Planning: reading gene tables of {len(experiments)} experiments")
    futures = client.map(gene_table_task, experiments, pure=False)
    readable, bad = 0, []
    # The release maps every file to one reference, so the union is that gene list in its order.
    # Tables are merged one at a time, in selection order (each is a few MB of gene strings).
    gene_ids: list[str] = []
    symbols: list[str] = []
    seen: set[str] = set()
    annotation: set[str] = set()
    union = np.asarray(gene_ids)
    for future in futures:
        try:
            table = future.result()
        except ExperimentError as exc:
            if config.on_error == "raise":
                raise
            bad.append(exc)
            continue
        finally:
            future.release()  # the worker drops its copy too
        readable += 1
        annotation.update(table.annotation_columns)
        if np.array_equal(table.gene_ids, union):
            continue  # the usual case: the same reference genes in the same order
        for gid, sym in zip(table.gene_ids, table.gene_symbols):
            if gid not in seen:
                seen.add(gid)
                gene_ids.append(gid)
                symbols.append(sym)
        union = np.asarray(gene_ids)
    if not readable:
        raise IngestError("no selected experiment is readable: " + "; ".join(map(str, bad[:3])))
    annotation = sorted(annotation)
    metadata_columns = [c for c in CELL_METADATA_COLUMNS if any(c in e.metadata for e in experiments)]
    ids = np.asarray(gene_ids)
    create_store(config.store, ids, np.asarray(symbols), metadata_columns + annotation, config.layout)
    manifest = Manifest(n_genes=len(ids), gene_axis_digest=gene_axis_digest(ids))
    write_manifest(config.store, manifest)
    echo(f"Created {config.store}: {len(ids):,} genes, chunks ({config.layout.chunk_cells}, {config.layout.chunk_genes})")
    return manifest


def _obs_frame(exp: Experiment, summary) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "_index": [f"{exp.accession}:{b}" for b in summary.barcodes],
            "barcode": summary.barcodes,
            "srx_accession": exp.accession,
            "umi_count": summary.umi_count,
            "total_counts": summary.total_counts,
            "gene_count": summary.gene_count,
        }
    )
    for column in CELL_METADATA_COLUMNS:
        if column in exp.metadata:
            frame[column] = exp.metadata[column]
    for column in summary.annotations.columns:
        frame[column] = summary.annotations[column].to_numpy()
    return frame


@dataclass(slots=True)
class _Round:
    """A round whose load tasks are submitted (they run while the previous round writes)."""

    experiments: list[Experiment]
    loads: list
    summaries: list


def _submit_round(client, config: IngestConfig, round_exps: list[Experiment], gene_ids_future) -> _Round:
    loads = [
        client.submit(load_task, exp, gene_ids_future, config.keep_dir, config.scratch_dir, pure=False)
        for exp in round_exps
    ]
    return _Round(round_exps, loads, [client.submit(summarize_task, f, pure=False) for f in loads])


def _collect(config: IngestConfig, manifest: Manifest, pending: _Round, echo):
    """Wait for a round's loads; returns the kept (experiment, load, summary) and the rejected."""
    kept, rejected = [], []
    for exp, load, summ in zip(pending.experiments, pending.loads, pending.summaries):
        try:
            summary = summ.result()
        except ExperimentError as exc:
            if config.on_error == "raise":
                raise IngestError(f"{exc} (committed rounds are intact; fix or filter it out and rerun)") from exc
            echo(f"  rejected {exc}")
            rejected.append({"accession": exp.accession, "url": exp.url, "reason": exc.problem, "kind": exc.kind,
                             "at": _now()})
            continue
        except Exception as exc:  # transient after retries, or a worker died: stop, keep commits
            raise IngestError(
                f"experiment {exp.accession} ({exp.url}): {type(exc).__name__}: {exc}; "
                f"{manifest.n_committed:,} committed cells are intact, rerun to resume"
            ) from exc
        for warning in summary.warnings:
            echo(f"  warning: experiment {exp.accession}: {warning}")
        kept.append((exp, load, summary))
    return kept, rejected


def _write_round(client, config: IngestConfig, manifest: Manifest, kept: list):
    """Submit one writer per chunk the round touches; returns (root, plan, write futures).

    The writers write past X's committed shape; ``_commit_round`` grows it."""
    root = open_root(config.store, mode="r+")
    plan = plan_round(manifest.n_committed, [s.n_cells for _, _, s in kept], config.layout.chunk_cells)
    writes = []
    for (_, load, _), own in zip(kept, plan.own_writes):
        writes += [client.submit(write_own_task, load, w, config.store, plan.stop, pure=False) for w in own]
    for seam in plan.seam_writes:
        parts = [
            None if p.owner == COMMITTED else client.submit(rows_task, kept[p.owner][1], p.src_start, p.src_stop, pure=False)
            for p in seam.pieces
        ]
        writes.append(client.submit(write_seam_task, config.store, seam, parts, plan.stop, pure=False))
    return root, plan, writes


def _commit_round(config: IngestConfig, manifest: Manifest, root, plan, writes, kept, rejected) -> list[str]:
    """Wait for the writes, write obs, grow the shapes, replace the manifest: after this the rows
    are the store."""
    try:
        written = sum(f.result() for f in writes)
    except Exception as exc:  # a write failed on its worker (I/O after retries, or the worker died too often)
        raise IngestError(f"writing rows {plan.start:,}-{plan.stop:,}: {type(exc).__name__}: {exc}; "
                          f"{manifest.n_committed:,} committed cells are intact, rerun to resume") from exc
    expected = plan.stop - (plan.start // plan.chunk_rows) * plan.chunk_rows if kept else 0
    if written != expected:
        raise IngestError(f"round wrote {written} rows but the plan covers {expected}")
    if kept:
        frame = pd.concat([_obs_frame(exp, s) for exp, _, s in kept], ignore_index=True)
        manifest.categories = write_obs_rows(root, plan.start, frame)
        grow_rows(root, plan.stop)
    entries = []
    for (exp, _, s), (lo, hi) in zip(kept, plan.experiment_rows):
        entries.append(
            {
                "accession": exp.accession, "row_start": lo, "row_stop": hi, "n_cells": s.n_cells,
                "source_url": exp.url, "release": config.source.release, "feature_type": config.source.feature_type,
                "organism": config.source.organism, "seed": config.seed, "requested_cells": config.cell_count,
                "file_size": s.file_size, "file_digest": s.file_digest, "rows_digest": s.rows_digest,
                "nnz": s.nnz, "counters": s.repairs, "warnings": list(s.warnings), "metadata": exp.metadata,
                "committed_at": _now(),
            }
        )
        manifest.nnz += s.nnz
        manifest.max_value = max(manifest.max_value, s.repairs["max_value"])
    manifest.record_commits(entries)
    manifest.record_rejections(rejected)
    manifest.n_committed = plan.stop
    manifest.version += 1
    write_manifest(config.store, manifest)
    return [e["accession"] for e in entries]


@dataclass(slots=True)
class _Selection:
    """What a run still has to submit, round by round.

    The budget's experiments are ``take_budget`` of the seeded order without the lasting
    rejections; each rejection this run finds extends them (top-ups). Committed experiments count
    toward the budget; those and the ones this run submitted are not submitted again."""

    order: list[Experiment]
    cell_count: int
    excluded: set[str]
    """Rejected experiments left out (this run's rejections are added as they come)."""
    done: set[str]
    """Committed before this run, or submitted by it."""

    def todo(self) -> list[Experiment]:
        return [e for e in take_budget(self.order, self.cell_count, self.excluded) if e.accession not in self.done]

    def next_round(self, batch_size: int, round_cells: int | None) -> list[Experiment]:
        todo = self.todo()
        if not todo:
            return []
        first = split_rounds(todo, batch_size, [e.obs_count for e in todo], round_cells)[0]
        self.done.update(e.accession for e in first)
        return first


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
            {"started": _now(), "source": config.source.source, "cell_count": config.cell_count, "seed": config.seed,
             "filters": config.filters, "selected": len(selected), "retry_rejected": config.retry_rejected}
        )
        added, rejected = _run_rounds(client, config, manifest, selection, gene_ids_future, echo)
        chosen = {e.accession for e in selected}
        top_ups = [a for a in added if a not in chosen]
        # Run bookkeeping only: the version counts data commits, so derived data stays fresh.
        manifest.runs[-1].update({"finished": _now(), "top_ups": top_ups})
        write_manifest(config.store, manifest)
    echo(f"Committed {manifest.n_committed:,} cells from {len(manifest.experiments)} experiments "
         f"(+{len(added)} this run, {len(top_ups)} of them top-ups for rejected ones; {len(rejected)} rejected) "
         f"in {config.store}")
    return IngestReport(manifest, added, rejected, skipped, top_ups)


@contextlib.contextmanager
def _stops_cleanly(store: str) -> Iterator[None]:
    """The store's own I/O failing after its retries (the driver's reads and writes: obs rows,
    shapes, manifest, consolidated metadata) stops the run with an ``IngestError`` that names the
    object; the rounds committed before are intact."""
    try:
        yield
    except remote.SourceError as exc:
        raise IngestError(f"{exc}; the rounds committed in {remote.redact(store)} are intact, rerun to resume") from exc


def _run_rounds(client, config: IngestConfig, manifest: Manifest, selection: _Selection, gene_ids_future, echo):
    """Load, write and commit rounds until the budget is met; returns (added, rejected).

    Later rounds load while round r writes (PREFETCH_ROUNDS ahead); commits stay in order, and at
    most PREFETCH_ROUNDS + 1 rounds of experiments are held in memory. The next round is chosen
    after round r's rejections are known, so top-ups follow at once."""
    added, rejected = [], []
    pending: deque[_Round] = deque()
    initial = selection.todo()
    bar = _progress(config.progress, initial)
    planned = {e.accession for e in initial}  # later ones are top-ups: the bar's total grows

    def submit_ahead() -> None:
        while len(pending) < PREFETCH_ROUNDS:
            exps = selection.next_round(config.batch_size, config.round_cells)
            if not exps:
                return
            pending.append(_submit_round(client, config, exps, gene_ids_future))
            top_up_cells = sum(e.obs_count for e in exps if e.accession not in planned)
            if bar is not None and top_up_cells:
                bar.total += top_up_cells
                bar.refresh()

    try:
        submit_ahead()
        while pending:
            current = pending.popleft()
            kept, r = _collect(config, manifest, current, echo)
            selection.excluded.update(e["accession"] for e in r)
            root, plan, writes = _write_round(client, config, manifest, kept)
            # Only the writers hold the loaded experiments now: each is freed on its worker as
            # soon as its own writes are done, not when the whole round commits.
            kept = [(exp, None, summary) for exp, _, summary in kept]
            submit_ahead()
            added += _commit_round(config, manifest, root, plan, writes, kept, r)
            rejected += r
            del kept, writes
            if bar is not None:
                bar.update(sum(e.obs_count for e in current.experiments))
                bar.set_postfix(experiments=f"{len(added)}+{len(rejected)} rejected", committed=f"{manifest.n_committed:,}")
    finally:
        if bar is not None:
            bar.close()
    return added, rejected


def _progress(enabled: bool, todo: list[Experiment]):
    if not enabled or not todo:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=sum(e.obs_count for e in todo), unit="cells", unit_scale=True, desc="ingest")
