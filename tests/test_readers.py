"""Readers polling a store while an ingest commits round after round see committed rows only.

Every array's shape is a committed row count at every moment, and the rows it shows are final.
A reader that opens several arrays one after another (``anndata.read_zarr``) can still read some
at one commit and the rest at the next: each array is its own metadata document, so no commit
changes them all at once. anndata then refuses the mismatch (it never returns scratch rows);
``scdata.open_store`` reads the manifest once and every array up to its row count, so it never
mixes commits.
"""

import hashlib
import re
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import zarr

import scdata
from scdata.store import categorical_columns, row_arrays

ROW_MISMATCH = re.compile(r"rows|length", re.IGNORECASE)


def _digest(values) -> str:
    return hashlib.blake2b(np.ascontiguousarray(np.asarray(values, dtype=np.int16)).tobytes(), digest_size=16).hexdigest()


def _zarr_view(store: str) -> dict | None:
    """Each array read on its own, as a plain zarr user would: X's shape is read before and after
    the obs arrays, so a read that no commit crossed can compare them."""
    root = zarr.open_group(store, mode="r")
    x = root["X"]
    x_rows = x.shape[0]
    x_digest = _digest(x[:])
    obs = {a.path: a.shape[0] for a in row_arrays(root)}
    cells = np.asarray(root["obs/_index"][:], dtype=object)
    # Categories grow before the codes that use them, never after.
    codes_fit = all(
        int(np.max(root[f"obs/{c}/codes"][:], initial=-1)) < root[f"obs/{c}/categories"].shape[0]
        for c in categorical_columns(root)
    )
    return {"x_rows": x_rows, "x_digest": x_digest, "obs": obs, "cells": cells, "codes_fit": codes_fit,
            "x_rows_after": zarr.open_array(store, path="X", mode="r").shape[0]}


def _anndata_view(store: str):
    """``(rows, X digest, cell ids)``, or the message of a read that met two commits."""
    try:
        adata = ad.read_zarr(store)
    except ValueError as exc:  # anndata checks that obs and X have the same rows
        assert ROW_MISMATCH.search(str(exc)), exc
        return str(exc)
    if adata.X is None:  # before the first commit: anndata reads an empty X as none
        assert adata.n_obs == 0
        return 0, _digest(np.zeros((0, adata.n_vars))), np.asarray([], dtype=object)
    return adata.n_obs, _digest(adata.X), np.asarray(adata.obs_names, dtype=object)


def _xarray_view(store: str):
    ds = scdata.open_store(store)
    return ds.sizes["cell"], _digest(ds.counts.values), ds.cell.values


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
        views.append((_zarr_view(store), _anndata_view(store), _xarray_view(store)))
    assert proc.returncode == 0, proc.stderr.read()

    manifest = scdata.read_manifest(store)
    commits = [0] + [e["row_stop"] for e in manifest.experiments]  # one experiment per round
    x = zarr.open_array(store, path="X", mode="r")[:]
    final_cells = np.asarray(zarr.open_array(store, path="obs/_index", mode="r")[:], dtype=object)
    prefix = {n: _digest(x[:n]) for n in commits}

    def committed_prefix(n: int, digest: str, cells) -> None:
        assert n in prefix, f"{n} rows is not a committed row count ({commits})"
        assert digest == prefix[n] and list(cells) == list(final_cells[:n])

    straddles = 0
    for plain, annotated, labelled in views:
        committed_prefix(plain["x_rows"], plain["x_digest"], final_cells[: plain["x_rows"]])
        assert set(plain["obs"].values()) <= set(commits) and plain["codes_fit"]
        assert list(plain["cells"]) == list(final_cells[: len(plain["cells"])])
        if plain["x_rows"] == plain["x_rows_after"]:  # no commit grew X during the read
            assert min(plain["obs"].values()) >= plain["x_rows"], plain  # obs is never behind X
        if isinstance(annotated, str):  # arrays read at two commits: both counts are commits
            straddles += 1
            assert {int(n) for n in re.findall(r"\d+", annotated)} <= set(commits), annotated
        else:
            committed_prefix(*annotated)
        committed_prefix(*labelled)
    seen = {plain["x_rows"] for plain, _, _ in views}
    assert seen & set(commits[1:-1]), f"no read fell between two commits ({len(views)} reads): {seen}"
    print(f"{len(views)} polls, {straddles} anndata reads crossed a commit, saw {sorted(seen)}")
