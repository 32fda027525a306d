"""In-silico knockdowns over a prediction's whole gene list (``scmodel.covariation``) and the gene
set of a pretraining run's programs (``scmodel.run.programs``), against hand computations."""

import numpy as np
import pytest
import zarr

from scmodel.coexpression import AtlasPrograms, knockdown_ratio
from scmodel.covariation import CovariationConfig, CovariationKnockdown
from scmodel.data.perturbation import log1p_rows


def _store_counts(n_cells: int = 600, n_genes: int = 80, seed: int = 0):
    """Counts on an 80-gene axis: gene 2 drives genes 5 and 9 (9 against it); the rest are independent."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0, 0.5, size=n_cells)
    rate = np.full((n_cells, n_genes), 2.0)
    rate[:, 2] *= np.exp(level)
    rate[:, 5] *= np.exp(0.8 * level)
    rate[:, 9] *= np.exp(-0.6 * level)
    depth = rng.uniform(0.5, 2.0, size=n_cells)[:, None]
    counts = rng.poisson(rate * depth * 20).astype(np.int16)
    x = zarr.create_array(store={}, shape=counts.shape, chunks=(128, 16), dtype="int16")
    x[:] = counts
    return x, counts


def test_the_knockdown_reaches_every_output_gene_on_the_axis():
    x, counts = _store_counts()
    rows = np.arange(0, 600, 2)  # the control cells
    totals = counts.sum(1).astype(float)
    positions = np.array([9, -1, 2, 5, 0])  # output genes: one is not on the axis
    knockdown = CovariationKnockdown(x, rows, totals[rows], positions, np.array([f"G{i}" for i in range(80)]), None,
                                     CovariationConfig(correct_attenuation=False))
    assert knockdown.measured(2) and not knockdown.measured(1) and not knockdown.measured(7)
    ratio = knockdown.ratio(2, 0.25)  # knock down the output's third gene (axis gene 2)
    values = log1p_rows(counts[rows][:, [9, 2, 5, 0]], totals[rows])
    by_hand = knockdown_ratio(values, 1, 0.25)
    assert ratio[1] == 1.0  # off the axis: never predicted
    assert np.allclose(ratio[[0, 2, 3, 4]], by_hand)
    assert ratio[2] == 0.25 and ratio[3] < 0.9 and ratio[0] > 1.05 and abs(ratio[4] - 1) < 0.05


def test_programs_clean_the_co_variation_of_the_genes_they_cover():
    x, counts = _store_counts(seed=1)
    rows = np.arange(600)
    totals = counts.sum(1).astype(float)
    ids = np.array([f"G{i}" for i in range(80)])
    basis = np.zeros((3, 1))
    basis[[0, 1], 0] = np.sqrt(0.5)  # the atlas's one program: G2 and G5 (G9 and G0 are not in it)
    programs = AtlasPrograms(basis=basis, variance=np.ones(1), cells=1000, genes=np.array(["G2", "G5", "G0"]))
    positions = np.array([2, 5, 9, 0])
    plain = CovariationKnockdown(x, rows, totals, positions, ids, None, CovariationConfig(correct_attenuation=False))
    cleaned = CovariationKnockdown(x, rows, totals, positions, ids, programs, CovariationConfig(correct_attenuation=False))
    assert cleaned.covered == 3  # G2, G5, G0 of the output genes
    p, c = plain.ratio(0, 0.3), cleaned.ratio(0, 0.3)
    assert c[2] == pytest.approx(p[2])  # G9: not covered, its own co-variation
    assert abs(c[3] - 1) < 1e-9 < abs(p[3] - 1)  # G0: covered, outside the program: no effect
    assert c[1] < 0.9  # G5 follows G2 through the program


def test_at_most_max_cells_controls_are_read():
    x, counts = _store_counts()
    rows = np.arange(600)
    knockdown = CovariationKnockdown(x, rows, counts.sum(1).astype(float), np.array([2, 5]), np.array([""] * 80), None,
                                     CovariationConfig(max_cells=100))
    assert knockdown.values.shape == (100, 2)
    with pytest.raises(ValueError, match="at least two control cells"):
        CovariationKnockdown(x, rows[:1], counts.sum(1)[:1].astype(float), np.array([2]), np.array([""] * 80), None)


def test_pretraining_programs_cover_the_model_s_genes_and_the_most_expressed():
    from scmodel.run.programs import program_genes

    root = zarr.open_group(store={}, mode="w")
    root.create_group("var").create_array("means", data=np.array([0.1, 5.0, 0.2, 3.0, np.nan, 4.0]))
    assert program_genes(root, np.array([2, 3]), 2).tolist() == [2, 3, 1, 5]  # HVGs first, then by mean
    assert program_genes(root, np.array([2, 3]), 0).tolist() == [2, 3]
    del root["var/means"]
    assert program_genes(root, np.array([2, 3]), 10).tolist() == [2, 3]  # no statistics: the model's genes
