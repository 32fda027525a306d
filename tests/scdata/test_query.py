"""Reading a store from xarray: in-memory metadata, the direct chunk reader, and the query helpers."""

import pickle

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr

import scdata
from scdata import query
from scdata.read import xarray_view as dataset
from scdata.read.lazy_counts import DirectX
from scdata.store.layout import StoreLayout

from tests.conftest import materialized_store


@pytest.fixture(scope="module")
def store(demo_bucket, tmp_path_factory) -> str:
    return materialized_store(demo_bucket, tmp_path_factory.mktemp("query"), n_hvgs=50)


@pytest.fixture(scope="module")
def dense(store) -> np.ndarray:
    return zarr.open_group(store, mode="r")["X"][:]


def test_metadata_read_on_first_use_then_in_memory_counts_lazy(store, monkeypatch):
    dataset._OBS_CACHE.clear()
    ds = scdata.open_store(store)
    assert isinstance(ds.counts.data, da.Array) and ds.counts.dtype == np.int16
    (read,) = dataset._OBS_CACHE.values()
    assert set(read) == {dataset._ROOT}  # opening reads no per-cell column, not even the cell IDs
    index = ds.xindexes["cell"]
    assert not index.loaded
    picked = query.select_cells(ds, tissue=ds.tissue.values[0])  # positional: still no IDs read
    assert "cell" not in read and not picked.xindexes["cell"].loaded
    first = ds.isel(cell=[7, 3]).cell.values  # the coordinate reads the IDs, the index still need not
    assert list(ds.sel(cell=list(first)).cell.values) == list(first)  # a label lookup reads them once
    assert "cell" in read and index.loaded
    assert list(picked.cell.values) == list(ds.cell.values[ds.tissue.values == ds.tissue.values[0]])
    names = ("srx_accession", "tissue", "cell_type", "barcode", "umi_count", "gene_count")
    for name in names:
        assert isinstance(ds[name].variable.data, np.ndarray), name  # not dask: filter and group directly
    assert set(names) <= set(read) and "disease" not in read  # each column read when first used
    assert ds.tissue.dtype == object and ds.barcode.dtype == object and ds.umi_count.dtype == np.int64
    reads = []
    monkeypatch.setattr(dataset, "read_categories", lambda *a: reads.append(a) or [])
    again = scdata.open_store(store)  # metadata read once per store version
    assert list(again.tissue.values) == list(ds.tissue.values) and not reads
    picked = again.isel(cell=[4, 2, 0])  # a selection stays lazy and indexes the column once read
    np.testing.assert_array_equal(picked.umi_count.values, ds.umi_count.values[[4, 2, 0]])
    dataset._OBS_CACHE.clear()
    monkeypatch.undo()


def test_xarray_idioms_match_numpy(store, dense):
    ds = scdata.open_store(store)
    tissue = ds.tissue.values[0]
    picked = ds.counts.where(ds.tissue == tissue, drop=True)
    np.testing.assert_array_equal(picked.values, dense[ds.tissue.values == tissue])
    assert picked.sizes["gene"] == ds.sizes["gene"]

    means = ds.counts.isel(gene=slice(0, 100)).groupby("srx_accession").mean().compute()
    for acc in np.unique(ds.srx_accession.values):
        rows = dense[ds.srx_accession.values == acc, :100]
        np.testing.assert_allclose(means.sel(srx_accession=acc).values, rows.mean(axis=0))

    none = ds.counts.where(ds.tissue == "no such tissue", drop=True)
    assert none.shape == (0, ds.sizes["gene"])  # empty, correctly shaped


