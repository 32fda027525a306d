"""Loader runs for bench_loader.py, one per process (so peak RSS is each loader's own).

    python benchmarks/baselines/loaders.py NAME --store S --h5ad F --workers W --max-cells N

Every loader yields shuffled batches of 64 cells x 2,000 HVGs, normalized (log1p of
normalize_total to 1e4) and tokenized (64 fixed log1p bins, uint8 tokens) before the batch is counted.
Prints one JSON line: cells, seconds, batches, unique experiments per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

BATCH = 64
EDGES = np.linspace(0, 8.0, 64)[1:-1]


def transform_numpy(x: np.ndarray, totals: np.ndarray | None = None) -> np.ndarray:
    x = x.astype(np.float32)
    t = (x.sum(axis=1, keepdims=True) if totals is None else totals[:, None]) / 1e4
    y = np.log1p(x / np.where(t == 0, 1, t))
    return np.where(y > 0, np.searchsorted(EDGES, y, side="right") + 1, 0).astype(np.uint8)


def _timed(batches, max_cells: int) -> dict:
    """Draw batches until ``max_cells`` cells; ``batches`` loads and transforms lazily, so the
    clock covers both."""
    t = time.perf_counter()
    cells = n = 0
    for x in batches:
        cells += x.shape[0]
        n += 1
        if cells >= max_cells:
            break
    return {"cells": cells, "seconds": time.perf_counter() - t, "batches": n}


def run_sczarr(a) -> dict:
    from scmodel.data import LoaderConfig, StoreDataLoader, StoreDataset
    from scmodel.tokenize import BinnedTokenizer

    features = {"features": "hvg"} if a.variant == "hvg" else {"features": "genes", "genes": tuple(a.genes)}
    ds = StoreDataset(LoaderConfig(store=a.store, batch_size=BATCH, seed=0, tokenizer=BinnedTokenizer(64),
                                   token_dtype="compact", **features))
    loader = StoreDataLoader(ds, num_workers=a.workers)
    t = time.perf_counter()
    cells, rows, n = 0, [], 0
    for x, meta in loader:
        cells += x.shape[0]
        n += 1
        rows.append(meta["row"])
        if cells >= a.max_cells:
            break
    seconds = time.perf_counter() - t
    acc = np.asarray(_accession_of_rows(a.store))
    mixes = [len(np.unique(acc[r.numpy()])) for r in rows]
    return {"cells": cells, "seconds": seconds, "batches": n, "experiments_per_batch": float(np.mean(mixes))}


def _accession_of_rows(store: str) -> list[str]:
    import scdata

    m = scdata.read_manifest(store)
    out = [""] * m.n_committed
    for e in m.experiments:
        out[e["row_start"] : e["row_stop"]] = [e["accession"]] * e["n_cells"]
    return out


def run_anndata_loader(a) -> dict:
    import anndata as ad
    import torch
    from anndata.experimental import AnnLoader

    adata = ad.read_h5ad(a.h5ad, backed="r")
    loader = AnnLoader(adata, batch_size=BATCH, shuffle=True, num_workers=a.workers)

    def dense(x):
        x = x.to_dense() if getattr(x, "is_sparse", False) else x
        return np.asarray(x if not torch.is_tensor(x) else x.numpy())

    return _timed((transform_numpy(dense(batch.X)) for batch in loader), a.max_cells)


def run_scdataset(a) -> dict:
    import anndata as ad
    from scdataset import BlockShuffling, scDataset
    from torch.utils.data import DataLoader

    adata = ad.read_h5ad(a.h5ad, backed="r")

    def fetch(data, idx):
        x = data[np.sort(idx)].X
        return x.toarray() if hasattr(x, "toarray") else np.asarray(x)

    ds = scDataset(adata, BlockShuffling(block_size=64), batch_size=BATCH, fetch_factor=64, fetch_callback=fetch,
                   batch_transform=transform_numpy)
    loader = DataLoader(ds, batch_size=None, num_workers=a.workers, prefetch_factor=65 if a.workers else None)
    return _timed(loader, a.max_cells)


def run_seed_h5py(a) -> dict:
    """The seed's HVGDataset: map-style, one cell at a time from dense batch files."""
    import glob

    import h5py
    import torch
    from torch.utils.data import DataLoader, Dataset

    files = sorted(glob.glob(os.path.join(a.seed_dir, "batch_*.h5")))
    with h5py.File(files[0], "r") as f:
        genes = [g.decode() for g in f["genes"][:]]
    index = {g: i for i, g in enumerate(genes)}
    hvg = np.sort([index[g] for g in a.genes])
    sizes = []
    for path in files:
        with h5py.File(path, "r") as f:
            sizes.append(f["X"].shape[0])
    offsets = np.cumsum([0] + sizes)

    class SeedHVGDataset(Dataset):
        def __len__(self):
            return int(offsets[-1])

        def __getitem__(self, i):
            k = int(np.searchsorted(offsets, i, side="right") - 1)
            with h5py.File(files[k], "r") as f:
                row = f["X"][i - offsets[k]]
            return torch.from_numpy(row[hvg].astype(np.float32))

    loader = DataLoader(SeedHVGDataset(), batch_size=BATCH, shuffle=True, num_workers=a.workers)
    return _timed((transform_numpy(x.numpy()) for x in loader), a.max_cells)


def run_ceiling(a) -> dict:
    """Raw Blosc decompression of the same X_hvg chunks: no indexing, no transform."""
    from scdata.chunkio import ChunkReader
    from scdata.hvg_io import open_hvg_matrix

    arr, _ = open_hvg_matrix(a.store)
    reader = ChunkReader(arr)
    n_chunks = -(-arr.shape[0] // arr.chunks[0])
    t = time.perf_counter()
    cells = 0
    for i in np.random.default_rng(0).permutation(n_chunks):
        reader.chunk(int(i), 0)
        cells += min(arr.chunks[0], arr.shape[0] - int(i) * arr.chunks[0])
        if cells >= a.max_cells:
            break
    return {"cells": cells, "seconds": time.perf_counter() - t, "batches": 0}


RUNNERS = {"sczarr": run_sczarr, "anndata-loader": run_anndata_loader, "scdataset": run_scdataset,
           "seed-h5py": run_seed_h5py, "ceiling": run_ceiling}

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=RUNNERS)
    p.add_argument("--store")
    p.add_argument("--h5ad")
    p.add_argument("--seed-dir")
    p.add_argument("--genes-file")
    p.add_argument("--variant", default="hvg")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--max-cells", type=int, default=100_000)
    a = p.parse_args()
    a.genes = json.load(open(a.genes_file)) if a.genes_file else None
    print(json.dumps(RUNNERS[a.name](a)))
