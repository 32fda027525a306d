"""Depth normalization of count matrices: numpy/scipy, Dask and torch give the same numbers.

* ``normalize_total(x, target_sum)``: each cell scaled to ``target_sum`` counts (scanpy's
  ``normalize_total``: ``x / (total / target_sum)``; cells with no counts stay zero);
* ``log1p_normalize(x, target_sum)``: ``log1p`` of the above (scanpy's standard pipeline);
* ``log_cpm(x)``: ``log1p`` of counts per million (the seed's suggestion);
* ``size_factors(x)``: DESeq2's median-of-ratios with the "poscounts" geometric mean, which is
  defined with zeros (the seed's version took medians over mostly-zero ratios and returned 0).

Rows are cells. The torch versions run on the loader's worker side, on whatever device the
batch is on.
"""

from __future__ import annotations

from functools import singledispatch

import numpy as np
import scipy.sparse as sp


def depth_scale(totals: np.ndarray, target_sum: float) -> np.ndarray:
    """Each cell's divisor ``total / target_sum`` (scanpy's), 1 for a cell with no counts."""
    scale = totals / target_sum
    return np.where(scale == 0, 1.0, scale)  # a cell with no counts stays all zero


@singledispatch
def normalize_total(x, target_sum: float = 1e4):
    """Cells scaled to ``target_sum`` total counts (float64 for numpy, float32 for torch)."""
    raise TypeError(f"normalize_total does not support {type(x).__name__}")


@normalize_total.register
def _(x: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / depth_scale(x.sum(axis=1, keepdims=True), target_sum)


@normalize_total.register(sp.spmatrix)
@normalize_total.register(sp.sparray)
def _(x, target_sum: float = 1e4):
    csr = sp.csr_matrix(x, dtype=np.float64, copy=True)
    scale = depth_scale(np.asarray(csr.sum(axis=1)).ravel(), target_sum)
    csr.data /= np.repeat(scale, np.diff(csr.indptr))
    return csr


def log1p_normalize(x, target_sum: float = 1e4):
    """``log1p(normalize_total(x, target_sum))`` for any supported array type."""
    y = normalize_total(x, target_sum)
    if sp.issparse(y):
        y.data = np.log1p(y.data)
        return y
    return _log1p(y)


def log_cpm(x):
    """log(1 + counts per million)."""
    return log1p_normalize(x, 1e6)


@singledispatch
def _log1p(y):
    return np.log1p(y)


@singledispatch
def size_factors(x) -> np.ndarray:
    """DESeq2 "poscounts" size factors per cell (geometric mean 1; NaN for a cell with no counts)."""
    raise TypeError(f"size_factors does not support {type(x).__name__}")


def _poscounts(csc: sp.csc_matrix) -> np.ndarray:
    n_cells, n_genes = csc.shape
    logs = np.log(csc.data.astype(np.float64))
    genes = np.repeat(np.arange(n_genes), np.diff(csc.indptr))
    log_geo = np.bincount(genes, weights=logs, minlength=n_genes) / n_cells  # zeros count in the denominator
    expressed = np.diff(csc.indptr) > 0
    csr = csc.tocsr()
    log_ratio = np.log(csr.data.astype(np.float64)) - log_geo[csr.indices]
    usable = expressed[csr.indices]
    out = np.full(n_cells, np.nan)
    for cell in range(n_cells):
        lo, hi = csr.indptr[cell], csr.indptr[cell + 1]
        ratios = log_ratio[lo:hi][usable[lo:hi]]
        if ratios.size:
            out[cell] = np.exp(np.median(ratios))
    finite = np.isfinite(out) & (out > 0)
    out[finite] /= np.exp(np.mean(np.log(out[finite])))
    return out


@size_factors.register
def _(x: np.ndarray) -> np.ndarray:
    return _poscounts(sp.csc_matrix(np.asarray(x, dtype=np.float64)))


@size_factors.register(sp.spmatrix)
@size_factors.register(sp.sparray)
def _(x) -> np.ndarray:
    return _poscounts(sp.csc_matrix(x))


def _register_dask() -> None:
    import dask.array as da

    @normalize_total.register(da.Array)
    def _(x, target_sum: float = 1e4):
        if x.numblocks[1] != 1:
            x = x.rechunk({1: -1})  # totals need whole rows
        return x.map_blocks(lambda b: normalize_total(b, target_sum), dtype=np.float64)

    @_log1p.register(da.Array)
    def _(y):
        return da.log1p(y)


def _register_torch() -> None:
    import torch

    @normalize_total.register(torch.Tensor)
    def _(x, target_sum: float = 1e4):
        x = x.to(torch.float32) if not torch.is_floating_point(x) else x
        totals = x.sum(dim=1, keepdim=True) / target_sum
        return x / torch.where(totals == 0, torch.ones_like(totals), totals)

    @_log1p.register(torch.Tensor)
    def _(y):
        return torch.log1p(y)


_register_dask()
try:  # torch is optional for the data engine
    _register_torch()
except ImportError:  # pragma: no cover
    pass