@pytest.mark.parametrize("transpose", [True, False])
def test_direct_reader_against_zarr(tmp_path, transpose):
    rng = np.random.default_rng(0)
    data = (rng.poisson(0.3, size=(300, 700)) * rng.integers(1, 50, size=(300, 700))).astype(np.int16)
    data[:, 200:256] = 0  # a chunk column never written
    layout = StoreLayout(chunk_cells=64, chunk_genes=128, transpose=transpose)
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    arr = root.create_array("X", shape=data.shape, chunks=(64, 128), dtype="int16", fill_value=0,
                            filters=layout.filters(), compressors=layout.codec())
    arr[:] = data
    x = DirectX(str(tmp_path / "s.zarr"), n=290)  # rows past n are not committed
    expected = data[:290]
    keys = [
        (slice(None), 5), (slice(10, 200), slice(100, 400)), (7, slice(None)), (-1, -1), (slice(None), slice(690, 700)),
        (np.array([289, 3, 64, 65, 2]), np.array([699, 0, 130, 129, 5, 5])), (slice(0, 290, 7), slice(1, 600, 13)),
        (np.arange(290) % 3 == 0, slice(None)), (slice(5, 5), slice(None)),
    ]
    for key in keys:  # arrays select orthogonally (per axis), as Zarr's oindex does
        rows, genes = (k if isinstance(k, (int, slice)) else np.flatnonzero(k) if k.dtype == bool else k for k in key)
        fancy = not isinstance(rows, (int, slice)) and not isinstance(genes, (int, slice))
        want = expected[np.ix_(rows, genes)] if fancy else expected[rows, genes]
        np.testing.assert_array_equal(x[key], want, err_msg=str(key))
    lazy = da.from_array(x, chunks=x.chunks, asarray=False)
    np.testing.assert_array_equal(lazy[:, 300].compute(), expected[:, 300])
    np.testing.assert_array_equal(lazy[[5, 100, 7]][:, [3, 650]].compute(), expected[[5, 100, 7]][:, [3, 650]])
    copy = pickle.loads(pickle.dumps(x))  # what a distributed worker receives
    np.testing.assert_array_equal(copy[40:70, 120:140], expected[40:70, 120:140])
    with pytest.raises(IndexError):
        x[290, 0]


def test_genes_by_symbol_and_id(store, dense):
    ds = scdata.open_store(store)
    symbols, ids = ds.gene_symbol.values, ds.gene.values
    assert list(query.gene_ids(ds, ["CD3E", ids[7], symbols[100]])) == [ids[list(symbols).index("CD3E")], ids[7], ids[100]]
    one = query.expression(ds, symbols[100])
    assert one.dims == ("cell",)
    np.testing.assert_array_equal(one.values, dense[:, 100])
    sub = query.select_genes(ds, ["CD3E", ids[7]])
    assert list(sub.gene_symbol.values) == ["CD3E", symbols[7]]

    with pytest.raises(query.QueryError, match=r"'cd3e' is neither.*did you mean 'CD3E'"):
        query.gene_ids(ds, "cd3e")
    with pytest.raises(query.QueryError, match="NOT_A_GENE"):
        query.select_genes(ds, ["CD3E", "NOT_A_GENE"])
    twice = ds.assign_coords(gene_symbol=("gene", np.where(np.isin(ids, ids[[3, 9]]), "DUP", symbols)))
    with pytest.raises(query.QueryError, match=f"'DUP' names 2 genes.*{ids[3]}, {ids[9]}.*Ensembl ID"):
        query.gene_ids(twice, ["CD3E", "DUP"])
    assert list(query.gene_ids(twice, [ids[9]])) == [ids[9]]  # the ID still selects one of them


def test_cells_by_metadata(store, dense):
    ds = scdata.open_store(store)
    tissue, acc = ds.tissue.values[0], ds.srx_accession.values[-1]
    sub = query.select_cells(ds, tissue=tissue)
    mask = ds.tissue.values == tissue
    assert sub.counts.dtype == np.int16 and sub.sizes["cell"] == mask.sum()
    np.testing.assert_array_equal(query.select_genes(sub, ["CD3E"]).counts.values[:, 0],
                                  dense[mask][:, list(ds.gene_symbol.values).index("CD3E")])
    both = query.cell_mask(ds, tissue=[tissue], srx_accession=[acc, ds.srx_accession.values[0]])
    np.testing.assert_array_equal(both, mask & np.isin(ds.srx_accession.values, [acc, ds.srx_accession.values[0]]))

    with pytest.raises(query.QueryError, match="no cell has tissue='atlantis'; values in this store:"):
        query.select_cells(ds, tissue="atlantis")
    with pytest.raises(query.QueryError, match="'tisue' is not per-cell metadata"):
        query.cell_mask(ds, tisue=tissue)
    other = next(t for t in np.unique(ds.tissue.values) if t != ds.tissue.values[ds.srx_accession.values == acc][0])
    empty = query.select_cells(ds, tissue=other, srx_accession=acc)  # both exist, never together
    assert empty.counts.shape == (0, ds.sizes["gene"]) and empty.counts.values.shape == (0, ds.sizes["gene"])


