"""Ingest benchmark: sczarr versus the seed's approach on the same synthetic bucket, side by side.

Measures cells/s, bytes on disk per cell and peak RSS (the whole process tree, Dask workers
included) at several data sizes, then a chunk-shape/codec study over the same cells for the
three access patterns that matter: shuffled row batches of all genes (training), 2,000 scattered
genes (HVG subsets) and one gene across all cells (exploration).

    python benchmarks/bench_ingest.py                 # full run (~8 min on 2 cores)
    python benchmarks/bench_ingest.py --quick         # small sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import WORK, du, ensure_bucket, md_table, run_checked, write_results  # noqa: E402

PY = sys.executable


WARM_IMPORTS = "import scanpy, anndata, h5py, zarr, numcodecs, distributed, scdata.cli, scdata.ingest.worker_tasks"


def warm_up(source: str) -> None:
    """The same start for every measured run: libraries and the bucket's files in the page cache.

    The seed's 18 GB peak pushes both out of the cache, and whichever run follows it would
    otherwise pay for cold imports and cold reads (100k cells: sczarr 20.6 s instead of 14.4 s).
    Warm data is also the seed's own case: it read each file right after downloading it.
    """
    run_checked([PY, "-c", WARM_IMPORTS])
    for dirpath, _, files in os.walk(os.path.join(source, "h5ad")):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 23):
                    pass


def bench_sczarr(source: str, size: int, workers: int) -> dict:
    store = os.path.join(WORK, f"sczarr-{size}.zarr")
    shutil.rmtree(store, ignore_errors=True)
    m = run_checked([PY, "-m", "scdata", "ingest", "--source", source, "--store", store, "--cell-count", str(size),
                     "--workers", str(workers), "--no-progress"])
    import scdata

    cells = scdata.read_manifest(store).n_committed
    return {"tool": "sczarr", "requested": size, "cells": cells, "seconds": m.seconds, "cells_per_s": cells / m.seconds,
            "peak_rss_bytes": m.peak_rss_bytes, "bytes_on_disk": du(store), "bytes_per_cell": du(store) / cells, "path": store}


def bench_seed(source: str, size: int) -> dict:
    out = os.path.join(WORK, f"seed-{size}")
    shutil.rmtree(out, ignore_errors=True)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baselines", "seed_download.py")
    m = run_checked([PY, script, "--source", source, "--output-dir", out, "--cell-count", str(size)])
    with open(os.path.join(out, "config.json")) as f:
        cells = json.load(f)["total_cells_downloaded"]
    nbytes = du(os.path.join(out, "processed"))
    return {"tool": "seed (scanpy concat -> dense int16 -> h5py gzip-4)", "requested": size, "cells": cells,
            "seconds": m.seconds, "cells_per_s": cells / m.seconds, "peak_rss_bytes": m.peak_rss_bytes,
            "bytes_on_disk": nbytes, "bytes_per_cell": nbytes / cells, "path": out}


def _read_file(path: str) -> int:
    """Every stored array of one h5ad file read and decompressed (what any ingest must do)."""
    import h5py

    total = 0

    def visit(_, node):
        nonlocal total
        if isinstance(node, h5py.Dataset) and node.shape:
            total += node[()].nbytes

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return total


def read_floor(store: str, workers: int) -> dict:
    """The files an ingest read, read and decompressed alone by h5py in ``workers`` processes:
    no conversion, no encoding, no writes. An ingest of these files cannot be faster than this."""
    from concurrent.futures import ProcessPoolExecutor

    import scdata

    manifest = scdata.read_manifest(store)
    paths = [e["source_url"] for e in manifest.experiments]
    cells = manifest.n_committed
    with ProcessPoolExecutor(workers) as pool:  # started and warmed before the clock
        list(pool.map(abs, range(workers)))
        t = time.perf_counter()
        nbytes = sum(pool.map(_read_file, paths))
        seconds = time.perf_counter() - t
    return {"cells": cells, "files": len(paths), "seconds": seconds, "cells_per_s": cells / seconds,
            "decompressed_bytes": nbytes, "workers": workers}


def _write_rows(source: str, dest: str, starts: list[int], barrier) -> tuple[float, int]:
    """One process's share of the write floor: its chunk rows of ``source``'s X read into memory
    as CSR (before the clock), then encoded and stored in ``dest`` by the ingest's own
    ``ChunkWriter``; returns (seconds, cells). Every process starts its clock together."""
    import zarr

    from scdata.store.chunks import ChunkReader, ChunkWriter

    x = zarr.open_group(source, mode="r")["X"]
    reader = ChunkReader(x)
    rows = x.chunks[0]
    blocks = [reader.read_csc(lo, min(lo + rows, x.shape[0])).tocsr() for lo in starts]
    writer = ChunkWriter(zarr.open_array(dest, path="X", mode="r+"))
    barrier.wait()
    t = time.perf_counter()
    for lo, block in zip(starts, blocks):
        writer.write_rows(lo, block)
    return time.perf_counter() - t, sum(b.shape[0] for b in blocks)


def write_floor(store: str, workers: int) -> dict:
    """The same cells' chunks written alone by ``workers`` processes: rows already in memory as the
    ingest's loads hold them (int16 CSR), densified into gene-major chunks, Blosc-encoded and
    stored with the store's codec by ``ChunkWriter``, the ingest's write path. No reading, no
    conversion, no Dask. Reading (``read_floor``) and writing are both unavoidable, so an ingest
    cannot beat the rate of doing one after the other on every core (``combined_floor``)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import zarr

    source = zarr.open_group(store, mode="r")["X"]
    n_cells, rows = source.shape[0], source.chunks[0]
    dest = os.path.join(WORK, "write-floor.zarr")
    shutil.rmtree(dest, ignore_errors=True)
    zarr.create_array(dest, name="X", shape=source.shape, chunks=source.chunks, dtype=source.dtype,
                      filters=source.filters, serializer=source.serializer, compressors=source.compressors,
                      fill_value=0)
    starts = list(range(0, n_cells, rows))
    shares = [starts[i::workers] for i in range(workers)]
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(workers) as pool:
        barrier = manager.Barrier(workers)
        done = list(pool.map(_write_rows, [store] * workers, [dest] * workers, shares, [barrier] * workers))
    seconds = max(s for s, _ in done)
    cells = sum(c for _, c in done)
    shutil.rmtree(dest, ignore_errors=True)
    return {"cells": cells, "seconds": seconds, "cells_per_s": cells / seconds, "workers": workers}


