"""Ingest chosen scBaseCount experiments into one store through a Dask cluster.

Per round of ``batch_size`` experiments:

1. one task per experiment fetches (verified), reads and converts it onto the gene axis; the
   result stays in the worker's memory;
2. the driver plans chunk-aligned writes from the experiments' row counts (``plan``): each
   experiment writes the chunks it fills alone, one seam task writes each shared chunk;
3. the driver appends the round's obs rows and replaces the manifest: the commit.

A killed run leaves at most scratch rows past ``n_committed``; the rerun truncates them and
redoes the round, so the store is identical to an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import remote
from .cluster import ClusterConfig, dask_client
from .h5ad import ExperimentError
from .manifest import Manifest, read_manifest, write_manifest
from .plan import COMMITTED, plan_round, split_rounds
from .source import (
    CELL_METADATA_COLUMNS,
    Experiment,
    SourceConfig,
    read_sample_metadata,
    select_experiments,
)
from .store import StoreLayout, append_obs, create_store, gene_axis_digest, open_root, truncate
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


class IngestError(RuntimeError):
    """The ingest stopped; committed rounds are intact and a rerun resumes."""


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
            rejected.append({"accession": exp.accession, "url": exp.url, "reason": exc.problem, "at": _now()})
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
    """Grow X and submit one writer per touched chunk; returns (plan, write futures)."""
    root = open_root(config.store, mode="r+")
    plan = plan_round(manifest.n_committed, [s.n_cells for _, _, s in kept], config.layout.chunk_cells)
    x = root["X"]
    x.resize((plan.stop, x.shape[1]))
    writes = []
    for (_, load, _), own in zip(kept, plan.own_writes):
        writes += [client.submit(write_own_task, load, w, config.store, pure=False) for w in own]
    for seam in plan.seam_writes:
        parts = [
            None if p.owner == COMMITTED else client.submit(rows_task, kept[p.owner][1], p.src_start, p.src_stop, pure=False)
            for p in seam.pieces
        ]
        writes.append(client.submit(write_seam_task, config.store, seam, parts, pure=False))
    return root, plan, writes


def _commit_round(config: IngestConfig, manifest: Manifest, root, plan, writes, kept, rejected) -> list[str]:
    """Wait for the writes, append obs, replace the manifest: after this the rows are the store."""
    written = sum(f.result() for f in writes)
    expected = plan.stop - (plan.start // plan.chunk_rows) * plan.chunk_rows if kept else 0
    if written != expected:
        raise IngestError(f"round wrote {written} rows but the plan covers {expected}")
    if kept:
        frame = pd.concat([_obs_frame(exp, s) for exp, _, s in kept], ignore_index=True)
        manifest.categories = append_obs(root, plan.start, frame)
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
    manifest.experiments += entries
    manifest.rejected += rejected
    manifest.n_committed = plan.stop
    manifest.version += 1
    write_manifest(config.store, manifest)
    return [e["accession"] for e in entries]


def ingest(config: IngestConfig, echo=print) -> IngestReport:
    """Select, plan and ingest; resumes whatever an earlier run of the same store committed."""
    table = read_sample_metadata(config.source)
    selected = select_experiments(table, config.source, config.cell_count, config.seed, config.filters)
    echo(
        f"Selected {len(selected)} experiments ({sum(e.obs_count for e in selected):,} cells by metadata) "
        f"from {config.source.source} for a budget of {config.cell_count:,} cells (seed {config.seed})"
    )
    with dask_client(config.cluster, echo=echo) as client:
        manifest = read_manifest(config.store)
        if manifest is None:
            manifest = _plan_store(client, selected, config, echo)
        root = open_root(config.store, mode="r+")
        truncate(root, manifest.n_committed, manifest.categories)
        done = manifest.committed_accessions() | manifest.rejected_accessions()
        skipped = [e.accession for e in selected if e.accession in done]
        todo = [e for e in selected if e.accession not in done]
        if skipped:
            echo(f"Resuming: {len(skipped)} selected experiments already committed or rejected, {len(todo)} to go")
        gene_ids = np.asarray([str(g) for g in root["var/_index"][:]])
        gene_ids_future = client.scatter(gene_ids, broadcast=True)
        manifest.runs.append(
            {"started": _now(), "source": config.source.source, "cell_count": config.cell_count, "seed": config.seed,
             "filters": config.filters, "selected": len(selected)}
        )
        added, rejected = [], []
        bar = _progress(config.progress, sum(e.obs_count for e in todo), len(todo))
        rounds = split_rounds(todo, config.batch_size, [e.obs_count for e in todo], config.round_cells)
        try:
            # Later rounds load while round r writes (PREFETCH_ROUNDS ahead); commits stay in
            # order, and at most PREFETCH_ROUNDS + 1 rounds of experiments are held in memory.
            pending = deque(_submit_round(client, config, exps, gene_ids_future) for exps in rounds[:PREFETCH_ROUNDS])
            for i, round_exps in enumerate(rounds):
                kept, r = _collect(config, manifest, pending.popleft(), echo)
                root, plan, writes = _write_round(client, config, manifest, kept)
                # Only the writers hold the loaded experiments now: each is freed on its worker as
                # soon as its own writes are done, not when the whole round commits.
                kept = [(exp, None, summary) for exp, _, summary in kept]
                if i + PREFETCH_ROUNDS < len(rounds):
                    pending.append(_submit_round(client, config, rounds[i + PREFETCH_ROUNDS], gene_ids_future))
                added += _commit_round(config, manifest, root, plan, writes, kept, r)
                rejected += r
                del kept, writes
                if bar is not None:
                    bar.update(sum(e.obs_count for e in round_exps))
                    bar.set_postfix(experiments=f"{len(added) + len(rejected)}/{len(todo)}", committed=f"{manifest.n_committed:,}")
        finally:
            if bar is not None:
                bar.close()
        # Run bookkeeping only: the version counts data commits, so derived data stays fresh.
        manifest.runs[-1]["finished"] = _now()
        write_manifest(config.store, manifest)
    echo(f"Committed {manifest.n_committed:,} cells from {len(manifest.experiments)} experiments "
         f"(+{len(added)} this run, {len(rejected)} rejected) in {config.store}")
    return IngestReport(manifest, added, rejected, skipped)


def _progress(enabled: bool, total_cells: int, n_experiments: int):
    if not enabled or n_experiments == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total_cells, unit="cells", unit_scale=True, desc="ingest")
