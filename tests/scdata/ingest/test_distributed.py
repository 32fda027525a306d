"""The distributed path: real `dask scheduler` and two `dask worker` processes."""

import subprocess
import sys
import time

import scdata
from scdata.ingest.load_window import WindowPolicy

from tests.conftest import ingest_config
from tests.helpers import assert_store_matches_sources, store_bytes
from tests.services import dask_cluster, dask_processes


def test_existing_scheduler_gives_same_store(demo_bucket, tmp_path):
    local, remote_run = str(tmp_path / "local.zarr"), str(tmp_path / "remote.zarr")
    scdata.ingest(ingest_config(demo_bucket, local, cell_count=10**9), echo=lambda *_: None)
    messages = []
    with dask_cluster(2) as address:
        config = ingest_config(demo_bucket, remote_run, cell_count=10**9, cluster=scdata.ClusterConfig(scheduler=address))
        scdata.ingest(config, echo=messages.append)
    assert any(address in m and "2 workers" in m for m in messages)
    assert store_bytes(remote_run) == store_bytes(local)
    assert_store_matches_sources(remote_run)


def test_store_is_the_same_for_one_worker_and_sixteen(demo_bucket, tmp_path):
    """Sixteen worker threads keep 32 loads in flight and units of one experiment write while the
    one before commits (seams after its writes), and experiments above half the mean size start
    loading ahead of their turn: the store is byte for byte that of one worker."""
    one, sixteen = str(tmp_path / "one.zarr"), str(tmp_path / "sixteen.zarr")
    quiet = lambda *_: None  # noqa: E731
    scdata.ingest(ingest_config(demo_bucket, one, cell_count=10**9, batch_size=1,
                                cluster=scdata.ClusterConfig(workers=1, dashboard=False)), echo=quiet)
    scdata.ingest(ingest_config(demo_bucket, sixteen, cell_count=10**9, batch_size=1,
                                cluster=scdata.ClusterConfig(workers=16, processes=False, dashboard=False),
                                window=WindowPolicy(early_factor=0.5)), echo=quiet)
    assert store_bytes(sixteen) == store_bytes(one)
    a, b = scdata.read_manifest(one), scdata.read_manifest(sixteen)
    assert [e["row_start"] for e in a.experiments] == [e["row_start"] for e in b.experiments]
    assert_store_matches_sources(sixteen)


def test_a_scheduler_restarted_mid_ingest_ends_in_the_same_store(demo_bucket, tmp_path):
    """``kill -9`` of the scheduler after the first commit, a new one on the same address: the
    interrupted run stops saying the committed rows are intact (or rides it out), and a rerun
    ends in the store of an uninterrupted ingest, byte for byte."""
    reference, store = str(tmp_path / "reference.zarr"), str(tmp_path / "restarted.zarr")
    scdata.ingest(ingest_config(demo_bucket, reference, cell_count=10**9, batch_size=1), echo=lambda *_: None)
    with dask_processes(2) as cluster:
        command = [sys.executable, "-m", "scdata", "ingest", "--source", demo_bucket, "--store", store,
                   "--cell-count", str(10**9), "--batch-size", "1", "--scheduler", cluster.address,
                   "--chunk-cells", "128", "--chunk-genes", "1024", "--no-progress"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not _committed(store):
            time.sleep(0.02)
        assert proc.poll() is None and _committed(store), "the ingest ended before its first commit"
        cluster.restart_scheduler()
        out, err = proc.communicate(timeout=300)
        if proc.returncode:
            message = err.strip().splitlines()[-1]
            assert "intact" in message and "rerun" in message, err
            assert 0 < scdata.read_manifest(store).n_committed < scdata.read_manifest(reference).n_committed
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
    assert store_bytes(store) == store_bytes(reference)
    a, b = scdata.read_manifest(store), scdata.read_manifest(reference)
    assert [(e["accession"], e["row_start"]) for e in a.experiments] == [(e["accession"], e["row_start"])
                                                                         for e in b.experiments]
    assert_store_matches_sources(store)


def _committed(store: str) -> int:
    try:
        manifest = scdata.read_manifest(store)
    except Exception:  # mid-creation
        return 0
    return manifest.n_committed if manifest is not None else 0