def combined_floor(read: dict, write: dict) -> float:
    """Cells/s of reading then writing every cell on all cores: each cell costs both floors' time."""
    return 1 / (1 / read["cells_per_s"] + 1 / write["cells_per_s"])


MIB = 1 << 20
KIB = 1 << 10
CANDIDATES = {
    "1024x2048 T zstd1-bit 128KiB (default)": dict(chunks=(1024, 2048), cname="zstd", clevel=1, shuffle="bitshuffle",
                                                    transpose=True, blocksize=128 * KIB),
    "1024x2048 T zstd1-bit 64KiB": dict(chunks=(1024, 2048), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=True,
                                        blocksize=64 * KIB),
    "1024x2048 T zstd1-bit 256KiB": dict(chunks=(1024, 2048), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=True,
                                         blocksize=256 * KIB),
    "1024x2048 T zstd1-bit 1MiB (default before 0.2)": dict(chunks=(1024, 2048), cname="zstd", clevel=1, shuffle="bitshuffle",
                                                            transpose=True, blocksize=MIB),
    "1024x2048 T zstd1-bit": dict(chunks=(1024, 2048), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=True, blocksize=0),
    "1024x2048 T zstd3-bit 1MiB": dict(chunks=(1024, 2048), cname="zstd", clevel=3, shuffle="bitshuffle", transpose=True, blocksize=MIB),
    "1024x2048 zstd1-bit 1MiB": dict(chunks=(1024, 2048), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=False, blocksize=MIB),
    "1024x2048 T lz4-bit": dict(chunks=(1024, 2048), cname="lz4", clevel=5, shuffle="bitshuffle", transpose=True, blocksize=0),
    "1024x2048 lz4-byte": dict(chunks=(1024, 2048), cname="lz4", clevel=5, shuffle="shuffle", transpose=False, blocksize=0),
    "1024x4096 T zstd1-bit 128KiB": dict(chunks=(1024, 4096), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=True,
                                         blocksize=128 * KIB),
    "4096x1024 T zstd1-bit 128KiB": dict(chunks=(4096, 1024), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=True,
                                         blocksize=128 * KIB),
    "256x36601 zstd1-bit 1MiB": dict(chunks=(256, None), cname="zstd", clevel=1, shuffle="bitshuffle", transpose=False, blocksize=MIB),
}


