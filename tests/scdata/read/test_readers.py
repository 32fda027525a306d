"""Readers polling a store while an ingest commits round after round see one commit each.

Every array's own shape is a committed row count at every moment, and the rows it shows are
final. A commit changes those documents one after another, so a reader that opened them one by
one could meet two commits; the root document's consolidated metadata, rewritten in one put after
each commit, is what ``anndata.read_zarr``, ``xr.open_zarr`` and ``zarr.open_group`` read instead,
so each of their reads shows the shapes of one commit. ``scdata.open_store`` reads the manifest
once and every array up to its row count.
"""

import hashlib
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import xarray as xr
import zarr

import scdata
from scdata.store.layout import categorical_columns, row_arrays


def _digest(values) -> str:
    return hashlib.blake2b(np.ascontiguousarray(np.asarray(values, dtype=np.int16)).tobytes(), digest_size=16).hexdigest()


def _zarr_view(store: str) -> dict:
    """The store as a plain zarr user opens it (through the consolidated metadata): every shape
    is from one document, and the categories cover the codes."""
    root = zarr.open_group(store, mode="r")
    x = root["X"]
    codes_fit = all(
        int(np.max(root[f"obs/{c}/codes"][:], initial=-1)) < root[f"obs/{c}/categories"].shape[0]
        for c in categorical_columns(root)
    )
    return {"x_rows": x.shape[0], "x_digest": _digest(x[:]), "obs": {a.path: a.shape[0] for a in row_arrays(root)},
            "cells": np.asarray(root["obs/_index"][:], dtype=object), "codes_fit": codes_fit}


def _own_documents_view(store: str) -> dict:
    """Each array read from its own document, as a reader that skips the consolidated copy does:
    X's shape is read before and after the obs arrays, so a read that no commit crossed can
    compare them (obs grows first, so it is never behind X)."""
    root = zarr.open_group(store, mode="r", use_consolidated=False)
    x_rows = root["X"].shape[0]
    obs = [a.shape[0] for a in row_arrays(root)]
    return {"x_rows": x_rows, "obs": obs, "x_rows_after": zarr.open_array(store, path="X", mode="r").shape[0]}


def _anndata_view(store: str):
    """``(rows, X digest, cell ids)``; anndata itself refuses obs and X of different lengths."""
    adata = ad.read_zarr(store)
    if adata.X is None:  # before the first commit: anndata reads an empty X as none
        assert adata.n_obs == 0
        return 0, _digest(np.zeros((0, adata.n_vars))), np.asarray([], dtype=object)
    return adata.n_obs, _digest(adata.X), np.asarray(adata.obs_names, dtype=object)


def _xarray_view(store: str):
    ds = scdata.open_store(store)
    return ds.sizes["cell"], _digest(ds.counts.values), ds.cell.values


def _plain_xarray_view(store: str):
    """The root and obs through plain xarray, in one ``xr.open_datatree`` (one read of the root's
    consolidated metadata, so one commit). Two ``xr.open_zarr`` calls, one per group, are two
    reads: each shows one commit, but a commit may land between them."""
    tree = xr.open_datatree(store, engine="zarr", chunks={})
    x = tree["X"]
    return x.sizes["cell"], _digest(x.values), tree["obs"]["_index"].values


def test_readers_during_ingest_see_committed_rows(demo_bucket, tmp_path):
    store = str(tmp_path / "s.zarr")
    command = [sys.executable, "-m", "scdata", "ingest", "--source", demo_bucket, "--store", store,
               "--cell-count", "1000000000", "--batch-size", "1", "--workers", "1", "--chunk-cells", "128",
               "--chunk-genes", "1024", "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    views = []
    while proc.poll() is None:
        if scdata.read_manifest(store) is None:  # the planning pass is still creating the store
            time.sleep(0.05)
            continue
        views.append((_zarr_view(store), _own_documents_view(store), _anndata_view(store), _xarray_view(store),
                      _plain_xarray_view(store)))
    assert proc.returncode == 0, proc.stderr.read()

    manifest = scdata.read_manifest(store)
    commits = [0] + [e["row_stop"] for e in manifest.experiments]  # one experiment per round
    x = zarr.open_array(store, path="X", mode="r")[:]
    final_cells = np.asarray(zarr.open_array(store, path="obs/_index", mode="r")[:], dtype=object)
    prefix = {n: _digest(x[:n]) for n in commits}

    def committed_prefix(n: int, digest: str, cells) -> None:
        assert n in prefix, f"{n} rows is not a committed row count ({commits})"
        assert digest == prefix[n] and list(cells) == list(final_cells[:n])

    for plain, own, annotated, labelled, plain_xr in views:
        committed_prefix(plain["x_rows"], plain["x_digest"], plain["cells"])
        assert set(plain["obs"].values()) == {plain["x_rows"]} and plain["codes_fit"], plain  # one commit
        assert set(own["obs"]) | {own["x_rows"]} <= set(commits)
        if own["x_rows"] == own["x_rows_after"]:  # no commit grew X during the read
            assert min(own["obs"]) >= own["x_rows"], own  # obs is never behind X
        committed_prefix(*annotated)
        committed_prefix(*labelled)
        committed_prefix(*plain_xr)
    seen = {plain["x_rows"] for plain, *_ in views}
    assert seen & set(commits[1:-1]), f"no read fell between two commits ({len(views)} reads): {seen}"
    print(f"{len(views)} polls, every read at one commit; saw {sorted(seen)}")


def test_a_node_being_replaced_is_left_out_of_the_consolidated_copy(tmp_path):
    """What ``consolidate(..., exclude=)`` is for: before a derived array is deleted and written
    again, readers of the consolidated copy stop seeing it; its own document is untouched."""
    from scdata.store.manifest import Manifest, write_manifest
    from scdata.store.layout import StoreLayout, consolidate, create_store, open_root

    store = str(tmp_path / "s.zarr")
    genes = np.asarray([f"ENSG{i:011d}" for i in range(10)])
    create_store(store, genes, genes, ["tissue"], StoreLayout(chunk_cells=4, chunk_genes=4))
    write_manifest(store, Manifest(n_genes=len(genes)))
    assert "gene_symbol" in zarr.open_group(store, mode="r")["var"]
    consolidate(open_root(store, mode="r+"), exclude=["var/gene_symbol", "obs/tissue"])
    through_copy = zarr.open_group(store, mode="r")
    assert "gene_symbol" not in through_copy["var"] and "tissue" not in through_copy["obs"]
    assert "codes" in zarr.open_group(store, mode="r", use_consolidated=False)["obs/tissue"]
