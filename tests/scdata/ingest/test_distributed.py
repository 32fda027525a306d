"""The distributed path: real `dask scheduler` and two `dask worker` processes."""

import scdata
from scdata.ingest.load_window import WindowPolicy

from tests.conftest import ingest_config
from tests.helpers import assert_store_matches_sources, store_bytes
from tests.services import dask_cluster


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
