"""The scaling benchmark's model: the ingest's policy replayed over measured task durations, and
the projection to a whole release (pure apart from ``measure_commit``/``measure_write``, which time
the driver's commit and the chunk writer on local disk).

``simulate_window`` drives ``scdata.ingest.load_window.LoadWindow`` and ``scdata.ingest.write_plan.plan_round`` exactly as
``scdata.ingest`` does, on single-thread workers that take queued tasks in Dask's priority order;
``simulate_rounds`` replays the ingest's former shape (rounds, one loading ahead) for comparison.
Used by ``bench_scale.py``.
"""

from __future__ import annotations

import heapq
import itertools
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

GIB = 1 << 30


# ---- simulation: the same policy, measured durations ---------------------------------------------

@dataclass
class Durations:
    """Seconds per task as linear functions of size (cells loaded, rows written)."""

    load: tuple[float, float]
    write: tuple[float, float]
    rows: float
    seam: float
    commit: tuple[float, float]

    @staticmethod
    def _at(fit, x):
        return max(0.0, fit[0] + fit[1] * x)


class Sim:
    """Single-thread workers taking queued tasks by priority (Dask's order: higher first)."""

    def __init__(self, n_workers: int):
        self.now, self.free, self.busy = 0.0, n_workers, 0.0
        self.ready, self.running, self.waiting = [], [], []
        self.seq = 0

    def submit(self, duration: float, priority: float, after=None) -> dict:
        task = {"duration": duration, "priority": priority, "done": False, "after": after}
        if after is not None and not after["done"]:
            self.waiting.append(task)
        else:
            self._queue(task)
        return task

    def _queue(self, task) -> None:
        self.seq += 1
        heapq.heappush(self.ready, (-task["priority"], self.seq, task))

    def _dispatch(self) -> None:
        while self.free and self.ready:
            _, _, task = heapq.heappop(self.ready)
            self.free -= 1
            self.seq += 1
            heapq.heappush(self.running, (self.now + task["duration"], self.seq, task))

    def _complete_next(self) -> None:
        end, _, task = heapq.heappop(self.running)
        self.now = end
        task["done"] = True
        self.free += 1
        self.busy += task["duration"]
        if self.waiting:
            released = [t for t in self.waiting if t["after"]["done"]]
            self.waiting = [t for t in self.waiting if not t["after"]["done"]]
            for t in released:
                self._queue(t)

    def step(self) -> None:
        """Run until the next task ends."""
        self._dispatch()
        self._complete_next()
        self._dispatch()

    def sleep(self, seconds: float) -> None:
        """The driver is busy (a commit) for ``seconds``; the workers go on."""
        until = self.now + seconds
        self._dispatch()
        while self.running and self.running[0][0] <= until:
            self._complete_next()
            self._dispatch()
        self.now = until


