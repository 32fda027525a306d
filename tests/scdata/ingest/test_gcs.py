"""The bucket over HTTP: the demo release served by gcp-storage-emulator, read with real gcsfs."""

import os

import numpy as np
import pytest

import scdata
from scdata.store.layout import close_remote_sessions

from tests.conftest import ingest_config
from tests.helpers import assert_store_matches_sources, store_bytes
from tests.gcs_proxy import GCSProxy
from tests.services import bucket_fs, gcs_emulator, upload_tree

BUCKET = "arc-demo-atlas"


@pytest.fixture()
def emulated_bucket(demo_bucket, monkeypatch):
    # through the proxy, which stores multipart uploads byte for byte (see tests/gcs_proxy.py)
    with gcs_emulator(BUCKET) as endpoint, GCSProxy(endpoint) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        import fsspec

        fsspec.config.conf.pop("gcs", None)
        release = f"{BUCKET}/scbasecount/2026-01-12"
        upload_tree(bucket_fs(proxy.url), demo_bucket, release)
        fsspec.filesystem("gs", token="anon").invalidate_cache()
        yield f"gs://{release}", proxy
        close_remote_sessions()


@pytest.fixture()
def emulated_release(emulated_bucket):
    return emulated_bucket[0]


def test_an_upload_whose_checksum_does_not_match_is_refused(emulated_bucket):
    """Writes to object storage are checked end to end (gcsfs ``consistency="md5"``, set by
    ``scdata.runtime.remote.storage_options``): an upload the service reports with another MD5 fails."""
    from scdata.runtime.remote import url_to_fs

    _, proxy = emulated_bucket
    fs, path = url_to_fs(f"gs://{BUCKET}/checks/ok.bin")
    fs.pipe(path, b"x" * 1000)  # the same bytes answered with their own MD5: accepted
    assert fs.cat(path) == b"x" * 1000
    proxy.corrupt_md5 = True
    with pytest.raises(Exception, match="(?i)md5|checksum"):
        fs.pipe(f"{BUCKET}/checks/corrupt.bin", b"y" * 1000)


def test_ingest_from_emulated_bucket(emulated_release, demo_bucket, tmp_path):
    store = str(tmp_path / "from-gcs.zarr")
    report = scdata.ingest(ingest_config(emulated_release, store, cell_count=10**9), echo=lambda *_: None)
    assert not report.rejected
    assert all(e["source_url"].startswith("gs://") for e in report.manifest.experiments)
    assert_store_matches_sources(store, local_source_root=demo_bucket)
    local = str(tmp_path / "from-disk.zarr")
    scdata.ingest(ingest_config(demo_bucket, local, cell_count=10**9), echo=lambda *_: None)
    assert store_bytes(store) == store_bytes(local)


def test_store_in_bucket_and_missing_object(emulated_release, demo_bucket, tmp_path):
    import fsspec

    fs = fsspec.filesystem("gs", token="anon")
    cfg = scdata.SourceConfig(emulated_release)
    first = scdata.select_experiments(scdata.read_sample_metadata(cfg), cfg, 10**9)[0]
    fs.rm(first.url)
    store = f"gs://{BUCKET}/stores/demo.zarr"
    report = scdata.ingest(ingest_config(emulated_release, store, cell_count=first.obs_count + 1), echo=lambda *_: None)
    assert report.rejected[0]["accession"] == first.accession and "missing object" in report.rejected[0]["reason"]
    assert report.rejected[0]["kind"] == "io"  # a rerun tries it again
    ds = scdata.open_store(store)
    assert ds.sizes["cell"] == report.manifest.n_committed > 0
    exp = report.manifest.experiments[0]
    local_copy = os.path.join(demo_bucket, "h5ad", exp["source_url"].split("/h5ad/", 1)[1])
    from tests.helpers import expected_rows

    rows = ds.counts[exp["row_start"] : exp["row_stop"]].values
    np.testing.assert_array_equal(rows, np.minimum(expected_rows(local_copy, ds.gene.values.astype(str)), 32767))
    assert scdata.store_info(store)["bytes_on_disk"] > 0
