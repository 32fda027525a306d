import numpy as np
import pytest
import scipy.sparse as sp

from scdata.store.int16_counts import CountsError, gene_column_map, to_store_counts


def test_reindex_round_saturate_and_count():
    source_genes = np.array(["G2", "G0", "GX"])
    axis = {"G0": 0, "G1": 1, "G2": 2}
    x = sp.csr_matrix(np.array([[1.0, 2.4, 7.0], [40000.0, 0.0, 0.0]], dtype=np.float32))
    out = to_store_counts(x, gene_column_map(source_genes, axis), 3)
    np.testing.assert_array_equal(out.matrix.toarray(), [[2, 0, 1], [0, 0, 32767]])
    assert out.matrix.dtype == np.int16
    np.testing.assert_array_equal(out.umi_count, [3, 40000])  # before saturation, dropped gene excluded
    np.testing.assert_array_equal(out.gene_count, [2, 1])
    np.testing.assert_array_equal(out.total_counts, [3, 32767])  # what the stored row sums to
    r = out.repairs
    assert (r.n_fractional, r.n_saturated, r.max_value, r.n_genes_dropped, r.n_umis_dropped) == (1, 1, 40000.0, 1, 7)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_negative_and_nonfinite_rejected(bad):
    x = sp.csr_matrix(np.array([[1.0, bad]], dtype=np.float32))
    with pytest.raises(CountsError):
        to_store_counts(x, np.array([0, 1]), 2)


def test_checksum_depends_on_content():
    x = sp.csr_matrix(np.array([[1.0, 2.0]], dtype=np.float32))
    a = to_store_counts(x, np.array([0, 1]), 2)
    b = to_store_counts(x * 2, np.array([0, 1]), 2)
    assert a.checksum() != b.checksum()
    assert a.checksum() == to_store_counts(x.copy(), np.array([0, 1]), 2).checksum()


@pytest.mark.parametrize("block_nnz", [1, 7, 10**9])
def test_blockwise_read_equals_whole(tmp_path, monkeypatch, block_nnz):
    """An h5ad's CSR X converted in row blocks (down to one row each) equals converting it whole:
    rows, per-cell totals, repairs and checksum, with shuffled, missing and extra genes,
    fractional values, saturation and empty rows."""
    import anndata as ad
    import pandas as pd

    from scdata.source import h5ad

    rng = np.random.default_rng(3)
    dense = rng.poisson(0.7, size=(40, 12)).astype(np.float32)
    dense[3] = 0
    dense[5, 2] = 2.5
    dense[7, 4] = 40000
    genes = np.array([f"ENSG{i:011d}" for i in range(12)])
    order = rng.permutation(12)
    adata = ad.AnnData(sp.csr_matrix(dense[:, order]), obs=pd.DataFrame(index=[f"c{i}" for i in range(40)]),
                       var=pd.DataFrame(index=genes[order]))
    path = str(tmp_path / "e.h5ad")
    adata.write_h5ad(path)
    axis = {g: i for i, g in enumerate([*genes[:10], "ENSG99999999999"])}  # two file genes off the axis
    whole = to_store_counts(sp.csr_matrix(dense[:, order]), gene_column_map(genes[order], axis), 11)
    monkeypatch.setattr(h5ad, "BLOCK_NNZ", block_nnz)
    got = h5ad.read_experiment(path, "SRX1", path, axis, 11).counts
    assert got.checksum() == whole.checksum()
    np.testing.assert_array_equal(got.matrix.toarray(), whole.matrix.toarray())
    for name in ("umi_count", "total_counts", "gene_count"):
        np.testing.assert_array_equal(getattr(got, name), getattr(whole, name))
    assert got.repairs == whole.repairs
    assert got.repairs.n_fractional == 1 and got.repairs.n_saturated == 1 and got.repairs.n_genes_dropped == 2
