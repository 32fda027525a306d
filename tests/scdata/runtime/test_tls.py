"""An ingest through a TLS-secured Dask cluster: certificates made here, `dask scheduler
--protocol tls` and a `dask worker` presenting them, scdata given the client's certificate by
Dask's own settings and by its --tls-* options."""

import os
import subprocess
import sys

from tests.helpers import assert_store_matches_sources
from tests.services import dask_processes, make_tls_files


def _ingest(source: str, store: str, scheduler: str, cell_count: int, *extra: str, env: dict | None = None):
    command = [sys.executable, "-m", "scdata", "ingest", "--source", source, "--store", store, "--scheduler", scheduler,
               "--cell-count", str(cell_count), "--chunk-cells", "128", "--chunk-genes", "1024", "--no-progress",
               *extra]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_ingest_through_a_tls_scheduler(demo_bucket, tmp_path):
    tls = make_tls_files(str(tmp_path))
    store = str(tmp_path / "tls.zarr")
    with dask_processes(1, tls=tls) as cluster:
        assert cluster.address.startswith("tls://")

        refused = _ingest(demo_bucket, store, cluster.address, 700)  # no certificate: a clear refusal
        assert refused.returncode == 1 and "--tls-ca-file" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr

        dask_settings = {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": tls.ca,
                         "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": tls.cert,
                         "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": tls.key}
        first = _ingest(demo_bucket, store, cluster.address, 700, env=dask_settings)
        assert first.returncode == 0, first.stderr
        assert f"using scheduler {cluster.address} (1 workers)" in first.stdout

        grown = _ingest(demo_bucket, store, cluster.address, 1500, *tls.cli_args())  # appends to the store
        assert grown.returncode == 0, grown.stderr
        assert "Resuming" in grown.stdout
    assert_store_matches_sources(store)
