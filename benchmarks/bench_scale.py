"""Ingest at cluster scale: real ``dask scheduler`` + ``dask worker`` processes on a bucket with a
cloud bucket's shape, then 64 and 256 workers by simulation, then the whole human release.

1. Real runs. The synthetic release is served by ``gcp-storage-emulator``; every worker reaches
   it through its own proxy (``tests/gcs_proxy.py``) that adds a latency to each request and caps
   the worker's bandwidth; the store is on local disk. 1, 2, 4, 8 and 16 single-thread workers
   run the ingest (``scdata ingest --scheduler``), and today's shape (the rounds of the commit
   before this benchmark, checked out from git) runs at 1 and 16. A worker preload
   (``scale_probe.py``) times every task: wall, CPU, time runnable but waiting for a core, and the
   rest, blocked on I/O. Busy fraction = time a worker has a task in progress / (workers x the
   ingest's wall time). The scheduler's and the driver's CPU and memory are measured per experiment.
   The stores of 1, 2 and 16 workers are compared byte for byte.
2. Simulation. The tasks' measured durations (load, write, seam; the driver's commits) are
   replayed through the ingest's own policy: ``scdata.ingest.load_window.LoadWindow`` decides what loads and
   what commits, ``scdata.ingest.write_plan.plan_round`` what each commit writes, as in ``scdata.ingest``; and
   through today's rounds (``split_rounds``, one round loading ahead) for comparison.
3. Projection: the 2026-01-12 human release on 64 and 256 workers, every assumption named.
4. Time to the first committed row for selections of 10 and 1,000 experiments (planning).

    python benchmarks/bench_scale.py            # ~12 min on 2 cores
    python benchmarks/bench_scale.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from benchmarks.common import WORK, run_checked  # noqa: E402
from benchmarks.scale_sim import (ASSUMPTIONS, RELEASE_EXPERIMENTS, linear_fit, measure_commit,  # noqa: E402
                                  measure_write, measured_durations, release_durations, release_sizes,
                                  summary_bytes_per_cell,
                                  default_policy, simulate_rounds, simulate_window)
from benchmarks.scale_report import write_report  # noqa: E402

PY = sys.executable
BUCKET = "sczarr-scale"
RELEASE = f"{BUCKET}/scbasecount/2026-01-12"
BEFORE = "679b88b"
"""The commit before the load window: today's shape (rounds of --batch-size, one loading ahead)."""
GIB = 1 << 30


# ---- the driver, run as its own process ---------------------------------------------------------

def drive(out: str, args: list[str]) -> None:
    """Run ``scdata ingest`` here, timing the ingest and each commit; write the figures to ``out``."""
    import importlib
    import resource

    sys.path.insert(0, os.environ["PYTHONPATH"].split(os.pathsep)[0])  # the tree under test, not this checkout
    from scdata.cli import main

    # the module whose loop calls the commit, and from which the CLI imports ``ingest`` at call
    # time: scdata.ingest.driver, or in a tree from before the subpackages, the module scdata.ingest
    try:
        ingest_module = importlib.import_module("scdata.ingest.driver")
    except ModuleNotFoundError:
        ingest_module = importlib.import_module("scdata.ingest")

    commits, span = [], {}
    name = next(n for n in ("commit_units", "_commit_units", "_commit_unit", "_commit_round") if hasattr(ingest_module, n))
    commit = getattr(ingest_module, name)

    def timed_commit(*a, **k):
        start = time.time()
        result = commit(*a, **k)
        units = a[3] if name.endswith("units") else [a[3]]  # the units' plans (a round is its own plan)
        first, last = [getattr(u, "plan", u) for u in (units[0], units[-1])]
        commits.append({"start": start, "end": time.time(), "cells": last.stop - first.start})
        return result

    ingest = ingest_module.ingest

    def timed_ingest(*a, **k):
        span["start"] = time.time()
        try:
            return ingest(*a, **k)
        finally:
            span["end"] = time.time()

    setattr(ingest_module, name, timed_commit)
    ingest_module.ingest = timed_ingest  # the CLI imports it at call time, from the module

    code = main(["ingest", *args])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        json.dump({"code": code, "commits": commits, **span, "cpu_s": usage.ru_utime + usage.ru_stime,
                   "peak_rss_bytes": usage.ru_maxrss * 1024}, f)


