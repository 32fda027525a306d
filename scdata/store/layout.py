"""The store's on-disk layout (Zarr v3, AnnData conventions) and its low-level writers.

Layout::

    store.zarr/
      zarr.json        group attrs: AnnData encoding + ``sczarr`` (layout, gene-axis digest)
      X                int16 (cell, gene), Blosc, chunk shape from ``StoreLayout``
      obs/             dataframe: _index (cell id "<accession>:<barcode>"), barcode, umi_count,
                       gene_count, and categoricals (srx_accession, tissue, tech_10x, ...)
      var/             dataframe: _index (Ensembl id), gene_symbol
      obsm/, uns/      AnnData dict groups (derived data lands here)
      uns/sczarr_manifest  committed state (see ``manifest``)

Every array carries ``dimension_names`` so xarray opens each group, and AnnData's
``encoding-type`` attributes so ``anndata.read_zarr`` reads the store directly.

The root ``zarr.json`` also carries consolidated metadata: a copy of every node's document,
rewritten in one atomic put after each commit (``consolidate``). ``anndata.read_zarr``,
``xr.open_zarr`` and ``zarr.open_group`` read it when it is there, so they see the shapes of one
commit even while the next one changes the arrays' own documents one by one. sczarr's own code
reads and writes those own documents (``open_root`` ignores the copy) and rewrites the copy after
every change to them, so it is never stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import asdict, dataclass

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, TransposeCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import ConsolidatedMetadata, GroupMetadata
from zarr.core.sync import sync
from zarr.storage import FsspecStore, WrapperStore

from ..runtime import remote

STORE_FORMAT = 1
ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
STRING_ATTRS = {"encoding-type": "string-array", "encoding-version": "0.2.0"}
CATEGORICAL_ATTRS = {"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": False}
DICT_ATTRS = {"encoding-type": "dict", "encoding-version": "0.1.0"}
OBS_STRING_COLUMNS = ("barcode",)
OBS_NUMERIC_COLUMNS = {"umi_count": "int64", "gene_count": "int32", "total_counts": "int64"}
"""``umi_count``: true total (rounded, before saturation); ``total_counts``: total of the stored row."""

warnings.filterwarnings("ignore", message=".*autosharding.*", category=UserWarning)


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """Chunking and compression of X; recorded in the store's attributes.

    Defaults come from ``benchmarks/bench_ingest.py``'s chunk study (see README).
    """

    chunk_cells: int = 1024
    chunk_genes: int = 2048
    cname: str = "zstd"
    clevel: int = 1
    shuffle: str = "bitshuffle"
    blocksize: int = 1 << 17
    """Bytes per Blosc block (0: Blosc's choice). Blocks are decoded independently, and a chunk
    is gene-major, so a query of a few genes decodes only the blocks holding them
    (``scdata.store.blosc_blocks``): with 128 KiB blocks (64 genes x 1,024 cells) one gene costs
    1/32 of a chunk's decode. Measured on the query benchmark's 103k cells against 1 MiB blocks
    (stores written before 0.2): one gene's decode per chunk 0.08 ms instead of 0.41, 100 genes
    across every cell 1.7 s instead of 2.8 (cold), at +3.3% bytes on disk, +8% encode time and
    +41% for decoding a whole chunk (whole-row reads: ``to_anndata``, statistics passes)."""
    transpose: bool = True
    """Store each chunk gene-major (Zarr's standard transpose codec): a gene's values for the
    chunk's cells sit together, which compresses sparse counts ~40% smaller."""
    obs_chunk: int = 65536

    def __post_init__(self) -> None:
        if self.chunk_cells <= 0 or self.chunk_genes <= 0 or self.obs_chunk <= 0:
            raise ValueError(f"chunk sizes must be positive: {self}")
        if self.blocksize < 0:
            raise ValueError(f"blocksize must be >= 0 (0: Blosc's choice), got {self.blocksize}")
        if self.shuffle not in ("noshuffle", "shuffle", "bitshuffle"):
            raise ValueError(f"shuffle must be noshuffle, shuffle or bitshuffle, got {self.shuffle!r}")

    def codec(self) -> BloscCodec:
        return BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=BloscShuffle[self.shuffle],
                          blocksize=self.blocksize)

    def filters(self) -> list:
        return [TransposeCodec(order=(1, 0))] if self.transpose else []

    @classmethod
    def from_attrs(cls, attrs: dict) -> "StoreLayout":
        return cls(**{"blocksize": 0, **attrs})  # stores written before blocksize was recorded used 0


class RetryingStore(WrapperStore):
    """A remote Zarr store whose calls are retried with backoff (``remote.with_retries_async``)
    and whose errors name the object's URL: gcsfs's errors say what went wrong, not where."""

    def __init__(self, store: FsspecStore) -> None:
        super().__init__(store)
        self.url = store.fs.unstrip_protocol(store.path).rstrip("/")

    def _retry(self, fn: Callable[[], Awaitable], verb: str, key: str):
        return remote.with_retries_async(fn, f"{verb} {self.url}/{key}")

    async def get(self, key, prototype, byte_range=None):
        return await self._retry(lambda: self._store.get(key, prototype, byte_range), "read", key)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def _get_many(self, requests):
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return await self._retry(lambda: self._store.exists(key), "stat", key)

    async def set(self, key: str, value) -> None:
        await self._retry(lambda: self._store.set(key, value), "write", key)

    async def set_if_not_exists(self, key: str, value) -> None:
        await self._retry(lambda: self._store.set_if_not_exists(key, value), "write", key)

    async def _set_many(self, values) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        await self._retry(lambda: self._store.delete(key), "delete", key)

    async def delete_dir(self, prefix: str) -> None:
        await self._retry(lambda: self._store.delete_dir(prefix), "delete", prefix)

    def list(self) -> AsyncIterator[str]:
        return self._listed(self._store.list, "")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listed(lambda: self._store.list_prefix(prefix), prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listed(lambda: self._store.list_dir(prefix), prefix)

    async def _listed(self, listing: Callable[[], AsyncIterator[str]], prefix: str) -> AsyncIterator[str]:
        async def collect() -> list[str]:
            return [name async for name in listing()]

        for name in await self._retry(collect, "list", prefix):
            yield name


_REMOTE_FILESYSTEMS: weakref.WeakSet = weakref.WeakSet()
"""The asynchronous filesystems under the remote stores opened in this process."""


def _zarr_store(url: str, mode: str):
    if remote.is_local(url):
        return remote.local_path(url)
    store = RetryingStore(FsspecStore.from_url(url, storage_options=remote.storage_options(url), read_only=mode == "r"))
    _REMOTE_FILESYSTEMS.add(store._store.fs)
    return store


def close_remote_sessions() -> None:
    """Close the HTTP sessions of remote stores on Zarr's event loop, where they were opened.

    Left to gcsfs's finalizer at exit, each is closed from fsspec's loop instead and prints a
    "attached to a different loop" traceback after the command's own output. The filesystem
    forgets the closed session, so it opens a new one if used again (fsspec caches filesystems)."""
    for fs in list(_REMOTE_FILESYSTEMS):
        session = getattr(fs, "_session", None)  # gcsfs's (other filesystems keep theirs elsewhere)
        if session is None:
            continue
        if not session.closed:
            sync(session.close())
        fs._session = None


def open_root(url: str, mode: str = "r") -> zarr.Group:
    """The store's root group for any fsspec URL, read from each node's own document.

    The consolidated copy in the root document (``consolidate``) is for other readers: it lags
    the manifest by a moment after each commit, and sczarr reads up to the manifest's row count."""
    return zarr.open_group(_zarr_store(url, mode), mode=mode, zarr_format=3, use_consolidated=False)


def open_array(url: str, path: str, mode: str = "r") -> zarr.Array:
    """One array of the store, opened without parsing the root document (which holds the
    consolidated copy of every node, manifest included): what a task on a worker needs."""
    return zarr.open_array(_zarr_store(url, mode), path=path, mode=mode, zarr_format=3)


def consolidate(root: zarr.Group, exclude: Collection[str] = ()) -> None:
    """Rewrite the root document's consolidated metadata from every node's own document, in one
    atomic put (a rename locally, a single PUT remotely).

    Readers that use it (``anndata.read_zarr``, ``xr.open_zarr``, ``zarr.open_group``) then see
    every shape as of this moment: called after each commit's manifest, they see one commit.
    ``exclude`` leaves nodes out (and what is under them): a node about to be deleted and
    rewritten is dropped from the copy first, so no reader is pointed at chunks being replaced."""
    group = zarr.open_group(root.store, path=root.path, mode="r+", zarr_format=3, use_consolidated=False)
    skip = tuple(p.strip("/") for p in exclude)
    members = {
        path: node.metadata
        for path, node in group.members(max_depth=None, use_consolidated_for_children=False)
        if not any(path == p or path.startswith(f"{p}/") for p in skip)
    }
    sync((group.store_path / "zarr.json").set(consolidated_document(group.metadata, members)))


def consolidated_document(group_metadata: GroupMetadata, members: dict):
    """The group's document carrying ``members`` (path -> metadata) as its consolidated copy, in
    path order (the same bytes however the members were listed)."""
    members = {path: members[path] for path in sorted(members)}
    for path, metadata in members.items():  # an empty group says so, as zarr.consolidate_metadata does
        if isinstance(metadata, GroupMetadata) and metadata.consolidated_metadata is None:
            members[path] = dataclasses.replace(metadata, consolidated_metadata=ConsolidatedMetadata(metadata={}))
    ConsolidatedMetadata._flat_to_nested(members)
    metadata = dataclasses.replace(group_metadata, consolidated_metadata=ConsolidatedMetadata(metadata=members))
    return metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"]


def gene_axis_digest(gene_ids: np.ndarray) -> str:
    return hashlib.blake2b("\n".join(map(str, gene_ids)).encode(), digest_size=16).hexdigest()


def _string_array(group: zarr.Group, name: str, values: np.ndarray, chunk: int, dim: str) -> zarr.Array:
    arr = group.create_array(
        name, shape=(len(values),), chunks=(chunk,), dtype=str,
        dimension_names=(dim,), attributes=STRING_ATTRS,
    )
    if len(values):
        arr[:] = np.asarray(values, dtype=str)
    return arr


def ensure_replaceable(url: str) -> None:
    """Refuse to overwrite anything but an absent path or an sczarr store that never committed."""
    fs, path = remote.url_to_fs(url)
    if not fs.exists(path) or (fs.isdir(path) and not fs.ls(path)):
        return
    try:
        attrs = open_root(url, mode="r").attrs.asdict()
    except Exception:  # not a Zarr group at all
        attrs = {}
    if "sczarr" not in attrs:
        raise FileExistsError(f"{url} exists and is not a sczarr store; choose another --store or remove it")


def create_store(
    url: str,
    gene_ids: np.ndarray,
    gene_symbols: np.ndarray,
    categorical_columns: list[str],
    layout: StoreLayout,
    numeric_columns: dict[str, str] | None = None,
    attrs: dict | None = None,
) -> zarr.Group:
    """An empty store with a fixed gene axis and obs schema (no cells committed).

    ``numeric_columns`` adds per-cell numeric or boolean obs columns (name -> dtype) after the
    standard ones (e.g. a perturbation store's ``is_control``); ``attrs`` go into the root's
    ``sczarr`` attributes (e.g. what kind of store it is)."""
    ensure_replaceable(url)
    n_genes = len(gene_ids)
    numeric = {**OBS_NUMERIC_COLUMNS, **(numeric_columns or {})}
    columns = ["barcode", "srx_accession", *numeric, *categorical_columns]
    # the root document is written once, with its sczarr attributes: a run killed at any point of
    # the creation leaves a store the next run recognizes as its own (no commit) and recreates
    root = zarr.open_group(_zarr_store(url, "w"), mode="w", zarr_format=3, use_consolidated=False, attributes={
        "encoding-type": "anndata",
        "encoding-version": "0.1.0",
        "sczarr": {
            "format": STORE_FORMAT,
            "layout": asdict(layout),
            "gene_axis_digest": gene_axis_digest(gene_ids),
            "n_genes": n_genes,
            **(attrs or {}),
        },
    })
    root.create_array(
        "X", shape=(0, n_genes), chunks=(layout.chunk_cells, min(layout.chunk_genes, n_genes)), dtype="int16",
        fill_value=0, filters=layout.filters(), compressors=layout.codec(), dimension_names=("cell", "gene"),
        attributes=ARRAY_ATTRS,
    )
    obs = root.create_group(
        "obs", attributes={"_index": "_index", "column-order": columns, "encoding-type": "dataframe", "encoding-version": "0.2.0"}
    )
    _string_array(obs, "_index", np.array([], dtype=str), layout.obs_chunk, "cell")
    _string_array(obs, "barcode", np.array([], dtype=str), layout.obs_chunk, "cell")
    obs["_index"].attrs.update(STRING_ATTRS)
    for name, dtype in numeric.items():
        obs.create_array(name, shape=(0,), chunks=(layout.obs_chunk,), dtype=dtype, dimension_names=("cell",), attributes=ARRAY_ATTRS)
    for name in ["srx_accession", *categorical_columns]:
        cat = obs.create_group(name, attributes=CATEGORICAL_ATTRS)
        cat.create_array("codes", shape=(0,), chunks=(layout.obs_chunk,), dtype="int32", fill_value=-1,
                         dimension_names=("cell",), attributes=ARRAY_ATTRS)
        _string_array(cat, "categories", np.array([], dtype=str), 4096, f"{name}_category")
    var = root.create_group(
        "var", attributes={"_index": "_index", "column-order": ["gene_symbol"], "encoding-type": "dataframe", "encoding-version": "0.2.0"}
    )
    _string_array(var, "_index", np.asarray(gene_ids, dtype=str), n_genes, "gene")
    _string_array(var, "gene_symbol", np.asarray(gene_symbols, dtype=str), n_genes, "gene")
    root.create_group("obsm", attributes=DICT_ATTRS)
    root.create_group("uns", attributes=DICT_ATTRS)
    return root


def read_strings(arr: zarr.Array, stop: int | None = None) -> np.ndarray:
    """A string array as numpy objects (Zarr returns numpy's StringDType, which pandas and
    xarray do not all accept)."""
    values = arr[: arr.shape[0] if stop is None else stop]
    return np.asarray(values, dtype=object)


def layout_of(root: zarr.Group) -> StoreLayout:
    return StoreLayout.from_attrs(root.attrs["sczarr"]["layout"])


def categorical_columns(root: zarr.Group) -> list[str]:
    obs = root["obs"]
    return [c for c in obs.attrs["column-order"] if isinstance(obs.get(c), zarr.Group)]


def numeric_columns(root: zarr.Group) -> list[str]:
    """The per-cell numeric (and boolean) obs columns, standard ones first."""
    obs = root["obs"]
    return [c for c in obs.attrs["column-order"]
            if c not in OBS_STRING_COLUMNS and c != "_index" and isinstance(obs.get(c), zarr.Array)]


def read_categories(root: zarr.Group, column: str, n: int | None = None) -> list[str]:
    cats = root[f"obs/{column}/categories"]
    stop = cats.shape[0] if n is None else min(n, cats.shape[0])
    return [str(v) for v in cats[:stop]] if stop else []


def scratch_view(array: zarr.Array, n_rows: int) -> zarr.Array:
    """A handle on ``array`` whose shape has ``n_rows`` rows, to write a round's rows past the
    committed shape. Its metadata is never written, so readers keep seeing the committed rows
    until the commit grows the shape (``grow_rows``)."""
    async_array = array.async_array
    metadata = async_array.metadata.update_shape((n_rows, *array.shape[1:]))
    return zarr.Array(AsyncArray(metadata, async_array.store_path, async_array.config))


def row_array_paths(root: zarr.Group) -> list[str]:
    """Every obs array with one entry per cell (categories are per category, not per cell)."""
    return ([f"obs/{name}" for name in ["_index", *OBS_STRING_COLUMNS, *numeric_columns(root)]]
            + [f"obs/{column}/codes" for column in categorical_columns(root)])


def row_arrays(root: zarr.Group) -> list[zarr.Array]:
    return [root[path] for path in row_array_paths(root)]


def truncate(root: zarr.Group, n_committed: int, categories: dict[str, int]) -> None:
    """Drop what an unfinished round left: shapes past ``n_committed`` (a commit killed before its
    manifest), chunks written past the shape, and categories added after the last commit.

    The chunk that holds the last committed rows may also hold scratch rows past them; it is
    kept, as only its committed rows are read (the next round's seam re-reads exactly those and
    rewrites the whole chunk, and obs rows are overwritten before the shape reaches them)."""
    for array in [root["X"], *row_arrays(root)]:  # X first: obs is never behind it
        if array.shape[0] != n_committed:
            array.resize((n_committed, *array.shape[1:]))
        drop_chunks_past(array, n_committed)
    obs = root["obs"]
    for column in categorical_columns(root):
        cats = obs[f"{column}/categories"]
        keep = categories.get(column, 0)
        if cats.shape[0] != keep:
            cats.resize((keep,))
        drop_chunks_past(cats, keep)
    consolidate(root)  # the copy was at most at the manifest's commit; now exactly at it


def drop_chunks_past(array: zarr.Array, n_rows: int) -> list[int]:
    """Delete the stored chunks that start at or after row ``n_rows``; returns their row-chunk
    indices. Resizing deletes only chunks inside the old shape; a round writes past it."""
    encoding = array.metadata.chunk_key_encoding
    if getattr(encoding, "name", None) != "default" or encoding.separator != "/":
        raise ValueError(f"{array.path}: chunk key encoding {encoding} is not the store's ('default', '/')")
    first = -(-n_rows // array.chunks[0])
    prefix = f"{array.path}/c" if array.path else "c"
    store = array.store
    stale = sorted(int(name) for name in sync(_list_dir(store, prefix)) if name.isdigit() and int(name) >= first)
    for i in stale:
        key = f"{prefix}/{i}"
        sync(store.delete_dir(key) if array.ndim > 1 else store.delete(key))
    return stale


async def _list_dir(store, prefix: str) -> list[str]:
    return [name async for name in store.list_dir(prefix)]


def store_nbytes(url: str) -> int:
    """Bytes on disk (or in the bucket) of everything under the store."""
    fs, path = remote.url_to_fs(url)
    return int(fs.du(path, total=True))
