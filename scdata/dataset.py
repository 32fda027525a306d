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
from .lazyx import DirectX
from .store import OBS_NUMERIC_COLUMNS, OBS_STRING_COLUMNS, categorical_columns, open_root, read_categories, read_strings


class StoreError(ValueError):
    """The path is not a readable sczarr store."""


def _committed(store: str) -> tuple[zarr.Group, Manifest]:
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(f"{store} has no manifest (uns/sczarr_manifest): not a sczarr store, or its ingest never committed a round")
    return open_root(store, mode="r"), manifest


_OBS_CACHE: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}
_OBS_CACHE_SIZE = 4


def _obs_columns(store: str, root: zarr.Group, manifest: Manifest) -> dict[str, np.ndarray]:
    """Every per-cell column of the committed rows, in memory and read-only.

    Read once per store and manifest version: a notebook that reopens the store does not read
    them again, and a later commit (a new version) is never answered from the cache.
    Categoricals are decoded through their category table, so each string exists once and a
    column costs one pointer per cell (missing values: "").
    """
    key = (store, manifest.version, manifest.n_committed)
    cached = _OBS_CACHE.get(key)
    if cached is not None:
        return cached
    n, obs = manifest.n_committed, root["obs"]
    columns: dict[str, np.ndarray] = {"cell": read_strings(obs["_index"], n) if n else np.array([], dtype=object)}
    for name in OBS_STRING_COLUMNS:
        columns[name] = read_strings(obs[name], n) if n else np.array([], dtype=object)
    for name in OBS_NUMERIC_COLUMNS:
        columns[name] = np.asarray(obs[name][:n])
    for column in categorical_columns(root):
        lookup = np.asarray(read_categories(root, column, manifest.categories.get(column)) + [""], dtype=object)
        columns[column] = lookup[np.asarray(obs[f"{column}/codes"][:n])]  # code -1 (missing) -> ""
    for values in columns.values():
        values.flags.writeable = False  # shared by every Dataset opened from this cache entry
    while len(_OBS_CACHE) >= _OBS_CACHE_SIZE:
        _OBS_CACHE.pop(next(iter(_OBS_CACHE)))
    _OBS_CACHE[key] = columns
    return columns


def open_store(store: str) -> xr.Dataset:
    """The committed cells as a labelled ``xarray.Dataset`` (dims ``cell``, ``gene``).

    ``counts`` is int16 and lazy: a dask array whose blocks are X's chunks, decoded directly
    (``scdata.lazyx``). The coordinates are in memory: ``cell``/``gene`` are indexes (``.sel``),
    and the per-cell metadata (``srx_accession``, ``tissue``, ``umi_count``…) are numpy arrays,
    so ``ds.counts.where(ds.tissue == "blood", drop=True)`` and ``groupby("srx_accession")``
    work as on any in-memory coordinate. They are small next to X (a pointer or a number per
    cell and column) and read once per store version. ``attrs`` carry the manifest version.
    """
    root, manifest = _committed(store)
    n = manifest.n_committed
    var = root["var"]
    columns = _obs_columns(store, root, manifest)
    array = DirectX(store, n)
    counts = da.from_array(array, chunks=array.chunks, asarray=False, name=f"sczarr-X-{store}-v{manifest.version}-{n}")
    coords: dict = {
        "cell": columns["cell"],
        "gene": read_strings(var["_index"]),
        "gene_symbol": ("gene", read_strings(var["gene_symbol"])),
    }
    coords.update({name: ("cell", values) for name, values in columns.items() if name != "cell"})
    attrs = {"store": store, "manifest_version": manifest.version, "n_committed": n,
             "chunk_shape": list(root["X"].chunks)}
    return xr.Dataset({"counts": (("cell", "gene"), counts)}, coords=coords, attrs=attrs)


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
