"""The Dask cluster a job runs on: an embedded LocalCluster or an existing scheduler.

Ingest wants worker processes (h5py holds a global lock while it decodes a file); the statistics
passes are numpy and Blosc work that releases the GIL, so they run fastest as threads of one
process, where no partial is pickled between processes and the interpreter is loaded once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

WORKER_MALLOC_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 8 << 20, "MALLOC_TRIM_THRESHOLD_": 32 << 20}
"""glibc settings for embedded worker processes. Dask's default (``MALLOC_TRIM_THRESHOLD_=65536``)
also pins the mmap threshold at 128 KiB, so every few-MB temporary of a chunk write is a fresh
mapping whose pages fault in again: ~1M page faults and ~20% of the CPU time of ingesting 100k
cells. With 8 MiB those temporaries reuse heap memory (~20k faults), while experiment-sized
arrays are still mapped and go back to the system when freed, so what a worker retains does
not grow with the number of rounds (a 32 MiB threshold: 1.48 GiB peak at 400k cells vs 1.36)."""


LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """``scheduler`` wins when set; otherwise a LocalCluster of ``workers`` processes, or of one
    in-process worker with ``workers`` threads when ``processes`` is False."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    processes: bool = True
    memory_limit: str = "auto"
    dashboard: bool = True

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers <= 0:
            raise ValueError(f"workers must be positive, got {self.workers}")


def _loopback_link(link: str) -> str:
    """The dashboard listens on loopback only; Dask formats an in-process cluster's link with the
    machine's address, which would not answer."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(link)
    return urlunsplit(parts._replace(netloc=f"{LOOPBACK}:{parts.port}"))


@contextlib.contextmanager
def dask_client(config: ClusterConfig, echo=print) -> Iterator["distributed.Client"]:  # noqa: F821
    """A connected client; an embedded cluster is started here and stopped on exit."""
    import dask
    from distributed import Client, LocalCluster

    if config.scheduler:
        client = Client(config.scheduler, timeout="30s")
        echo(f"Dask: using scheduler {config.scheduler} ({len(client.scheduler_info()['workers'])} workers)")
        try:
            yield client
        finally:
            client.close()
        return
    workers = config.workers or max(1, os.cpu_count() or 1)
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the embedded cluster's chatter is not the user's business
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENVIRON.items()}
    with dask.config.set(environ):
        cluster = LocalCluster(
            n_workers=workers if config.processes else 1,
            threads_per_worker=config.threads_per_worker if config.processes else workers * config.threads_per_worker,
            processes=config.processes,
            memory_limit=config.memory_limit,
            # loopback only: on a shared login node an embedded scheduler or dashboard on the
            # machine's network address would be open to everyone on the network (threads of
            # one process talk in-process, with no listening socket but the dashboard's)
            **({"host": LOOPBACK} if config.processes else {}),
            dashboard_address=f"{LOOPBACK}:0" if config.dashboard else None,
            worker_dashboard_address=f"{LOOPBACK}:0",
            silence_logs=logging.CRITICAL,  # failures are reported by the ingest, naming the experiment
        )
    client = Client(cluster)
    link = _loopback_link(cluster.dashboard_link) if config.dashboard else "disabled"
    shape = f"{workers} workers" if config.processes else f"one in-process worker, {workers} threads"
    echo(f"Dask: LocalCluster with {shape}, dashboard {link}")
    try:
        yield client
    finally:
        client.close()
        cluster.close()
