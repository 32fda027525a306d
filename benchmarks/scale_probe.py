"""Dask worker preload for ``bench_scale.py``: times every ingest task on the worker.

``dask worker --preload benchmarks/scale_probe.py`` wraps the task functions (``scdata.ingest.worker_tasks``, ``scdata.source.h5ad``)
that the ingest submits (Dask unpickles a task's function by module and name, so the worker
runs the wrapper). Each call records its wall time, its thread's CPU time and the time it spent
runnable but waiting for a core (``/proc/thread-self/schedstat``); what is left of the wall time
is time blocked, on I/O for these tasks. ``RECORDS`` is read back with ``Client.run``.
"""

from __future__ import annotations

import functools
import time

RECORDS: list[dict] = []
TASKS = {"scdata.source.h5ad": ("gene_table_task",),
         "scdata.ingest.worker_tasks": ("load_task", "summarize_task", "rows_task", "write_own_task", "write_seam_task")}


def _schedstat() -> tuple[int, int]:
    """(ns on a core, ns runnable and waiting for one) of the calling thread."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu), int(waiting)
    except OSError:
        return 0, 0


def _size(name: str, args, result) -> int:
    """Cells loaded, or rows written, by the call."""
    if name == "load_task":
        return int(result.n_cells)
    if name in ("write_own_task", "write_seam_task"):
        return int(result)
    return 0


def _wrap(name: str, fn):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start, cpu0, (_, wait0) = time.time(), time.thread_time(), _schedstat()
        result = fn(*args, **kwargs)
        end, cpu1, (_, wait1) = time.time(), time.thread_time(), _schedstat()
        RECORDS.append({"task": name, "start": start, "end": end, "cpu_s": cpu1 - cpu0,
                        "runnable_wait_s": (wait1 - wait0) / 1e9, "size": _size(name, args, result)})
        return result

    return timed


def dask_setup(worker) -> None:
    import importlib

    for module_name, names in TASKS.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, _wrap(name, getattr(module, name)))
    worker.scale_probe = RECORDS
