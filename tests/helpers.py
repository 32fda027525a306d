"""Reference checks shared by the tests: the store against anndata reading the sources."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import anndata as ad
import numpy as np
import zarr

import scdata


def expected_rows(h5ad_path: str, gene_ids: np.ndarray) -> np.ndarray:
    """The source file's rounded counts reindexed onto the store's gene axis (not saturated)."""
    source = ad.read_h5ad(h5ad_path)
    index = {g: i for i, g in enumerate(gene_ids)}
    out = np.zeros((source.n_obs, len(gene_ids)), dtype=np.int64)
    cols = np.array([index.get(g, -1) for g in source.var_names])
    keep = cols >= 0
    out[:, cols[keep]] = np.rint(source.X.toarray()[:, keep]).astype(np.int64)
    return out


def assert_store_matches_sources(store: str, local_source_root: str | None = None) -> None:
    """Every committed row equals its source row (read by anndata), and the obs agree."""
    ds = scdata.open_store(store)
    manifest = scdata.read_manifest(store)
    gene_ids = ds.gene.values.astype(str)
    assert ds.sizes["cell"] == manifest.n_committed
    for exp in manifest.experiments:
        url = exp["source_url"]
        if local_source_root is not None:
            url = os.path.join(local_source_root, "h5ad", url.split("/h5ad/", 1)[1])
        rows = ds.counts[exp["row_start"] : exp["row_stop"]].values
        expected = expected_rows(url, gene_ids)
        np.testing.assert_array_equal(rows, np.minimum(expected, 32767), err_msg=exp["accession"])
        np.testing.assert_array_equal(ds.umi_count.values[exp["row_start"] : exp["row_stop"]], expected.sum(axis=1))
        np.testing.assert_array_equal(ds.total_counts.values[exp["row_start"] : exp["row_stop"]], rows.sum(axis=1))
        source = ad.read_h5ad(url, backed="r")
        cells = ds.cell.values[exp["row_start"] : exp["row_stop"]].astype(str)
        assert list(cells) == [f"{exp['accession']}:{b}" for b in source.obs_names]
        source.file.close()


def rewrite_h5ad(path: str, edit) -> None:
    """Rewrite an h5ad after ``edit(adata)`` (which edits in place or returns a new AnnData)."""
    adata = ad.read_h5ad(path)
    edited = edit(adata)
    adata = adata if edited is None else edited  # not `or`: an empty AnnData is falsy
    os.remove(path)
    adata.write_h5ad(path, compression="gzip")


def store_bytes(store: str, arrays=("X", "obs")) -> dict[str, bytes]:
    """Every chunk and metadata file of the named arrays, by relative path."""
    out = {}
    for array in arrays:
        base = os.path.join(store, array)
        for dirpath, _, files in os.walk(base):
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, store)] = f.read()
    return out


def assert_consolidated_current(store: str, scratch) -> None:
    """The root document's consolidated metadata is what ``zarr.consolidate_metadata`` makes of
    the store's own documents now (on a copy of them): nothing listed that is gone or changed,
    nothing left out."""
    copy = os.path.join(str(scratch), "consolidation-reference.zarr")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy, ignore=lambda _, names: [n for n in names if n == "c"])  # documents only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not part of the Zarr format 3 specification"
        zarr.consolidate_metadata(copy)
    with open(os.path.join(store, "zarr.json")) as ours, open(os.path.join(copy, "zarr.json")) as reference:
        assert json.load(ours) == json.load(reference)


def write_legacy_manifest(store: str, manifest, edit=None) -> None:
    """Rewrite a local store's manifest as stores did before the log: one document (format 1)
    holding every list, ``edit(attributes)`` applied first; the log stays behind, unreferenced."""
    from scdata.store.manifest import LEGACY_FORMAT, manifest_url

    attributes = {name: getattr(manifest, name) for name in
                  ("version", "n_committed", "n_genes", "gene_axis_digest", "nnz", "max_value", "experiments",
                   "rejected", "retried", "runs", "categories")}
    attributes["format"] = LEGACY_FORMAT
    if edit is not None:
        edit(attributes)
    document = {"zarr_format": 3, "node_type": "group",
                "attributes": {"encoding-type": "dict", "encoding-version": "0.1.0", "sczarr_manifest": attributes}}
    with open(manifest_url(store), "w") as f:
        json.dump(document, f)
