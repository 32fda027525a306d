"""The lazy cell index behaves like xarray's own index in the idioms a notebook uses, and reads
the cell IDs only when a label is looked up."""

from __future__ import annotations

import numpy as np
import xarray as xr
from xarray.core import indexing

from scdata.read.cell_index import LazyCellIndex, cell_coordinates

IDS = np.array([f"c{i}" for i in range(10)], dtype=object)


class _Column(xr.backends.BackendArray):
    shape, dtype = (10,), np.dtype(object)

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, lambda k: IDS[k])


def _pair():
    loads = []

    def load():
        loads.append(1)
        return IDS

    cell = xr.Variable("cell", indexing.MemoryCachedArray(indexing.LazilyIndexedArray(_Column())))
    lazy = xr.Dataset({"x": (("cell", "gene"), np.arange(30).reshape(10, 3))}, coords=cell_coordinates(cell, load, 10))
    lazy = lazy.assign_coords(gene=["a", "b", "c"], tissue=("cell", np.array(list("aabbccddee"), dtype=object)))
    eager = lazy.assign_coords(cell=IDS)  # xarray's own PandasIndex
    return lazy, eager, loads


def test_positional_selections_read_no_ids_and_match_xarray():
    lazy, eager, loads = _pair()
    assert isinstance(lazy.xindexes["cell"], LazyCellIndex)
    for pick in ([1, 3, 5], slice(2, 9, 3), np.arange(10) % 2 == 0, [-1, 0]):
        sub = lazy.isel(cell=pick)
        assert not sub.xindexes["cell"].loaded
        xr.testing.assert_identical(sub.reset_index("cell"), eager.isel(cell=pick).reset_index("cell"))
    nested = lazy.isel(cell=[1, 3, 5, 7]).isel(cell=slice(1, None))
    assert list(nested.cell.values) == ["c3", "c5", "c7"] and not loads


def test_label_lookups_alignment_and_concat_match_xarray():
    lazy, eager, loads = _pair()
    np.testing.assert_array_equal(lazy.sel(cell=["c2", "c9"]).x.values, eager.sel(cell=["c2", "c9"]).x.values)
    assert loads == [1]
    sub = lazy.isel(cell=[4, 6, 8])
    assert sub.sel(cell="c6").x.values.tolist() == [18, 19, 20]
    np.testing.assert_array_equal(lazy.where(lazy.tissue == "b", drop=True).cell.values, ["c2", "c3"])
    assert (lazy.x + lazy.x.isel(cell=slice(0, 5))).sizes["cell"] == 5  # aligned on labels, as xarray does
    np.testing.assert_array_equal(xr.concat([lazy.isel(cell=[0]), lazy.isel(cell=[4])], "cell").cell.values, ["c0", "c4"])
    np.testing.assert_array_equal(lazy.x.groupby("tissue").mean().values, eager.x.groupby("tissue").mean().values)
    assert lazy.to_dataframe().index.equals(eager.to_dataframe().index)