def chunk_study(store: str, n_cells: int) -> list[dict]:
    """Rewrite the same cells under each candidate layout and time the access patterns through
    sczarr's own readers (``DirectX``, ``sparse_rows``): shuffled batches of whole rows (training
    on every gene, ``to_anndata``), 2,000 and 100 scattered genes (HVG subsets, a gene list) and
    one gene across every cell (exploration)."""
    import zarr

    from scdata.read.lazy_counts import DirectX, sparse_rows
    from scdata.store.chunks import ChunkWriter
    from scdata.store.layout import StoreLayout

    source = zarr.open_group(store, mode="r")["X"]
    n_cells = min(n_cells, source.shape[0])
    dense = source[:n_cells]
    n_genes = dense.shape[1]
    rng = np.random.default_rng(0)
    genes = np.sort(rng.choice(n_genes, size=2000, replace=False))
    few = np.sort(rng.choice(n_genes, size=100, replace=False))
    block = 1024
    rows = []
    for name, spec in CANDIDATES.items():
        path = os.path.join(WORK, "chunks", name.replace(" ", "_").replace("(", "").replace(")", "") + ".zarr")
        shutil.rmtree(path, ignore_errors=True)
        chunk_rows, chunk_genes = spec["chunks"]
        layout = StoreLayout(chunk_cells=chunk_rows, chunk_genes=chunk_genes or n_genes, cname=spec["cname"],
                             clevel=spec["clevel"], shuffle=spec["shuffle"], transpose=spec["transpose"],
                             blocksize=spec["blocksize"])
        t = time.perf_counter()
        arr = zarr.create_array(path, name="X", shape=dense.shape, chunks=(chunk_rows, chunk_genes or n_genes), dtype="int16",
                                filters=layout.filters(), compressors=layout.codec(), fill_value=0)
        writer = ChunkWriter(arr)  # the ingest's own write path
        for lo in range(0, n_cells, chunk_rows):
            writer.write_rows(lo, dense[lo : lo + chunk_rows])
        write_s = time.perf_counter() - t
        x = DirectX(path, n_cells)
        starts = rng.permutation(np.arange(0, n_cells - block + 1, block))
        t = time.perf_counter()
        for s in starts:
            x[s : s + block]
        rows_cps = len(starts) * block / (time.perf_counter() - t)
        t = time.perf_counter()
        sparse_rows(x, None, None, threads=1)
        sparse_cps = n_cells / (time.perf_counter() - t)
        t = time.perf_counter()
        x[:, genes]
        genes_cps = n_cells / (time.perf_counter() - t)
        t = time.perf_counter()
        x[:, few]
        few_cps = n_cells / (time.perf_counter() - t)
        t = time.perf_counter()
        for g in genes[:5]:
            x[:, int(g)]
        one_gene_ms = (time.perf_counter() - t) / 5 * 1000
        rows.append({"layout": name, "bytes_per_cell": du(path) / n_cells, "write_s": write_s,
                     "row_batches_cells_per_s": rows_cps, "sparse_rows_cells_per_s": sparse_cps,
                     "hvg2000_cells_per_s": genes_cps, "genes100_cells_per_s": few_cps, "one_gene_ms": one_gene_ms})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000, 400_000], help="sczarr cell budgets")
    p.add_argument("--seed-sizes", type=int, nargs="+", default=[100_000, 200_000], help="seed pipeline cell budgets")
    p.add_argument("--experiments", type=int, default=50, help="experiments in the synthetic bucket (~8k cells each)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-cells", type=int, default=16384, help="cells in the chunk study")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    a = p.parse_args()
    if a.quick:
        a.sizes, a.seed_sizes, a.experiments, a.chunk_cells = [10_000, 20_000], [10_000], 6, 4096
    os.makedirs(WORK, exist_ok=True)
    source = ensure_bucket(os.path.join(WORK, "bucket" if not a.quick else "bucket-quick"), a.experiments)

    results = []
    for size in sorted(set(a.sizes) | set(a.seed_sizes)):
        if size in a.seed_sizes:
            warm_up(source)
            results.append(bench_seed(source, size))
            print(results[-1], flush=True)
        if size in a.sizes:
            warm_up(source)
            results.append(bench_sczarr(source, size, a.workers))
            print(results[-1], flush=True)
    floors, write_floors = {}, {}
    for r in results:
        if r["tool"] == "sczarr":
            warm_up(source)
            floors[r["requested"]] = read_floor(r["path"], a.workers)
            print("read floor", floors[r["requested"]], flush=True)
            write_floors[r["requested"]] = write_floor(r["path"], a.workers)
            print("write floor", write_floors[r["requested"]], flush=True)
    chunks = chunk_study(next(r["path"] for r in results if r["tool"] == "sczarr"), a.chunk_cells)

    by = {(r["tool"].split()[0], r["requested"]): r for r in results}
    ratios = []
    for size in a.seed_sizes:
        s, z = by.get(("seed", size)), by.get(("sczarr", size))
        if s and z:
            ratios.append({"cells": size, "speedup": z["cells_per_s"] / s["cells_per_s"],
                           "fraction_of_read_floor": z["cells_per_s"] / floors[size]["cells_per_s"],
                           "fraction_of_combined_floor": z["cells_per_s"] / combined_floor(floors[size], write_floors[size]),
                           "bytes_ratio": z["bytes_per_cell"] / s["bytes_per_cell"],
                           "peak_rss_ratio": z["peak_rss_bytes"] / s["peak_rss_bytes"]})
    sczarr_rss = {r["cells"]: r["peak_rss_bytes"] for r in results if r["tool"] == "sczarr"}

    gib = 2**30
    table = "### Ingest (same bucket, same 2 cores)\n\n" + md_table(
        ["tool", "cells", "cells/s", "bytes/cell", "peak RSS (GiB)", "wall (s)"],
        [[r["tool"], f"{r['cells']:,}", f"{r['cells_per_s']:,.0f}", f"{r['bytes_per_cell']:,.0f}",
          f"{r['peak_rss_bytes'] / gib:.2f}", f"{r['seconds']:.1f}"] for r in results],
    )
    table += "\n\n" + md_table(["cells", "sczarr speed-up", "sczarr / read floor", "sczarr / read+write floor",
                                  "sczarr bytes / seed bytes", "sczarr RSS / seed RSS"],
                               [[f"{r['cells']:,}", f"{r['speedup']:.1f}x", f"{r['fraction_of_read_floor']:.0%}",
                                 f"{r['fraction_of_combined_floor']:.0%}", f"{r['bytes_ratio']:.2f}",
                                 f"{r['peak_rss_ratio']:.2f}"] for r in ratios])
    table += ("\n\n### Floors: the same cells read alone, written alone, and both\n\n"
              "Read: the h5ad files read and decompressed by h5py (one process per core). Write: the same cells' rows, "
              "already in memory as int16 CSR, densified, Blosc-encoded and stored by the ingest's `ChunkWriter` "
              "(one process per core). Read+write: every cell read, then written, on every core "
              "(1 / (1/read + 1/write)); no ingest can be faster.\n\n") + md_table(
        ["cells", "files", "read (cells/s)", "write (cells/s)", "read+write (cells/s)", "sczarr ingest / read",
         "sczarr ingest / read+write", "seed speed-up possible at read+write"],
        [[f"{f['cells']:,}", f"{f['files']}", f"{f['cells_per_s']:,.0f}", f"{write_floors[size]['cells_per_s']:,.0f}",
          f"{combined_floor(f, write_floors[size]):,.0f}",
          f"{by[('sczarr', size)]['cells_per_s'] / f['cells_per_s']:.0%}",
          f"{by[('sczarr', size)]['cells_per_s'] / combined_floor(f, write_floors[size]):.0%}",
          f"{combined_floor(f, write_floors[size]) / by[('seed', size)]['cells_per_s']:.1f}x" if ("seed", size) in by else ""]
         for size, f in sorted(floors.items())])
    table += "\n\n### Chunk shape and codec (same cells, read through sczarr's readers, one thread)\n\n" + md_table(
        ["layout", "bytes/cell", "write (s)", "row batches, dense (cells/s)", "whole rows, sparse (cells/s)",
         "2,000 genes (cells/s)", "100 genes (cells/s)", "one gene (ms)"],
        [[c["layout"], f"{c['bytes_per_cell']:,.0f}", f"{c['write_s']:.1f}", f"{c['row_batches_cells_per_s']:,.0f}",
          f"{c['sparse_rows_cells_per_s']:,.0f}", f"{c['hvg2000_cells_per_s']:,.0f}", f"{c['genes100_cells_per_s']:,.0f}",
          f"{c['one_gene_ms']:.1f}"] for c in chunks],
    )
    write_results("bench_ingest" if not a.quick else "bench_ingest_quick",
                  {"results": results, "ratios": ratios, "read_floor": floors, "write_floor": write_floors,
                   "combined_floor_cells_per_s": {k: combined_floor(floors[k], write_floors[k]) for k in floors},
                   "sczarr_peak_rss_by_cells": sczarr_rss,
                   "chunk_study": chunks, "load_avg": os.getloadavg()}, table)


if __name__ == "__main__":
    main()
