"""The synthetic Virtual Cell Challenge files: the challenge's layout, and the effects they claim."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scdata.source.demo_bucket import DemoConfig, demo_biology
from scdata.vcc.gene_map import map_genes
from scdata.vcc.synthetic import CONTROL, VCCDemoConfig, write_vcc_demo


@pytest.fixture(scope="module")
def vcc(tmp_path_factory):
    config = VCCDemoConfig(n_genes=600, n_train_perturbations=5, n_validation_perturbations=2,
                           n_control_cells=400, cells_per_perturbation=(150, 200))
    return config, write_vcc_demo(str(tmp_path_factory.mktemp("vcc")), config)


def test_layout_matches_the_challenge_files(vcc):
    config, paths = vcc
    adata = ad.read_h5ad(paths["adata_Training.h5ad"])
    assert adata.X.dtype == np.float32 and adata.X.format == "csr"
    assert np.array_equal(adata.X.data, np.round(adata.X.data))  # integer counts
    assert {"target_gene", "guide_id", "batch"} <= set(adata.obs.columns) and "gene_id" in adata.var.columns
    assert (adata.obs["target_gene"] == CONTROL).sum() == config.n_control_cells
    assert adata.obs["target_gene"].nunique() == config.n_train_perturbations + 1
    assert adata.obs["batch"].nunique() == config.n_batches
    names = pd.read_csv(paths["gene_names.csv"], header=None)[0].tolist()
    assert names == adata.var_names.tolist() and len(names) == config.n_genes
    counts = pd.read_csv(paths["pert_counts_Validation.csv"])
    assert counts.columns.tolist() == ["target_gene", "n_cells", "median_umi_per_cell"]
    assert len(counts) == config.n_validation_perturbations
    assert not set(counts["target_gene"]) & set(adata.obs["target_gene"].astype(str))


def test_genes_map_onto_the_demo_axis_by_ensembl_id(vcc):
    _, paths = vcc
    adata = ad.read_h5ad(paths["adata_Training.h5ad"], backed="r")
    biology = demo_biology(DemoConfig())
    mapping = map_genes(adata.var["gene_id"], adata.var_names, biology.gene_ids, biology.symbols)
    assert mapping.n_mapped == adata.n_vars and mapping.by_id == adata.n_vars
    assert np.array_equal(biology.symbols[mapping.columns], adata.var_names.to_numpy())


def test_targets_are_knocked_down_against_controls(vcc):
    config, paths = vcc
    adata = ad.read_h5ad(paths["adata_Training.h5ad"])
    x = adata.X.toarray()
    x = x / x.sum(1, keepdims=True) * 1e4
    control = adata.obs["target_gene"].to_numpy() == CONTROL
    for target in adata.obs["target_gene"].cat.categories:
        if target == CONTROL:
            continue
        j = adata.var_names.get_loc(target)
        cells = adata.obs["target_gene"].to_numpy() == target
        ratio = x[cells, j].mean() / x[control, j].mean()
        assert ratio < 2.5 * config.knockdown, (target, ratio)
