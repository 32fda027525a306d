"""``scdata hvg``: statistics -> selection -> var columns, hvg_info.json, hvg_analysis.png, X_hvg."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..runtime import remote
from ..runtime.cluster import ClusterConfig, dask_client
from ..runtime.figure_process import DrawProcess
from .flavors import HVGConfig, run_hvg
from .results import (
    hvg_info, load_hvg, materialize, open_hvg_matrix, previous_info, ranked_hvgs, write_json, write_var_columns,
)
from ..store.manifest import StaleError
from .figure import HVGPanels, draw_hvg_analysis, hvg_panels
from ..stats.reduction import GeneStats
from ..store.layout import open_root, read_strings

PANEL_BATCH_KEY = "srx_accession"


@dataclass(frozen=True, kw_only=True)
class HVGJob:
    store: str
    config: HVGConfig = field(default_factory=HVGConfig)
    output_dir: str | None = None
    """Where hvg_info.json and hvg_analysis.png go (default: beside the store, as in the seed)."""
    force: bool = False
    materialize: bool = False
    cluster: ClusterConfig = field(default_factory=lambda: ClusterConfig(processes=False))
    """Threads of one process by default: the passes release the GIL and their partials stay put."""

    @property
    def out(self) -> str:
        if self.output_dir:
            return self.output_dir
        if not remote.is_local(self.store):
            raise ValueError("a remote store needs --output-dir for hvg_info.json")
        return os.path.dirname(os.path.abspath(remote.local_path(self.store)))


def _up_to_date(job: HVGJob) -> bool:
    info = previous_info(os.path.join(job.out, "hvg_info.json"))
    if info is None or info.get("parameters") != job.config.as_dict():
        return False
    try:
        stored = load_hvg(job.store)
    except (FileNotFoundError, StaleError):
        return False
    if stored["params"] != job.config.as_dict() or info.get("manifest_version") != stored["manifest_version"]:
        return False
    if job.materialize:
        try:
            open_hvg_matrix(job.store)
        except (FileNotFoundError, StaleError):
            return False
    return True


def _panels(stats: GeneStats, config: HVGConfig, df: pd.DataFrame, order: np.ndarray,
            symbols: np.ndarray) -> HVGPanels:
    score_name = {"seurat": "normalised dispersion", "cell_ranger": "normalised dispersion",
                  "dispersion": "dispersion (variance / mean)"}.get(config.flavor, "normalised variance")
    score_col = {"seurat": "dispersions_norm", "cell_ranger": "dispersions_norm", "dispersion": "dispersions"}.get(
        config.flavor, "variances_norm")
    title = f"{len(order):,} HVGs ({config.flavor}) from {stats.n_cells:,} cells, {len(stats.batches)} experiments"
    return hvg_panels(stats, order, symbols, np.asarray(df[score_col], dtype=float), score_name, title)


def run_hvg_job(job: HVGJob, echo=print) -> dict:
    """Run the whole HVG step; returns the hvg_info payload.

    The figure is drawn by a child process (``DrawProcess``) while the store's columns and
    hvg_info.json are written (importing matplotlib in a thread during the pass was tried: its GIL
    time slowed the pass by more than it saved). The last line says where the time went: "figure"
    is the wait for the child after the outputs are written."""
    info_path = os.path.join(job.out, "hvg_info.json")
    if not job.force and _up_to_date(job):
        echo(f"{info_path} is up to date with the store (use --force to recompute)")
        return previous_info(info_path)
    config = job.config
    timer = PhaseTimer()
    plot_path = os.path.join(job.out, "hvg_analysis.png")
    os.makedirs(job.out, exist_ok=True)  # before the figure's child may save into it
    with DrawProcess() as figure:  # imports matplotlib on the core the cluster's start leaves idle
        with dask_client(job.cluster, echo=echo) as client:
            timer.lap("cluster")
            df, stats = run_hvg(job.store, config, client, stats_batch_key=PANEL_BATCH_KEY)
            timer.lap("statistics and selection")
            order = ranked_hvgs(df, config)
            echo(f"Selected {len(order):,} HVGs ({config.flavor}"
                 f"{', batch_key=' + config.batch_key if config.batch_key else ''}) from {stats.n_cells:,} cells x "
                 f"{len(stats.gene_ids):,} genes (manifest v{stats.manifest_version})")
            symbols = read_strings(open_root(job.store)["var/gene_symbol"])
            figure.draw(draw_hvg_analysis, plot_path, _panels(stats, config, df, order, symbols))
            write_var_columns(job.store, df, config, stats.manifest_version, order)
            if job.materialize:
                materialize(job.store, order, stats.manifest_version, client)
                echo(f"Materialized obsm/X_hvg ({stats.n_cells:,} x {len(order):,} int16)")
        info = hvg_info(job.store, stats, config, order, symbols)
        write_json(info_path, info)
        timer.lap("store columns and hvg_info.json" + (" and X_hvg" if job.materialize else ""))
        figure.wait()
        timer.lap("figure")
    echo(f"Wrote {info_path} and {plot_path}")
    echo(f"Time: {timer}")
    return info


class PhaseTimer:
    """Wall and CPU seconds (this process, all threads) per phase of a job, in order.

    ``str``: ``"phase 1.20 s (cpu 2.31 s), …, total 3.40 s (cpu 5.02 s)"``: on a shared machine
    the CPU seconds say what the job cost, the wall seconds what it waited."""

    def __init__(self) -> None:
        self.phases: dict[str, tuple[float, float]] = {}
        self._start = self._last = (time.perf_counter(), time.process_time())

    def lap(self, phase: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.phases[phase] = (now[0] - self._last[0], now[1] - self._last[1])
        self._last = now

    def __str__(self) -> str:
        total = (self._last[0] - self._start[0], self._last[1] - self._start[1])
        return ", ".join(f"{name} {wall:.2f} s (cpu {cpu:.2f} s)" for name, (wall, cpu) in [*self.phases.items(), ("total", total)])
