"""Reading a store: a lazy labelled xarray Dataset, and in-memory AnnData for scanpy users.

Both show committed rows only (``[0, n_committed)`` per the manifest), whatever scratch an
ingest in progress has written beyond them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing
from xarray.core.indexes import PandasIndex

from ..store.manifest import Manifest, open_committed
from .cell_index import cell_coordinates
from .lazy_counts import DirectX, as_dask, registered, sparse_rows, subset
from ..store.layout import OBS_STRING_COLUMNS, categorical_columns, numeric_columns, open_root, read_categories, read_strings


_OBS_CACHE: dict[tuple, dict] = {}
_OBS_CACHE_SIZE = 4
_ROOT = "\0root"
"""The cache entry's opened root group: each column read first used to open it again (~7 ms warm,
~50 ms on a cold page cache)."""


def _version_key(store: str, manifest: Manifest) -> tuple:
    """A store's committed state: a later commit (a new version), or a store rebuilt at the same
    path (another run's start time), is never answered from a cache entry of an earlier one."""
    return store, manifest.version, manifest.n_committed, tuple(r.get("started") for r in manifest.runs)


def _cache_entry(store: str, manifest: Manifest) -> dict:
    key = _version_key(store, manifest)
    columns = _OBS_CACHE.get(key)
    if columns is None:
        while len(_OBS_CACHE) >= _OBS_CACHE_SIZE:
            _OBS_CACHE.pop(next(iter(_OBS_CACHE)))
        columns = _OBS_CACHE[key] = {}
    return columns


def _root(columns: dict, store: str) -> zarr.Group:
    root = columns.get(_ROOT)
    if root is None:
        root = columns[_ROOT] = open_root(store, mode="r")
    return root


def _read_rows(root: zarr.Group, manifest: Manifest, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of one per-cell column (``"cell"``: the cell IDs); categoricals
    decoded through their category table (missing values: "")."""
    obs = root["obs"]
    if stop <= start:
        return np.array([], dtype=object if name == "cell" or name in OBS_STRING_COLUMNS else obs[name].dtype)
    if name == "cell" or name in OBS_STRING_COLUMNS:
        return np.asarray(obs["_index" if name == "cell" else name][start:stop], dtype=object)
    if name in categorical_columns(root):
        lookup = np.asarray(read_categories(root, name, manifest.categories.get(name)) + [""], dtype=object)
        return lookup[np.asarray(obs[f"{name}/codes"][start:stop])]  # code -1 (missing) -> ""
    return np.asarray(obs[name][start:stop])


def _obs_column(store: str, manifest: Manifest, name: str, root: zarr.Group | None = None) -> np.ndarray:
    """One per-cell column of the committed rows, in memory and read-only, read once per store
    version (a notebook that reopens the store does not read it again). ``name`` ``"cell"`` is
    the cell IDs. Categoricals are decoded through their category table, so each string exists
    once and a column costs one pointer per cell (missing values: "")."""
    columns = _cache_entry(store, manifest)
    values = columns.get(name)
    if values is not None:
        return values
    values = _read_rows(_root(columns, store) if root is None else root, manifest, name, 0, manifest.n_committed)
    values.flags.writeable = False  # shared by every Dataset opened from this cache entry
    columns[name] = values
    return values


_PART_READ_FRACTION = 0.25
"""A lazily indexed column whose selection spans less than this fraction of the rows is read for
that span alone and not cached: one experiment's rows as AnnData need 7k of a million IDs, and
reading (and decoding) every string of a column cost most of a cold query."""


def obs_columns(store: str, root: zarr.Group, manifest: Manifest) -> dict[str, np.ndarray]:
    """Every per-cell column of the committed rows (``_obs_column`` of each)."""
    names = ["cell", *OBS_STRING_COLUMNS, *numeric_columns(root), *categorical_columns(root)]
    return {name: _obs_column(store, manifest, name, root) for name in names}


class _LazyObsColumn(BackendArray):
    """A per-cell column that is read when first used (a filter, a groupby, ``.values``), not
    when the store is opened: opening reads only the cell IDs, and a query reads the columns
    it touches. Holds the store's URL and manifest, not open handles, so it pickles to workers."""

    def __init__(self, store: str, manifest: Manifest, name: str, dtype: np.dtype):
        self.store, self.manifest, self.name = store, manifest, name
        self.shape, self.dtype = (manifest.n_committed,), np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._get)

    def _get(self, key: tuple) -> np.ndarray:
        columns = _cache_entry(self.store, self.manifest)
        if self.name not in columns:
            (k,) = key
            if isinstance(k, slice):
                start, stop, step = k.indices(self.shape[0])
                span, local = ((start, max(start, stop)), slice(None)) if step == 1 else ((0, self.shape[0]), k)
            else:
                k = np.asarray(k)
                span = (int(k.min()), int(k.max()) + 1) if k.size else (0, 0)
                local = k - span[0]
            if span[1] - span[0] < _PART_READ_FRACTION * self.shape[0]:
                return _read_rows(_root(columns, self.store), self.manifest, self.name, *span)[local]
        return _obs_column(self.store, self.manifest, self.name)[key]


def _lazy_obs(store: str, root: zarr.Group, manifest: Manifest) -> dict[str, xr.Variable]:
    """The per-cell metadata coordinates, each loaded on first use and then kept in memory (a
    numpy array, never dask: xarray filters and groups by it directly)."""
    obs = root["obs"]
    dtypes = {name: np.dtype(object) for name in [*OBS_STRING_COLUMNS, *categorical_columns(root)]}
    dtypes.update({name: np.dtype(obs[name].dtype) for name in numeric_columns(root)})
    return {name: _lazy_column(store, manifest, name, dtype) for name, dtype in dtypes.items()}


def _lazy_column(store: str, manifest: Manifest, name: str, dtype: np.dtype) -> xr.Variable:
    return xr.Variable("cell", indexing.MemoryCachedArray(indexing.LazilyIndexedArray(
        _LazyObsColumn(store, manifest, name, dtype))))


class _CellIDs:
    """Every committed cell ID (what ``LazyCellIndex`` loads on its first lookup); picklable."""

    def __init__(self, store: str, manifest: Manifest):
        self.store, self.manifest = store, manifest

    def __call__(self) -> np.ndarray:
        return _obs_column(self.store, self.manifest, "cell")


class _LazyVarColumn(BackendArray):
    """A per-gene column of ``var/`` (the HVG statistics ``scdata hvg`` writes: ``highly_variable``,
    ``means``, ``variances_norm``, ...), read when first used: a few hundred kB, but a notebook that
    opens the store for a query of counts need not read it."""

    def __init__(self, store: str, name: str, shape: tuple[int], dtype: np.dtype):
        self.store, self.name, self.shape, self.dtype = store, name, shape, np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._get)

    def _get(self, key: tuple) -> np.ndarray:
        return np.asarray(open_root(self.store, mode="r")["var"][self.name][:])[key]


