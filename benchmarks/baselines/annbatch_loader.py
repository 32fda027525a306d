"""annbatch on the same cells (runs in a Python >= 3.12 environment without torch).

Builds annbatch's own pre-shuffled collection from the benchmark's h5ad with its tools (once),
then times shuffled batches of 64 with ``harness`` (same task and windows as every loader).
As annbatch's README advises: the ``zarrs`` codec pipeline (``--no-zarrs`` to measure without
it) and only the obs columns training needs (none here; ``--obs`` loads the h5ad's one column
per batch, as a loader without a custom ``load_adata`` does). Mixing is measured on a separate
pass that loads the experiment column (the collection is shuffled, so indices do not tell).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BATCH, measure, transform  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--h5ad", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--preload-nchunks", type=int, default=32)
    p.add_argument("--no-zarrs", action="store_true")
    p.add_argument("--obs", action="store_true")
    a = p.parse_args()
    import anndata as ad
    import zarr

    if not a.no_zarrs:
        zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
    from annbatch import DatasetCollection, Loader

    t = time.perf_counter()
    if not os.path.exists(a.collection) or DatasetCollection(a.collection).is_empty:
        shutil.rmtree(a.collection, ignore_errors=True)
        DatasetCollection(a.collection).add_adatas([a.h5ad], shuffle=True)
    build_s = time.perf_counter() - t
    collection = DatasetCollection(a.collection, mode="r")

    def load(g, obs: bool):
        return ad.AnnData(X=ad.io.sparse_dataset(g["X"]), obs=ad.io.read_elem(g["obs"]) if obs else None)

    def loader(obs: bool):
        return Loader(batch_size=BATCH, chunk_size=a.chunk_size, preload_nchunks=a.preload_nchunks, shuffle=True,
                      preload_to_gpu=False).use_collection(collection, load_adata=lambda g: load(g, obs))

    def dense(batch):
        x = batch["X"]
        return x.toarray() if hasattr(x, "toarray") else np.asarray(x)

    def make_iter():
        return ((transform(dense(batch)), None) for batch in loader(a.obs))

    with ad.settings.override(remove_unused_categories=False):
        result = measure(make_iter)
        mixes = []
        for batch in loader(True):
            mixes.append(len(np.unique(np.asarray(batch["obs"]["srx_accession"]))))
            if len(mixes) >= 500:
                break
    result.update({"experiments_per_batch": float(np.mean(mixes)), "build_s": round(build_s, 1),
                   "zarrs": not a.no_zarrs, "obs_per_batch": a.obs})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
