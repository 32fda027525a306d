"""Loader runs for bench_loader.py, one per process (so peak RSS is each loader's own).

    python benchmarks/baselines/loaders.py NAME --store S --h5ad F --codes C [--workers W] [options]

Every loader does the task and timing of ``harness`` (shuffled batches of 64 x 2,000 HVGs, dense
float32, normalize_total + log1p). Prints one JSON line: the rate, its windows, and the mixing
(distinct experiments per batch of 64).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from benchmarks.baselines.harness import BATCH, measure, transform  # noqa: E402


METADATA = {"none": {"metadata": ()},
            "defaults": {},  # LoaderConfig's own: accession codes and UMI counts per batch
            "strings": {"metadata": ("cell_id", "srx_accession"), "metadata_strings": True}}  # the seed's form


def run_sczarr(a) -> dict:
    from scmodel.data import LoaderConfig, StoreDataLoader, StoreDataset

    features = {"features": "hvg"} if a.variant == "hvg" else {"features": "genes", "genes": tuple(a.genes)}
    threads = {} if a.read_threads is None else {"read_threads": a.read_threads}
    ds = StoreDataset(LoaderConfig(store=a.store, batch_size=BATCH, seed=0, buffer_blocks=a.buffer_blocks,
                                   handoff_cells=a.handoff_cells, **threads, **METADATA[a.metadata], **features))
    codes = np.load(a.codes)
    epoch = iter(range(10**6))
    # one loader for the run, as training uses it: its workers persist across epochs (set_epoch)
    loader = StoreDataLoader(ds, num_workers=a.workers, prefetch_factor=a.prefetch_factor)

    def make_iter():
        loader.set_epoch(next(epoch))
        return ((x, codes[meta["row"].numpy()]) for x, meta in loader)

    return measure(make_iter)


def run_memory(a) -> dict:
    """The ceiling: the HVG counts held in memory as int16; each batch a row gather plus the
    transform, on ``--read-threads`` threads (numpy's gather and log1p release the GIL), batches
    served in order with a few in flight per thread."""
    from concurrent.futures import ThreadPoolExecutor

    from scdata.hvg.results import open_hvg_matrix

    matrix = np.asarray(open_hvg_matrix(a.store)[0][:])
    codes = np.load(a.codes)
    rng = np.random.default_rng(0)
    threads = a.read_threads or 0
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def one(idx):
        return transform(matrix[idx]), codes[idx]

    def make_iter():
        parts = np.array_split(rng.permutation(len(matrix)), len(matrix) // BATCH)
        if pool is None:
            yield from map(one, parts)
            return
        ahead = []
        for idx in parts:
            ahead.append(pool.submit(one, idx))
            if len(ahead) > 4 * threads:
                yield ahead.pop(0).result()
        for job in ahead:
            yield job.result()

    return measure(make_iter)


def run_decode(a) -> dict:
    """Raw Blosc decompression of the X_hvg chunks in random order: no indexing, no transform."""
    from scdata.store.chunks import ChunkReader
    from scdata.hvg.results import open_hvg_matrix

    arr, _ = open_hvg_matrix(a.store)
    reader = ChunkReader(arr)
    n_chunks = -(-arr.shape[0] // arr.chunks[0])
    rng = np.random.default_rng(0)

    def make_iter():
        for i in rng.permutation(n_chunks):
            chunk = reader.chunk(int(i), 0)
            yield chunk[: min(arr.chunks[0], arr.shape[0] - int(i) * arr.chunks[0])], None

    return measure(make_iter)


def run_anndata_loader(a) -> dict:
    import anndata as ad
    import torch
    from anndata.experimental import AnnLoader

    adata = ad.read_h5ad(a.h5ad, backed="r")

    def dense(x):
        x = x.to_dense() if getattr(x, "is_sparse", False) else x
        return np.asarray(x if not torch.is_tensor(x) else x.numpy())

    def make_iter():  # a shuffling sampler: mixing is a random permutation's by construction
        return ((transform(dense(batch.X)), None) for batch in AnnLoader(adata, batch_size=BATCH, shuffle=True,
                                                                          num_workers=a.workers))

    return measure(make_iter, window_s=4.0, warmup_cells=2_000)


def run_scdataset(a) -> dict:
    import anndata as ad
    from scdataset import BlockShuffling, scDataset
    from torch.utils.data import DataLoader

    adata = ad.read_h5ad(a.h5ad, backed="r")
    codes = np.load(a.codes)

    def fetch(data, idx):
        idx = np.sort(idx)
        x = data[idx].X
        return (x.toarray() if hasattr(x, "toarray") else np.asarray(x)), idx

    def batch(data, positions):
        return data[0][positions], data[1][positions]

    def finish(b):
        return transform(b[0]), codes[b[1]]

    ds = scDataset(adata, BlockShuffling(block_size=a.block_size), batch_size=BATCH, fetch_factor=a.fetch_factor,
                   fetch_callback=fetch, batch_callback=batch, batch_transform=finish)

    def make_iter():
        loader = DataLoader(ds, batch_size=None, num_workers=a.workers,
                            prefetch_factor=a.fetch_factor + 1 if a.workers else None)
        return iter(loader)

    return measure(make_iter)


RUNNERS = {"sczarr": run_sczarr, "memory": run_memory, "decode": run_decode, "anndata-loader": run_anndata_loader,
           "scdataset": run_scdataset}

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=RUNNERS)
    p.add_argument("--store")
    p.add_argument("--h5ad")
    p.add_argument("--codes", help=".npy: experiment code of each store row")
    p.add_argument("--genes-file")
    p.add_argument("--variant", default="hvg")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--buffer-blocks", type=int, default=8)
    p.add_argument("--read-threads", type=int, default=None, help="default: the loader's own (sczarr: cores / workers)")
    p.add_argument("--metadata", choices=sorted(METADATA), default="none")
    p.add_argument("--prefetch-factor", type=int, default=None)
    p.add_argument("--handoff-cells", type=int, default=8192)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--fetch-factor", type=int, default=64)
    a = p.parse_args()
    a.genes = json.load(open(a.genes_file)) if a.genes_file else None
    print(json.dumps(RUNNERS[a.name](a)))
