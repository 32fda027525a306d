"""Perturbation import benchmark: ``scdata vcc import`` beside reading the same h5ad with anndata.

The same synthetic challenge-layout files (``scdata vcc demo``: 18,080 genes like the real
``adata_Training.h5ad``, gzip'd float32 CSR counts) at several sizes, the same 2 cores:

* ``scdata vcc import`` (2 Dask workers): the file onto the pretraining store's 36,601-gene axis,
  int16 chunks, plus target effects and the materialized HVG matrix;
* ``anndata.read_h5ad``: the whole file into memory (what the seed's ``--process-vcc`` did first);
* ``anndata.read_h5ad`` + ``write_zarr``: the obvious conversion to an on-disk Zarr AnnData;
* reading back: ``anndata.read_zarr`` of the imported store, against ``read_h5ad`` of the file.

Reports seconds, cells/s, peak RSS (the whole process tree) and bytes on disk.

    python benchmarks/bench_vcc.py             # 20k and 60k cells (~10 min on 2 cores)
    python benchmarks/bench_vcc.py --quick     # 5k cells
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import WORK, du, md_table, run_checked, write_results  # noqa: E402

PY = sys.executable
GENES = 18_080
PERTURBATIONS = 40


def axis_store(directory: str) -> str:
    """A pretraining store's gene axis (the demo bucket's 36,601 genes) with an HVG selection of
    2,000 genes beside it, without cells: what the import needs from ``--genes-from``."""
    code = f"""
import json, os, numpy as np
from scdata.source.demo_bucket import DemoConfig, demo_biology
from scdata.store.manifest import Manifest, write_manifest
from scdata.store.layout import StoreLayout, create_store
b = demo_biology(DemoConfig())
path = os.path.join({directory!r}, "store.zarr")
create_store(path, b.gene_ids, b.symbols, [], StoreLayout())
write_manifest(path, Manifest(n_genes=len(b.gene_ids)))
order = np.argsort(b.profiles.var(0))[::-1][:2000]
json.dump({{"hvg_indices": [int(i) for i in order]}}, open(os.path.join({directory!r}, "hvg_info.json"), "w"))
"""
    if not os.path.exists(os.path.join(directory, "store.zarr")):
        os.makedirs(directory, exist_ok=True)
        run_checked([PY, "-c", code])
    return os.path.join(directory, "store.zarr")


def files(cells: int) -> str:
    """Synthetic challenge files with about ``cells`` cells (a fifth of them controls)."""
    directory = os.path.join(WORK, f"vcc-{cells}")
    if not os.path.exists(os.path.join(directory, "adata_Training.h5ad")):
        per = int(cells * 0.8 / PERTURBATIONS)
        run_checked([PY, "-m", "scdata", "vcc", "demo", directory, "--genes", str(GENES), "--perturbations",
                     str(PERTURBATIONS), "--validation-perturbations", "4", "--cells", str(int(per * 0.9)),
                     str(int(per * 1.1)), "--controls", str(cells // 5)])
    return os.path.join(directory, "adata_Training.h5ad")


def warm(path: str) -> None:
    run_checked([PY, "-c", "import anndata, scanpy, zarr, distributed, scdata.vcc.importer"])
    with open(path, "rb") as f:
        while f.read(1 << 23):
            pass


def bench(cells: int, genes_from: str) -> list[dict]:
    source = files(cells)
    n = json.loads(run_checked([PY, "-c", f"import anndata as ad; print(ad.read_h5ad({source!r}, backed='r').n_obs)"])
                   .output.strip().splitlines()[-1])
    rows = []
    store = os.path.join(WORK, f"vcc-{cells}.zarr")
    shutil.rmtree(store, ignore_errors=True)
    warm(source)
    m = run_checked([PY, "-m", "scdata", "vcc", "import", "--input", source, "--store", store, "--genes-from", genes_from,
                     "--workers", "2", "--output-dir", os.path.dirname(genes_from)])
    rows.append({"tool": "sczarr vcc import (2 workers)", "cells": n, "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes,
                 "bytes_on_disk": du(store)})
    warm(source)
    m = run_checked([PY, "-c", f"import anndata as ad; a = ad.read_h5ad({source!r}); print(a.n_obs)"])
    rows.append({"tool": "anndata.read_h5ad (into memory)", "cells": n, "seconds": m.seconds,
                 "peak_rss_bytes": m.peak_rss_bytes, "bytes_on_disk": os.path.getsize(source)})
    converted = os.path.join(WORK, f"vcc-{cells}-anndata.zarr")
    shutil.rmtree(converted, ignore_errors=True)
    warm(source)
    m = run_checked([PY, "-c", f"import anndata as ad; ad.read_h5ad({source!r}).write_zarr({converted!r})"])
    rows.append({"tool": "anndata.read_h5ad + write_zarr", "cells": n, "seconds": m.seconds,
                 "peak_rss_bytes": m.peak_rss_bytes, "bytes_on_disk": du(converted)})
    m = run_checked([PY, "-c", f"import anndata as ad; a = ad.read_zarr({store!r}); print(a.shape)"])
    rows.append({"tool": "read back: anndata.read_zarr(imported store)", "cells": n, "seconds": m.seconds,
                 "peak_rss_bytes": m.peak_rss_bytes, "bytes_on_disk": du(store)})
    for row in rows:
        row["cells_per_s"] = n / row["seconds"]
        row["size"] = cells
    shutil.rmtree(converted, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    sizes = [5_000] if args.quick else [20_000, 60_000]
    genes_from = axis_store(os.path.join(WORK, "vcc-axis"))
    rows = [r for size in sizes for r in bench(size, genes_from)]
    table = md_table(["cells", "tool", "seconds", "cells/s", "peak RSS (MB)", "bytes on disk (MB)"],
                     [[f"{r['cells']:,}", r["tool"], f"{r['seconds']:.1f}", f"{r['cells_per_s']:,.0f}",
                       f"{r['peak_rss_bytes'] / 1e6:,.0f}", f"{r['bytes_on_disk'] / 1e6:,.1f}"] for r in rows])
    note = (f"\nSynthetic challenge-layout files ({GENES:,} genes, {PERTURBATIONS} perturbations, a fifth controls, "
            "gzip'd float32 CSR counts); the import maps them onto a 36,601-gene axis (int16, zstd-1 bitshuffle chunks) "
            "and also computes target effects and a 2,000-HVG matrix. 2 cores; each tool's time includes its "
            "interpreter start-up.\n")
    write_results("bench_vcc", {"rows": rows, "genes": GENES, "perturbations": PERTURBATIONS}, table + "\n" + note)


if __name__ == "__main__":
    main()