def _lazy_var(store: str, var: zarr.Group) -> dict[str, xr.Variable]:
    """The per-gene numeric and boolean columns listed in ``var``'s ``column-order`` (what
    ``anndata.read_zarr`` shows as ``var``), as lazy gene coordinates."""
    names = [c for c in var.attrs.get("column-order", []) if c not in ("gene_symbol", "_index") and c in var]
    columns = {}
    for name in names:
        array = var[name]
        if isinstance(array, zarr.Array) and array.ndim == 1 and np.dtype(array.dtype).kind in "biuf":
            columns[name] = xr.Variable("gene", indexing.MemoryCachedArray(indexing.LazilyIndexedArray(
                _LazyVarColumn(store, name, array.shape, array.dtype))))
    return columns


def open_store(store: str) -> xr.Dataset:
    """The committed cells as a labelled ``xarray.Dataset`` (dims ``cell``, ``gene``).

    ``counts`` is int16 and lazy: a dask array whose blocks are X's chunks, decoded directly
    (``scdata.read.lazy_counts``). ``cell``/``gene`` are in-memory indexes (``.sel``). The per-cell
    metadata (``srx_accession``, ``tissue``, ``umi_count``…) are read on first use and then held
    as numpy arrays, so ``ds.counts.where(ds.tissue == "blood", drop=True)`` and
    ``groupby("srx_accession")`` work as on any in-memory coordinate. They are small next to X
    (a pointer or a number per cell and column) and read once per store version. The per-gene
    columns ``scdata hvg`` writes (``highly_variable``, ``means``, ``variances_norm``, ...) are gene
    coordinates read on first use, so ``ds.sel(gene=ds.highly_variable)`` works. ``attrs``
    carry the manifest version.
    """
    root, manifest = open_committed(store, lists=False)  # the head is all a view needs
    n = manifest.n_committed
    _OBS_CACHE.setdefault(_version_key(store, manifest), {}).setdefault(_ROOT, root)
    var = root["var"]
    counts = as_dask(DirectX(store, n))
    gene_ids = read_strings(var["_index"])
    gene_index = PandasIndex(pd.Index(gene_ids, name="gene"), "gene")
    cell = cell_coordinates(_lazy_column(store, manifest, "cell", np.dtype(object)), _CellIDs(store, manifest), n)
    coords = xr.Coordinates(  # indexes given, so xarray aligns nothing (an alignment cost ~0.1 s in a fresh process)
        {**cell.variables, **gene_index.create_variables({"gene": xr.Variable("gene", gene_ids)}),
         "gene_symbol": xr.Variable("gene", read_strings(var["gene_symbol"])),
         **_lazy_var(store, var), **_lazy_obs(store, root, manifest)},
        indexes={"cell": cell.xindexes["cell"], "gene": gene_index})
    attrs = {"store": store, "manifest_version": manifest.version, "n_committed": n,
             "chunk_shape": list(root["X"].chunks)}
    return xr.Dataset({"counts": (("cell", "gene"), counts)}, coords=coords, attrs=attrs)


