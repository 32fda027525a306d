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
    in-process worker with ``workers`` threads when ``processes`` is False.

    ``tls_*``: PEM files for a ``tls://`` scheduler (the CA that signed the cluster's
    certificates, this client's certificate and key). Without them the client takes Dask's own
    settings (``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``)."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    processes: bool = True
    memory_limit: str = "auto"
    dashboard: bool = True
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers <= 0:
            raise ValueError(f"workers must be positive, got {self.workers}")
        if self.uses_tls_files:
            if not (self.scheduler or "").startswith("tls://"):
                raise ValueError(f"--tls-* options are for a tls:// scheduler, got --scheduler {self.scheduler!r}")
            if not (self.tls_ca_file and self.tls_cert):
                raise ValueError("a tls:// scheduler needs --tls-ca-file (the cluster's CA) and --tls-cert "
                                 "(this client's certificate; its key in it or in --tls-key)")

    @property
    def uses_tls_files(self) -> bool:
        return any((self.tls_ca_file, self.tls_cert, self.tls_key))

    def security(self):
        """Dask ``Security`` from the ``tls_*`` files, or None for Dask's configured default."""
        if not self.uses_tls_files:
            return None
        from distributed.security import Security

        return Security(tls_ca_file=self.tls_ca_file, tls_client_cert=self.tls_cert, tls_client_key=self.tls_key,
                        require_encryption=True)


def _loopback_link(link: str) -> str:
    """The dashboard listens on loopback only; Dask formats an in-process cluster's link with the
    machine's address, which would not answer."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(link)
    return urlunsplit(parts._replace(netloc=f"{LOOPBACK}:{parts.port}"))


def _same(value):
    return value


def recomputable(client, value):
    """A future holding ``value`` that the cluster can make again if the worker holding it dies.

    ``client.scatter(value, broadcast=True)`` is not that: Dask's active memory manager soon
    reduces the copies to one, and scattered data has no recipe, so losing that worker forgets
    every task that depends on it. A task that returns its argument is recomputed instead (the
    scheduler keeps the argument, a few MB for a gene axis)."""
    return client.submit(_same, value, pure=False)


class ClusterError(RuntimeError):
    """The scheduler cannot be reached or refused this client; the message says which and why."""


def _connect(config: ClusterConfig):
    from distributed import Client

    try:
        return Client(config.scheduler, timeout="30s", security=config.security())
    except Exception as exc:
        hint = ""
        if config.scheduler.startswith("tls://") and not config.uses_tls_files:
            hint = (" (a tls:// scheduler needs certificates: --tls-ca-file/--tls-cert/--tls-key or Dask's "
                    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE/__CLIENT__CERT/__CLIENT__KEY)")
        raise ClusterError(f"cannot connect to the Dask scheduler {config.scheduler}: "
                           f"{type(exc).__name__}: {exc}{hint}") from exc


@contextlib.contextmanager
def dask_client(config: ClusterConfig, echo=print) -> Iterator["distributed.Client"]:  # noqa: F821
    """A connected client; an embedded cluster is started here and stopped on exit."""
    import dask
    from distributed import Client, LocalCluster

    if config.scheduler:
        client = _connect(config)
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