# ---- the site: emulator, proxies, scheduler, workers ---------------------------------------------

@dataclass
class Site:
    endpoint: str
    latency: float
    bandwidth: float
    worker_memory: str
    scheduler: subprocess.Popen | None = None
    address: str = ""
    proxies: list = field(default_factory=list)
    workers: list = field(default_factory=list)
    driver_proxy: object = None

    def start_scheduler(self) -> None:
        from tests.services import _bin, _wait_port, free_port

        port = free_port()
        self.scheduler = subprocess.Popen([_bin("dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                           "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        _wait_port(port, self.scheduler)
        self.address = f"tcp://127.0.0.1:{port}"

    def env(self, proxy_url: str, pythonpath: str = ROOT) -> dict:
        return {**os.environ, "STORAGE_EMULATOR_HOST": proxy_url, "SCZARR_GCS_TOKEN": "anon", "PYTHONPATH": pythonpath,
                "MALLOC_MMAP_THRESHOLD_": str(8 << 20), "MALLOC_TRIM_THRESHOLD_": str(32 << 20)}

    def grow(self, n: int) -> None:
        """Start workers (each with its own capped proxy) until there are ``n``."""
        from distributed import Client

        from tests.gcs_proxy import GCSProxy
        from tests.services import _bin

        while len(self.workers) < n:
            proxy = GCSProxy(self.endpoint, latency=self.latency, bandwidth=self.bandwidth).__enter__()
            self.proxies.append(proxy)
            self.workers.append(subprocess.Popen(
                [_bin("dask"), "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                 "--memory-limit", self.worker_memory, "--name", f"w{len(self.workers)}",
                 "--preload", os.path.join(HERE, "scale_probe.py")],
                env=self.env(proxy.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(n, timeout=180)

    def shrink(self, n: int) -> None:
        from distributed import Client

        while len(self.workers) > n:
            proc = self.workers.pop()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            self.proxies.pop().__exit__()
        with Client(self.address, timeout="60s") as client:
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) > n and time.monotonic() < deadline:
                time.sleep(0.5)

    def stop(self) -> None:
        from tests.services import _stop

        _stop([p for p in [self.scheduler, *self.workers] if p is not None])
        for proxy in self.proxies:
            proxy.__exit__()


def _records(address: str, reset: bool) -> list[dict]:
    from distributed import Client

    def collect(dask_worker, reset=reset):
        records = list(getattr(dask_worker, "scale_probe", []))
        if reset and hasattr(dask_worker, "scale_probe"):
            dask_worker.scale_probe.clear()
        return [{**r, "worker": dask_worker.name} for r in records]

    with Client(address, timeout="60s") as client:
        return [r for rs in client.run(collect).values() for r in rs]


def _sample_rss(pid: int, stop: threading.Event, peak: list) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.2)


def run_ingest(site: Site, label: str, store: str, cell_count: int, tree: str, n_workers: int) -> dict:
    """One ``scdata ingest --scheduler`` run (the driver from ``tree``) and what it cost."""
    shutil.rmtree(store, ignore_errors=True)
    _records(site.address, reset=True)
    figures = os.path.join(WORK, "scale", f"{label}.json")
    scheduler = psutil.Process(site.scheduler.pid)
    cpu0 = sum(scheduler.cpu_times()[:2])
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=_sample_rss, args=(site.scheduler.pid, stop, peak), daemon=True)
    sampler.start()
    args = ["--source", f"gs://{RELEASE}", "--feature-type", MANY_FEATURE, "--store", store, "--cell-count",
            str(cell_count), "--scheduler", site.address, "--no-progress"]
    run_checked([PY, os.path.abspath(__file__), "--drive", figures, "--", *args],
                env=site.env(site.driver_proxy.url, tree))
    stop.set()
    sampler.join()
    with open(figures) as f:
        driver = json.load(f)
    records = _records(site.address, reset=True)
    import scdata

    manifest = scdata.read_manifest(store)
    n_exp = len(manifest.experiments)
    wall = driver["end"] - driver["start"]
    first = min(r["start"] for r in records if r["task"] == "load_task")
    data_wall = driver["end"] - first
    busy = _busy(records, driver["start"], driver["end"]) / (n_workers * wall)
    busy_data = _busy(records, first, driver["end"]) / (n_workers * data_wall)
    result = {
        "label": label, "workers": n_workers, "experiments": n_exp, "cells": manifest.n_committed,
        "commits": len(driver["commits"]), "wall_s": wall, "cells_per_s": manifest.n_committed / wall,
        "busy_fraction": busy, "busy_fraction_after_planning": busy_data,
        "tasks": _task_table(records),
        "driver_cpu_s_per_experiment": driver["cpu_s"] / n_exp, "driver_peak_rss_bytes": driver["peak_rss_bytes"],
        "scheduler_cpu_s_per_experiment": (sum(scheduler.cpu_times()[:2]) - cpu0) / n_exp,
        "scheduler_peak_rss_bytes": peak[0],
        "commit_s": [c["end"] - c["start"] for c in driver["commits"]],
        "commit_cells": [c["cells"] for c in driver["commits"]],
        "records": records, "store": store,
    }
    print({k: v for k, v in result.items() if k not in ("records", "tasks", "commit_s", "commit_cells")}, flush=True)
    return result


def _busy(records: list[dict], t0: float, t1: float) -> float:
    """Worker-seconds with a task in progress within [t0, t1] (overlaps on one worker counted once)."""
    total = 0.0
    by_worker: dict[str, list] = {}
    for r in records:
        by_worker.setdefault(r["worker"], []).append((max(r["start"], t0), min(r["end"], t1)))
    for spans in by_worker.values():
        end = t0
        for a, b in sorted(spans):
            a = max(a, end)
            if b > a:
                total += b - a
                end = b
    return total


def _task_table(records: list[dict]) -> dict:
    out = {}
    for name in sorted({r["task"] for r in records}):
        rs = [r for r in records if r["task"] == name]
        wall = np.array([r["end"] - r["start"] for r in rs])
        cpu = np.array([r["cpu_s"] for r in rs])
        runnable = np.array([r["runnable_wait_s"] for r in rs])
        out[name] = {"n": len(rs), "mean_wall_s": wall.mean(), "mean_cpu_s": cpu.mean(),
                     "mean_runnable_wait_s": runnable.mean(),
                     "mean_io_wait_s": np.maximum(wall - cpu - runnable, 0).mean()}
    return out


# ---- time to the first commit --------------------------------------------------------------------

MANY_FEATURE = "GeneFull"
"""The feature type under which the benchmark lists its large selection (metadata only)."""


def many_experiments(release: str, dest: str, n: int) -> str:
    """A sample table of ``n`` experiments, under feature type ``MANY_FEATURE``: the release's
    experiments again under new accessions, their ``file_path`` pointing at the release's own
    files (``h5ad/GeneFull_Ex50pAS/...``, resolved under the source), so nothing else is uploaded
    and planning that reads every file reads ``n`` of them. Returns the local table's path."""
    table = pd.read_parquet(os.path.join(release, "metadata", "GeneFull_Ex50pAS", "Homo_sapiens",
                                         "sample_metadata.parquet"))
    rows = []
    for i in range(n):
        row = table.iloc[i % len(table)].copy()
        row["srx_accession"] = f"SRX9{i:06d}"
        rows.append(row)
    path = os.path.join(dest, "metadata", MANY_FEATURE, "Homo_sapiens", "sample_metadata.parquet")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def wait_idle(address: str, timeout: float = 120) -> None:
    """Until no worker has a task (a stopped run's tasks finish on their own)."""
    from distributed import Client

    with Client(address, timeout="60s") as client:
        deadline = time.monotonic() + timeout
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.5)


def time_to_first_commit(site: Site, tree: str, cell_count: int, store: str, timeout: float = 300) -> dict:
    """Seconds from the command's start to the store's creation (planning done) and to a manifest
    with committed rows (then the run is stopped)."""
    shutil.rmtree(store, ignore_errors=True)
    wait_idle(site.address)
    head = os.path.join(store, "uns", "sczarr_manifest", "zarr.json")
    created = None
    start = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "scdata", "ingest", "--source", f"gs://{RELEASE}", "--feature-type",
                             MANY_FEATURE, "--store", store, "--cell-count", str(cell_count), "--scheduler",
                             site.address, "--no-progress"], env=site.env(site.driver_proxy.url, tree),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            cwd=tree)  # ``-m`` puts the working directory first on the path
    seconds = None
    while time.perf_counter() - start < timeout and proc.poll() is None:
        try:
            with open(head) as f:
                committed = json.load(f)["attributes"]["sczarr_manifest"]["n_committed"]
            created = created or time.perf_counter() - start
            if committed > 0:
                seconds = time.perf_counter() - start
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    selected = next((line for line in output.splitlines() if line.startswith("Selected")), output[-300:])
    failed = {} if seconds is not None else {"returncode": proc.returncode, "output": output[-3000:],
                                              "timed_out": time.perf_counter() - start >= timeout}
    return {"seconds": seconds, "planned_s": created, "selected": selected, **failed}


