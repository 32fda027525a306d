"""The moment merge against numpy's two-pass variance, in any split and any merge order."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from scdata.moments import clipped_sums, empty_moments, merge_moments, sparse_moments, variance


def _data(seed, n, g):
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 2.0, size=g), size=(n, g)).astype(np.float64)
    x[rng.random((n, g)) < 0.6] = 0
    x[:, 0] = 1e6 + rng.integers(0, 3, size=n)  # large mean, tiny variance: the naive formula fails here
    return x


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 120), g=st.integers(1, 12), cuts=st.lists(st.integers(0, 120), max_size=6),
       order=st.randoms(use_true_random=False))
def test_merge_matches_numpy_two_pass(seed, n, g, cuts, order):
    x = _data(seed, n, g)
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    parts = [sparse_moments(sp.csc_matrix(x[a:b])) for a, b in zip(bounds, bounds[1:])]
    order.shuffle(parts)
    total = empty_moments(g)
    for p in parts:
        total = merge_moments(total, p) if order.random() < 0.5 else merge_moments(p, total)
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).sum(axis=0) / (n - 1)
    assert total["n"] == n
    np.testing.assert_allclose(total["mean"], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(variance(total), var, rtol=1e-12, atol=1e-9)


def test_clipped_sums():
    x = np.array([[0, 5, 1], [3, 0, 9], [0, 0, 2]], dtype=np.float64)
    clip = np.array([2.0, 10.0, 4.0])
    block = sp.csc_matrix(x)
    genes = np.repeat(np.arange(3), np.diff(block.indptr))
    s, s2 = clipped_sums(genes, block.data, clip, 3)
    c = np.minimum(x, clip)
    np.testing.assert_array_equal(s, c.sum(axis=0))
    np.testing.assert_array_equal(s2, (c * c).sum(axis=0))
