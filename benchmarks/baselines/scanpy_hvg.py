"""scanpy in memory: read the store's source experiments (h5ad), concatenate, then the HVG flavors.

This is what a scanpy user does with the same cells: everything in memory. Prints one JSON line
with load and per-flavor compute times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import anndata as ad
import numpy as np
import scanpy as sc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import scdata  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--flavors", nargs="+", default=["seurat_v3", "seurat"])
    p.add_argument("--n-top-genes", type=int, default=2000)
    a = p.parse_args()
    manifest = scdata.read_manifest(a.store)
    t = time.perf_counter()
    parts = []
    for e in manifest.experiments:
        part = ad.read_h5ad(e["source_url"])
        parts.append(ad.AnnData(part.X, obs=part.obs[[]], var=part.var[[]]))
    adata = ad.concat(parts, join="outer", fill_value=0)
    del parts
    load_s = time.perf_counter() - t
    out = {"cells": adata.n_obs, "load_s": load_s, "compute_s": {}}
    for flavor in a.flavors:
        t = time.perf_counter()
        if flavor in ("seurat", "cell_ranger"):
            work = adata.copy()
            sc.pp.normalize_total(work, target_sum=1e4)
            sc.pp.log1p(work)
        else:
            work = adata
        df = sc.pp.highly_variable_genes(work, flavor=flavor, n_top_genes=a.n_top_genes, inplace=False)
        out["compute_s"][flavor] = time.perf_counter() - t
        out.setdefault("n_hvgs", {})[flavor] = int(np.sum(df["highly_variable"]))
        del work
    print(json.dumps(out))


if __name__ == "__main__":
    main()
