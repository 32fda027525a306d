"""Loader benchmark: shuffled batches of 64 cells x 2,000 HVGs, dense float32, normalize_total +
log1p, on the same cells for every loader, side by side, one harness (``baselines/harness.py``):
the in-memory ceiling (int16 array, gather + transform, on one thread and on the read threads
sczarr uses), the decode ceiling, sczarr (X_hvg and full-width X; 0/1/2 workers; shuffle
buffers of 1 to 8 chunks (the small ones at annbatch's memory), 32 and 64 chunks and of the
whole selection, which mixes as a random permutation does; per-batch metadata: none, its
defaults (category codes and UMI counts) and strings (the seed's form)), annbatch (its defaults,
its README's settings and a chunk_size x preload_nchunks sweep past its best, with zarrs; its
best with obs per batch; a diagnostic without zarrs), scDataset (a block_size x fetch_factor
sweep, 0 and 2 workers) and AnnLoader. Rate, peak RSS and mixing (experiments per batch of 64)
for each; the machine's load.

    python benchmarks/bench_loader.py            (~30 min on 2 cores; writes bench_ingest's bucket if missing)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.baselines.harness import random_mixing  # noqa: E402
from benchmarks.common import WORK, ensure_bucket, md_table, run_checked, run_measured, write_results  # noqa: E402

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
PY312 = os.path.join(WORK, "venv312", "bin", "python")


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
    from scdata.hvg.results import open_hvg_matrix
    from scdata.store.layout import open_root, read_strings

    _, indices = open_hvg_matrix(store)
    genes = [str(g) for g in read_strings(open_root(store)["var/_index"])[indices]]
    genes_file = os.path.join(WORK, "loader-genes.json")
    json.dump(genes, open(genes_file, "w"))
    h5ad = os.path.join(WORK, f"loader-{size}-hvg.h5ad")
    if not os.path.exists(h5ad):
        adata = scdata.to_anndata(store, genes=genes)
        adata.obs = adata.obs[["srx_accession"]]
        adata.write_h5ad(h5ad)
    codes_file = os.path.join(WORK, f"loader-{size}-codes.npy")
    manifest = scdata.read_manifest(store)
    codes = [np.full(e["n_cells"], i, np.int32) for i, e in enumerate(manifest.experiments)]
    np.save(codes_file, np.concatenate(codes))
    return store, genes_file, h5ad, codes_file


def measured_row(label: str, workers: int, cmd: list[str], **info) -> dict:
    """Run one loader process; its JSON result and peak RSS (or the error it ended with)."""
    m = run_measured(cmd)
    row = {"loader": label, "workers": workers, **info, "peak_rss_bytes": m.peak_rss_bytes,
           "load_avg_1min_after": os.getloadavg()[0]}
    if m.returncode:
        row["error"] = m.output.strip().splitlines()[-1][:200] if m.output.strip() else f"exit {m.returncode}"
    else:
        row.update(json.loads(m.output.strip().splitlines()[-1]))
    print({k: v for k, v in row.items() if k != "window_rates"}, flush=True)
    return row


ANNBATCH_SWEEP = ([(chunk, preload) for chunk in (8, 32, 128, 512) for preload in (32, 256)]
                  + [(chunk, preload) for chunk in (1024, 2048, 4096) for preload in (8, 32)] + [(8192, 4), (8192, 16)])
"""Past chunk 512 fewer chunks are preloaded: 256 x 1,024 cells would exceed the 105k-cell selection;
from chunk 4,096 x 32 (and 8,192 x 16) one preload holds the whole selection, so larger chunks
cannot load more at once."""
SMALL_BUFFERS = (1, 2, 4)
"""Shuffle buffers (chunk rows) for the row at annbatch's memory."""
SCDATASET_SWEEP = [(8, 16), (64, 64), (1, 256), (256, 16)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="fewer configurations (a smoke run)")
    a = p.parse_args()
    store, genes_file, h5ad, codes = prepare(a.size)
    load_before = os.getloadavg()
    loaders = os.path.join(HERE, "baselines", "loaders.py")

    def ours(name, workers=0, *extra):
        return [PY, loaders, name, "--store", store, "--h5ad", h5ad, "--codes", codes, "--genes-file", genes_file,
                "--workers", str(workers), *extra]

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [measured_row("in-memory int16 array (ceiling)", 0, ours("memory", 0, "--read-threads", "1"),
                         kind="ceiling", config="one thread, numpy gather + transform per batch"),
            measured_row(f"in-memory int16 array (ceiling, {threads} threads)", 0,
                         ours("memory", 0, "--read-threads", str(threads)), kind="ceiling-threads",
                         config=f"{threads} threads (sczarr's read threads in-process), numpy gather + transform"),
            measured_row("Blosc decode of X_hvg chunks (decode ceiling)", 0, ours("decode"), kind="ceiling",
                         config="one thread, decode only")]
    for workers in (0, 1, 2):
        rows.append(measured_row("sczarr X_hvg (buffer 8 chunks)", workers, ours("sczarr", workers), kind="sczarr",
                                 config="buffer_blocks=8"))
    for metadata, note in (("defaults", "its defaults: accession codes + UMI counts per batch"),
                           ("strings", "cell IDs + accessions as strings per batch (the seed's form)")):
        for workers in (0, 2):
            rows.append(measured_row(f"sczarr X_hvg (buffer 8 chunks), {note}", workers,
                                     ours("sczarr", workers, "--metadata", metadata), kind=f"sczarr-{metadata}",
                                     config=f"buffer_blocks=8, metadata {metadata}"))
    for blocks in SMALL_BUFFERS:
        rows.append(measured_row(f"sczarr X_hvg (buffer {blocks} chunks)", 0,
                                 ours("sczarr", 0, "--buffer-blocks", str(blocks)), kind="sczarr",
                                 config=f"buffer_blocks={blocks}"))
    rows.append(measured_row("sczarr X_hvg (buffer 8 chunks, 4,096-cell hand-offs)", 2,
                             ours("sczarr", 2, "--handoff-cells", "4096"), kind="sczarr",
                             config="buffer_blocks=8, handoff_cells=4096"))
    for threads in (0, 1):
        rows.append(measured_row(f"sczarr X_hvg (buffer 8 chunks, {threads} read threads)", 0,
                                 ours("sczarr", 0, "--read-threads", str(threads)), kind="sczarr",
                                 config=f"buffer_blocks=8, read_threads={threads}"))
    import scdata
    from scdata.store.layout import open_root

    # buffer_blocks covering the whole selection: a random permutation per epoch
    whole = -(-scdata.read_manifest(store).n_committed // open_root(store)["X"].chunks[0])
    for blocks in (32, whole) if a.quick else (32, 64, whole):
        for workers in (0, 2) if blocks == whole else (0,):
            rows.append(measured_row(f"sczarr X_hvg (buffer {blocks} chunks)", workers,
                                     ours("sczarr", workers, "--buffer-blocks", str(blocks)), kind="sczarr",
                                     config=f"buffer_blocks={blocks}" + (" (the whole selection)" if blocks == whole
                                                                         else "")))
    for workers in (0, 2):
        rows.append(measured_row("sczarr X full width, 2,000-gene list", workers,
                                 ours("sczarr", workers, "--variant", "genes"), kind="sczarr-x",
                                 config="buffer_blocks=8"))
    sweep = SCDATASET_SWEEP[:2] if a.quick else SCDATASET_SWEEP
    for block, fetch in sweep:
        rows.append(measured_row(f"scDataset (backed h5ad), block {block} x fetch {fetch}", 0,
                                 ours("scdataset", 0, "--block-size", str(block), "--fetch-factor", str(fetch)),
                                 kind="scdataset", config=f"block_size={block}, fetch_factor={fetch}"))
    best = max((r for r in rows if r["kind"] == "scdataset" and "cells_per_s" in r), key=lambda r: r["cells_per_s"],
               default=None)
    if best is not None:
        block, fetch = (int(v.split("=")[1]) for v in best["config"].split(", "))
        rows.append(measured_row(f"scDataset (backed h5ad), block {block} x fetch {fetch}", 2,
                                 ours("scdataset", 2, "--block-size", str(block), "--fetch-factor", str(fetch)),
                                 kind="scdataset", config=best["config"]))
    for workers in (0, 2):
        rows.append(measured_row("AnnLoader (backed h5ad)", workers, ours("anndata-loader", workers), kind="annloader"))
    if os.path.exists(PY312):
        collection = os.path.join(WORK, f"annbatch-{a.size}.zarr")

        def annbatch(chunk, preload, *extra):
            return [PY312, os.path.join(HERE, "baselines", "annbatch_loader.py"), "--h5ad", h5ad, "--collection",
                    collection, "--chunk-size", str(chunk), "--preload-nchunks", str(preload), *extra]

        sweep = [(512, 32), (32, 256)] if a.quick else ANNBATCH_SWEEP
        for chunk, preload in sweep:
            note = {(512, 32): "its defaults", (32, 256): "its README's settings"}.get((chunk, preload), "sweep")
            rows.append(measured_row(f"annbatch 0.3.1 (zarrs), chunk {chunk} x preload {preload}", 0,
                                     annbatch(chunk, preload), kind="annbatch", config=note,
                                     chunk_size=chunk, preload_nchunks=preload))
        top = max((r for r in rows if r["kind"] == "annbatch" and "cells_per_s" in r), key=lambda r: r["cells_per_s"],
                  default=None)
        if top is not None:
            chunk, preload = top["chunk_size"], top["preload_nchunks"]
            rows.append(measured_row(f"annbatch 0.3.1 (zarrs), chunk {chunk} x preload {preload}, obs per batch", 0,
                                     annbatch(chunk, preload, "--obs"), kind="annbatch-obs",
                                     config="its best setting, with the h5ad's obs (srx_accession, categorical) "
                                            "per batch"))
        rows.append(measured_row("annbatch 0.3.1, chunk 32 x preload 256, without zarrs", 0,
                                 annbatch(32, 256, "--no-zarrs"), kind="annbatch-diagnostic", config="without zarrs"))
    random_mix = random_mixing(np.load(codes))
    payload = summarize(rows, random_mix, load_before, store)
    write_results("bench_loader", payload, table(rows, random_mix, store, payload["summary"]))


def summarize(rows: list[dict], random_mix: float, load_before, store: str) -> dict:
    ok = [r for r in rows if "cells_per_s" in r]

    def best(kind, **where):
        pool = [r for r in ok if r["kind"] == kind and all(r.get(k) == v for k, v in where.items())]
        return max(pool, key=lambda r: r["cells_per_s"], default=None)

    memory = best("ceiling-threads") or next((r for r in ok if r["loader"].startswith("in-memory")), None)
    ours, ann, scd = best("sczarr"), best("annbatch"), best("scdataset")
    default = [r for r in ok if r["kind"] == "sczarr" and r["config"] == "buffer_blocks=8"]
    ours0 = next((r for r in default if r["workers"] == 0), None)
    ours2 = next((r for r in default if r["workers"] == 2), None)
    summary = {"experiments_per_batch_random_permutation": random_mix, "load_avg_before": list(load_before),
               "load_avg_after": list(os.getloadavg()), "cpu_count": os.cpu_count()}
    if ours and ann:
        summary["sczarr_best_vs_annbatch_best"] = ours["cells_per_s"] / ann["cells_per_s"]
        summary["sczarr_best"] = ours["loader"] + f" ({ours['workers']} workers)"
        summary["annbatch_best"] = ann["loader"]
        # equal mixing: sczarr's fastest configuration that mixes at least as well as annbatch's best, to
        # the table's precision (0.1 experiments per batch: both sample a random permutation's 13.5 then)
        mixing = min(round(ann.get("experiments_per_batch", 0), 1), round(random_mix, 1))  # nothing mixes better than random
        at_equal = [r for r in ok if r["kind"] == "sczarr" and round(r.get("experiments_per_batch", 0), 1) >= mixing]
        if at_equal:
            fastest = max(at_equal, key=lambda r: r["cells_per_s"])
            summary["sczarr_vs_annbatch_at_equal_mixing"] = fastest["cells_per_s"] / ann["cells_per_s"]
            summary["sczarr_at_equal_mixing"] = f"{fastest['loader']} ({fastest['workers']} workers)"
        else:
            summary["sczarr_vs_annbatch_at_equal_mixing"] = None
    ann_obs, defaults = best("annbatch-obs"), best("sczarr-defaults")
    if defaults and ann_obs:  # equal outputs: both carry per-cell metadata (sczarr's: codes and UMI counts)
        summary["sczarr_defaults_vs_annbatch_best_with_obs"] = defaults["cells_per_s"] / ann_obs["cells_per_s"]
        summary["sczarr_defaults"] = f"{defaults['loader']} ({defaults['workers']} workers)"
        summary["annbatch_with_obs"] = ann_obs["loader"]
    strings = best("sczarr-strings")
    if strings and ann_obs:
        summary["sczarr_strings_vs_annbatch_best_with_obs"] = strings["cells_per_s"] / ann_obs["cells_per_s"]
    if ours and ann:  # equal memory: sczarr's fastest run within annbatch's best's memory
        for key, size in (("equal_memory", lambda r: r["peak_rss_bytes"]), ("equal_loader_memory", loader_memory)):
            within = [r for r in ok if r["kind"] == "sczarr" and size(r) <= size(ann)]
            smallest = min((r for r in ok if r["kind"] == "sczarr"), key=size)
            if within:
                at = max(within, key=lambda r: r["cells_per_s"])
                summary[f"sczarr_vs_annbatch_at_{key}"] = at["cells_per_s"] / ann["cells_per_s"]
                summary[f"sczarr_at_{key}"] = (f"{at['loader']} ({at['workers']} workers): {size(at) / 2**30:.2f} GiB "
                                               f"against annbatch's {size(ann) / 2**30:.2f} GiB")
            else:
                summary[f"sczarr_vs_annbatch_at_{key}"] = None
                summary[f"sczarr_smallest_{key}"] = (f"{smallest['loader']}: {size(smallest) / 2**30:.2f} GiB "
                                                     f"against annbatch's {size(ann) / 2**30:.2f} GiB")
    if ours and scd:
        summary["sczarr_best_vs_scdataset_best"] = ours["cells_per_s"] / scd["cells_per_s"]
    if ours and memory:
        summary["sczarr_best_share_of_in_memory"] = ours["cells_per_s"] / memory["cells_per_s"]
    if ours0 and ours2:
        summary["sczarr_2_workers_vs_in_process"] = ours2["cells_per_s"] / ours0["cells_per_s"]
    return {"results": rows, "summary": summary}


def loader_memory(row: dict) -> int:
    """A run's peak RSS above what its process held before the first batch (its imports: torch
    for sczarr, anndata and zarr for annbatch; the loader object): the loader's own memory."""
    return row["peak_rss_bytes"] - row.get("rss_at_start_bytes", 0)


def table(rows: list[dict], random_mix: float, store: str, summary: dict) -> str:
    import scdata

    n = scdata.read_manifest(store).n_committed
    gib = 2**30
    out = (f"### Loader: shuffled batches of 64 x 2,000 HVGs, dense float32, normalize_total + log1p ({n:,} cells)\n\n")
    headers = ["loader", "workers", "cells/s (median of 3 windows)", "experiments per batch", "peak RSS (GiB)",
               "above its imports (GiB)", "note"]
    out += md_table(headers,
                    [[r["loader"], r["workers"], f"{r['cells_per_s']:,.0f}" if "cells_per_s" in r else "failed",
                      f"{r['experiments_per_batch']:.1f}" if "experiments_per_batch" in r else "",
                      f"{r['peak_rss_bytes'] / gib:.2f}",
                      f"{loader_memory(r) / gib:.2f}" if r.get("rss_at_start_bytes") else "",
                      r.get("error", "") or r.get("config", "")]
                     for r in rows])
    out += f"\n\nA random permutation mixes {random_mix:.1f} experiments per batch of 64."
    load = summary["load_avg_before"]
    out += (f" Load average (1/5/15 min) before the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
            f"{summary['cpu_count']} cores; after: {summary['load_avg_after'][0]:.1f}.")
    if "annbatch_best" in summary:
        out += f"\n\nannbatch's best setting: {summary['annbatch_best']}."
    for key, text, none, named in (
            ("sczarr_best_vs_annbatch_best", "sczarr's best / annbatch's best, neither with per-cell metadata", "",
             "sczarr_best"),
            ("sczarr_defaults_vs_annbatch_best_with_obs",
             "sczarr at its defaults (accession codes + UMI counts per batch) / annbatch's best with its obs per batch",
             "", "sczarr_defaults"),
            ("sczarr_strings_vs_annbatch_best_with_obs",
             "sczarr with cell IDs and accessions as strings / annbatch's best with its obs per batch", "", None),
            ("sczarr_vs_annbatch_at_equal_mixing", "sczarr / annbatch's best, at equal or better mixing",
             "no sczarr configuration mixes as well", "sczarr_at_equal_mixing"),
            ("sczarr_vs_annbatch_at_equal_memory", "sczarr / annbatch's best, at no more peak RSS than annbatch's",
             "no sczarr configuration fits", "sczarr_at_equal_memory"),
            ("sczarr_vs_annbatch_at_equal_loader_memory",
             "sczarr / annbatch's best, at no more memory above its imports than annbatch's",
             "no sczarr configuration fits", "sczarr_at_equal_loader_memory"),
            ("sczarr_best_vs_scdataset_best", "sczarr's best / scDataset's best", "", None),
            ("sczarr_best_share_of_in_memory", "sczarr's best / the in-memory ceiling on the same threads", "", None),
            ("sczarr_2_workers_vs_in_process", "sczarr with 2 workers / in-process", "", None)):
        if key not in summary:
            continue
        value = summary[key]
        out += f"\n- {text}: " + (none if value is None else f"{value:.2f}x")
        if value is not None and named and named in summary:
            out += f" ({summary[named]})"
        if value is None and key.startswith("sczarr_vs_annbatch_at_equal_") and "memory" in key:
            out += f" (smallest: {summary['sczarr_smallest_' + key.removeprefix('sczarr_vs_annbatch_at_')]})"
    return out


if __name__ == "__main__":
    main()
