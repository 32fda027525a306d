"""Rejected experiments: I/O faults retried by a rerun, content faults only on request, and
top-ups along the seeded order that meet the cell budget whatever the rounds."""

import os
import pickle
import shutil

import numpy as np

import scdata
from scdata.source.h5ad import ExperimentError
from scdata.store.manifest import CONTENT, IO, Manifest, rejection_kind
from scdata.source.bucket import take_budget

from tests.conftest import h5ad_dir, ingest_config
from tests.helpers import assert_store_matches_sources, rewrite_h5ad, store_bytes, write_legacy_manifest

ALL = 10**9


def _order(release: str) -> list:
    cfg = scdata.SourceConfig(release)
    return scdata.select_experiments(scdata.read_sample_metadata(cfg), cfg, ALL)


def _path(release: str, accession: str) -> str:
    return os.path.join(h5ad_dir(release), f"{accession}.h5ad")


def _negate_first_count(adata) -> None:
    adata.X.data[0] = -3


def _ingest(release: str, store: str, messages: list | None = None, **overrides) -> scdata.IngestReport:
    echo = (lambda *_: None) if messages is None else messages.append
    return scdata.ingest(ingest_config(release, store, **overrides), echo=echo)


def _accessions(store: str) -> list[str]:
    return [e["accession"] for e in scdata.read_manifest(store).experiments]


def test_kind_survives_pickling_and_old_manifests_are_classified():
    exc = pickle.loads(pickle.dumps(ExperimentError("SRX1", "file:///a.h5ad", "not a readable HDF5 file", IO)))
    assert (exc.accession, exc.problem, exc.kind) == ("SRX1", "not a readable HDF5 file", IO)
    assert ExperimentError("SRX1", "u", "3 counts are negative").kind == CONTENT
    legacy = [  # entries written before rejections had a kind
        {"accession": "A", "reason": "missing object: gs://b/A.h5ad does not exist"},
        {"accession": "B", "reason": "not a readable HDF5 file (truncated or corrupt?): …"},
        {"accession": "C", "reason": "cannot read 'X': …"},
        {"accession": "D", "reason": "2 counts are negative (smallest -3); counts must be >= 0"},
        {"accession": "E", "reason": "not a readable HDF5 file", "kind": CONTENT},  # a recorded kind wins
    ]
    assert [rejection_kind(e) for e in legacy] == [IO, IO, IO, CONTENT, CONTENT]
    manifest = Manifest(rejected=legacy)
    assert manifest.lasting_rejections(retry_content=False) == {"D", "E"}
    assert manifest.lasting_rejections(retry_content=True) == set()


def test_repaired_io_rejection_is_committed_by_a_rerun(demo_bucket, mutable_bucket, tmp_path):
    # A retried experiment is appended after every row already committed. Its rows land where an
    # undamaged run puts them only if it is the last experiment of the seeded selection and no
    # top-up was committed after it: hence every experiment (the bucket has none left to top up
    # with) and the last one in seeded order damaged. Then the stores must be byte-identical.
    order = _order(mutable_bucket)
    last = order[-1].accession
    target = _path(mutable_bucket, last)
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    store, reference = str(tmp_path / "s.zarr"), str(tmp_path / "reference.zarr")
    first = _ingest(mutable_bucket, store, cell_count=ALL)
    assert [(r["accession"], r["kind"]) for r in first.rejected] == [(last, IO)]
    assert first.top_ups == []  # nothing left in the bucket

    # As a manifest from before rejections had a kind: the reason alone marks it as I/O.
    def drop_kinds(attributes):
        for entry in attributes["rejected"]:
            del entry["kind"]

    write_legacy_manifest(store, scdata.read_manifest(store), drop_kinds)  # and in the one-document format

    shutil.copyfile(_path(demo_bucket, last), target)  # repaired
    messages = []
    second = _ingest(mutable_bucket, store, messages, cell_count=ALL)
    assert second.added == [last] and not second.rejected
    assert any("Retrying 1 rejected" in m and last in m for m in messages)
    manifest = scdata.read_manifest(store)
    assert manifest.rejected == [] and [e["accession"] for e in manifest.retried] == [last]
    assert manifest.retried[0]["committed_at"]

    _ingest(demo_bucket, reference, cell_count=ALL)
    assert _accessions(store) == _accessions(reference) == [e.accession for e in order]
    assert store_bytes(store) == store_bytes(reference)
    assert_store_matches_sources(store)


