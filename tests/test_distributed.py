"""The distributed path: real `dask scheduler` and two `dask worker` processes."""

import scdata

from .conftest import ingest_config
from .helpers import assert_store_matches_sources, store_bytes
from .services import dask_cluster


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
