"""The driver's commit (``scdata.store.writer.StoreWriter``): what it writes equals what a fresh reader
and ``consolidate`` see, per-experiment parts equal a per-cell frame, and on a bucket a commit is
a few waves of requests, not one request after another."""

import numpy as np
import pandas as pd
import pytest

from scdata.store.writer import ObsPart, StoreWriter
from scdata.store.manifest import Manifest, read_manifest, write_manifest
from scdata.store.layout import StoreLayout, close_remote_sessions, consolidate, create_store, open_root, read_strings

from tests.gcs_proxy import GCSProxy
from tests.services import gcs_emulator

COLUMNS = ["tissue", "cell_type"]


def _new_store(url: str) -> None:
    genes = np.asarray([f"ENSG{i:011d}" for i in range(50)])
    create_store(url, genes, genes, COLUMNS, StoreLayout(obs_chunk=8))
    write_manifest(url, Manifest(n_genes=len(genes)))


def _parts(seed: int) -> list[ObsPart]:
    rng = np.random.default_rng(seed)
    parts = []
    for i, (n, tissue) in enumerate([(5, "blood"), (7, None), (3, "lung"), (6, float("nan"))]):
        barcodes = np.asarray([f"BC{seed}-{i}-{j}" for j in range(n)], dtype=object)
        columns = {"_index": np.asarray([f"SRX{i}:{b}" for b in barcodes], dtype=object), "barcode": barcodes,
                   "umi_count": rng.integers(1, 900, n), "total_counts": rng.integers(1, 900, n),
                   "gene_count": rng.integers(1, 50, n)}
        if i != 1:  # per-cell annotations in some experiments, with a missing value
            columns["cell_type"] = np.asarray(rng.choice(["T", "B", None], n), dtype=object)
        parts.append(ObsPart(n, columns, {"srx_accession": f"SRX{i}", "tissue": tissue,
                                          "cell_type": "from metadata"}))
    return parts


def _as_frame(parts: list[ObsPart]) -> pd.DataFrame:
    frames = []
    for p in parts:
        frame = pd.DataFrame(p.columns)
        for column, value in p.constants.items():
            if column not in frame.columns:
                frame[column] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _commit(writer: StoreWriter, url: str, manifest: Manifest, rows) -> None:
    start = manifest.n_committed
    manifest.categories = writer.write_obs_rows(start, rows)
    n = sum(p.n for p in rows) if isinstance(rows, list) else len(rows)
    writer.grow_rows(start + n)
    manifest.record_commits([{"accession": f"unit-{start}", "row_start": start, "row_stop": start + n,
                              "committed_at": "t", "metadata": {}, "counters": {}}])
    manifest.n_committed, manifest.version = start + n, manifest.version + 1
    write_manifest(url, manifest, writer)


def _obs(url: str) -> dict:
    obs = open_root(url)["obs"]
    out = {name: list(read_strings(obs[name])) for name in ("_index", "barcode")}
    out.update({name: obs[name][:].tolist() for name in ("umi_count", "total_counts", "gene_count")})
    for column in ["srx_accession", *COLUMNS]:
        out[column] = (obs[f"{column}/codes"][:].tolist(), list(read_strings(obs[f"{column}/categories"])))
    return out


def test_parts_equal_the_frame_and_the_copy_equals_a_fresh_consolidation(tmp_path):
    stores = {kind: str(tmp_path / f"{kind}.zarr") for kind in ("parts", "frame")}
    for kind, url in stores.items():
        _new_store(url)
        writer, manifest = StoreWriter(url), read_manifest(url)
        for seed in (0, 1):  # a second commit re-uses the categories and crosses an obs chunk
            parts = _parts(seed)
            _commit(writer, url, manifest, parts if kind == "parts" else _as_frame(parts))
    assert _obs(stores["parts"]) == _obs(stores["frame"])
    obs = _obs(stores["parts"])
    codes, categories = obs["tissue"]
    assert categories == ["blood", "lung"] and codes[5:12] == [-1] * 7  # None and NaN are missing, not "None"
    codes, categories = obs["cell_type"]  # per-cell values win; the metadata's where there are none
    assert codes[5:12] == [categories.index("from metadata")] * 7 and categories.count("from metadata") == 1
    assert read_manifest(stores["parts"]).n_committed == 42
    writer = StoreWriter(stores["parts"])  # reopened: the categories are read back
    assert writer.write_obs_rows(42, []) == {"srx_accession": 4, "tissue": 2, "cell_type": 3}

    url = stores["parts"]
    copy = (tmp_path / "parts.zarr" / "zarr.json").read_bytes()
    consolidate(open_root(url, mode="r+"))  # from every node's own document, listed afresh
    assert (tmp_path / "parts.zarr" / "zarr.json").read_bytes() == copy


@pytest.fixture()
def bucket(monkeypatch):
    with gcs_emulator("commits") as endpoint, GCSProxy(endpoint) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setenv("SCZARR_GCS_TOKEN", "anon")
        yield proxy
        close_remote_sessions()


def test_a_commit_on_a_bucket_costs_the_same_few_requests_every_time(bucket):
    url = "gs://commits/store.zarr"
    _new_store(url)
    writer, manifest = StoreWriter(url), read_manifest(url)
    counts = []
    for seed in range(4):
        before = bucket.requests
        _commit(writer, url, manifest, _parts(seed))
        counts.append(bucket.requests - before)
    # obs rows, categories, shapes, log, head and copy: ~2 requests per obs array, re-reading nothing
    assert max(counts[1:]) <= 60, counts
    assert counts[-1] <= counts[1] + 4, counts  # the same whatever was committed before
    assert _obs(url)["srx_accession"][1] == ["SRX0", "SRX1", "SRX2", "SRX3"]
    assert read_manifest(url).n_committed == 4 * 21
