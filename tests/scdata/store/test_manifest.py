"""The manifest as a small head plus a per-commit log: round trip, old stores, constant commit cost."""

import json
import os

import numpy as np

import scdata
from scdata.store.manifest import LOG_NAME, Manifest, manifest_url, read_manifest, write_manifest
from scdata.store.layout import StoreLayout, create_store

from tests.helpers import write_legacy_manifest

GENES = np.asarray([f"ENSG{i:011d}" for i in range(20)])


def _store(tmp_path) -> str:
    store = str(tmp_path / "s.zarr")
    create_store(store, GENES, GENES, ["tissue"], StoreLayout(chunk_cells=16, chunk_genes=8))
    write_manifest(store, Manifest(n_genes=len(GENES)))
    return store


def _commit(manifest: Manifest, store: str, k: int, per_commit: int = 5, reject: tuple = ()) -> None:
    """One commit of ``per_commit`` experiments (and rejections), as the ingest records it."""
    entries = [{"accession": f"SRX{k:05d}{i}", "row_start": 0, "row_stop": 1, "committed_at": "t",
                "source_url": f"gs://bucket/h5ad/SRX{k:05d}{i}.h5ad", "metadata": {"tissue": "blood"}}
               for i in range(per_commit)]
    manifest.record_commits(entries)
    manifest.record_rejections([{"accession": a, "reason": "missing object", "kind": "io", "at": "t"} for a in reject])
    manifest.n_committed += per_commit
    manifest.version += 1
    write_manifest(store, manifest)


def _forbid_the_log(monkeypatch, what: str) -> None:
    """Make any opening of the manifest's log array fail the test, naming ``what`` opened it."""
    from scdata.store import manifest as manifest_module

    def no_log(*args, **kwargs):
        raise AssertionError(f"{what} opened the manifest log")

    monkeypatch.setattr(manifest_module, "_log_array", no_log)


def _lists(m: Manifest):
    return m.version, m.n_committed, m.experiments, m.rejected, m.retried, m.runs


def test_head_and_log_round_trip(tmp_path):
    store = _store(tmp_path)
    manifest = read_manifest(store)
    manifest.runs.append({"started": "now"})
    _commit(manifest, store, 0, reject=("SRXA", "SRXB"))
    _commit(manifest, store, 1, reject=("SRXA",))  # rejected again: one entry, two attempts
    manifest.record_commits([{"accession": "SRXB", "committed_at": "later"}])  # a repaired file
    manifest.version += 1
    write_manifest(store, manifest)
    back = read_manifest(store)
    assert _lists(back) == _lists(manifest)
    assert [(e["accession"], e["attempts"]) for e in back.rejected] == [("SRXA", 2)]
    assert [e["accession"] for e in back.retried] == ["SRXB"]
    _commit(back, store, 2)  # a reader's manifest appends as well
    assert _lists(read_manifest(store)) == _lists(back)
    head = json.load(open(manifest_url(store)))["attributes"]["sczarr_manifest"]
    assert "experiments" not in head and head["log_length"] == 5
    # a log entry past the head's count is scratch (a commit killed before its head)
    log = scdata.store.layout.open_array(store, LOG_NAME, mode="r+")
    scdata.store.layout.scratch_view(log, 6)[5] = "not json"
    assert _lists(read_manifest(store)) == _lists(back)


def test_stores_written_before_the_log_are_read_and_migrated(tmp_path):
    store = _store(tmp_path)
    manifest = read_manifest(store)
    _commit(manifest, store, 0, reject=("SRXA",))
    write_legacy_manifest(store, manifest)  # one document with every list
    legacy = read_manifest(store)
    assert _lists(legacy) == _lists(manifest)
    _commit(legacy, store, 1)  # the next commit logs the lists once, then appends
    _commit(legacy, store, 2)
    back = read_manifest(store)
    assert _lists(back) == _lists(legacy) and len(back.experiments) == 15
    assert back.rejected[0]["accession"] == "SRXA"


def test_a_commit_costs_the_same_however_many_experiments_are_committed(tmp_path):
    store = _store(tmp_path)
    manifest = read_manifest(store)
    head, root = manifest_url(store), os.path.join(store, "zarr.json")
    log_chunks = os.path.join(store, *LOG_NAME.split("/"), "c")
    sizes = {}
    for k in range(300):
        _commit(manifest, store, k)
        if k in (2, 299):
            newest = os.path.join(log_chunks, str(manifest.log_length - 1))
            sizes[k] = (os.path.getsize(head), os.path.getsize(root), os.path.getsize(newest))
    assert len(read_manifest(store).experiments) == 1500
    for early, late in zip(sizes[2], sizes[299]):  # head, consolidated metadata, the commit's log entry
        assert late - early < 16, (sizes[2], sizes[299])  # a few more digits, not 1,490 more experiments


def test_the_head_alone_is_read_without_the_log_and_cannot_be_written(tmp_path, monkeypatch):
    """``read_manifest(lists=False)``: the head's fields as the full read gives them, the log not
    opened (one read per commit saved for a reader that needs only the head), and no way to write
    it back over the store's lists."""
    store = _store(tmp_path)
    manifest = read_manifest(store)
    manifest.runs.append({"started": "now"})
    for k in range(3):
        _commit(manifest, store, k, reject=("SRXA",))
    full = read_manifest(store)
    _forbid_the_log(monkeypatch, "read_manifest(lists=False)")
    head = read_manifest(store, lists=False)
    assert head.head() == full.head() and head.n_committed == 15 and head.runs == [{"started": "now"}]
    assert head.experiments == [] and head.rejected == []
    monkeypatch.undo()
    try:
        write_manifest(store, head)
    except ValueError as exc:
        assert "without its lists" in str(exc)
    else:
        raise AssertionError("a head-only manifest was written")
    assert _lists(read_manifest(store)) == _lists(full)


def test_open_store_reads_the_manifest_head_only(demo_bucket, tmp_path, monkeypatch):
    """A notebook's ``open_store`` needs the committed rows, version and categories, all in the
    head; replaying the log read one chunk per commit (0.13 s of a fresh process at 954k cells)."""
    import anndata as ad

    from tests.conftest import ingest_config

    store = str(tmp_path / "store.zarr")
    config = ingest_config(demo_bucket, store, cell_count=10**9, batch_size=2,
                           cluster=scdata.ClusterConfig(workers=2, processes=False, dashboard=False))
    scdata.ingest(config, echo=lambda *_: None)
    assert read_manifest(store).log_length >= 2

    _forbid_the_log(monkeypatch, "open_store")
    ds = scdata.open_store(store)
    reference = ad.read_zarr(store)
    assert ds.sizes["cell"] == reference.n_obs
    assert list(ds.srx_accession.values) == list(reference.obs["srx_accession"])
    assert list(ds.sel(cell=reference.obs_names[[0, -1]]).cell.values) == list(reference.obs_names[[0, -1]])
    np.testing.assert_array_equal(ds.counts[-5:].values, reference.X[-5:])
