"""HVG benchmark: sczarr (out of core, Dask) versus scanpy in memory and the seed's dispersion path.

Same cells for every tool, at several sizes; wall time and peak RSS of the whole process tree
(each tool's whole command, imports included; sczarr also draws hvg_analysis.png).

The seed's dispersion path reads the seed's own batch files for the same cells, written first
(not timed) by its re-implemented download step where ``bench_ingest.py`` has not left them.

Beside each sczarr run: the floor of any pass over the store, Blosc-decoding every chunk of X on
the same threads and nothing else (``baselines/decode_only.py``, page cache warm; also its zstd
half alone, which is all the pass runs of it, see ``scdata/bitplanes.py``), and sczarr's
pass time read from the job's own ``Time:`` line: from the job's start (imports done) to
hvg_info.json written, so cluster start, every pass over X (Seurat v3's second one included),
the selection and the store's columns; the figure (drawn by a child process while the columns
are written) is reported apart as the wait for it that follows. scanpy's compute-only time is
the median of as many computes on the loaded data as sczarr has runs; its end-to-end time is its
process's, less the computes past one (the median's).

    python benchmarks/bench_hvg.py                       # 100k, 300k, 1M cells (~1 h on 2 cores)
    python benchmarks/bench_hvg.py --sizes 20000 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import (  # noqa: E402
    LARGE_BUCKET_CELLS, WORK, ensure_bucket, md_table,
    million_bucket, run_checked, run_measured, write_results,
)

PY = sys.executable
SCANPY_FLAVORS = ("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")
HERE = os.path.dirname(os.path.abspath(__file__))


def store_of(source: str, size: int) -> str:
    store = os.path.join(WORK, f"hvg-{size}.zarr")
    import scdata

    manifest = scdata.read_manifest(store) if os.path.exists(store) else None
    if manifest is None or manifest.runs[-1].get("cell_count") != size:
        shutil.rmtree(store, ignore_errors=True)
        run_checked([PY, "-m", "scdata", "ingest", "--source", source, "--store", store, "--cell-count", str(size),
                     "--workers", "2", "--no-progress"])
    return store


def job_phases(output: str) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per phase from ``scdata hvg``'s last line,
    ``Time: phase 1.23 s (cpu 2.01 s), …, total 4.56 s (cpu 7.89 s)``."""
    line = next(ln for ln in reversed(output.splitlines()) if ln.startswith("Time: "))
    found = re.findall(r"([^,]+?) ([0-9.]+) s \(cpu ([0-9.]+) s\)", line[len("Time: "):])
    return {name.strip(): {"wall": float(wall), "cpu": float(cpu)} for name, wall, cpu in found}


