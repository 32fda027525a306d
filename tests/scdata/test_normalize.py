"""Normalizations against scanpy, and numpy / scipy / Dask / torch against each other."""

import dask.array as da
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from anndata import AnnData

from scdata.normalize import log1p_normalize, log_cpm, normalize_total, size_factors


@pytest.fixture()
def counts():
    rng = np.random.default_rng(5)
    x = rng.poisson(rng.gamma(0.3, 3.0, size=200), size=(60, 200)).astype(np.float64)
    x[7] = 0  # a cell with no counts
    return x


def test_matches_scanpy(counts):
    ref = AnnData(counts.copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    np.testing.assert_allclose(normalize_total(counts), ref.X, rtol=1e-12)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(log1p_normalize(counts), ref.X, rtol=1e-12)
    np.testing.assert_allclose(log1p_normalize(sp.csr_matrix(counts)).toarray(), ref.X, rtol=1e-12)


def test_backends_agree(counts):
    expected = log1p_normalize(counts)
    lazy = log1p_normalize(da.from_array(counts, chunks=(16, 50))).compute()
    np.testing.assert_allclose(lazy, expected, rtol=1e-12)
    tensor = log1p_normalize(torch.from_numpy(counts.astype(np.int16)), 1e4).numpy()
    np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_cpm(counts), np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e6), rtol=1e-12)


def test_size_factors_with_zeros(counts):
    sf = size_factors(counts)
    assert np.isnan(sf[7]) and np.all(sf[np.arange(60) != 7] > 0)
    np.testing.assert_allclose(np.exp(np.mean(np.log(sf[np.isfinite(sf)]))), 1.0)
    np.testing.assert_allclose(size_factors(sp.csr_matrix(counts)), sf)
    # A cell that is another cell times 3 gets 3 times its size factor.
    doubled = np.vstack([counts, counts[3] * 3])
    sf2 = size_factors(doubled)
    assert sf2[-1] / sf2[3] == pytest.approx(3.0, rel=0.05)
    # Brute force of DESeq2's poscounts on the non-empty cells.
    x = counts
    log_geo = np.where(x > 0, np.log(np.where(x > 0, x, 1)), 0).sum(axis=0) / x.shape[0]
    brute = []
    for row in x:
        keep = (row > 0) & ((x > 0).any(axis=0))
        brute.append(np.exp(np.median(np.log(row[keep]) - log_geo[keep])) if keep.any() else np.nan)
    brute = np.array(brute)
    ok = np.isfinite(brute)
    brute[ok] /= np.exp(np.mean(np.log(brute[ok])))
    np.testing.assert_allclose(sf, brute, rtol=1e-12)
