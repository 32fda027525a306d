"""HVG flavors against scanpy.pp.highly_variable_genes on the same cells loaded into memory."""

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import scdata
from scdata.hvg.flavors import HVGConfig, SeuratV3FitError, run_hvg
from scdata.stats.reduction import StatsConfig, compute_gene_stats

from tests.conftest import ingest_config

N_TOP = 300


@pytest.fixture(scope="module", params=[("demo", 0), ("random", 11)])
def store(request, demo_bucket, tmp_path_factory):
    kind, seed = request.param
    if kind == "demo":
        source = demo_bucket
    else:
        from scdata.source.demo_bucket import DemoConfig, write_demo_bucket

        source = write_demo_bucket(str(tmp_path_factory.mktemp("rand")), DemoConfig(
            n_experiments=4, min_cells=80, max_cells=400, n_genes=1500, seed=seed, release="2025-02-25"))
    path = str(tmp_path_factory.mktemp("hvgstore") / "s.zarr")
    scdata.ingest(ingest_config(source, path, cell_count=10**9), echo=lambda *_: None)
    return path


@pytest.fixture(scope="module")
def adata(store):
    a = scdata.to_anndata(store)
    a.X = a.X.astype(np.float64)
    return a


def _reference(adata, flavor, batch_key):
    ref = adata.copy()
    if flavor in ("seurat", "cell_ranger"):
        sc.pp.normalize_total(ref, target_sum=1e4)
        sc.pp.log1p(ref)
    return sc.pp.highly_variable_genes(ref, flavor=flavor, n_top_genes=N_TOP, batch_key=batch_key, inplace=False)


def _tied_at_cutoff(ref: pd.DataFrame, column: str, ascending: bool) -> set:
    """Genes whose ranking value is within 1e-9 (relative) of the last selected gene's value."""
    values = ref[column].astype(float)
    chosen = values[ref["highly_variable"]]
    cut = chosen.max() if ascending else chosen.min()
    return set(ref.index[np.isclose(values, cut, rtol=1e-9, atol=0)])


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper"])
@pytest.mark.parametrize("batch_key", [None, "srx_accession"])
def test_same_genes_as_scanpy(store, adata, flavor, batch_key):
    try:
        ref = _reference(adata, flavor, batch_key)
    except ValueError as exc:  # scanpy's loess is singular for a tiny batch: ours must fail there too, clearly
        assert flavor.startswith("seurat_v3") and "reciprocal condition number" in str(exc)
        with pytest.raises(SeuratV3FitError, match="failed for batch"):
            run_hvg(store, HVGConfig(flavor=flavor, n_top_genes=N_TOP, batch_key=batch_key))
        return
    _assert_same_as_scanpy(store, adata, ref, flavor, batch_key)


@pytest.mark.parametrize("flavor", ["seurat_v3", "seurat_v3_paper"])
def test_seurat_v3_with_batches_is_always_compared(flavor, tmp_path_factory):
    """Batches large enough for scanpy's loess: the batch-aware seurat_v3 flavors are compared
    with scanpy here whatever the fixtures above do (there a tiny batch may make both refuse)."""
    from scdata.source.demo_bucket import DemoConfig, write_demo_bucket

    source = write_demo_bucket(str(tmp_path_factory.mktemp("big_batches")), DemoConfig(
        n_experiments=3, min_cells=400, max_cells=600, n_genes=1500, seed=5, release="2025-02-25"))
    path = str(tmp_path_factory.mktemp("v3store") / "s.zarr")
    scdata.ingest(ingest_config(source, path, cell_count=10**9), echo=lambda *_: None)
    adata = scdata.to_anndata(path)
    adata.X = adata.X.astype(np.float64)
    ref = _reference(adata, flavor, "srx_accession")  # no fallback: scanpy must succeed on these batches
    _assert_same_as_scanpy(path, adata, ref, flavor, "srx_accession")


