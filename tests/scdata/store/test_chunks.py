"""ChunkWriter writes exactly the bytes Zarr's own write path writes."""

import os

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from scdata.store.chunks import ChunkWriter
from scdata.store.layout import StoreLayout

from tests.helpers import store_bytes


@pytest.mark.parametrize("transpose", [True, False])
@pytest.mark.parametrize("cname,shuffle,blocksize", [("zstd", "bitshuffle", 1 << 20), ("zstd", "bitshuffle", 2048),
                                                     ("lz4", "shuffle", 0)])
def test_same_bytes_as_zarr(tmp_path, transpose, cname, shuffle, blocksize):
    rng = np.random.default_rng(0)
    data = (rng.poisson(0.2, size=(300, 130)) * rng.integers(1, 40, size=(300, 130))).astype(np.int16)
    data[128:256] = 0  # an all-zero chunk row is not stored
    layout = StoreLayout(chunk_cells=128, chunk_genes=48, cname=cname, clevel=2, shuffle=shuffle, transpose=transpose,
                         blocksize=blocksize)  # 2048: several Blosc blocks per chunk
    explicit_zeros = sp.csr_matrix((np.zeros(3, np.int16), [1, 50, 129], [0, 1, 2, 3] + [3] * 125), shape=(128, 130))
    paths = {}
    for name in ("zarr", "sparse", "dense"):
        root = zarr.open_group(str(tmp_path / name), mode="w", zarr_format=3)
        arr = root.create_array("X", shape=data.shape, chunks=(128, 48), dtype="int16", fill_value=0,
                                filters=layout.filters(), compressors=layout.codec())
        if name == "zarr":
            arr[:] = data
        else:
            arr.resize((0, data.shape[1]))
            arr.resize(data.shape)
            writer = ChunkWriter(arr)
            if name == "dense":
                writer.write_rows(0, data[:256])
                writer.write_rows(256, data[256:])
            else:  # full chunk row with an edge gene chunk, stored zeros only, the last partial row
                writer.write_rows(0, sp.csr_matrix(data[:128]))
                writer.write_rows(128, explicit_zeros)
                writer.write_rows(256, sp.csr_matrix(data[256:]))
        paths[name] = str(tmp_path / name)
        np.testing.assert_array_equal(zarr.open_group(paths[name])["X"][:], data)
    assert store_bytes(paths["zarr"], ("X",)) == store_bytes(paths["sparse"], ("X",)) == store_bytes(paths["dense"], ("X",))
    assert not os.path.exists(os.path.join(paths["sparse"], "X", "c", "1", "0"))


def test_rejects_unaligned(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a"), shape=(300, 10), chunks=(128, 10), dtype="int16", fill_value=0,
                            compressors=StoreLayout().codec())
    writer = ChunkWriter(arr)
    with pytest.raises(ValueError, match="not aligned"):
        writer.write_rows(5, np.zeros((10, 10), np.int16))
    with pytest.raises(ValueError, match="partial chunk"):
        writer.write_rows(0, np.zeros((10, 10), np.int16))


@pytest.mark.parametrize("transpose", [True, False])
def test_reader_matches_zarr(tmp_path, transpose):
    from scdata.store.chunks import ChunkReader

    rng = np.random.default_rng(1)
    data = (rng.poisson(0.3, size=(300, 130)) * rng.integers(1, 9, size=(300, 130))).astype(np.int16)
    data[:, 50:100] = 0  # an all-zero chunk column is not stored
    layout = StoreLayout(chunk_cells=128, chunk_genes=48, transpose=transpose)
    arr = zarr.create_array(str(tmp_path / "a"), shape=data.shape, chunks=(128, 48), dtype="int16", fill_value=0,
                            filters=layout.filters(), compressors=layout.codec())
    arr[:] = data
    reader = ChunkReader(arr)
    for lo in (0, 128, 256):
        block = reader.read_csc(lo, min(lo + 128, 300))
        assert block.has_sorted_indices  # computed from the arrays: CSC order within each gene
        np.testing.assert_array_equal(block.toarray(), data[lo : lo + 128])
    with pytest.raises(ValueError, match="one chunk row"):
        reader.read_csc(10, 20)


def test_layout_attrs():
    assert StoreLayout.from_attrs({"chunk_cells": 1024, "chunk_genes": 2048, "cname": "zstd", "clevel": 3,
                                   "shuffle": "bitshuffle", "transpose": True, "obs_chunk": 65536}).blocksize == 0
    assert StoreLayout().codec().blocksize == StoreLayout().blocksize
    with pytest.raises(ValueError, match="blocksize"):
        StoreLayout(blocksize=-1)