@pytest.mark.parametrize("scale", ["log1p", "counts"])
def test_group_expression_against_pandas(store, dense, scale, tmp_path):
    ds = scdata.open_store(store)
    genes = list(ds.gene_symbol.values[[0, 5, 2047, 2900]]) + ["CD3E"]
    table = query.group_expression(ds, genes, by="tissue", scale=scale)
    cols = [list(ds.gene_symbol.values).index(g) for g in genes]
    x = dense[:, cols].astype(np.float64)
    if scale == "log1p":
        total = dense.sum(axis=1, keepdims=True).astype(np.float64)
        x = np.log1p(np.divide(x * 1e4, total, out=np.zeros_like(x), where=total > 0))
    frame = pd.DataFrame(x).groupby(ds.tissue.values)
    np.testing.assert_allclose(table["mean"].values, frame.mean().loc[table.tissue.values].values, rtol=1e-5)
    fractions = pd.DataFrame(dense[:, cols] > 0).groupby(ds.tissue.values).mean()
    np.testing.assert_allclose(table["fraction"].values, fractions.loc[table.tissue.values].values)
    assert list(table["n_cells"].values) == [int((ds.tissue.values == t).sum()) for t in table.tissue.values]
    assert list(table.gene_symbol.values) == genes

    figure = query.dot_plot(table)
    path = tmp_path / "dots.png"
    figure.savefig(path)
    image = __import__("matplotlib.image").image.imread(path)
    assert image.shape[0] > 50 and image.std() > 0  # drew something

    with pytest.raises(ValueError, match="scale must be"):
        query.group_expression(ds, genes, scale="log2")
    with pytest.raises(query.QueryError, match="'tisue' is not per-cell metadata"):
        query.group_expression(ds, genes, by="tisue")


def test_hvg_table(store):
    table = query.hvg_table(store)
    order = zarr.open_group(store, mode="r")["var"].attrs["sczarr_hvg"]["hvg_indices"]
    ds = scdata.open_store(store)
    assert list(table.index) == list(ds.gene.values[order]) and len(table) == 50
    assert list(table["rank"]) == list(range(1, 51)) and table["highly_variable"].all()
    assert list(table["gene_symbol"]) == list(ds.gene_symbol.values[order])


def test_selections_compose_and_read_directly(store, dense):
    from scdata.read.xarray_view import isel
    from scdata.read.lazy_counts import registered

    ds = scdata.open_store(store)
    rows = np.array([3000, 5, 129, 128, 2000, 7])
    genes = np.array([2999, 0, 1500, 1024, 1023])
    first = isel(ds, cell=rows, gene=genes)
    assert registered(first.counts.data) is not None  # still X's chunks, not dask's gather
    np.testing.assert_array_equal(first.counts.values, dense[np.ix_(rows, genes)])
    second = isel(first, cell=[4, 0], gene=slice(1, 3))
    np.testing.assert_array_equal(second.counts.values, dense[np.ix_(rows[[4, 0]], genes[1:3])])
    assert list(second.cell.values) == list(ds.cell.values[rows[[4, 0]]])
    by_label = isel(ds, cell=list(ds.cell.values[[10, 2]]), gene=list(ds.gene.values[[9, 8]]))
    np.testing.assert_array_equal(by_label.counts.values, dense[np.ix_([10, 2], [9, 8])])
    mask = ds.umi_count.values > np.median(ds.umi_count.values)
    np.testing.assert_array_equal(isel(ds, cell=mask).counts.values, dense[mask])
    empty = isel(ds, cell=[], gene=genes)
    assert empty.counts.values.shape == (0, len(genes))

    shifted = ds.assign(counts=ds.counts + 1)  # not X any more: xarray indexes it as usual
    assert registered(shifted.counts.data) is None
    np.testing.assert_array_equal(isel(shifted, cell=rows, gene=genes).counts.values, dense[np.ix_(rows, genes)] + 1)
    with pytest.raises(KeyError, match="not in the store"):
        isel(ds, gene=["ENSG_NOPE"])


