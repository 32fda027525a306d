"""Reading obs/var columns of an h5ad: the h5py fast path agrees with anndata, faults are named."""

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from scdata.source.h5ad import ExperimentError, frame_column


def _write(path, obs: pd.DataFrame) -> None:
    ad.AnnData(X=np.zeros((len(obs), 2), np.float32), obs=obs).write_h5ad(path)


def test_columns_match_anndata(tmp_path):
    path = tmp_path / "a.h5ad"
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(["T cell", None, "B cell", "T cell"]),  # a missing value: code -1
            "label": ["x", "y", "z", "w"],  # string array
            "score": [0.5, 1.0, 2.5, 3.0],  # numeric: through anndata
            "flag": pd.array([True, None, False, True], dtype="boolean"),  # nullable: through anndata
        },
        index=[f"AAAC-{i}" for i in range(4)],
    )
    _write(path, obs)
    reference = ad.read_h5ad(path).obs
    with h5py.File(path) as f:
        assert list(frame_column(f["obs"], None, "SRX1", "u")) == list(reference.index.astype(str))
        for column in obs.columns:
            values = frame_column(f["obs"], column, "SRX1", "u")
            assert values.dtype == object
            assert list(values) == list(reference[column].astype(str)), column


def test_faults_name_the_experiment(tmp_path):
    path = tmp_path / "b.h5ad"
    _write(path, pd.DataFrame({"cell_type": pd.Categorical(["a", "b"])}, index=["c1", "c2"]))
    with h5py.File(path, "r+") as f:
        codes = f["obs/cell_type/codes"]
        codes[1] = 7  # a code past the categories
    with h5py.File(path) as f:
        with pytest.raises(ExperimentError, match="SRX9.*category code 7"):
            frame_column(f["obs"], "cell_type", "SRX9", "gs://b/SRX9.h5ad")
        with pytest.raises(ExperimentError, match="SRX9.*has no column 'tissue'"):
            frame_column(f["obs"], "tissue", "SRX9", "gs://b/SRX9.h5ad")
