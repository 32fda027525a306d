"""A large store for query timing, made by repeating the committed chunks of a real ingest.

Ingesting ten million cells takes hours on 2 cores and a bucket of that size does not fit this
disk as h5ad files; query timing needs only a store of that size with realistic chunks. This
copies a store's whole chunk rows ``copies`` times (real copies, not links, so a cold read is
cold for every copy), and its per-cell columns with each copy's cell IDs and experiment
accessions made distinct (``ID~k``, ``SRX~k``), so per-experiment queries see ``copies`` times
the experiments. The manifest lists the copied experiments. The counts repeat: a result over
the tiled store says how long a query takes, not what the atlas holds.

    python benchmarks/tile_store.py SOURCE.zarr OUT.zarr --copies 10
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _suffixed(values: np.ndarray, k: int) -> np.ndarray:
    return values if k == 0 else np.asarray([f"{v}~{k}" for v in values.tolist()], dtype=object)


def tile(source: str, out: str, copies: int) -> int:
    """Write ``out`` as ``copies`` copies of ``source``'s whole chunk rows; returns its cells."""
    import zarr

    import scdata
    from scdata.store.layout import categorical_columns, numeric_columns, open_root, read_strings
    from scdata.store.manifest import write_manifest

    manifest = scdata.read_manifest(source)
    root = open_root(source)
    crow, _ = root["X"].chunks
    rows = manifest.n_committed // crow * crow  # whole chunk rows only: each copy starts on a chunk boundary
    n = rows * copies
    shutil.rmtree(out, ignore_errors=True)
    def chunks_of_rewritten_arrays(directory: str, names: list[str]) -> list[str]:
        parts = os.path.relpath(directory, source).split(os.sep)
        return ["c"] if parts[0] in ("X", "obs") else []

    shutil.copytree(source, out, ignore=chunks_of_rewritten_arrays)
    x_meta = os.path.join(out, "X", "zarr.json")
    with open(x_meta) as f:
        doc = json.load(f)
    doc["shape"][0] = n
    with open(x_meta, "w") as f:
        json.dump(doc, f)
    chunk_rows = rows // crow
    for k in range(copies):
        for i in range(chunk_rows):
            src = os.path.join(source, "X", "c", str(i))
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(out, "X", "c", str(k * chunk_rows + i)))

    dst = zarr.open_group(out, mode="r+", zarr_format=3, use_consolidated=False)
    obs, out_obs = root["obs"], dst["obs"]

    def write(name: str, values: np.ndarray) -> None:
        array = out_obs[name]
        array.resize((len(values),))
        array[:] = values

    write("_index", np.concatenate([_suffixed(read_strings(obs["_index"], rows), k) for k in range(copies)]))
    for name in [c for c in obs.attrs["column-order"] if isinstance(obs.get(c), zarr.Array) and c != "_index"
                 and c not in numeric_columns(root)]:
        write(name, np.tile(read_strings(obs[name], rows), copies))
    for name in numeric_columns(root):
        write(name, np.tile(np.asarray(obs[name][:rows]), copies))
    for name in categorical_columns(root):
        codes = np.asarray(obs[f"{name}/codes"][:rows])
        categories = read_strings(obs[f"{name}/categories"], manifest.categories.get(name))
        if name == "srx_accession":  # each copy is its own experiments
            tiled = np.concatenate([np.where(codes < 0, -1, codes + k * len(categories)) for k in range(copies)])
            categories = np.concatenate([_suffixed(categories, k) for k in range(copies)])
        else:
            tiled = np.tile(codes, copies)
        codes_out, cats_out = out_obs[f"{name}/codes"], out_obs[f"{name}/categories"]
        codes_out.resize((n,))
        codes_out[:] = tiled.astype(np.int32)
        cats_out.resize((len(categories),))
        cats_out[:] = np.asarray(categories, dtype=str)
        manifest.categories[name] = len(categories)

    experiments = []
    for k in range(copies):
        for e in manifest.experiments:
            if e["row_start"] >= rows:
                continue
            entry = copy.deepcopy(e)
            stop = min(e["row_stop"], rows)
            entry.update(accession=f"{e['accession']}~{k}" if k else e["accession"], row_start=e["row_start"] + k * rows,
                         row_stop=stop + k * rows, n_cells=stop - e["row_start"])
            experiments.append(entry)
    manifest.experiments = experiments
    manifest.nnz = int(manifest.nnz * n / max(manifest.n_committed, 1))
    manifest.n_committed = n
    manifest.version += 1
    manifest._logged = None  # the lists were rewritten, not appended to: log a snapshot
    write_manifest(out, manifest)
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source")
    p.add_argument("out")
    p.add_argument("--copies", type=int, required=True)
    a = p.parse_args()
    print(f"{tile(a.source, a.out, a.copies):,} cells in {a.out}")


if __name__ == "__main__":
    main()
