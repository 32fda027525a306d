"""The package's import surface: what a Dask worker pays to start, and the public names."""

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_worker_tasks_do_not_import_notebook_stack():
    # Ingest workers unpickle functions from scdata.ingest.worker_tasks; xarray, dask.array and anndata are the
    # notebook side and cost each worker process ~0.7 s to import.
    heavy = _run("import sys, scdata.ingest.worker_tasks; print([m for m in ('xarray', 'dask.array', 'anndata') if m in sys.modules])")
    assert heavy == "[]"


def test_public_names_resolve():
    out = _run(
        "import scdata.ingest as _m, scdata.ingest.driver as _d, scdata\n"  # neither the package nor its module shadows the function
        "print(callable(scdata.ingest), scdata.open_store.__module__, scdata.StoreLayout.__name__, "
        "sorted(set(scdata.__all__) - set(dir(scdata))))"
    )
    assert out == "True scdata.read.xarray_view StoreLayout []"
    import scdata

    for name in scdata.__all__:
        assert getattr(scdata, name) is not None


def _worker_malloc_environ() -> dict:
    import os

    return {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


def test_embedded_workers_keep_reusable_memory():
    from scdata.runtime.cluster import WORKER_MALLOC_ENVIRON, ClusterConfig, dask_client

    with dask_client(ClusterConfig(workers=1, dashboard=False), echo=lambda *_: None) as client:
        (environ,) = client.run(_worker_malloc_environ).values()
    assert environ == {k: str(v) for k, v in WORKER_MALLOC_ENVIRON.items()}


@pytest.mark.parametrize("processes", [True, False])
def test_embedded_cluster_listens_on_loopback_only(processes):
    import psutil

    from scdata.runtime.cluster import ClusterConfig, dask_client

    me = psutil.Process()

    def listening(procs) -> dict[int, str]:
        return {c.laddr.port: c.laddr.ip for p in procs for c in p.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN}

    before_children = {p.pid for p in me.children(recursive=True)}
    before = listening([me])
    said = []
    with dask_client(ClusterConfig(workers=1, processes=processes, dashboard=True), echo=said.append) as client:
        info = client.scheduler_info()
        addresses = [info["address"], *info["workers"]]
        started = [p for p in me.children(recursive=True) if p.pid not in before_children]  # the cluster's processes
        ours = {port: ip for port, ip in listening([me]).items() if port not in before}
        ours.update(listening(started))
    if processes:
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
    assert "dashboard http://127.0.0.1:" in said[0], said
    assert ours and set(ours.values()) <= {"127.0.0.1", "::1"}, ours