def positions(sel, labels, size: int | None = None) -> np.ndarray:
    """Integer positions for what ``isel`` takes (ints, slices, boolean masks) or, as strings,
    labels (``sel`` takes). ``labels`` is the axis's pandas index, or a function returning it
    (then ``size`` is the axis's length): it is called only for string labels, so positional
    selections never read the cell IDs."""
    if isinstance(labels, pd.Index):
        size, index = len(labels), (lambda: labels)
    else:
        index = labels
    if isinstance(sel, slice):
        return np.arange(size)[sel]
    arr = np.atleast_1d(np.asarray(sel))
    if arr.dtype == bool:
        if len(arr) != size:
            raise IndexError(f"boolean mask of length {len(arr)} for an axis of {size}")
        return np.flatnonzero(arr)
    if arr.dtype.kind in "OUT":
        found = index().get_indexer(arr.astype(object))
        if (found < 0).any():
            raise KeyError(f"not in the store: {', '.join(map(str, arr[found < 0][:5]))}")
        return found
    return np.where(arr < 0, arr + size, arr).astype(np.int64)


def isel(ds: xr.Dataset, cell=None, gene=None) -> xr.Dataset:
    """``ds.isel(cell=..., gene=...)`` whose ``counts`` still reads X's chunks directly (one
    decode per chunk, only the selected cells and genes copied), where ``ds.counts`` is X or a
    selection of it; any other ``counts`` is indexed by xarray as usual."""
    cell = None if cell is None else positions(cell, lambda: ds.xindexes["cell"].to_pandas_index(), ds.sizes["cell"])
    gene = None if gene is None else positions(gene, lambda: ds.xindexes["gene"].to_pandas_index(), ds.sizes["gene"])
    fast = subset(ds["counts"].data, cell, gene) if "counts" in ds else None
    indexers = {k: v for k, v in (("cell", cell), ("gene", gene)) if v is not None}
    if fast is None:
        return ds.isel(indexers)
    out = ds.drop_vars("counts").isel(indexers)
    out["counts"] = (("cell", "gene"), fast, ds["counts"].attrs)
    return out


def to_anndata(store: str | xr.Dataset, cells=None, genes=None):
    """An in-memory ``AnnData`` of a selection (CSR float32 counts) for scanpy.

    ``cells``/``genes`` take anything ``Dataset.isel`` (integers, slices, boolean masks) or, as
    lists of strings, ``Dataset.sel`` accepts. For the whole store without a copy through
    xarray, ``anndata.read_zarr(store)`` reads the layout directly (during an ingest it sees committed
    rows only, but can meet two commits, X at one and obs at the next, and fail; this cannot).
    """
    import anndata as ad

    ds = open_store(store) if isinstance(store, str) else store
    ds = isel(ds, cell=cells, gene=genes)
    source = registered(ds["counts"].data)
    if source is not None:  # X's chunks, decoded once, non-zeros only
        matrix = sparse_rows(*source)
    else:
        blocks = [_csr(b) for b in _row_blocks(ds["counts"].data)]
        matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, ds.sizes["gene"]), dtype=np.float32)
    per_cell = [name for name in ds.coords if ds[name].dims == ("cell",)]
    with ThreadPoolExecutor(min(8, len(per_cell))) as pool:  # columns read concurrently: cold, each waits on disk
        values = dict(zip(per_cell, pool.map(lambda name: ds[name].values, per_cell)))
    obs = pd.DataFrame({name: values[name] for name in per_cell if name != "cell"},
                       index=pd.Index(values["cell"].astype(str), name=None))
    for column in obs.columns:
        if obs[column].dtype == object:
            obs[column] = pd.Categorical(obs[column].astype(str)) if column != "barcode" else obs[column].astype(str)
    var = pd.DataFrame({"gene_symbol": ds["gene_symbol"].values.astype(str),
                        **{name: ds[name].values for name in ds.coords
                           if ds[name].dims == ("gene",) and name not in ("gene", "gene_symbol")}},
                       index=pd.Index(ds["gene"].values.astype(str)))
    return ad.AnnData(X=matrix, obs=obs, var=var, uns={"sczarr": dict(ds.attrs)})


def _csr(block: np.ndarray) -> sp.csr_matrix:
    """A dense int16 block as CSR float32, converting only the non-zeros (the dense float32
    copy costs 2x the block's memory and most of the time)."""
    block = np.ascontiguousarray(block)
    rows, cols = np.nonzero(block)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=block.shape[0]))])
    return sp.csr_matrix((block[rows, cols].astype(np.float32), cols.astype(np.int32), indptr), shape=block.shape)


def _row_blocks(counts: da.Array, per_compute: int = 4):
    """Materialize a dask array a few row-chunks at a time: bounded memory for dense blocks,
    and still one task per core in flight."""
    offset = 0
    sizes = counts.chunks[0]
    for k in range(0, len(sizes), per_compute):
        group = sizes[k : k + per_compute]
        parts = da.compute(*[counts[o : o + s] for o, s in zip(offset + np.cumsum([0, *group[:-1]]), group)])
        offset += sum(group)
        yield from parts
