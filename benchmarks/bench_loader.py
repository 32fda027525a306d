"""Loader benchmark: shuffled batches of 64 cells x 2,000 HVGs, normalized and tokenized, on the
same cells for every loader, side by side: sczarr (X_hvg and full-width X), the seed's per-cell
h5py dataset, AnnLoader, scDataset, annbatch (on a collection it builds with its own tools), and
the ceiling (raw Blosc decompression of the same chunks). cells/s and peak RSS with 0/1/2 workers.

    python benchmarks/bench_loader.py            (~10 min on 2 cores; writes bench_ingest's bucket if missing)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import WORK, ensure_bucket, md_table, run_checked, run_measured, write_results  # noqa: E402

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
PY312 = os.path.join(WORK, "venv312", "bin", "python")
REPEAT = 3


def prepare(size: int) -> tuple[str, str, str]:
    import scdata

    store = os.path.join(WORK, f"loader-{size}.zarr")
    source = ensure_bucket(os.path.join(WORK, "bucket"), 50)  # bench_ingest's bucket
    if scdata.read_manifest(store) is None if os.path.exists(store) else True:
        shutil.rmtree(store, ignore_errors=True)
        for cmd in ([PY, "-m", "scdata", "ingest", "--source", source, "--store", store, "--cell-count", str(size),
                     "--workers", "2", "--no-progress"],
                    [PY, "-m", "scdata", "hvg", "--store", store, "--n-hvgs", "2000", "--materialize", "--workers", "2",
                     "--output-dir", os.path.join(WORK, "loader-hvg")]):
            run_checked(cmd)
    from scdata.hvg_io import open_hvg_matrix
    from scdata.store import open_root, read_strings

    _, indices = open_hvg_matrix(store)
    genes = [str(g) for g in read_strings(open_root(store)["var/_index"])[indices]]
    genes_file = os.path.join(WORK, "loader-genes.json")
    json.dump(genes, open(genes_file, "w"))
    h5ad = os.path.join(WORK, f"loader-{size}-hvg.h5ad")
    if not os.path.exists(h5ad):
        adata = scdata.to_anndata(store, genes=genes)
        adata.obs = adata.obs[["srx_accession"]]
        adata.write_h5ad(h5ad)
    return store, genes_file, h5ad


def measured_row(label: str, workers: int, cmd: list[str]) -> dict:
    """Run one loader process; its JSON line, cells/s and peak RSS (or the error it ended with)."""
    m = run_measured(cmd)
    row = {"loader": label, "workers": workers, "peak_rss_bytes": m.peak_rss_bytes}
    if m.returncode:
        row["error"] = m.output.strip().splitlines()[-1][:200] if m.output.strip() else f"exit {m.returncode}"
    else:
        res = json.loads(m.output.strip().splitlines()[-1])
        row.update(res)
        row["cells_per_s"] = res["cells"] / res["seconds"]
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=100_000)
    a = p.parse_args()
    store, genes_file, h5ad = prepare(a.size)
    seed_dir = os.path.join(WORK, f"seed-{a.size}", "processed")
    runs = [("ceiling (Blosc decode only)", "ceiling", 0, 10**9, [])]
    runs += [("sczarr X_hvg", "sczarr", w, 10**9, []) for w in (0, 1, 2)]
    runs += [("sczarr X full width, gene selection", "sczarr", w, 30_000, ["--variant", "genes"]) for w in (0, 2)]
    runs += [("scDataset (backed h5ad, block 64, fetch 64)", "scdataset", w, 50_000, []) for w in (0, 1, 2)]
    runs += [("AnnLoader (backed h5ad)", "anndata-loader", w, 20_000, []) for w in (0, 2)]
    if os.path.isdir(seed_dir):
        runs += [("seed HVGDataset (h5py, one cell at a time)", "seed-h5py", 0, 3_200, [])]
    def command(name, workers, max_cells, extra):
        cmd = [PY, os.path.join(HERE, "baselines", "loaders.py"), name, "--store", store, "--h5ad", h5ad,
               "--genes-file", genes_file, "--workers", str(workers), "--max-cells", str(max_cells), *extra]
        return cmd + (["--seed-dir", seed_dir] if name == "seed-h5py" else [])

    # The headline ratio (sczarr X_hvg in-process vs the ceiling) is noisy on a shared 2-core
    # machine: both are run alternately REPEAT times and each row keeps its median run.
    repeated = {0: [], 1: []}
    for _ in range(REPEAT):
        for k in repeated:
            label, name, workers, max_cells, extra = runs[k]
            repeated[k].append(measured_row(label, workers, command(name, workers, max_cells, extra)))
    rows = []
    for k, (label, name, workers, max_cells, extra) in enumerate(runs):
        if k in repeated:
            done = sorted(repeated[k], key=lambda r: r.get("cells_per_s", 0))
            rows.append({**done[len(done) // 2], "note": f"median of {REPEAT} runs"})
        else:
            rows.append(measured_row(label, workers, command(name, workers, max_cells, extra)))
    if os.path.exists(PY312):
        collection = os.path.join(WORK, f"annbatch-{a.size}.zarr")
        for chunk, preload, label in ((32, 256, "annbatch (its collection; chunk 32 x preload 256)"),):
            rows.append(measured_row(label, 0, [PY312, os.path.join(HERE, "baselines", "annbatch_loader.py"), "--h5ad",
                                                h5ad, "--collection", collection, "--chunk-size", str(chunk),
                                                "--preload-nchunks", str(preload)]))

    import scdata

    manifest = scdata.read_manifest(store)
    acc = np.concatenate([[i] * e["n_cells"] for i, e in enumerate(manifest.experiments)])
    rng = np.random.default_rng(0)
    random_mix = float(np.mean([len(np.unique(acc[rng.choice(len(acc), 64, replace=False)])) for _ in range(2000)]))

    ok = [r for r in rows if "cells_per_s" in r]
    peers = [r for r in ok if not r["loader"].startswith(("sczarr", "ceiling"))]
    ours = max((r for r in ok if r["loader"] == "sczarr X_hvg"), key=lambda r: r["cells_per_s"], default=None)
    ceiling = next((r for r in ok if r["loader"].startswith("ceiling")), None)
    best_peer = max(peers, key=lambda r: r["cells_per_s"], default=None)
    summary = {}
    if ours and best_peer:
        summary["vs_fastest_peer"] = ours["cells_per_s"] / best_peer["cells_per_s"]
        summary["fastest_peer"] = f"{best_peer['loader']} ({best_peer['workers']} workers)"
    if ours and ceiling:
        summary["share_of_ceiling"] = ours["cells_per_s"] / ceiling["cells_per_s"]
    summary["experiments_per_batch_random_permutation"] = random_mix
    gib = 2**30
    table = f"### Loader: shuffled batches of 64 x 2,000 HVGs, normalized + tokenized ({manifest.n_committed:,} cells)\n\n"
    table += md_table(["loader", "workers", "cells/s", "peak RSS (GiB)", "experiments per batch", "note"],
                      [[r["loader"], r["workers"], f"{r['cells_per_s']:,.0f}" if "cells_per_s" in r else "failed",
                        f"{r['peak_rss_bytes'] / gib:.2f}", f"{r['experiments_per_batch']:.1f}" if "experiments_per_batch" in r else "",
                        r.get("error", "") or r.get("note", "") or (f"collection built in {r['build_s']:.0f} s" if r.get("build_s") else "")]
                       for r in rows])
    table += f"\n\nA random permutation mixes {random_mix:.1f} experiments per batch of 64."
    if "vs_fastest_peer" in summary:
        table += (f"\nsczarr X_hvg (best of 0-2 workers) is {summary['vs_fastest_peer']:.2f}x the fastest peer "
                  f"({summary['fastest_peer']}) and {summary.get('share_of_ceiling', float('nan')):.0%} of the decompression ceiling.")
    write_results("bench_loader", {"results": rows, "summary": summary}, table)


if __name__ == "__main__":
    main()