def test_content_rejection_is_retried_only_on_request(demo_bucket, mutable_bucket, tmp_path):
    order = _order(mutable_bucket)
    o0, bad, o2 = (e.accession for e in order[:3])
    budget = order[0].obs_count + 1  # selects o0 and bad
    rewrite_h5ad(_path(mutable_bucket, bad), _negate_first_count)
    store = str(tmp_path / "s.zarr")

    messages = []
    first = _ingest(mutable_bucket, store, messages, cell_count=budget)
    assert [(r["accession"], r["kind"]) for r in first.rejected] == [(bad, CONTENT)]
    assert _accessions(store) == [o0, o2] and first.top_ups == [o2]  # topped up past the rejection
    assert first.manifest.n_committed >= budget
    assert "1 of them top-ups" in messages[-1]
    version = first.manifest.version

    messages = []
    again = _ingest(mutable_bucket, store, messages, cell_count=budget)
    assert again.added == [] and again.rejected == [] and bad in again.skipped  # not even read again
    assert not any(bad in m for m in messages)
    assert scdata.read_manifest(store).version == version

    unchanged = _ingest(mutable_bucket, store, cell_count=budget, retry_rejected=True)
    assert [r["accession"] for r in unchanged.rejected] == [bad]  # read again, still negative
    manifest = scdata.read_manifest(store)
    assert [(e["accession"], e["attempts"]) for e in manifest.rejected] == [(bad, 2)]
    assert _accessions(store) == [o0, o2]

    shutil.copyfile(_path(demo_bucket, bad), _path(mutable_bucket, bad))  # fixed
    fixed = _ingest(mutable_bucket, store, cell_count=budget, retry_rejected=True)
    assert fixed.added == [bad] and fixed.top_ups == []
    manifest = scdata.read_manifest(store)
    assert _accessions(store) == [o0, o2, bad]  # after the rows already committed
    assert manifest.rejected == [] and [e["accession"] for e in manifest.retried] == [bad]
    assert_store_matches_sources(store)


def test_top_ups_meet_the_budget_whatever_the_rounds(mutable_bucket, tmp_path):
    order = _order(mutable_bucket)
    negative, missing = order[1].accession, order[3].accession
    budget = sum(e.obs_count for e in order[:3]) + 1  # the undamaged selection is order[:4]
    rewrite_h5ad(_path(mutable_bucket, negative), _negate_first_count)
    os.remove(_path(mutable_bucket, missing))
    expected = take_budget(order, budget, {negative, missing})
    assert sum(e.obs_count for e in expected) >= budget, "the demo bucket should have enough cells"

    one_go = str(tmp_path / "one-go.zarr")
    report = _ingest(mutable_bucket, one_go, cell_count=budget, batch_size=3)
    assert _accessions(one_go) == [e.accession for e in expected]
    assert report.manifest.n_committed >= budget
    assert report.top_ups == [e.accession for e in expected if e not in order[:4]] != []
    assert {r["accession"]: r["kind"] for r in report.rejected} == {negative: CONTENT, missing: IO}

    # The same rejections met in other rounds, over two runs (the second retries the I/O fault,
    # which fails again), give the same store: the choice depends on the rejections alone.
    grown = str(tmp_path / "grown.zarr")
    first = _ingest(mutable_bucket, grown, cell_count=budget - 1, batch_size=1)  # selects order[:3]
    assert {r["accession"] for r in first.rejected} == {negative, missing}  # the top-up order[3] failed too
    second = _ingest(mutable_bucket, grown, cell_count=budget, batch_size=1)
    assert [r["accession"] for r in second.rejected] == [missing]
    assert [(e["accession"], e["attempts"]) for e in scdata.read_manifest(grown).rejected if e["accession"] == missing] == [(missing, 2)]
    assert _accessions(grown) == _accessions(one_go)
    assert store_bytes(grown) == store_bytes(one_go)
    assert_store_matches_sources(one_go)
    assert np.all(scdata.open_store(one_go).srx_accession.values != negative)