def simulate_window(cells: list[int], n_workers: int, d: Durations, worker_memory: int, chunk: int = 1024,
                    policy=None) -> dict:
    """The ingest's loop (``scdata.ingest.driver._run_units``) over simulated workers; ``policy``: the
    ingest's default ``WindowPolicy`` with the CLI's default commit caps."""
    from scdata.ingest.write_plan import COMMITTED, plan_round
    from scdata.ingest.load_window import Capacity, EarlyStarts, LoadWindow, commit_group

    sim = Sim(n_workers)
    window = LoadWindow(policy or default_policy(), Capacity(n_workers, n_workers * worker_memory))
    todo = deque(enumerate(cells))
    early, started = EarlyStarts(cells, window.policy), {}
    loads, units, next_row, tail, commits, committing = {}, deque(), 0, None, 0, None
    in_flight, on_driver, peak_on_driver = [], 0, 0
    while todo or loads or units or committing:
        for key in early.due(todo[0][0] if todo else len(cells), window.capacity):
            if not window.admits_early(cells[key]):
                break
            early.started(key)
            started[key] = sim.submit(Durations._at(d.load, cells[key]), -todo[0][0])  # as urgent as the head
            window.started_early(cells[key])
        while todo and (todo[0][0] in started or window.admits(todo[0][1])):
            key, n = todo.popleft()
            if key in started:
                loads[key] = started.pop(key)
                window.submitted(key, n, early=True)
            else:
                loads[key] = sim.submit(Durations._at(d.load, n), -key)
                window.submitted(key, n)
        for key in [k for k, t in loads.items() if t["done"] and not t.get("seen")]:
            loads[key]["seen"] = True
            window.loaded(key)
        in_flight.append(window.loading)
        while (keys := window.take_unit()) is not None:
            plan = plan_round(next_row, [cells[k] for k in keys], chunk)
            writes, last = [], None
            for own in plan.own_writes:
                for w in own:
                    writes.append(sim.submit(Durations._at(d.write, w.stop - w.start), 1))
                    last = writes[-1] if w.stop == plan.stop else last
            for seam in plan.seam_writes:
                after = tail if seam.pieces[0].owner == COMMITTED else None
                writes.append(sim.submit(d.seam + d.rows * (len(seam.pieces) - 1), 1, after))
                last = writes[-1] if seam.stop == plan.stop else last
            for k in keys:
                loads.pop(k)
            units.append([keys, plan, writes, False])
            next_row, tail = plan.stop, last if last is not None else tail
        for unit in units:
            if not unit[3] and all(w["done"] for w in unit[2]):
                unit[3] = True
                window.written(unit[0])
        if committing is not None and sim.now >= committing[0]:
            for keys in committing[1]:
                window.committed(keys)
                on_driver -= sum(cells[k] for k in keys)
            committing, commits = None, commits + 1
            continue
        if committing is None and units and units[0][3]:  # the committer thread: one commit at a time
            written = list(itertools.takewhile(lambda u: u[3], units))
            group = [units.popleft() for _ in range(commit_group([u[1].stop - u[1].start for u in written],
                                                                 window.policy))]
            rows = group[-1][1].stop - group[0][1].start
            committing = (sim.now + Durations._at(d.commit, rows), [u[0] for u in group])
            # the group's per-cell columns (barcodes, counts) come to the driver for its commit only:
            # until then they wait on the workers (``ingest.worker_tasks.cell_columns_task``)
            on_driver += sum(cells[k] for u in group for k in u[0])
            peak_on_driver = max(peak_on_driver, on_driver)
            continue
        if committing is not None and (not sim.running or sim.running[0][0] > committing[0]) and not (
                sim.ready and sim.free):
            sim.sleep(committing[0] - sim.now)
        else:
            sim.step()
    return {"workers": n_workers, "wall_s": sim.now, "busy_fraction": sim.busy / (n_workers * sim.now),
            "commits": commits, "mean_loads_in_flight": float(np.mean(in_flight)),
            "peak_cells_on_driver": peak_on_driver}


def default_policy():
    from scdata.ingest.driver import IngestConfig

    return IngestConfig().policy


def simulate_rounds(cells: list[int], n_workers: int, d: Durations, batch_size: int = 10,
                    round_cells: int = 40_000, chunk: int = 1024) -> dict:
    """Today's shape: rounds of ``batch_size`` experiments and ``round_cells`` cells, the next
    round's loads submitted when a round's loads are all done, commits in order."""
    from scdata.ingest.write_plan import plan_round, split_rounds

    sim = Sim(n_workers)
    rounds = split_rounds(list(range(len(cells))), batch_size, cells, round_cells)
    submit = lambda r: [sim.submit(Durations._at(d.load, cells[k]), -k) for k in r]  # noqa: E731
    pending = deque([submit(rounds[0])]) if rounds else deque()
    next_row, i = 0, 1
    while pending:
        loads = pending.popleft()
        while not all(t["done"] for t in loads):
            sim.step()
        r = rounds[i - 1]
        plan = plan_round(next_row, [cells[k] for k in r], chunk)
        writes = [sim.submit(Durations._at(d.write, w.stop - w.start), 1) for own in plan.own_writes for w in own]
        writes += [sim.submit(d.seam + d.rows * (len(s.pieces) - 1), 1) for s in plan.seam_writes]
        if i < len(rounds):
            pending.append(submit(rounds[i]))
        i += 1
        while not all(t["done"] for t in writes):
            sim.step()
        sim.sleep(Durations._at(d.commit, plan.stop - plan.start))
        next_row = plan.stop
    return {"workers": n_workers, "wall_s": sim.now, "busy_fraction": sim.busy / (n_workers * sim.now),
            "commits": len(rounds)}


