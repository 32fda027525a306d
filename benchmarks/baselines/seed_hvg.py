"""The seed's preprocess_hvgs.py: online per-gene mean/variance over its dense batch_*.h5 files,
dispersion = variance / mean on raw counts, genes in >= min_cells_pct % of cells, top N."""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import h5py
import numpy as np


def _slices(paths, rows: int = 4096):
    """The seed read its batch files incrementally; slices keep float64 copies small."""
    for path in paths:
        with h5py.File(path, "r") as f:
            for lo in range(0, f["X"].shape[0], rows):
                yield f["X"][lo : lo + rows].astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True, help="the seed's processed/ directory")
    p.add_argument("--n-hvgs", type=int, default=2000)
    p.add_argument("--min-cells-pct", type=float, default=0.1)
    a = p.parse_args()
    t = time.perf_counter()
    n, mean, m2, nnz = 0, None, None, None
    for x in _slices(sorted(glob.glob(os.path.join(a.data_dir, "batch_*.h5")))):
        nb = x.shape[0]
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        if mean is None:
            n, mean, m2, nnz = nb, mb, m2b, (x > 0).sum(axis=0)
        else:
            delta = mb - mean
            tot = n + nb
            mean = mean + delta * nb / tot
            m2 = m2 + m2b + delta**2 * n * nb / tot
            nnz = nnz + (x > 0).sum(axis=0)
            n = tot
        del x
    var = m2 / (n - 1)
    dispersion = np.where(mean > 0, var / np.where(mean > 0, mean, 1), 0)
    dispersion[100 * nnz / n < a.min_cells_pct] = -np.inf
    top = np.argsort(-dispersion)[: a.n_hvgs]
    print(json.dumps({"cells": int(n), "seconds": time.perf_counter() - t, "n_hvgs": int(len(top))}))


if __name__ == "__main__":
    main()