def _assert_same_as_scanpy(store, adata, ref, flavor, batch_key):
    ours, _ = run_hvg(store, HVGConfig(flavor=flavor, n_top_genes=N_TOP, batch_key=batch_key))
    ref.index = adata.var_names
    got, want = set(ours.index[ours["highly_variable"]]), set(ref.index[ref["highly_variable"]])
    if flavor.startswith("seurat_v3"):
        column, ascending = "highly_variable_rank", True
    else:
        column, ascending = ("dispersions_norm", False) if batch_key is None else ("dispersions_norm", False)
    differing = got ^ want
    if differing:  # only genes tied with the cut-off value may differ, and the test names them
        tied = _tied_at_cutoff(ref, column, ascending) if batch_key is None or not flavor.startswith("seurat") else set()
        assert differing <= tied, f"{len(differing)} genes differ and are not ties at the cut-off: {sorted(differing)[:10]}"
    for col in ("means", "dispersions", "dispersions_norm", "variances", "variances_norm", "highly_variable_nbatches"):
        if col in ref.columns:
            np.testing.assert_allclose(ours[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-6, atol=1e-12,
                                       equal_nan=True, err_msg=col)
    if flavor.startswith("seurat_v3"):
        np.testing.assert_allclose(ours["highly_variable_rank"].to_numpy(float), ref["highly_variable_rank"].to_numpy(float),
                                   equal_nan=True)


def test_stats_match_numpy(store, adata):
    stats = compute_gene_stats(store, StatsConfig(batch_key="srx_accession"))
    x = adata.X.toarray()
    np.testing.assert_allclose(stats.mean("counts"), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.var("counts"), x.var(axis=0, ddof=1), rtol=1e-10, atol=1e-12)
    totals = x.sum(axis=1)
    norm = x / (totals[:, None] / 1e4)
    np.testing.assert_allclose(stats.var("normalized"), norm.var(axis=0, ddof=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.var("log1p"), np.log1p(norm).var(axis=0, ddof=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(stats.n_cells_expressed, (x > 0).sum(axis=0))
    np.testing.assert_array_equal(stats.max_count, x.max(axis=0))
    np.testing.assert_array_equal(stats.cell_totals, totals)
    for name, m in zip(stats.batches, stats.batch_moments):
        rows = x[adata.obs["srx_accession"].to_numpy() == name]
        np.testing.assert_allclose(m["counts"]["sum"] / m["counts"]["n"], rows.mean(axis=0), rtol=1e-12)
        assert m["counts"]["n"] == len(rows)


def test_batch_scales_subset(store):
    """Per-batch moments restricted to one scale equal the full pass's on that scale; a flavor that
    needs a scale that was left out says so."""
    from scdata.hvg.flavors import batch_scales_for, select_hvgs

    full = compute_gene_stats(store, StatsConfig(batch_key="srx_accession"))
    only_log = compute_gene_stats(store, StatsConfig(batch_key="srx_accession", batch_scales=("log1p",)))
    assert only_log.batches == full.batches
    for a, b in zip(only_log.batch_moments, full.batch_moments):
        assert set(a) == {"log1p"}
        for key in ("sum", "m2"):
            np.testing.assert_array_equal(a["log1p"][key], b["log1p"][key])
    for scale in ("counts", "normalized", "log1p"):
        np.testing.assert_array_equal(only_log.moments[scale]["m2"], full.moments[scale]["m2"])
    with pytest.raises(ValueError, match="per-batch moments on \\['log1p'\\] only, not 'normalized'"):
        select_hvgs(only_log, HVGConfig(flavor="seurat", n_top_genes=N_TOP, batch_key="srx_accession"))
    with pytest.raises(ValueError, match="batch_scales must be"):
        StatsConfig(batch_scales=("raw",))
    assert batch_scales_for(HVGConfig(flavor="seurat_v3", batch_key="srx_accession"), panel=True) == ("counts", "log1p")
    assert batch_scales_for(HVGConfig(flavor="seurat"), panel=True) == ("log1p",)


@pytest.mark.parametrize("top_counts", [1, 4, 64])
def test_clipped_sums_from_top_counts(store, top_counts):
    """Seurat v3's clipped sums from the first pass's largest counts, with the second pass only
    for the genes they leave unresolved, equal a full second pass (a tiny M forces some)."""
    from scdata.hvg.flavors import _clipped_sums, seurat_v3_clips
    from scdata.stats.reduction import clipped_sums_from_top, compute_clipped_sums

    stats = compute_gene_stats(store, StatsConfig(top_counts=top_counts))
    _, clips = seurat_v3_clips(stats, 0.3, False)
    clips = [clips[0] / 50]  # low clips: many counts above them, some genes unresolved
    ((want_s, want_s2),) = compute_clipped_sums(store, stats, clips, batched=False)
    _, _, unresolved = clipped_sums_from_top(stats, clips[0])
    if top_counts == 1:
        assert unresolved.any()
    ((got_s, got_s2),) = _clipped_sums(store, stats, clips, None, batched=False)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-12)
    np.testing.assert_allclose(got_s2, want_s2, rtol=1e-12)


@pytest.mark.parametrize("tasks_per_thread", [1, 64])
def test_between_batch_sums_folded(store, adata, tasks_per_thread):
    """Without per-batch moments, each batch is folded into the between-batch sum of squares once
    complete; with tasks of one chunk row, batches span tasks and are folded in the merges. Both
    equal numpy's sum over batches of n_b * (mean_b - mean)**2 and the per-batch computation."""
    config = dict(batch_key="srx_accession", batch_scales=("log1p", "counts"), tasks_per_thread=tasks_per_thread)
    folded = compute_gene_stats(store, StatsConfig(per_batch=False, **config))
    full = compute_gene_stats(store, StatsConfig(per_batch=True, **config))
    assert folded.batch_moments == [] and folded.batches == full.batches
    x = adata.X.toarray()
    norm = x / (x.sum(axis=1, keepdims=True) / 1e4)
    labels = adata.obs["srx_accession"].to_numpy()
    for scale, values in (("counts", x), ("log1p", np.log1p(norm))):
        want = sum((labels == b).sum() * (values[labels == b].mean(axis=0) - values.mean(axis=0)) ** 2
                   for b in np.unique(labels))
        np.testing.assert_allclose(folded.between_batch_ss[scale], want, rtol=1e-7, atol=1e-9 * values.var(axis=0).max())
        np.testing.assert_allclose(full.between_batch_ss[scale], want, rtol=1e-7, atol=1e-9 * values.var(axis=0).max())
    with pytest.raises(ValueError, match="no per-batch moments"):
        folded.require_batch_scale("log1p")
