"""The moment merge against numpy's two-pass variance, in any split and any merge order."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scdata.stats.moments import empty_moments, merge_moments, variance
from scdata.stats.nonzeros import block_nonzeros
from scdata.stats.kernels import clipped_gene_sums, gene_moments


def _data(seed, n, g):
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 2.0, size=g), size=(n, g)).astype(np.float64)
    x[rng.random((n, g)) < 0.6] = 0
    x[:, 0] = 1e6 + rng.integers(0, 3, size=n)  # large mean, tiny variance: the naive formula fails here
    return x


def _block_moments(x):
    """A block's partial, two-pass in numpy (the kernels' per-chunk partials are tested below)."""
    if len(x) == 0:
        return empty_moments(x.shape[1])
    total = x.sum(axis=0)
    return {"n": len(x), "sum": total, "m2": ((x - total / len(x)) ** 2).sum(axis=0)}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 120), g=st.integers(1, 12), cuts=st.lists(st.integers(0, 120), max_size=6),
       order=st.randoms(use_true_random=False))
def test_merge_matches_numpy_two_pass(seed, n, g, cuts, order):
    x = _data(seed, n, g)
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    parts = [_block_moments(x[a:b]) for a, b in zip(bounds, bounds[1:])]
    order.shuffle(parts)
    total = empty_moments(g)
    for p in parts:
        total = merge_moments(total, p) if order.random() < 0.5 else merge_moments(p, total)
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).sum(axis=0) / (n - 1)
    assert total["n"] == n
    np.testing.assert_allclose(total["sum"] / total["n"], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(variance(total), var, rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 90), g=st.integers(1, 9), n_groups=st.integers(1, 4),
       transposed=st.booleans())
def test_kernels_match_numpy(seed, n, g, n_groups, transposed):
    """The compiled chunk kernels against numpy on the dense block: per-group moments on
    the three scales, non-zeros, maxima and clipped sums; gene-major and strided (row-major) blocks."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 3.0, size=g), size=(n, g)).astype(np.int16)
    x[rng.random((n, g)) < 0.5] = 0
    x[rng.random(n) < 0.1] = 0  # cells without counts
    block = np.ascontiguousarray(x.T) if transposed else x.T  # (genes, rows), contiguous or strided
    group = rng.integers(0, n_groups, size=n).astype(np.int64)
    group_n = np.bincount(group, minlength=n_groups).astype(np.float64)
    totals = x.sum(axis=1).astype(np.float64)
    divisor = totals / 1e4
    sums, m2 = np.zeros((3, n_groups, g)), np.full((3, n_groups, g), 7.0)  # outputs are written, not added
    nnz, top = np.zeros((n_groups, g), np.int64), np.zeros(g, np.int64)
    squares, heap = np.zeros((n_groups, g)), np.zeros((g, 3), np.int16)
    gene_moments(block_nonzeros(block), divisor, group, group_n, sums, m2, nnz, top, squares, heap[:, :0])
    gene_moments(block_nonzeros(block), divisor, group, group_n, sums, m2, nnz, top, squares, heap)  # same outputs, heap filled
    counts = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(counts > 0, counts / divisor[:, None], 0.0)
    for k in range(n_groups):
        rows = group == k
        for s, values in enumerate((counts, normalized, np.log1p(normalized))):
            v = values[rows]
            np.testing.assert_allclose(sums[s, k], v.sum(axis=0), rtol=1e-12, atol=1e-12)
            expected_m2 = ((v - v.mean(axis=0)) ** 2).sum(axis=0) if rows.any() else np.zeros(g)
            np.testing.assert_allclose(m2[s, k], expected_m2, rtol=1e-10, atol=1e-9)
        np.testing.assert_array_equal(nnz[k], (x[rows] != 0).sum(axis=0))
        np.testing.assert_array_equal(squares[k], (counts[rows] ** 2).sum(axis=0))
    np.testing.assert_array_equal(top, x.max(axis=0))
    three_largest = np.sort(np.vstack([x, np.zeros((3, g), np.int16)]), axis=0)[-3:].T  # zeros fill short columns
    np.testing.assert_array_equal(np.sort(heap, axis=1), three_largest)
    clips = rng.uniform(0, 8, size=(n_groups, g))
    s1, s2 = np.zeros((n_groups, g)), np.zeros((n_groups, g))
    clipped_gene_sums(block_nonzeros(block), group, clips, s1, s2)
    for k in range(n_groups):
        c = np.minimum(counts[group == k], clips[k])
        np.testing.assert_allclose(s1[k], c.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(s2[k], (c * c).sum(axis=0), rtol=1e-12)


def _numpy_merge(a, b):
    """The merge formula as a numpy expression (the module docstring's)."""
    if a["n"] == 0:
        return b
    if b["n"] == 0:
        return a
    n = a["n"] + b["n"]
    delta = b["sum"] / b["n"] - a["sum"] / a["n"]
    m2 = a["m2"] + b["m2"] + delta * delta * (a["n"] * b["n"] / n)
    return {"n": n, "sum": a["sum"] + b["sum"], "m2": m2}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), g=st.integers(1, 40), n_a=st.integers(0, 10**7), n_b=st.integers(0, 10**7))
def test_compiled_merge_is_numpys_bit_for_bit(seed, g, n_a, n_b):
    rng = np.random.default_rng(seed)
    a = {"n": n_a, "sum": rng.random(g) * n_a * 50, "m2": rng.random(g) * n_a * 900}
    b = {"n": n_b, "sum": rng.random(g) * n_b * 50, "m2": rng.random(g) * n_b * 900}
    ours, reference = merge_moments(a, b), _numpy_merge(a, b)
    assert ours["n"] == reference["n"]
    for key in ("sum", "m2"):
        np.testing.assert_array_equal(ours[key].view(np.int64), reference[key].view(np.int64))


def test_merge_top_counts():
    from scdata.stats.reduction import merge_top_counts

    a = np.array([[5, 1, 0], [9, 9, 2]], np.int16)
    b = np.array([[3, 7, 0], [1, 9, 8]], np.int16)
    np.testing.assert_array_equal(np.sort(merge_top_counts(a, b), axis=1), [[3, 5, 7], [9, 9, 9]])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 90), g=st.integers(1, 9), top_counts=st.sampled_from([0, 3]))
def test_one_group_kernel_is_the_general_one_bit_for_bit(seed, n, g, top_counts):
    """The single-group fast path makes the same additions in the same order."""
    from scdata.stats.nonzeros import normalized
    from scdata.stats.kernels import _reduce_moments, _reduce_one_group

    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.5, 3.0, size=(g, 1)), size=(g, n)).astype(np.int16)
    x[rng.random((g, n)) < 0.5] = 0
    starts, rows, values = block_nonzeros(x)
    rows, values = rows.copy(), values.copy()
    scaled = normalized(rows, values, rng.random(n) + 0.5, np.empty(len(values)))
    logged = np.log1p(scaled)
    outputs = []
    for kernel in ("general", "one"):
        sums, m2 = np.full((3, 1, g), 5.0), np.full((3, 1, g), 7.0)
        nnz, top, squares = np.zeros((1, g), np.int64), np.zeros(g, np.int64), np.zeros((1, g))
        heap = np.zeros((g, top_counts), np.int16)
        if kernel == "general":
            _reduce_moments(starts, rows, values, scaled, logged, np.zeros(n, np.int64), np.array([float(n)]), sums, m2,
                            nnz, top, squares, heap)
        else:
            _reduce_one_group(starts, values, scaled, logged, float(n), sums, m2, nnz, top, squares, heap)
        outputs.append((sums, m2, nnz, top, squares, heap))
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)
