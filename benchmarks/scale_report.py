"""The scaling benchmark's report: ``benchmarks/results/bench_scale.{json,md}`` from the real runs,
the simulation and the projection (``bench_scale.py`` measures them)."""

from __future__ import annotations

import os

from benchmarks.common import md_table, write_results
from benchmarks.scale_sim import ASSUMPTIONS


def write_report(a, runs, before_runs, identical, identical_before, d, sim_bench, rd, projection, driver_memory, first,
                 commit, bucket_commit, sizes):
    gib = 2**30
    real = [{k: v for k, v in r.items() if k not in ("records", "store")} for r in runs + before_runs]
    table = "### Real workers (dask scheduler + dask worker, GCS emulator behind a latency/bandwidth proxy)\n\n"
    table += (f"{a.experiments} synthetic experiments of {a.min_cells}-{a.max_cells} cells x 36,601 genes; "
              f"{a.latency * 1000:.0f} ms per request, {a.bandwidth / 1e6:.0f} MB/s per worker; store on local disk; "
              f"this machine has {os.cpu_count()} cores.\n\n")
    table += md_table(
        ["shape", "workers", "wall (s)", "cells/s", "busy", "busy after planning", "commits",
         "load: wall / CPU / runnable / I/O (s)", "driver CPU ms/exp", "scheduler CPU ms/exp", "driver / scheduler RSS (GiB)"],
        [[r["label"].split("-")[0], r["workers"], f"{r['wall_s']:.1f}", f"{r['cells_per_s']:,.0f}",
          f"{r['busy_fraction']:.0%}", f"{r['busy_fraction_after_planning']:.0%}", r["commits"],
          "{mean_wall_s:.2f} / {mean_cpu_s:.2f} / {mean_runnable_wait_s:.2f} / {mean_io_wait_s:.2f}".format(
              **r["tasks"]["load_task"]),
          f"{1000 * r['driver_cpu_s_per_experiment']:.0f}", f"{1000 * r['scheduler_cpu_s_per_experiment']:.0f}",
          f"{r['driver_peak_rss_bytes'] / gib:.2f} / {r['scheduler_peak_rss_bytes'] / gib:.2f}"]
         for r in runs + before_runs])
    table += (f"\n\nWeak scaling: {a.per_worker} experiments per worker (the release's {a.experiments} files listed "
              f"again under new accessions). `same` rows ingest the {a.per_worker} experiments of the 1-worker run.")
    table += "\n\nStores byte-identical to 1 worker's (same selection): " + ", ".join(
        f"{n} workers: {'yes' if ok else 'NO'}" for n, ok in identical.items())
    table += "; today's shape against the window at the same worker count: " + ", ".join(
        f"{k}: {'yes' if ok else 'NO'}" for k, ok in identical_before.items())
    table += ("\n\n### Simulated: each run's experiments, the 1-worker run's task durations, the ingest's window\n\n"
              "The tasks' durations without CPU contention, replayed through `LoadWindow` and `plan_round` (no "
              "planning phase, no Dask overheads): what these runs would do on a core per worker.\n\n")
    table += md_table(["workers", "experiments", "wall (s)", "busy", "commits"],
                      [[s["workers"], s["experiments"], f"{s['wall_s']:.1f}", f"{s['busy_fraction']:.0%}", s["commits"]]
                       for s in sim_bench])
    table += "\n\n### Projection: the 2026-01-12 human release\n\n"
    if a.reuse:
        table += ("The real runs above are those of the last full run, reused (`--reuse`); the driver's commit was "
                  "measured again for this projection.\n\n")
    elif a.only_first_commit:
        table += ("The ingest runs above are those of the last full run; the times to the first commit below were "
                  "measured again (`--only-first-commit`).\n\n")
    table += (f"The driver's commit, measured: {commit['fit'][0]:.3f} s + {commit['fit'][1] * 1e6:.2f} us per cell on "
              f"local disk; {bucket_commit['fit'][0]:.3f} s + {bucket_commit['fit'][1] * 1e6:.2f} us per cell into a "
              f"gs:// store at {bucket_commit['latency_s'] * 1000:.0f} ms per request (the release's commits; "
              "`rounds (before)` is replayed with it too).\n\n")
    table += (f"The release's experiments as simulated: {sizes['experiments']:,}, {sizes['cells'] / 1e6:.0f}M cells; "
              f"median {sizes['median']:,} cells, 99th percentile {sizes['p99']:,}, largest {sizes['largest']:,}.\n\n")
    table += md_table(["workers", "policy", "wall (h)", "worker-hours", "busy", "commits"],
                      [[p["workers"], p["policy"], f"{p['wall_s'] / 3600:.1f}", f"{p['worker_hours']:,.0f}",
                        f"{p['busy_fraction']:.0%}", f"{p['commits']:,}"] for p in projection])
    table += ("\n\nDriver memory for the release: " + ", ".join(
        f"~{b / gib:.1f} GiB with {n} workers" for n, b in driver_memory["release_bytes"].items())
        + f" ({driver_memory['base_bytes'] / gib:.2f} GiB measured, + "
        f"{driver_memory['bytes_per_experiment'] / 1024:.1f} KiB per experiment held in its manifest and seeded order, "
        f"+ {driver_memory['summary_bytes_per_cell']:.0f} bytes per cell of the experiments whose per-cell columns "
        "a commit is writing, at the simulation's peak: " + ", ".join(
            f"{p['peak_cells_on_driver'] / 1e6:.1f}M cells with {p['workers']} workers" for p in projection
            if p["policy"] == "load window") + ").\n\n")
    table += "Assumptions:\n\n" + "\n".join(f"- {k}: {v}" for k, v in ASSUMPTIONS.items())
    table += "\n\n### Time to the first committed row (the same bucket and cluster)\n\n"
    table += f"Median of {a.first_commit_repeats} tries each (the try with the median time to the first commit).\n\n"
    table += md_table(["code", "experiments selected", "workers", "store created (s)", "first commit (s)"],
                      [[f["code"], f["experiments"], f["workers"],
                        "-" if f.get("planned_s") is None else f"{f['planned_s']:.1f}",
                        "-" if f["seconds"] is None else f"{f['seconds']:.1f}"] for f in first])
    name = "bench_scale" if not a.quick else "bench_scale_quick"
    write_results(name, {
        "config": vars(a), "real": real, "identical_to_one_worker": {str(k): v for k, v in identical.items()},
        "before_identical_to_one_worker": identical_before, "durations": d.__dict__, "simulated_bench": sim_bench,
        "release_durations": rd.__dict__, "commit_measured": commit,
        "bucket_commit_measured": bucket_commit, "release_sizes": sizes, "projection": projection, "assumptions": ASSUMPTIONS,
        "driver_memory": driver_memory, "time_to_first_commit": first,
        "busy_by_workers": {f"{r['label'].split('-')[0]}-{r['workers']}": r["busy_fraction"] for r in runs + before_runs},
    }, table)