def decode_floor(store: str, threads: int) -> dict:
    m = run_checked([PY, os.path.join(HERE, "baselines", "decode_only.py"), "--store", store, "--threads", str(threads)])
    return json.loads(m.output.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    p.add_argument("--flavors", nargs="+", default=["seurat_v3", "seurat", "dispersion"],
                   help="sczarr flavors; scanpy runs the scanpy ones, the seed its own dispersion")
    p.add_argument("--seed-max-cells", type=int, default=None,
                   help="run the seed's path only up to this many cells (writing its dense batch files for 1M cells "
                        "takes ~13 min and its pass ~10 min)")
    p.add_argument("--repeats", type=int, default=3, help="sczarr runs per flavor and size (the median is reported)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    os.makedirs(WORK, exist_ok=True)
    small = ensure_bucket(os.path.join(WORK, "bucket"), 50)
    rows = []
    for size in a.sizes:
        source = small if size <= LARGE_BUCKET_CELLS else million_bucket()
        store = store_of(source, size)
        import scdata

        cells = scdata.read_manifest(store).n_committed
        decode = decode_floor(store, threads=2)
        for flavor in a.flavors:
            out = os.path.join(WORK, f"hvg-out-{size}-{flavor}")
            runs = []
            for _ in range(a.repeats):  # the run of median pass time is reported, all are kept
                m = run_checked([PY, "-m", "scdata", "hvg", "--store", store, "--flavor", flavor, "--n-hvgs", "2000",
                                 "--output-dir", out, "--force", "--workers", "2"])  # threads of one process
                phases = job_phases(m.output)
                figure = phases.get("figure", {"wall": 0.0, "cpu": 0.0})
                runs.append((phases["total"]["wall"] - figure["wall"], phases["total"]["cpu"] - figure["cpu"], m, phases))
            pass_s, pass_cpu, m, phases = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
            rows.append({"tool": "sczarr", "flavor": flavor, "cells": cells, "seconds": m.seconds,
                         "peak_rss_bytes": max(r[2].peak_rss_bytes for r in runs),
                         "pass_s": pass_s, "pass_cpu_s": pass_cpu, "decode_only_s": decode["seconds"],
                         "decode_only_cpu_s": decode["cpu_seconds"], "pass_over_decode": pass_s / decode["seconds"],
                         "zstd_only_s": decode["zstd_seconds"], "zstd_only_cpu_s": decode["zstd_cpu_seconds"],
                         "pass_over_decode_cpu": pass_cpu / decode["cpu_seconds"], "phases_s": phases,
                         "runs": [{"pass_s": r[0], "pass_cpu_s": r[1], "seconds": r[2].seconds} for r in runs],
                         "load_avg_1min_after": os.getloadavg()[0]})
            print(rows[-1], flush=True)
        for flavor in [f for f in a.flavors if f in SCANPY_FLAVORS]:  # one process each: its own peak RSS
            m = run_measured([PY, os.path.join(HERE, "baselines", "scanpy_hvg.py"), "--store", store, "--flavors", flavor,
                              "--repeats", str(a.repeats)])  # the median compute of as many as sczarr's runs
            if m.returncode:
                reason = "killed: out of memory" if m.returncode in (-9, 137) else m.output[-300:] or f"exit {m.returncode}"
                rows.append({"tool": "scanpy (in memory)", "flavor": flavor, "cells": cells, "error": reason,
                             "peak_rss_bytes": m.peak_rss_bytes})
            else:
                res = json.loads(m.output.strip().splitlines()[-1])
                runs = res["compute_runs_s"][flavor]
                # end to end is one user's command: the process, less the computes past the first
                # (the median stands for the one a user runs)
                rows.append({"tool": "scanpy (in memory)", "flavor": flavor, "cells": cells,
                             "seconds": m.seconds - sum(runs) + res["compute_s"][flavor], "process_seconds": m.seconds,
                             "compute_only_s": res["compute_s"][flavor],
                             "compute_only_runs_s": runs,
                             "load_s": res["load_s"], "peak_rss_bytes": m.peak_rss_bytes})
            print(rows[-1], flush=True)
        seed_dir = os.path.join(WORK, f"seed-{size}", "processed")
        if "dispersion" in a.flavors and (a.seed_max_cells is None or size <= a.seed_max_cells):
            if not os.path.exists(os.path.join(seed_dir, "..", "config.json")):  # the seed's batch files, same cells
                shutil.rmtree(os.path.dirname(seed_dir), ignore_errors=True)
                made = run_measured([PY, os.path.join(HERE, "baselines", "seed_download.py"), "--source", source,
                                     "--output-dir", os.path.dirname(seed_dir), "--cell-count", str(size)])
                if made.returncode:
                    rows.append({"tool": "seed", "flavor": "dispersion", "cells": cells,
                                 "error": f"its batch files could not be written: {made.output[-200:]}"})
                    continue
            m = run_measured([PY, os.path.join(HERE, "baselines", "seed_hvg.py"), "--data-dir", seed_dir])
            if m.returncode:
                rows.append({"tool": "seed", "flavor": "dispersion", "cells": cells, "error": m.output[-300:] or f"exit {m.returncode}"})
                continue
            res = json.loads(m.output.strip().splitlines()[-1])
            rows.append({"tool": "seed (dense batch files, Welford)", "flavor": "dispersion", "cells": res["cells"],
                         "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes})
            print(rows[-1], flush=True)

    gib = 2**30
    passes = [r for r in rows if r["tool"] == "sczarr"]
    floor = md_table(
        ["flavor", "cells", "decode only (s)", "zstd only (s)", "sczarr pass (s)", "pass / decode",
         "CPU: decode / pass (s)", "pass / decode, CPU", "figure (s)", "end to end (s)", "load avg"],
        [[r["flavor"], f"{r['cells']:,}", f"{r['decode_only_s']:.2f}", f"{r['zstd_only_s']:.2f}", f"{r['pass_s']:.2f}",
          f"{r['pass_over_decode']:.2f}x",
          f"{r['decode_only_cpu_s']:.2f} / {r['pass_cpu_s']:.2f}", f"{r['pass_over_decode_cpu']:.2f}x",
          f"{r['phases_s'].get('figure', {}).get('wall', 0):.2f}", f"{r['seconds']:.1f}", f"{r['load_avg_1min_after']:.1f}"]
         for r in passes],
    )
    table = "### HVG selection (same cells, same 2 cores)\n\n" + md_table(
        ["tool", "flavor", "cells", "wall (s)", "peak RSS (GiB)", "note"],
        [[r["tool"], r["flavor"], f"{r['cells']:,}", f"{r['seconds']:.1f}" if "seconds" in r else "-",
          f"{r['peak_rss_bytes'] / gib:.2f}" if "peak_rss_bytes" in r else "-",
          r.get("error", "")[:80] or (f"compute only {r['compute_only_s']:.1f} s (median of {len(r['compute_only_runs_s'])}), "
                                                           f"load {r['load_s']:.1f} s"
                                                          if "compute_only_s" in r else "")] for r in rows],
    )
    ratios = []
    for r in rows:
        if r["tool"].startswith("seed") and "seconds" in r:
            ours = next((o for o in rows if o["tool"] == "sczarr" and o["flavor"] == "dispersion" and o["cells"] == r["cells"]), None)
            if ours:
                ratios.append(["dispersion (vs the seed)", f"{r['cells']:,}", f"{r['seconds'] / ours['seconds']:.2f}x", "-",
                               f"{ours['peak_rss_bytes'] / r['peak_rss_bytes']:.2f}"])
        if r["tool"].startswith("scanpy") and "seconds" in r:
            ours = next((o for o in rows if o["tool"] == "sczarr" and o["flavor"] == r["flavor"] and o["cells"] == r["cells"]), None)
            if ours:
                ratios.append([r["flavor"], f"{r['cells']:,}", f"{r['seconds'] / ours['seconds']:.2f}x",
                               f"{r['compute_only_s'] / ours['seconds']:.2f}x", f"{ours['peak_rss_bytes'] / r['peak_rss_bytes']:.2f}"])
    table += "\n\n" + md_table(["flavor", "cells", "peer time / sczarr time", "scanpy compute-only / sczarr",
                                "sczarr RSS / peer RSS"], ratios)
    ours = [r for r in rows if r["tool"] == "sczarr"]
    for flavor in a.flavors:
        sized = sorted((r for r in ours if r["flavor"] == flavor), key=lambda r: r["cells"])
        if len(sized) > 1:
            lo, hi = sized[0], sized[-1]
            table += (f"\n\nsczarr {flavor}: peak RSS {lo['peak_rss_bytes'] / gib:.2f} GiB at {lo['cells']:,} cells, "
                      f"{hi['peak_rss_bytes'] / gib:.2f} GiB at {hi['cells']:,} ({hi['peak_rss_bytes'] / lo['peak_rss_bytes']:.2f}x "
                      f"for {hi['cells'] / lo['cells']:.1f}x the cells).")
    table += ("\n\n### The statistics pass against the decode floor (2 threads, page cache warm)\n\n" + floor
              + f"\n\nsczarr: the run of median pass time of {a.repeats} (each flavor, each size). "
              "Decode only: every stored chunk of X Blosc-decoded on 2 threads, nothing else (median of 3 after a "
              "warm-up). Zstd only: the zstd half of that decode, without Blosc's bit un-shuffle, which is how the "
              "pass reads chunks (scdata.stats.bitplanes). sczarr pass: the job from its start (imports done) to hvg_info.json "
              "written: cluster, every "
              "pass over X, selection, store columns. CPU: seconds of CPU of all the process's threads over the same "
              "span (what the work cost, whatever else ran on the machine). End to end: the whole command, "
              "interpreter start-up and figure included. Load avg: the machine's 1-minute load after the run.")
    write_results("bench_hvg" if not a.quick else "bench_hvg_quick", {"results": rows}, table)


if __name__ == "__main__":
    main()
