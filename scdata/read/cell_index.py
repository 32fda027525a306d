"""The ``cell`` index of ``open_store``'s Dataset, read when a label is first looked up.

``.sel(cell=...)`` needs every cell ID in a hash table, but most queries never look a cell up
by its ID: they filter by metadata, take positions, or read counts. Reading the IDs at open
cost 89 ms at 103k cells and 462 ms at 954k, the largest part of opening a store. This index
holds a loader instead of the IDs; positional selections (``isel``, xarray's own and
``scdata.read.xarray_view.isel``) compose positions without reading them, and the IDs are read
(once per store version, shared through the per-cell column cache) when a label is looked up,
the index is compared with another, or pandas' index is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray import Index, Variable
from xarray.core.indexes import PandasIndex


class LazyCellIndex(Index):
    """An xarray index over ``size`` cells whose labels ``load()`` returns (an object array of
    every committed cell ID), narrowed to ``positions`` (None: all of them, else int positions)."""

    def __init__(self, load: Callable[[], np.ndarray], dim: Hashable, size: int, positions: np.ndarray | None = None):
        self._load, self.dim, self._size, self._positions = load, dim, size, positions
        self._index: pd.Index | None = None
        self._picked: np.ndarray | None = None  # positions within the index this one was selected from

    def create_variables(self, variables=None) -> dict[Hashable, Variable]:
        """The coordinate variable for this index: after ``isel``, xarray passes the variable of the
        index it selected from, which is narrowed (lazily) to the same cells here."""
        out = {}
        for name, var in (variables or {}).items():
            if self._picked is not None and var.sizes.get(self.dim) != self._size:
                var = var.isel({self.dim: self._picked})
            out[name] = var
        return out

    def __len__(self) -> int:
        return self._size

    @property
    def loaded(self) -> bool:
        """Whether the cell IDs have been read (for tests and the curious)."""
        return self._index is not None

    def to_pandas_index(self) -> pd.Index:
        if self._index is None:
            labels = self._load()
            if self._positions is not None:
                labels = labels[self._positions]
            self._index = pd.Index(labels, name=self.dim, dtype=object)
        return self._index

    def _pandas(self) -> PandasIndex:
        return PandasIndex(self.to_pandas_index(), self.dim, coord_dtype=np.dtype(object))

    def sel(self, labels: dict[Any, Any], method=None, tolerance=None):
        return self._pandas().sel(labels, method=method, tolerance=tolerance)

    def isel(self, indexers: Mapping[Any, int | slice | np.ndarray | Variable]) -> "LazyCellIndex | None":
        indexer = indexers[self.dim]
        if isinstance(indexer, Variable):
            if indexer.dims != (self.dim,):
                return None  # vectorized indexing into another dimension: no index along it
            indexer = indexer.values
        if isinstance(indexer, (int, np.integer)) or (isinstance(indexer, np.ndarray) and indexer.ndim == 0):
            return None  # a scalar drops the dimension
        if isinstance(indexer, slice):
            picked = np.arange(*indexer.indices(self._size))
        else:
            picked = np.asarray(indexer)
            picked = np.flatnonzero(picked) if picked.dtype == bool else picked.astype(np.int64)
            picked = np.where(picked < 0, picked + self._size, picked)
        positions = picked if self._positions is None else self._positions[picked]
        out = LazyCellIndex(self._load, self.dim, len(picked), positions)
        out._picked = picked
        if self._index is not None:
            out._index = self._index[picked]
        return out

    def equals(self, other: Index, **kwargs) -> bool:
        if isinstance(other, LazyCellIndex) and other._load is self._load and _same(self._positions, other._positions):
            return True
        if not isinstance(other, (LazyCellIndex, PandasIndex)):
            return False
        return self.to_pandas_index().equals(other.to_pandas_index() if isinstance(other, LazyCellIndex) else other.index)

    @classmethod
    def concat(cls, indexes, dim, positions=None) -> PandasIndex:
        return PandasIndex.concat([i._pandas() if isinstance(i, LazyCellIndex) else i for i in indexes], dim, positions)

    def join(self, other, how="inner") -> PandasIndex:
        return self._pandas().join(other._pandas() if isinstance(other, LazyCellIndex) else other, how=how)

    def reindex_like(self, other) -> dict[Hashable, Any]:
        return self._pandas().reindex_like(other._pandas() if isinstance(other, LazyCellIndex) else other)

    def rename(self, name_dict, dims_dict) -> "LazyCellIndex":
        if self.dim not in dims_dict:
            return self
        out = LazyCellIndex(self._load, dims_dict[self.dim], self._size, self._positions)
        out._index = None if self._index is None else self._index.rename(dims_dict[self.dim])
        out._picked = self._picked
        return out

    def _copy(self, deep: bool = True, memo=None) -> "LazyCellIndex":
        out = LazyCellIndex(self._load, self.dim, self._size, self._positions)
        out._index, out._picked = self._index, self._picked
        return out

    def _repr_inline_(self, max_width: int) -> str:
        return f"LazyCellIndex ({self._size:,} cells, {'read' if self.loaded else 'IDs read on first lookup'})"

    def __repr__(self) -> str:
        return self._repr_inline_(80)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def cell_coordinates(variable: Variable, load: Callable[[], np.ndarray], size: int) -> xr.Coordinates:
    """The ``cell`` coordinate (``variable``, lazily read) with a ``LazyCellIndex`` over it."""
    return xr.Coordinates({"cell": variable}, indexes={"cell": LazyCellIndex(load, "cell", size)})