def test_xarray_s_own_indexing_reads_x_directly(store, dense):
    """``sel``/``isel``/``[]`` as a notebook writes them reach X's chunks (a few tasks for one
    gene, not one per block of X) and give numpy's values for every kind of key."""
    from scdata.read.lazy_counts import registered

    ds = scdata.open_store(store)
    gene = ds.gene.values[1500]
    one = ds.counts.sel(gene=gene)
    np.testing.assert_array_equal(one.values, dense[:, 1500])
    names = {str(k[0] if isinstance(k, tuple) else k) for k in one.data.__dask_graph__().keys()}
    assert any(n.startswith("sczarr-sel-") for n in names) and not any(n.startswith("sczarr-X-") for n in names)
    pair = ds.counts.isel(cell=slice(100, 2900), gene=[1023, 5])
    assert registered(pair.data) is not None
    np.testing.assert_array_equal(pair.values, dense[100:2900][:, [1023, 5]])
    np.testing.assert_array_equal(pair.isel(cell=[7, 0]).values, dense[[107, 100]][:, [1023, 5]])
    mask = ds.umi_count.values > np.median(ds.umi_count.values)
    np.testing.assert_array_equal(ds.counts.where(ds.umi_count > np.median(ds.umi_count.values), drop=True)
                                  .isel(gene=[3]).values, dense[mask][:, [3]])
    np.testing.assert_array_equal(ds.counts[-1, 10:20].values, dense[-1, 10:20])
    np.testing.assert_array_equal(ds.counts[::7, -3].values, dense[::7, -3])
    np.testing.assert_array_equal(ds.counts.data[:5, None].compute()[:, 0], dense[:5])  # other keys: dask's own
    np.testing.assert_array_equal((ds.counts[:50] + 1).values, dense[:50] + 1)
    with pytest.raises(IndexError):
        ds.counts.data[len(dense), 0]


def test_whole_rows_ask_the_disk_for_their_chunk_files_first(store, dense, monkeypatch):
    """``to_anndata`` of whole rows advises the kernel of every chunk file it will read (one
    call per file, before the first decode), and of none past ``_ADVISE_MOST``; same values."""
    import os

    import scdata.store.chunks as chunks

    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: advised.append(os.readlink(
        f"/proc/self/fd/{fd}")) if advice == os.POSIX_FADV_WILLNEED else None)
    ds = scdata.open_store(store)
    crow, cgene = ds.attrs["chunk_shape"]
    view = scdata.to_anndata(ds, cells=slice(crow - 5, 2 * crow + 3))
    np.testing.assert_array_equal(view.X.toarray(), dense[crow - 5:2 * crow + 3])
    expected = {os.path.realpath(os.path.join(store, "X", "c", str(i), str(j))) for i in (0, 1, 2)
                for j in range(-(-dense.shape[1] // cgene))}
    assert set(advised) == {p for p in expected if os.path.exists(p)} and len(advised) == len(set(advised))
    advised.clear()
    monkeypatch.setattr(chunks, "_ADVISE_MOST", 4)
    scdata.to_anndata(scdata.open_store(store), cells=slice(0, 3 * crow))
    assert advised == []


def test_to_anndata_sparse_path(store, dense):
    ds = scdata.open_store(store)
    rows = np.array([3100, 0, 1, 640, 129])
    genes = list(ds.gene.values[[2500, 3, 1030]])
    view = scdata.to_anndata(ds, cells=rows, genes=genes)
    assert view.X.dtype == np.float32 and view.X.format == "csr"
    np.testing.assert_array_equal(view.X.toarray(), dense[np.ix_(rows, [2500, 3, 1030])])
    assert list(view.obs_names) == list(ds.cell.values[rows]) and list(view.var_names) == genes
    whole = scdata.to_anndata(query.select_cells(ds, srx_accession=ds.srx_accession.values[0]))
    np.testing.assert_array_equal(whole.X.toarray(), dense[ds.srx_accession.values == ds.srx_accession.values[0]])
    with pytest.raises(ValueError, match="selected twice"):
        scdata.to_anndata(ds, cells=[5, 5])


def test_sparse_rows_in_place_and_fallback_agree(store, dense, monkeypatch):
    """Rows in order are converted in place in the result; without scipy's routine (or for rows
    out of order) each chunk row is converted and stacked. Both give the dense store's values,
    with sorted column indices."""
    from scdata.read import lazy_counts

    x = DirectX(store, dense.shape[0])
    genes = np.array([0, 7, 2047, 2048, dense.shape[1] - 2, dense.shape[1] - 1])
    in_place = lazy_counts.sparse_rows(x, None, genes)
    whole = lazy_counts.sparse_rows(x, np.arange(100, dense.shape[0] - 3), None)
    monkeypatch.setattr(lazy_counts, "_assemble_rows", lambda *args: None)
    stacked = lazy_counts.sparse_rows(x, None, genes)
    np.testing.assert_array_equal(in_place.toarray(), dense[:, genes])
    np.testing.assert_array_equal(stacked.toarray(), dense[:, genes])
    np.testing.assert_array_equal(whole.toarray(), dense[100:-3])
    assert in_place.has_sorted_indices and whole.has_sorted_indices
