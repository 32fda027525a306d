"""Predicted cells from real controls and per-gene ratios, against hand computations."""

import numpy as np

from scmodel.delta_cells import MATCH_LIMIT, cp10k_mean, delta_cells, scale_counts


def test_scale_counts_thins_and_boosts_to_the_ratio_in_expectation_and_keeps_zeros():
    rng = np.random.default_rng(0)
    counts = rng.poisson([0.0, 2.0, 8.0, 30.0], size=(20000, 4))
    counts[:, 0] = 0
    ratio = np.array([3.0, 0.25, 1.0, 1.8])
    out = scale_counts(counts, ratio, rng)
    assert out.dtype.kind == "i" and out.min() >= 0
    assert (out[:, 0] == 0).all()  # a zero stays zero whatever the ratio
    assert np.array_equal(out[:, 2], counts[:, 2])  # ratio 1: untouched (thinning at p=1, no Poisson added)
    np.testing.assert_allclose(out[:, 1:].mean(0) / counts[:, 1:].mean(0), ratio[1:], rtol=0.03)
    assert (out[:, 1] <= counts[:, 1]).all()  # thinning never adds


def test_cp10k_mean_by_hand():
    counts = np.array([[1.0, 3.0], [2.0, 2.0]])
    totals = np.array([4.0, 8.0])
    assert np.allclose(cp10k_mean(counts, totals), [(2500 + 2500) / 2, (7500 + 2500) / 2])


def test_delta_cells_matches_the_drawn_cells_to_the_reference_before_the_ratio():
    rng = np.random.default_rng(1)
    base = rng.poisson([5.0, 5.0, 5.0], size=(40000, 3))
    totals = np.full(len(base), 1000.0)
    drawn = cp10k_mean(base, totals)
    reference = drawn * np.array([2.0, 0.5, 100.0])  # gene 2 asks for more than MATCH_LIMIT allows
    ratio = np.array([0.5, 1.0, 1.0])
    out = delta_cells(base, totals, ratio, rng, reference)
    expected = np.array([2.0 * 0.5, 0.5 * 1.0, MATCH_LIMIT * 1.0])  # by hand: match (clipped), then the ratio
    np.testing.assert_allclose(cp10k_mean(out, totals) / drawn, expected, rtol=0.03)
    plain = delta_cells(base, totals, ratio, rng)  # without a reference: the ratio alone
    np.testing.assert_allclose(cp10k_mean(plain, totals) / drawn, ratio, rtol=0.03)