def _median_try(tries: list[dict]) -> dict:
    """The try with the median time to the first commit (a try that never committed counts as slowest)."""
    ranked = sorted(tries, key=lambda t: float("inf") if t["seconds"] is None else t["seconds"])
    return ranked[len(ranked) // 2]


# ---- main ----------------------------------------------------------------------------------------

def before_tree() -> str:
    """The package as of ``BEFORE`` (today's shape), extracted beside the work files."""
    dest = os.path.join(WORK, "scale", f"tree-{BEFORE}")
    if not os.path.exists(os.path.join(dest, "scdata")):
        os.makedirs(dest, exist_ok=True)
        archive = os.path.join(WORK, "scale", "before.tar")
        subprocess.run(["git", "-C", ROOT, "archive", "-o", archive, BEFORE, "scdata"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiments", type=int, default=80)
    p.add_argument("--min-cells", type=int, default=100)
    p.add_argument("--max-cells", type=int, default=250)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--per-worker", type=int, default=20,
                   help="experiments per worker (weak scaling: 20 for 1 worker, 320 for 16)")
    p.add_argument("--identity", type=int, nargs="+", default=[2, 16],
                   help="worker counts that also ingest the smallest run's selection, compared byte for byte")
    p.add_argument("--before-workers", type=int, nargs="+", default=[16, 4])
    p.add_argument("--latency", type=float, default=0.1, help="seconds added to every bucket request")
    p.add_argument("--bandwidth", type=float, default=4e6, help="bytes/s per worker from the bucket")
    p.add_argument("--worker-memory", default="1GiB")
    p.add_argument("--first-commit", type=int, nargs="+", default=[10, 100, 1000],
                   help="selection sizes (experiments) for the time to the first commit")
    p.add_argument("--first-commit-before", type=int, nargs="+", default=[10, 100])
    p.add_argument("--first-commit-repeats", type=int, default=3, help="tries per selection size (median)")
    p.add_argument("--only-first-commit", action="store_true",
                   help="measure the times to the first commit again, keep the last run's ingests")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reuse", action="store_true", help="analyse the last run's real measurements again")
    p.add_argument("--only-before", action="store_true", help="measure today's shape again, keep the window's runs")
    p.add_argument("--drive", default=None, help=argparse.SUPPRESS)
    a, rest = p.parse_known_args()
    if a.drive:
        return drive(a.drive, rest[1:] if rest[:1] == ["--"] else rest)
    if a.quick:
        a.experiments, a.workers, a.before_workers, a.per_worker, a.identity = 12, [1, 2], [2], 6, [2]
        a.first_commit, a.first_commit_before = [10, 1000], [10]
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    work = os.path.join(WORK, "scale")
    os.makedirs(work, exist_ok=True)
    bucket_dir = os.path.join(work, f"bucket-{a.experiments}-{a.min_cells}-{a.max_cells}")
    release = os.path.join(bucket_dir, "scbasecount", "2026-01-12")
    if not os.path.exists(os.path.join(release, "metadata")):
        run_checked([PY, "-m", "scdata", "demo-bucket", bucket_dir, "--experiments", str(a.experiments),
                     "--min-cells", str(a.min_cells), "--max-cells", str(a.max_cells), "--seed", "11"])
    before = before_tree()
    many = many_experiments(release, os.path.join(work, "many"), 1000)
    sizes = {*a.first_commit, *a.first_commit_before, *(a.per_worker * n for n in [*a.workers, *a.before_workers])}
    cells = [e.obs_count for e in _order(many)]
    order = {n: sum(cells[:n]) for n in sizes}
    raw = os.path.join(work, "raw.json")
    if a.reuse or a.only_before or a.only_first_commit:  # the last full run's real runs, for the report
        with open(raw) as f:
            runs, before_runs, first = json.load(f)
    if a.only_first_commit:
        _, _, first = real_runs(a, work, release, before, many, order, ingest_runs=False)
    elif a.only_before:  # today's shape again, the window's runs kept
        _, before_runs, first_before = real_runs(a, work, release, before, many, order, window=False)
        first = [f for f in first if f["code"] != "rounds (before)"] + first_before
    elif not a.reuse:
        runs, before_runs, first = real_runs(a, work, release, before, many, order)
    with open(raw, "w") as f:
        json.dump([runs, before_runs, first], f)
    analyse(a, work, release, runs, before_runs, first)


def real_runs(a, work: str, release: str, before: str, many: str, order: dict,
              window: bool = True, ingest_runs: bool = True) -> tuple[list, list, list]:
    """The real ingests (``ingest_runs``; the window's with ``window``) and the times to the first
    commit, on one emulator and cluster."""
    from tests.gcs_proxy import GCSProxy
    from tests.services import bucket_fs, gcs_emulator, upload_tree

    runs, before_runs, first = [], [], []
    with gcs_emulator(BUCKET) as endpoint:
        site = Site(endpoint, a.latency, a.bandwidth, a.worker_memory)
        with GCSProxy(endpoint) as uploader:
            t = time.perf_counter()
            fs = bucket_fs(uploader.url)
            upload_tree(fs, release, RELEASE)
            fs.put_file(many, f"{RELEASE}/metadata/{MANY_FEATURE}/Homo_sapiens/sample_metadata.parquet")
            print(f"uploaded the release in {time.perf_counter() - t:.0f} s", flush=True)
        site.driver_proxy = GCSProxy(endpoint, latency=a.latency).__enter__()
        try:
            site.start_scheduler()
            for n in sorted(a.workers) if window and ingest_runs else [max(a.workers)]:
                site.grow(n)
                if not (window and ingest_runs):
                    break
                wait_idle(site.address)
                budget = order[a.per_worker * n]
                runs.append(run_ingest(site, f"window-{n}", os.path.join(work, f"window-{n}.zarr"), budget, ROOT, n))
                if n != min(a.workers) and n in a.identity:  # the smallest run's selection, for the byte check
                    runs.append(run_ingest(site, f"same-{n}", os.path.join(work, f"same-{n}.zarr"),
                                           order[a.per_worker * min(a.workers)], ROOT, n))
            # time to the first commit: the largest cluster, selections of growing size
            for tree, label, counts in ((ROOT, "load window", a.first_commit if window else []),
                                        (before, "rounds (before)", a.first_commit_before)):
                for count in counts:
                    # a store per try: a stopped try's workers may still be writing into its store
                    tries = [time_to_first_commit(site, tree, order[count], os.path.join(work, f"first-{count}-{i}.zarr"))
                             for i in range(a.first_commit_repeats)]
                    first.append({"code": label, "experiments": count, "workers": len(site.workers),
                                  **_median_try(tries), "tries": tries})
                    print({k: v for k, v in first[-1].items() if k != "tries"}, flush=True)
            for n in sorted(a.before_workers, reverse=True) if ingest_runs else []:
                site.grow(n) if n > len(site.workers) else site.shrink(n)
                wait_idle(site.address)
                before_runs.append(run_ingest(site, f"rounds-{n}", os.path.join(work, f"rounds-{n}.zarr"),
                                              order[a.per_worker * n], before, n))
        finally:
            site.driver_proxy.__exit__()
            site.stop()
    return runs, before_runs, first


def analyse(a, work: str, release: str, runs: list, before_runs: list, first: list) -> None:
    from tests.helpers import store_bytes

    import scdata

    by_n = {r["workers"]: r for r in runs if r["label"].startswith("window-")}
    smallest = min(by_n)
    reference = store_bytes(by_n[smallest]["store"])
    identical = {smallest: True, **{r["workers"]: store_bytes(r["store"]) == reference
                                    for r in runs if r["label"].startswith("same-")}}
    identical_before = {r["label"]: store_bytes(r["store"]) == store_bytes(by_n[r["workers"]]["store"])
                        for r in before_runs if r["workers"] in by_n}

    # simulation: durations from the run with one worker per core
    base = by_n[min(by_n)]
    local = os.path.join(work, "commit.zarr")
    shutil.rmtree(local, ignore_errors=True)
    commit = measure_commit(local)
    bucket_commit = measure_bucket_commit(ASSUMPTIONS["request_latency_s"])
    d = measured_durations(base, commit["fit"])
    sim_bench = []
    for n in sorted(by_n):  # each run's own selection, through the policy
        cells = [e["n_cells"] for e in scdata.read_manifest(by_n[n]["store"]).experiments]
        sim_bench.append({**simulate_window(cells, n, d, _bytes(a.worker_memory)), "experiments": len(cells)})
    load = [r for r in base["records"] if r["task"] == "load_task"]
    load_cpu = linear_fit([r["size"] for r in load], [r["cpu_s"] for r in load])
    write_s = measure_write(work)
    rd = release_durations(d, load_cpu, write_s, bucket_commit["fit"])
    sizes = release_sizes()
    mem = ASSUMPTIONS["worker_memory_bytes"]
    projection = []
    in_turn = dataclasses.replace(default_policy(), early_factor=None)  # what early starts are worth
    for n in (64, 256):
        for policy, run in (("load window", simulate_window(sizes, n, rd, mem)),
                            ("load window, every load in turn", simulate_window(sizes, n, rd, mem, policy=in_turn)),
                            ("rounds (before)", simulate_rounds(sizes, n, rd))):
            projection.append({"workers": n, "policy": policy, **run, "worker_hours": n * run["wall_s"] / 3600})
    driver_per_exp = _driver_bytes_per_experiment(release, base["store"])
    base_bytes = min(r["driver_peak_rss_bytes"] for r in runs)
    per_cell = summary_bytes_per_cell()
    driver_memory = {"base_bytes": base_bytes, "bytes_per_experiment": driver_per_exp,
                     "summary_bytes_per_cell": per_cell,
                     "release_bytes": {p["workers"]: base_bytes + driver_per_exp * RELEASE_EXPERIMENTS
                                       + per_cell * p["peak_cells_on_driver"]
                                       for p in projection if p["policy"] == "load window"}}

    sizes_summary = {"experiments": len(sizes), "cells": int(sum(sizes)), "median": int(np.median(sizes)),
                     "p99": int(np.percentile(sizes, 99)), "largest": int(max(sizes))}
    write_report(a, runs, before_runs, identical, identical_before, d, sim_bench, rd, projection, driver_memory, first,
                 commit, bucket_commit, sizes_summary)


def measure_bucket_commit(latency: float) -> dict:
    """``measure_commit`` into a ``gs://`` store: the GCS emulator behind a proxy that adds
    ``latency`` to every request, as a bucket seen from a cloud VM."""
    from scdata.store.layout import close_remote_sessions
    from tests.gcs_proxy import GCSProxy
    from tests.services import gcs_emulator

    names = ("STORAGE_EMULATOR_HOST", "SCZARR_GCS_TOKEN")
    saved = {k: os.environ.get(k) for k in names}
    with gcs_emulator("commit") as endpoint, GCSProxy(endpoint, latency=latency) as proxy:
        os.environ.update({"STORAGE_EMULATOR_HOST": proxy.url, "SCZARR_GCS_TOKEN": "anon"})
        try:
            return {**measure_commit("gs://commit/commit.zarr"), "latency_s": latency}
        finally:
            close_remote_sessions()
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _order(table_path: str) -> list:
    from scdata.source.bucket import SourceConfig, seeded_order

    return seeded_order(pd.read_parquet(table_path), SourceConfig(feature_type=MANY_FEATURE))


def _bytes(text: str) -> int:
    from dask.utils import parse_bytes

    return parse_bytes(text)


def _driver_bytes_per_experiment(release: str, store: str) -> float:
    """Driver memory that grows with the number of experiments: the seeded order (an
    ``Experiment`` with its metadata per experiment of the release) and the manifest's entries,
    measured with tracemalloc on this run's release and store."""
    import tracemalloc

    import scdata

    config = scdata.SourceConfig(release)
    table = scdata.read_sample_metadata(config)
    tracemalloc.start()
    from scdata.source.bucket import seeded_order

    order = seeded_order(table, config)
    manifest = scdata.read_manifest(store)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size / max(len(order), len(manifest.experiments))


if __name__ == "__main__":
    main()
