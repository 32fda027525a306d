"""Highly variable genes from out-of-core statistics, flavor by flavor as scanpy computes them.

``select_hvgs`` takes a store's ``GeneStats`` (one Dask pass, plus a clipped second pass for
Seurat v3) and returns a DataFrame with scanpy's columns, so that the selection equals
``scanpy.pp.highly_variable_genes`` on the same cells loaded into memory:

* ``seurat`` / ``cell_ranger``: binned, normalised dispersions of normalize_total+log1p data
  (scanpy's defaults: 20 bins / percentile bins with median and MAD), per batch when a
  ``batch_key`` is given, merged by number of batches then mean normalised dispersion;
* ``seurat_v3`` / ``seurat_v3_paper``: variance of counts standardised by a loess fit of
  log variance on log mean, values clipped at sqrt(n) (Stuart et al. 2019), ranked per batch;
* ``dispersion``: the seed pipeline's variance/mean of raw counts among genes expressed in at
  least ``min_cells_pct`` % of cells (kept so earlier results can be reproduced).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..stats.moments import mean as mean_of
from ..stats.moments import variance
from ..stats.reduction import GeneStats
from .flavor_names import FLAVORS

log = logging.getLogger(__name__)



@dataclass(frozen=True, kw_only=True)
class HVGConfig:
    """Parameters of one selection (scanpy's names and defaults)."""

    flavor: str = "seurat_v3"
    n_top_genes: int | None = 2000
    batch_key: str | None = None
    min_cells_pct: float = 0.1
    """``dispersion`` only: genes expressed in fewer than this % of cells are not candidates."""
    n_bins: int = 20
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    max_disp: float = np.inf
    span: float = 0.3
    target_sum: float = 1e4

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor {self.flavor!r} is not one of {', '.join(FLAVORS)}")
        if self.n_top_genes is not None and self.n_top_genes <= 0:
            raise ValueError(f"n_top_genes must be positive, got {self.n_top_genes}")
        if self.n_top_genes is None and self.flavor in ("seurat_v3", "seurat_v3_paper", "dispersion"):
            raise ValueError(f"flavor {self.flavor!r} needs n_top_genes")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["max_disp"] = None if np.isinf(self.max_disp) else self.max_disp
        return d


# --- dispersion-based flavors (scanpy's _highly_variable_genes_single_batch) -----------------------


def _mad(values: pd.Series) -> float:
    from statsmodels.robust import mad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return mad(values)


def _nth_highest(x: np.ndarray, n: int) -> float:
    x = x[~np.isnan(x)]
    n = min(n, x.size)
    return np.sort(x)[::-1][n - 1]


def _dispersion_table(mean: np.ndarray, var: np.ndarray, flavor: str, n_bins: int) -> pd.DataFrame:
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    if flavor == "seurat":
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
        mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": dispersion})
    if flavor == "seurat":
        df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    else:
        df["mean_bin"] = pd.cut(df["means"], np.r_[-np.inf, np.percentile(df["means"], np.arange(10, 105, 5)), np.inf])
    grouped = df.groupby("mean_bin", observed=True)["dispersions"]
    if flavor == "seurat":
        stats = grouped.agg(avg="mean", dev="std")
        single = stats["dev"].isnull()  # one gene in the bin: its normalised dispersion becomes 1
        stats.loc[single, "dev"] = stats.loc[single, "avg"]
        stats.loc[single, "avg"] = 0
    else:
        stats = grouped.agg(avg="median", dev=_mad)
    per_gene = stats.loc[df["mean_bin"]].set_index(df.index)
    df["dispersions_norm"] = (df["dispersions"] - per_gene["avg"]) / per_gene["dev"]
    return df


def _select_dispersion(df: pd.DataFrame, config: HVGConfig) -> np.ndarray:
    norm = df["dispersions_norm"].to_numpy()
    if config.n_top_genes is None:
        norm = np.nan_to_num(norm)
        means = df["means"].to_numpy()
        return (means > config.min_mean) & (means < config.max_mean) & (norm > config.min_disp) & (norm < config.max_disp)
    cut = _nth_highest(norm.copy(), min(config.n_top_genes, len(norm)))
    return np.nan_to_num(norm, nan=-np.inf) >= cut


def _single_batch(mean, var, expressed, genes: np.ndarray, config: HVGConfig, filter_unexpressed: bool) -> pd.DataFrame:
    keep = expressed > 0 if filter_unexpressed else np.ones(len(mean), dtype=bool)
    df = _dispersion_table(mean[keep], var[keep], config.flavor, config.n_bins)
    df["highly_variable"] = _select_dispersion(df, config)
    df.index = genes[keep]
    df = df.drop(columns="mean_bin")
    if not keep.all():
        missing = pd.DataFrame(0.0, index=genes[~keep], columns=df.columns)
        missing["highly_variable"] = False
        df = pd.concat([df, missing]).loc[genes]
    return df


def _dispersion_flavor(stats: GeneStats, config: HVGConfig) -> pd.DataFrame:
    scale = "normalized" if config.flavor == "seurat" else "log1p"
    genes = stats.gene_ids
    if config.batch_key is None:
        df = _single_batch(stats.mean(scale), stats.var(scale), stats.n_cells_expressed, genes, config, False)
        return df[["means", "dispersions", "dispersions_norm", "highly_variable"]]
    stats.require_batch_scale(scale)
    frames = [
        _single_batch(mean_of(m[scale]), variance(m[scale]), e, genes, config, True)
        for m, e in zip(stats.batch_moments, stats.batch_expressed)
    ]
    df = pd.concat(frames, axis=0)
    df["highly_variable"] = df["highly_variable"].astype(int)
    df = df.groupby(df.index, observed=True).agg(
        {"means": "mean", "dispersions": "mean", "dispersions_norm": "mean", "highly_variable": "sum"}
    )
    df["highly_variable_nbatches"] = df["highly_variable"]
    df["highly_variable_intersection"] = df["highly_variable_nbatches"] == len(frames)
    if config.n_top_genes is not None:
        df = df.sort_values(["highly_variable_nbatches", "dispersions_norm"], ascending=False, na_position="last")
        df["highly_variable"] = np.arange(df.shape[0]) < config.n_top_genes
    else:
        df["dispersions_norm"] = df["dispersions_norm"].fillna(0)
        m, d = df["means"], df["dispersions_norm"]
        df["highly_variable"] = (m > config.min_mean) & (m < config.max_mean) & (d > config.min_disp) & (d < config.max_disp)
    return df.loc[genes]


# --- Seurat v3 -----------------------------------------------------------------------------------


class SeuratV3FitError(ValueError):
    """The Seurat v3 mean-variance loess cannot be fitted for some batch (too few or too similar genes)."""


def seurat_v3_clips(stats: GeneStats, span: float, batched: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per batch: the regularised standard deviation and the clip value of each gene."""
    from skmisc.loess import loess

    if batched:
        stats.require_batch_scale("counts")
    batches = stats.batch_moments if batched else [stats.moments]
    names = stats.batches if batched else ["all cells"]
    reg_stds, clips = [], []
    for name, m in zip(names, batches):
        mean, var = mean_of(m["counts"]), variance(m["counts"])
        not_const = var > 0
        estimated = np.zeros(len(mean), dtype=np.float64)
        model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
        try:
            model.fit()
        except ValueError as exc:  # skmisc's loess: a numerically singular local fit
            raise SeuratV3FitError(
                f"seurat_v3: the loess fit of log variance on log mean failed for batch {name!r} "
                f"({int(m['counts']['n'])} cells, {int(not_const.sum())} genes with variance > 0): {exc!s}. "
                "scanpy's seurat_v3 fails on the same data; use larger batches (or none), a larger --span, "
                "or another flavor") from exc
        estimated[not_const] = model.outputs.fitted_values
        reg_std = np.sqrt(10**estimated)
        reg_stds.append(reg_std)
        clips.append(reg_std * np.sqrt(m["counts"]["n"]) + mean)
    return reg_stds, clips


def _seurat_v3_flavor(stats: GeneStats, config: HVGConfig, clipped: list[tuple[np.ndarray, np.ndarray]],
                      reg_stds: list[np.ndarray]) -> pd.DataFrame:
    batched = config.batch_key is not None
    batches = stats.batch_moments if batched else [stats.moments]
    norm_vars = []
    for m, reg_std, (s, s2) in zip(batches, reg_stds, clipped):
        n, mean = m["counts"]["n"], mean_of(m["counts"])
        norm_vars.append((1 / ((n - 1) * np.square(reg_std))) * (n * np.square(mean) + s2 - 2 * s * mean))
    norm_vars = np.vstack(norm_vars)
    ranked = np.argsort(np.argsort(-norm_vars, axis=1), axis=1).astype(np.float32)
    n_top = config.n_top_genes
    nbatches = np.sum((ranked < n_top).astype(int), axis=0)
    ranked[ranked >= n_top] = np.nan
    median_rank = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    df = pd.DataFrame(index=pd.Index(stats.gene_ids))
    df["means"] = stats.mean("counts")
    df["variances"] = stats.var("counts")
    df["highly_variable_nbatches"] = nbatches
    df["highly_variable_rank"] = median_rank
    df["variances_norm"] = np.mean(norm_vars, axis=0)
    if config.flavor == "seurat_v3":
        cols, ascending = ["highly_variable_rank", "highly_variable_nbatches"], [True, False]
    else:
        cols, ascending = ["highly_variable_nbatches", "highly_variable_rank"], [False, True]
    order = df[cols].sort_values(cols, ascending=ascending, na_position="last").index
    df["highly_variable"] = False
    df.loc[order[:n_top], "highly_variable"] = True
    if not batched:
        df = df.drop(columns="highly_variable_nbatches")
    return df


# --- the seed's dispersion -----------------------------------------------------------------------


def _seed_dispersion(stats: GeneStats, config: HVGConfig) -> pd.DataFrame:
    mean, var = stats.mean("counts"), stats.var("counts")
    pct, dispersion = stats.pct_cells(), stats.dispersion()
    candidate = pct >= config.min_cells_pct
    score = np.where(candidate, dispersion, -np.inf)
    order = np.argsort(-score, kind="stable")[: min(config.n_top_genes, int(candidate.sum()))]
    hv = np.zeros(len(mean), dtype=bool)
    hv[order] = True
    rank = np.full(len(mean), np.nan)
    rank[order] = np.arange(len(order))
    return pd.DataFrame({"means": mean, "variances": var, "dispersions": dispersion, "pct_cells": pct,
                         "highly_variable_rank": rank, "highly_variable": hv}, index=pd.Index(stats.gene_ids))


def select_hvgs(stats: GeneStats, config: HVGConfig, clipped=None, reg_stds: list[np.ndarray] | None = None) -> pd.DataFrame:
    """The selection table (scanpy's columns) from statistics already computed.

    Seurat v3 flavors need ``clipped`` (per-batch clipped sums from ``compute_clipped_sums`` with
    the clip values of ``seurat_v3_clips``) and take that call's ``reg_stds`` to skip refitting
    the loess; ``run_hvg`` does both passes.
    """
    if config.batch_key is not None and config.batch_key != stats.batch_key:
        raise ValueError(f"statistics were computed with batch_key={stats.batch_key!r}, the selection asks {config.batch_key!r}")
    if config.flavor == "dispersion":
        return _seed_dispersion(stats, config)
    if config.flavor in ("seurat", "cell_ranger"):
        return _dispersion_flavor(stats, config)
    if clipped is None:
        raise ValueError("seurat_v3 needs the clipped second pass (use run_hvg)")
    if reg_stds is None:
        reg_stds, _ = seurat_v3_clips(stats, config.span, config.batch_key is not None)
    return _seurat_v3_flavor(stats, config, clipped, reg_stds)


FLAVOR_SCALE = {"seurat": "normalized", "cell_ranger": "log1p", "seurat_v3": "counts", "seurat_v3_paper": "counts"}
"""The scale whose per-batch moments a flavor's batch-aware selection reads (the seed's
dispersion ignores batches)."""
TOP_COUNTS = 64
"""Largest counts kept per gene by the first pass so Seurat v3 (without batches) can clip them
there: a second pass is needed only for genes with more than this many counts above the clip."""
PANEL_SCALE = "log1p"
"""The scale of the batch-effect panel of ``hvg_analysis.png``."""


def batch_scales_for(config: HVGConfig, panel: bool) -> tuple[str, ...]:
    """Per-batch scales a selection (and optionally the batch-effect panel) needs."""
    needed = set()
    if config.batch_key is not None and config.flavor in FLAVOR_SCALE:
        needed.add(FLAVOR_SCALE[config.flavor])
    if panel:
        needed.add(PANEL_SCALE)
    return tuple(s for s in ("counts", "normalized", "log1p") if s in needed) or ("counts",)


def run_hvg(store: str, config: HVGConfig, client=None, stats: GeneStats | None = None,
            stats_batch_key: str | None = None) -> tuple[pd.DataFrame, GeneStats]:
    """Statistics (one pass, two for Seurat v3) and the selection for a store.

    ``stats_batch_key`` asks for per-batch moments even when the selection ignores batches (the
    batch-effect panel of ``hvg_analysis.png`` uses them, on the log1p scale only).
    """
    from ..stats.reduction import StatsConfig, compute_gene_stats

    batch_key = config.batch_key or stats_batch_key
    scales = batch_scales_for(config, panel=stats_batch_key is not None)
    per_batch = config.batch_key is not None  # the panel alone needs only between-batch sums of squares
    seurat_v3 = config.flavor in ("seurat_v3", "seurat_v3_paper")
    top_counts = TOP_COUNTS if seurat_v3 and config.batch_key is None else 0
    have = set(stats.batch_moments[0]) if stats is not None and stats.batch_moments else set()
    if (stats is None or stats.batch_key != batch_key or stats.target_sum != config.target_sum
            or (per_batch and not set(scales) <= have)):
        stats = compute_gene_stats(store, StatsConfig(target_sum=config.target_sum, batch_key=batch_key,
                                                      batch_scales=scales, top_counts=top_counts,
                                                      per_batch=per_batch), client)
    clipped = reg_stds = None
    if seurat_v3:
        batched = config.batch_key is not None
        reg_stds, clips = seurat_v3_clips(stats, config.span, batched)
        clipped = _clipped_sums(store, stats, clips, client, batched)
    return select_hvgs(stats, config, clipped, reg_stds), stats


def _clipped_sums(store: str, stats: GeneStats, clips: list[np.ndarray], client, batched: bool):
    """Seurat v3's clipped sums: from the kept largest counts where they suffice, otherwise (per
    batch, or for the genes they do not resolve) from a second pass over X."""
    from ..stats.reduction import clipped_sums_from_top, compute_clipped_sums

    if batched or stats.top_counts is None:
        return compute_clipped_sums(store, stats, clips, client, batched=batched)
    sums, squares, unresolved = clipped_sums_from_top(stats, clips[0])
    log.debug("seurat_v3: %d genes need the second pass", int(unresolved.sum()))
    if unresolved.any():
        ((pass_sums, pass_squares),) = compute_clipped_sums(store, stats, clips, client, batched=False, genes=unresolved)
        sums = np.where(unresolved, pass_sums, sums)
        squares = np.where(unresolved, pass_squares, squares)
    return [(sums, squares)]
