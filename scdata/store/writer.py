"""The driver's side of a commit: obs rows, shapes and the consolidated copy, each step's writes
issued together.

On a bucket every request is a round trip (~50 ms from a cloud VM), and a commit touches every
per-cell obs array, the categories, X's shape, the manifest and the root document. Opened afresh
and written one after another, that was ~250 requests (11.6 s at 50 ms per request, whatever the
commit's size). A ``StoreWriter`` opens the nodes once per run (the driver is the only writer of
the store's documents while it ingests) and issues a commit as a few waves of concurrent
requests, in the order that keeps readers safe:

1. new rows of every obs array, and new category values, past the committed shapes;
2. the categories' shapes (a reader may see a category that no visible code uses yet);
3. the obs arrays' shapes, then X's (a reader never sees rows of X whose obs are not visible);
4. the manifest (``manifest.write_manifest``): its log entry, its head (the commit point), the
   log's shape, and the consolidated copy from the documents held here (not read again).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import zarr
from zarr.core.group import GroupMetadata
from zarr.core.sync import sync

from .layout import (
    OBS_STRING_COLUMNS, categorical_columns, consolidated_document, numeric_columns, open_root, read_categories,
    row_array_paths, scratch_view,
)

STRINGS = np.dtypes.StringDType()


def gather(coroutines: list[Coroutine]) -> None:
    """Run the coroutines together on Zarr's event loop (one round trip for all of them)."""

    async def run() -> None:
        await asyncio.gather(*coroutines)

    if coroutines:
        sync(run())


class StoreWriter:
    """A store's nodes, opened once, for a run that commits rows into it (``open_root`` per call
    re-reads every document it passes through)."""

    def __init__(self, url: str):
        self.url = url
        self.root = open_root(url, mode="r+")
        self._nodes: dict[str, zarr.Array | zarr.Group] = dict(
            self.root.members(max_depth=None, use_consolidated_for_children=False))
        self.categorical = categorical_columns(self.root)
        self.numeric = numeric_columns(self.root)
        self._row_paths = row_array_paths(self.root)
        self._lookup = {c: {v: i for i, v in enumerate(read_categories(self.root, c))} for c in self.categorical}
        self._replaced: dict[str, GroupMetadata] = {}

    def get(self, path: str) -> zarr.Array | zarr.Group | None:
        return self._nodes.get(path)

    def add(self, path: str, node: zarr.Array | zarr.Group) -> None:
        """A node created during the run (the manifest's log), so the consolidated copy lists it."""
        self._nodes[path] = node

    def category_counts(self) -> dict[str, int]:
        return {column: len(self._lookup[column]) for column in self.categorical}

    # ---- a commit's steps -----------------------------------------------------------------------

    def write_obs_rows(self, start: int, rows: pd.DataFrame | list[ObsPart]) -> dict[str, int]:
        """Write a unit's cells at rows ``[start, start+n)`` past the committed shapes
        (``grow_rows`` then extends over them); returns the category counts. ``rows``: a frame
        with a column per obs array, or the unit's experiments as ``ObsPart``s in row order.

        New categories are written and their shapes grown here, before any visible code points at
        them: a reader may see a category that no committed cell uses yet, never a code past the
        categories. The driver is the only writer, so unaligned 1-D writes are safe."""
        parts = [ObsPart.from_frame(rows)] if isinstance(rows, pd.DataFrame) else rows
        stop = start + sum(p.n for p in parts)
        if stop == start:  # nothing to write (a unit of rejections only)
            return self.category_counts()
        cells = slice(start, stop)
        writes, grown = [], []

        def put(array: zarr.Array, where: slice, values: np.ndarray) -> None:
            writes.append(scratch_view(array, where.stop).async_array.setitem(where, values))

        for name in ["_index", *OBS_STRING_COLUMNS]:  # variable-width strings: no fixed-width copy to encode
            put(self._nodes[f"obs/{name}"], cells, np.concatenate([np.asarray(p.columns[name], dtype=STRINGS)
                                                                   for p in parts]))
        for name in self.numeric:
            array = self._nodes[f"obs/{name}"]
            put(array, cells, np.concatenate([np.asarray(p.columns[name], dtype=array.dtype) for p in parts]))
        for column in self.categorical:
            lookup, new = self._lookup[column], []
            codes = np.concatenate([_encode_categories(p, column, lookup, new) for p in parts])
            put(self._nodes[f"obs/{column}/codes"], cells, codes)
            if new:
                cats = self._nodes[f"obs/{column}/categories"]
                put(cats, slice(cats.shape[0], cats.shape[0] + len(new)), np.asarray(new, dtype=str))
                grown.append((cats, cats.shape[0] + len(new)))
        gather(writes)  # values first, then the categories' shapes
        gather([cats.async_array.resize((total,)) for cats, total in grown])
        return self.category_counts()

    def grow_rows(self, n_rows: int) -> None:
        """The commit's shape change: every obs array, then X, to ``n_rows`` rows (written before,
        through ``scratch_view``). obs first, so a reader never sees rows of X whose obs are not
        visible yet; the manifest is replaced after this."""
        rows = [self._nodes[path] for path in self._row_paths]
        gather([a.async_array.resize((n_rows, *a.shape[1:])) for a in rows if a.shape[0] != n_rows])
        x = self._nodes["X"]
        if x.shape[0] != n_rows:
            x.resize((n_rows, *x.shape[1:]))

    def replaced(self, path: str, document: bytes) -> None:
        """A group's document was replaced by other means (the manifest's head): the copy shows
        the new one."""
        self._replaced[path] = GroupMetadata.from_dict(json.loads(document))

    def consolidate(self) -> None:
        """Rewrite the root document's consolidated copy from every node as this writer holds it
        (``store.consolidate`` without listing and reading every document again)."""
        members = {path: self._replaced.get(path) or node.metadata for path, node in self._nodes.items()}
        gather([(self.root.store_path / "zarr.json").set(consolidated_document(self.root.metadata, members))])


@dataclass(frozen=True, slots=True)
class ObsPart:
    """One experiment's obs rows: per-cell ``columns`` (``_index``, ``barcode``, the numeric
    columns, per-cell annotations) and ``constants``, the columns with one value for all its
    cells (its accession and sample metadata), coded once instead of once per cell. A column in
    neither is missing (-1) for these cells; a per-cell column wins over a constant."""

    n: int
    columns: dict[str, np.ndarray]
    constants: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "ObsPart":
        return cls(len(frame), {name: frame[name].to_numpy() for name in frame.columns})


def _encode_categories(part: ObsPart, column: str, lookup: dict[str, int], new: list[str]) -> np.ndarray:
    """The part's codes for ``column`` against ``lookup``, which grows in place (first-seen
    order, recorded in ``new``). Per-cell values are factorized once (a hash per cell; only the
    few distinct values become strings); missing values (None, NaN) and an absent column get -1,
    not "None"/"nan"."""
    if column in part.columns:
        local, uniques = pd.factorize(part.columns[column], use_na_sentinel=True)
        names = [str(u) for u in uniques]
    elif column in part.constants and not _missing(part.constants[column]):
        local, names = np.zeros(part.n, dtype=np.intp), [str(part.constants[column])]
    else:
        return np.full(part.n, -1, dtype=np.int32)
    for v in names:
        if v not in lookup:
            lookup[v] = len(lookup)
            new.append(v)
    to_code = np.asarray([lookup[v] for v in names] + [-1], dtype=np.int32)  # local -1 picks the last
    return to_code[local]


def _missing(value: object) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))
