"""annbatch on the same cells (runs in a Python >= 3.12 environment without torch).

Builds annbatch's own pre-shuffled collection from the benchmark's h5ad with its tools, then
iterates shuffled batches of 64 and applies the same normalization + tokenization in numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

EDGES = np.linspace(0, 8.0, 64)[1:-1]


def transform(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    t = x.sum(axis=1, keepdims=True) / 1e4
    y = np.log1p(x / np.where(t == 0, 1, t))
    return np.where(y > 0, np.searchsorted(EDGES, y, side="right") + 1, 0).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--h5ad", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--max-cells", type=int, default=100_000)
    p.add_argument("--chunk-size", type=int, default=32)
    p.add_argument("--preload-nchunks", type=int, default=256)
    a = p.parse_args()
    from annbatch import DatasetCollection, Loader

    t = time.perf_counter()
    if not os.path.exists(a.collection) or DatasetCollection(a.collection).is_empty:
        import shutil

        shutil.rmtree(a.collection, ignore_errors=True)
        DatasetCollection(a.collection).add_adatas([a.h5ad], shuffle=True)
    build_s = time.perf_counter() - t
    collection = DatasetCollection(a.collection, mode="r")
    loader = Loader(batch_size=64, chunk_size=a.chunk_size, preload_nchunks=a.preload_nchunks, shuffle=True,
                    preload_to_gpu=False).use_collection(collection)
    t = time.perf_counter()
    cells = n = 0
    for batch in loader:
        x = batch["X"] if isinstance(batch, dict) else batch
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        transform(x)
        cells += x.shape[0]
        n += 1
        if cells >= a.max_cells:
            break
    print(json.dumps({"cells": cells, "seconds": time.perf_counter() - t, "batches": n, "build_s": build_s}))


if __name__ == "__main__":
    main()
