"""Reading a store: a lazy labelled xarray Dataset, and in-memory AnnData for scanpy users.

Both show committed rows only (``[0, n_committed)`` per the manifest), whatever scratch an
ingest in progress has written beyond them.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr
import zarr

from .manifest import Manifest, read_manifest
from .store import OBS_NUMERIC_COLUMNS, OBS_STRING_COLUMNS, categorical_columns, open_root, read_categories


class StoreError(ValueError):
    """The path is not a readable sczarr store."""


def _committed(store: str) -> tuple[zarr.Group, Manifest]:
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(f"{store} has no manifest (uns/sczarr_manifest): not a sczarr store, or its ingest never committed a round")
    return open_root(store, mode="r"), manifest


def _lazy(arr: zarr.Array, n: int) -> da.Array:
    return da.from_zarr(arr)[:n]


def _decode(codes: da.Array, categories: list[str]) -> da.Array:
    lookup = np.asarray(categories + [""], dtype=object)  # code -1 (missing) -> ""
    return codes.map_blocks(lambda c: lookup[c], dtype=object)


def open_store(store: str) -> xr.Dataset:
    """The committed cells as a lazy ``xarray.Dataset`` (dims ``cell``, ``gene``).

    ``counts`` is int16 and dask-backed; ``cell``/``gene`` are index coordinates (loaded, so
    ``.sel`` works); every per-cell variable (``srx_accession``, ``umi_count``, ``tissue``…) is
    lazy. The manifest version is in ``attrs`` so derived results can say what they came from.
    """
    root, manifest = _committed(store)
    n = manifest.n_committed
    obs, var = root["obs"], root["var"]
    gene_ids = np.asarray(var["_index"][:], dtype=object)
    cell_ids = np.asarray(obs["_index"][:n], dtype=object) if n else np.array([], dtype=object)
    data_vars: dict = {"counts": (("cell", "gene"), _lazy(root["X"], n))}
    coords: dict = {
        "cell": cell_ids,
        "gene": gene_ids,
        "gene_symbol": ("gene", np.asarray(var["gene_symbol"][:], dtype=object)),
    }
    for name in OBS_STRING_COLUMNS:
        coords[name] = ("cell", _lazy(obs[name], n))
    for name in OBS_NUMERIC_COLUMNS:
        coords[name] = ("cell", _lazy(obs[name], n))
    for column in categorical_columns(root):
        cats = read_categories(root, column, manifest.categories.get(column))
        coords[column] = ("cell", _decode(_lazy(obs[f"{column}/codes"], n), cats))
    attrs = {"store": store, "manifest_version": manifest.version, "n_committed": n,
             "chunk_shape": list(root["X"].chunks)}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def to_anndata(store: str | xr.Dataset, cells=None, genes=None):
    """An in-memory ``AnnData`` of a selection (CSR float32 counts) for scanpy.

    ``cells``/``genes`` take anything ``Dataset.isel`` (integers, slices, boolean masks) or, as
    lists of strings, ``Dataset.sel`` accepts. For the whole store without a copy through
    xarray, ``anndata.read_zarr(store)`` reads the layout directly (when no ingest is running).
    """
    import anndata as ad

    ds = open_store(store) if isinstance(store, str) else store
    for dim, sel in (("cell", cells), ("gene", genes)):
        if sel is None:
            continue
        if isinstance(sel, (list, tuple, np.ndarray, pd.Index)) and len(sel) and isinstance(np.asarray(sel)[0], str):
            ds = ds.sel({dim: list(sel)})
        else:
            ds = ds.isel({dim: sel})
    blocks = [sp.csr_matrix(b.astype(np.float32)) for b in _row_blocks(ds["counts"].data)]
    matrix = sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, ds.sizes["gene"]), dtype=np.float32)
    obs = pd.DataFrame({name: ds[name].values for name in ds.coords if ds[name].dims == ("cell",) and name != "cell"},
                       index=pd.Index(ds["cell"].values.astype(str), name=None))
    for column in obs.columns:
        if obs[column].dtype == object:
            obs[column] = pd.Categorical(obs[column].astype(str)) if column != "barcode" else obs[column].astype(str)
    var = pd.DataFrame({"gene_symbol": ds["gene_symbol"].values.astype(str)}, index=pd.Index(ds["gene"].values.astype(str)))
    return ad.AnnData(X=matrix, obs=obs, var=var, uns={"sczarr": dict(ds.attrs)})


def _row_blocks(counts: da.Array):
    """Materialize a dask array one row-chunk at a time (bounded memory for dense blocks)."""
    offset = 0
    for size in counts.chunks[0]:
        yield counts[offset : offset + size].compute()
        offset += size
