"""Faults of a cluster run on a store in a bucket: real `dask scheduler` and `dask worker`
processes, the release and the store in the GCS emulator, gcsfs reaching it through a proxy
that fails requests when told to. Every run ends with the same store as an uninterrupted one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import pytest

import scdata
from scdata.store.layout import close_remote_sessions

from tests.gcs_proxy import GCSProxy
from tests.helpers import assert_store_matches_sources
from tests.services import DaskProcesses, bucket_fs, bucket_objects, dask_processes, gcs_emulator, upload_tree

BUCKET = "sczarr-faults"
RELEASE = f"{BUCKET}/scbasecount/2026-01-12"
ATTEMPTS = 2
"""sczarr's attempts per operation, on top of gcsfs's 6 tries (~30 s): fewer than the default, so
that a persistent fault is reported within minutes."""
CELL_COUNT = 2000
"""Four of the demo bucket's experiments, one round each."""
WORK_TASKS = ("load_task", "summarize_task", "cell_columns_task", "rows_task", "write_own_task", "write_seam_task")


@dataclass
class Site:
    proxy: GCSProxy
    cluster: DaskProcesses
    fs: object
    """gcsfs straight to the emulator (no proxy), to set up and inspect."""
    env: dict[str, str]

    def store(self, name: str) -> str:
        return f"gs://{BUCKET}/{name}.zarr"

    def command(self, store: str) -> list[str]:
        return [sys.executable, "-m", "scdata", "ingest", "--source", f"gs://{RELEASE}", "--store", store,
                "--cell-count", str(CELL_COUNT), "--batch-size", "1", "--scheduler", self.cluster.address,
                "--chunk-cells", "128", "--chunk-genes", "1024", "--no-progress"]

    def start(self, store: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(store), env={**os.environ, **self.env}, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, store: str) -> None:
        done = subprocess.run(self.command(store), env={**os.environ, **self.env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def committed(self, store: str) -> int:
        """The store's committed rows as its manifest says (-1 before there is one)."""
        try:
            document = json.loads(self.fs.cat_file(_path(store) + "/uns/sczarr_manifest/zarr.json"))
        except FileNotFoundError:
            return -1
        return document["attributes"]["sczarr_manifest"]["n_committed"]

    def scratch_written(self, store: str) -> bool:
        """A round has written chunks of X past the committed rows (and not committed them)."""
        committed = self.committed(store)
        try:
            rows = [int(p.rsplit("/", 1)[1]) for p in self.fs.ls(_path(store) + "/X/c", detail=False)]
        except FileNotFoundError:
            return False
        return committed > 0 and any(i * 128 >= committed for i in rows)


def _path(store: str) -> str:
    return store.removeprefix("gs://")


@pytest.fixture(scope="module")
def site(demo_bucket):
    """Emulator, proxy, a one-worker cluster whose workers reach the bucket through the proxy,
    the demo release uploaded, and a reference store from an uninterrupted ingest."""
    with gcs_emulator(BUCKET) as endpoint, GCSProxy(endpoint) as proxy, pytest.MonkeyPatch.context() as env:
        upload_tree(bucket_fs(proxy.url), demo_bucket, RELEASE)
        fs = bucket_fs(endpoint)
        variables = {"STORAGE_EMULATOR_HOST": proxy.url, "SCZARR_IO_ATTEMPTS": str(ATTEMPTS),
                     "SCZARR_GCS_TOKEN": "anon"}
        for key, value in variables.items():  # this process reads the stores too
            env.setenv(key, value)
        fsspec.config.conf.pop("gcs", None)
        with dask_processes(1, env=variables) as cluster:
            site = Site(proxy, cluster, fs, variables)
            site.run(site.store("reference"))
            assert_store_matches_sources(site.store("reference"), local_source_root=demo_bucket)
            yield site
            close_remote_sessions()  # this process read stores too


def _same_store(site: Site, store: str) -> None:
    """X and obs byte for byte (chunks and documents), and the same experiments in the manifest."""
    reference = site.store("reference")
    assert bucket_objects(site.fs, _path(store)) == bucket_objects(site.fs, _path(reference))
    a, b = scdata.read_manifest(store), scdata.read_manifest(reference)
    strip = lambda es: [{k: v for k, v in e.items() if k != "committed_at"} for e in es]  # noqa: E731
    assert strip(a.experiments) == strip(b.experiments)
    assert (a.n_committed, a.nnz, a.categories, a.rejected) == (b.n_committed, b.nnz, b.categories, [])


def _when(condition, proc: subprocess.Popen, timeout: float = 180) -> bool:
    """Wait until ``condition()`` holds while ``proc`` runs; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _busy(cluster: DaskProcesses, client, name: str) -> bool:
    """Whether the worker called ``name`` holds ingest tasks (loading or writing a round)."""
    address = next((a for a, w in client.scheduler_info()["workers"].items() if w["name"] == name), None)
    keys = client.processing().get(address, []) if address else []
    return any(str(k).startswith(WORK_TASKS) for k in keys)


def _busy_worker_held(site: Site, proc: subprocess.Popen) -> str | None:
    """Hold the bucket's requests while some worker holds a round's tasks, and name that worker.

    Waits (reads flowing) until a worker is busy, holds every request, and checks half a second
    later that the worker still holds its tasks: then they are waiting on a read and cannot finish
    before the worker dies. If the tasks finished in between, or the driver was between rounds,
    the requests are released and it tries again. None if the ingest ended first."""
    with site.cluster.client() as client:
        while proc.poll() is None:
            busy: list[str] = []
            if not _when(lambda: bool(busy.extend(n for n in list(site.cluster.workers)
                                                  if _busy(site.cluster, client, n)) or busy), proc):
                return None
            site.proxy.hold()
            time.sleep(0.5)
            if _busy(site.cluster, client, busy[0]):
                return busy[0]
            site.proxy.release()
    return None


def test_a_killed_worker_s_tasks_rerun_elsewhere(site):
    """Two workers; with every request held, whichever worker holds a round's tasks is killed.
    Those tasks cannot have finished (their reads are waiting), so the scheduler must rerun them
    on the other worker. Killing the busy worker, not a chosen one, keeps the test independent of
    where the scheduler placed the round."""
    store = site.store("worker-killed")
    site.cluster.add_worker(f"second-{len(site.cluster.workers)}")
    proc = site.start(store)
    assert _when(lambda: site.committed(store) > 0, proc), "the ingest finished before its first commit"
    try:
        victim = _busy_worker_held(site, proc)
        assert victim, "the ingest finished before a worker could be caught holding a round's tasks"
        site.cluster.kill_worker(victim)
        assert site.cluster.workers, "the other worker is left to take the tasks over"
    finally:
        site.proxy.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    _same_store(site, store)


def test_a_killed_driver_is_resumed_by_a_rerun(site):
    store = site.store("driver-killed")
    kills = [
        lambda: site.committed(store) > 0,  # just after the first commit
        lambda: site.scratch_written(store),  # mid-round: chunks past the committed rows
    ]
    for condition in kills:
        proc = site.start(store)
        reached = _when(condition, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert reached, "the ingest finished before it could be killed"
    assert 0 < site.committed(store) < site.committed(site.store("reference"))
    site.run(store)
    _same_store(site, store)


def test_a_bucket_outage_is_ridden_out(site):
    store = site.store("outage")
    proc = site.start(store)
    assert _when(lambda: site.committed(store) > 0, proc)
    failed = len(site.proxy.failed)
    site.proxy.outage(6)  # every request answered 503 for 6 s: gcsfs and sczarr retry with backoff
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(site.proxy.failed) > failed
    _same_store(site, store)


@pytest.mark.slow
def test_persistent_errors_stop_the_run_naming_the_object(site, demo_bucket):
    store = site.store("persistent")
    proc = site.start(store)
    assert _when(lambda: site.committed(store) > 0, proc)
    site.proxy.down()
    try:
        out, err = proc.communicate(timeout=500)
    finally:
        site.proxy.up()
    assert proc.returncode == 1, err
    message = next((line for line in err.splitlines() if line.startswith("scdata ingest: ")), err)
    assert re.search(rf"gs://{BUCKET}/\S+", message) and f"failed after {ATTEMPTS} attempts" in message, message
    assert "intact" in message and "rerun" in message, message
    print(message)

    n = site.committed(store)  # what was committed stays readable and right
    ds = scdata.open_store(store)
    reference = scdata.open_store(site.store("reference"))
    assert 0 < ds.sizes["cell"] == n
    np.testing.assert_array_equal(ds.counts.values, reference.counts[:n].values)
    assert list(ds.cell.values) == list(reference.cell.values[:n])
    site.run(store)
    _same_store(site, store)
