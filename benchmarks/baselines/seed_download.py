"""The seed pipeline's download step, re-implemented for side-by-side benchmarks.

As the seed document describes it: shuffle experiments with seed 42 and take whole ones up to
the cell budget; per batch of ``--batch-size`` experiments read each h5ad with scanpy, outer-join
them with ``sc.concat``, reindex onto the running gene union, densify to int16 and write
``processed/batch_XXXX.h5`` with h5py gzip-4 (X, genes, cells, obs/...), then ``config.json``.
Its flaws are kept on purpose (values above 32,767 wrap around in the int16 cast).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

import h5py
import numpy as np
import scanpy as sc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from scdata.source.bucket import SourceConfig, read_sample_metadata, select_experiments  # noqa: E402


def run(source: str, output_dir: str, cell_count: int, batch_size: int) -> dict:
    cfg = SourceConfig(source)
    experiments = select_experiments(read_sample_metadata(cfg), cfg, cell_count, seed=42)
    processed = os.path.join(output_dir, "processed")
    os.makedirs(processed, exist_ok=True)
    genes: list[str] = []
    gene_set: set[str] = set()
    total, max_value, nnz = 0, 0, 0
    for b in range(0, len(experiments), batch_size):
        batch = experiments[b : b + batch_size]
        adatas = []
        for exp in batch:
            adata = sc.read_h5ad(exp.url)
            adata.obs["SRX_accession"] = exp.accession
            adatas.append(adata)
            for g in adata.var_names:
                if g not in gene_set:
                    gene_set.add(g)
                    genes.append(g)
        combined = sc.concat(adatas, join="outer", fill_value=0)
        combined = combined[:, genes] if list(combined.var_names) != genes else combined
        X = combined.X.toarray().astype(np.int16)
        max_value = max(max_value, int(X.max()))
        nnz += int(np.count_nonzero(X))
        with h5py.File(os.path.join(processed, f"batch_{b // batch_size:04d}.h5"), "w") as f:
            f.create_dataset("X", data=X, compression="gzip", compression_opts=4)
            f.create_dataset("genes", data=np.array(genes, dtype="S"))
            f.create_dataset("cells", data=np.array(combined.obs_names, dtype="S"))
            obs = f.create_group("obs")
            obs.create_dataset("gene_count", data=combined.obs["gene_count"].to_numpy())
            obs.create_dataset("umi_count", data=combined.obs["umi_count"].to_numpy())
            obs.create_dataset("SRX_accession", data=np.array(combined.obs["SRX_accession"].astype(str), dtype="S"))
        total += X.shape[0]
        del X, combined, adatas
    config = {
        "total_cells_requested": cell_count,
        "total_cells_downloaded": total,
        "total_samples": len(experiments),
        "download_timestamp": dt.datetime.now().isoformat(),
        "gene_list": genes,
        "max_expression_value": max_value,
        "sparsity": 1 - nnz / max(1, total * len(genes)),
        "samples": [e.metadata for e in experiments],
    }
    with open(os.path.join(output_dir, "config.json"), "w") as f:
        json.dump(config, f, default=str)
    return config


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--cell-count", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=10)
    a = p.parse_args()
    c = run(a.source, a.output_dir, a.cell_count, a.batch_size)
    print(f"seed pipeline: {c['total_cells_downloaded']} cells, {c['total_samples']} experiments")
