"""`scdata hvg` end to end: outputs, X_hvg, staleness, and the same statistics on a real Dask cluster."""

import json
import os

import anndata as ad
import numpy as np
import pytest

import scdata
from scdata.cli import main
from scdata.hvg.results import load_hvg, open_hvg_matrix
from scdata.store.manifest import StaleError
from scdata.stats.reduction import StatsConfig, compute_gene_stats

from tests.conftest import ingest_config
from tests.helpers import assert_consolidated_current
from tests.services import dask_cluster


@pytest.fixture()
def small_store(demo_bucket, tmp_path):
    store = str(tmp_path / "data" / "store.zarr")
    scdata.ingest(ingest_config(demo_bucket, store, cell_count=1500), echo=lambda *_: None)
    return store


def test_figure_is_drawn_into_an_output_dir_that_does_not_exist_yet(small_store, tmp_path, monkeypatch):
    """`scdata hvg --output-dir DIR` with DIR new: the forked child saves the figure while the parent
    is still writing the store's columns. Here the parent is held back until the child has had time
    to save, so the figure always lands first (before, DIR did not exist yet: FileNotFoundError)."""
    import time

    import scdata.hvg.job as job_module

    write = job_module.write_var_columns

    def slow_write(*args, **kwargs):
        time.sleep(3.0)  # the child draws (~1 s) before the parent writes anything
        return write(*args, **kwargs)

    monkeypatch.setattr(job_module, "write_var_columns", slow_write)
    for attempt in range(2):
        out = tmp_path / f"fresh{attempt}" / "nested"
        assert main(["hvg", "--store", small_store, "--n-hvgs", "100", "--workers", "1", "--output-dir", str(out),
                     "--force"]) == 0
        assert os.path.getsize(out / "hvg_analysis.png") > 10_000 and (out / "hvg_info.json").exists()


def test_hvg_command_outputs(small_store, demo_bucket, tmp_path, capsys):
    assert main(["hvg", "--store", small_store, "--n-hvgs", "150", "--materialize", "--workers", "1",
                 "--flavor", "seurat", "--batch-key", "srx_accession"]) == 0
    timing = capsys.readouterr().out.strip().splitlines()[-1]  # where the time went, phase by phase
    assert timing.startswith("Time: cluster ") and "hvg_info.json and X_hvg " in timing and ", figure " in timing
    assert timing.count("(cpu ") == timing.count(" s (") == 5
    out_dir = os.path.dirname(small_store)
    info = json.load(open(os.path.join(out_dir, "hvg_info.json")))
    for key in ("hvg_indices", "hvg_names", "gene_to_hvg_idx", "total_genes", "statistics", "flavor", "parameters"):
        assert key in info
    for key in ("total_cells_analyzed", "expressed_genes", "n_hvgs", "mean_dispersion", "median_dispersion",
                "min_dispersion", "max_dispersion", "mean_expression", "median_pct_cells", "top_10_hvgs",
                "top_10_dispersions", "top_10_pct_cells"):
        assert key in info["statistics"]
    assert len(info["hvg_indices"]) == 150 and info["gene_to_hvg_idx"][str(info["hvg_indices"][3])] == 3
    assert os.path.getsize(os.path.join(out_dir, "hvg_analysis.png")) > 10_000

    ds = scdata.open_store(small_store)
    x_hvg, indices = open_hvg_matrix(small_store)
    np.testing.assert_array_equal(indices, info["hvg_indices"])
    np.testing.assert_array_equal(x_hvg[:], ds.counts.values[:, indices])  # HVG order, same rows
    assert load_hvg(small_store)["params"]["flavor"] == "seurat"
    assert_consolidated_current(small_store, tmp_path)  # readers through it see the new columns and X_hvg
    adata = ad.read_zarr(small_store)
    assert adata.var["highly_variable"].sum() == 150 and adata.obsm["X_hvg"].shape == (adata.n_obs, 150)
    # the same per-gene columns as gene coordinates of the xarray view, and in its AnnData
    ds = scdata.open_store(small_store)
    for column in adata.var.columns:
        np.testing.assert_array_equal(ds[column].values, adata.var[column].to_numpy(), err_msg=column)
    hvgs = ds.sel(gene=ds.highly_variable)
    assert hvgs.sizes["gene"] == 150 and set(hvgs.gene.values) == set(adata.var_names[adata.var["highly_variable"]])
    sub = scdata.to_anndata(ds, cells=slice(0, 10))
    assert set(adata.var.columns) <= set(sub.var.columns) and sub.var["highly_variable"].sum() == 150

    capsys.readouterr()
    assert main(["hvg", "--store", small_store, "--n-hvgs", "150", "--materialize", "--workers", "1",
                 "--flavor", "seurat", "--batch-key", "srx_accession"]) == 0
    assert "up to date" in capsys.readouterr().out

    # Appending cells makes every derived result stale, and it is detected.
    scdata.ingest(ingest_config(demo_bucket, small_store, cell_count=10**9), echo=lambda *_: None)
    with pytest.raises(StaleError, match="rerun"):
        load_hvg(small_store)
    with pytest.raises(StaleError, match="rerun"):
        open_hvg_matrix(small_store)
    assert main(["hvg", "--store", small_store, "--n-hvgs", "150", "--workers", "1", "--flavor", "seurat",
                 "--batch-key", "srx_accession"]) == 0
    assert load_hvg(small_store)["manifest_version"] == scdata.read_manifest(small_store).version
    assert_consolidated_current(small_store, tmp_path)  # after the commits and the columns' replacement


def test_seed_dispersion_flavor(small_store):
    from scdata.hvg.flavors import HVGConfig, run_hvg

    df, stats = run_hvg(small_store, HVGConfig(flavor="dispersion", n_top_genes=100, min_cells_pct=1.0))
    x = scdata.to_anndata(small_store).X.toarray().astype(np.float64)
    mean, var = x.mean(0), x.var(0, ddof=1)
    pct = 100 * (x > 0).mean(0)
    disp = np.where(mean > 0, var / np.where(mean > 0, mean, 1), 0)
    disp[pct < 1.0] = -np.inf
    expected = set(np.argsort(-disp, kind="stable")[:100])
    assert set(np.flatnonzero(df["highly_variable"].to_numpy())) == expected


def test_same_stats_on_scheduler_and_threads(small_store):
    threaded = compute_gene_stats(small_store, StatsConfig(batch_key="srx_accession"))
    with dask_cluster(2) as address:
        from distributed import Client

        with Client(address) as client:
            distributed = compute_gene_stats(small_store, StatsConfig(batch_key="srx_accession"), client)
    for scale in ("counts", "normalized", "log1p"):
        np.testing.assert_array_equal(threaded.moments[scale]["sum"], distributed.moments[scale]["sum"])
        np.testing.assert_allclose(threaded.var(scale), distributed.var(scale), rtol=1e-13)
    assert threaded.batches == distributed.batches


def test_bad_batch_key(small_store):
    with pytest.raises(ValueError, match="not a categorical obs column"):
        compute_gene_stats(small_store, StatsConfig(batch_key="umi_count"))