def linear_fit(x, y) -> tuple[float, float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(y.mean()), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    if slope < 0:  # no size dependence within the noise: a constant
        return float(y.mean()), 0.0
    if intercept < 0:  # keep it physical: all of it per cell
        return 0.0, float((y / np.maximum(x, 1)).mean())
    return float(intercept), float(slope)


def measured_durations(run: dict, commit: tuple[float, float]) -> Durations:
    """Durations fitted on a run's tasks (a worker per core: no waiting for a core); the commit's
    from ``measure_commit`` (the run's own commits span too few sizes to fit)."""
    rs = run["records"]
    load = [r for r in rs if r["task"] == "load_task"]
    write = [r for r in rs if r["task"] == "write_own_task"]
    seams = [r["end"] - r["start"] for r in rs if r["task"] == "write_seam_task"] or [0.0]
    rows = [r["end"] - r["start"] for r in rs if r["task"] == "rows_task"] or [0.0]
    summarize = np.mean([r["end"] - r["start"] for r in rs if r["task"] == "summarize_task"] or [0.0])
    load_fit = linear_fit([r["size"] for r in load], [r["end"] - r["start"] + summarize for r in load])
    return Durations(load=load_fit, write=linear_fit([r["size"] for r in write], [r["end"] - r["start"] for r in write]),
                     rows=float(np.mean(rows)), seam=float(np.mean(seams)),
                     commit=commit)


def measure_commit(store: str, sizes=(1_000, 10_000, 50_000, 200_000), per_experiment: int = 8_000) -> dict:
    """The driver's commit into ``store`` (a new local path or ``gs://`` URL) for units of
    ``sizes`` cells (what ``commit_unit.commit_units`` does after the writes, through a run's
    ``StoreWriter``: obs rows, shapes, manifest head and log entry, consolidated metadata), after
    a few dozen commits are in the store. Returns the linear fit and the points."""
    from scdata.store.writer import StoreWriter
    from scdata.ingest.commit_unit import obs_part
    from scdata.store.manifest import Manifest, write_manifest
    from scdata.source.bucket import CELL_METADATA_COLUMNS
    from scdata.store.layout import StoreLayout, create_store

    genes = np.asarray([f"ENSG{i:011d}" for i in range(36_601)])
    create_store(store, genes, genes, list(CELL_METADATA_COLUMNS) + ["cell_type"], StoreLayout())
    manifest = Manifest(n_genes=len(genes))
    write_manifest(store, manifest)
    writer = StoreWriter(store)
    rng = np.random.default_rng(0)
    points, row = [], 0
    for n in [1_000] * 20 + [n for n in sizes for _ in range(3)]:
        parts = np.array_split(np.arange(n), max(1, n // per_experiment))
        members = [(SimpleNamespace(accession=f"SRX{row + i}", metadata={"tissue": "blood", "tech_10x": "3_prime_gex"}),
                    SimpleNamespace(barcodes=np.asarray([f"BC{j:012d}-1" for j in p], dtype=object),
                                    umi_count=rng.integers(500, 9000, len(p)),
                                    total_counts=rng.integers(500, 9000, len(p)),
                                    gene_count=rng.integers(200, 3000, len(p)),
                                    annotations=pd.DataFrame({"cell_type": rng.choice(["T", "B", "NK"], len(p))})))
                   for i, p in enumerate(parts)]
        start = time.perf_counter()  # the driver's work from here: the unit's obs rows, then the commit
        manifest.categories = writer.write_obs_rows(row, [obs_part(exp, summary) for exp, summary in members])
        writer.grow_rows(row + n)
        manifest.record_commits([{"accession": exp.accession, "row_start": row, "row_stop": row + n, "committed_at": "t",
                                  "metadata": exp.metadata, "counters": {}} for exp, _ in members])
        manifest.n_committed, manifest.version = row + n, manifest.version + 1
        write_manifest(store, manifest, writer)
        points.append((n, time.perf_counter() - start))
        row += n
    points = points[20:]
    fit = linear_fit([p[0] for p in points], [p[1] for p in points])
    return {"fit": fit, "points": points}


def summary_bytes_per_cell(n: int = 20_000) -> float:
    """Driver memory per cell of an experiment's per-cell columns (``worker_tasks.CellColumns``:
    10x barcodes, per-cell counts, one annotation column), held by the driver while its commit
    writes them; measured with tracemalloc."""
    import tracemalloc

    from scdata.ingest.worker_tasks import CellColumns

    rng = np.random.default_rng(0)
    barcodes = [f"{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(n)]
    labels = np.asarray(["T cell", "B cell", "NK cell"], dtype=object)  # unpickled: one object per distinct value
    tracemalloc.start()
    summary = CellColumns(  # as cell_columns_task makes them
        barcodes=np.asarray(barcodes, dtype=np.dtypes.StringDType()), umi_count=rng.integers(500, 9000, n),
        total_counts=rng.integers(500, 9000, n), gene_count=rng.integers(200, 3000, n),
        annotations=pd.DataFrame({"cell_type": labels[rng.integers(0, 3, n)]}))
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del summary
    return size / n


def measure_write(work: str, n_chunks: int = 6, density: float = 0.06) -> float:
    """Seconds per row of the ingest's chunk writer (``ChunkWriter``, what ``write_own_task``
    runs) for full-width rows of 36,601 genes at ``density`` non-zeros, with the store's layout."""
    import scipy.sparse as sp
    import zarr

    from scdata.store.chunks import ChunkWriter
    from scdata.store.layout import StoreLayout

    layout = StoreLayout()
    path = os.path.join(work, "write.zarr")
    shutil.rmtree(path, ignore_errors=True)
    n_rows, n_genes = n_chunks * layout.chunk_cells, 36_601
    arr = zarr.create_array(path, shape=(n_rows, n_genes), chunks=(layout.chunk_cells, layout.chunk_genes),
                            dtype="int16", filters=layout.filters(), compressors=layout.codec(), fill_value=0)
    rows = sp.random(n_rows, n_genes, density=density, format="csr", dtype=np.float32, random_state=0)
    rows.data = np.ceil(rows.data * 20).astype(np.float32)
    rows = rows.astype(np.int16)
    writer = ChunkWriter(arr)
    start = time.perf_counter()
    for lo in range(0, n_rows, layout.chunk_cells):
        writer.write_rows(lo, rows[lo : lo + layout.chunk_cells])
    return (time.perf_counter() - start) / n_rows


# ---- projection to the whole release -------------------------------------------------------------

RELEASE_EXPERIMENTS = 35_000
RELEASE_CELLS = 290_000_000
ASSUMPTIONS = {
    "release": f"{RELEASE_EXPERIMENTS:,} human experiments, {RELEASE_CELLS / 1e6:.0f}M cells (the issue's estimate; "
               "DESIGN.md: ~35k experiments, ~7.7k cells each)",
    "experiment_sizes": "log-normal cell counts (sigma 1.0) scaled to the release's mean, at least 500 cells, seed 0",
    "h5ad_bytes_per_cell": 20_000,
    "h5ad_note": "bytes of h5ad per cell as in the synthetic files (real 2026-01-12 files also carry fractional layers)",
    "worker_bandwidth_bytes_per_s": 100e6,
    "bandwidth_note": "per worker from the bucket (a cloud VM in the bucket's region)",
    "request_latency_s": 0.05,
    "requests_per_load": 8,
    "cpu_per_cell": "load: the slope of CPU time against cells of the load tasks measured here with one worker "
                    "(no CPU contention); write: ChunkWriter on rows of 6% non-zeros (measure_write)",
    "store_commit_s": "the driver's commit into a gs:// store as measured here for units of 1k-200k cells "
                      "(measure_commit): the GCS emulator behind a proxy that adds the request latency above to "
                      "each request (the emulator's own time, one request at a time, included)",
    "worker_memory_bytes": 4 * GIB,
    "memory_note": "4 GiB per single-thread worker (a cloud VM's usual memory per vCPU)",
    "workers": "single-thread workers, one per vCPU; Dask's own overheads not modelled beyond the measured task times",
}


def release_durations(d: Durations, load_cpu: tuple[float, float], write_per_row: float,
                      bucket_commit: tuple[float, float]) -> Durations:
    """The release's task durations: the measured CPU, the assumed bucket's I/O, and the commit
    as measured on the emulated bucket (``bucket_commit``)."""
    a = ASSUMPTIONS
    io_fixed = a["requests_per_load"] * a["request_latency_s"]
    io_per_cell = a["h5ad_bytes_per_cell"] / a["worker_bandwidth_bytes_per_s"]
    return Durations(load=(io_fixed + load_cpu[0], io_per_cell + load_cpu[1]), write=(d.write[0], write_per_row),
                     rows=d.rows, seam=d.seam, commit=bucket_commit)


def release_sizes(n: int = RELEASE_EXPERIMENTS, total: int = RELEASE_CELLS) -> list[int]:
    rng = np.random.default_rng(0)
    raw = rng.lognormal(0.0, 1.0, n)
    cells = np.maximum(500, raw / raw.mean() * total / n).astype(int)
    return [int(c) for c in cells]
