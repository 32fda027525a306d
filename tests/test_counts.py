import numpy as np
import pytest
import scipy.sparse as sp

from scdata.counts import CountsError, gene_column_map, to_store_counts


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
