"""A chunk's non-zeros read from its bit planes equal those of the decoded chunk, or are refused."""

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from numcodecs import Blosc

from scdata.stats import bitplanes, zstd_lib
from scdata.store.chunks import ChunkReader, ChunkWriter
from scdata.stats.nonzeros import block_nonzeros, gene_nonzeros
from scdata.store.layout import StoreLayout


def _encode(block: np.ndarray, blocksize: int, cname: str = "zstd", shuffle: int = Blosc.BITSHUFFLE) -> bytes:
    return Blosc(cname=cname, clevel=1, shuffle=shuffle, blocksize=blocksize, typesize=2).encode(block.reshape(-1))


def _from_planes(raw: bytes, shape: tuple[int, int], width: int, n_rows: int, native: bool = True):
    """Through zstd called from the compiled kernel (``native``) or through numcodecs' Python API."""
    if native:
        assert zstd_lib.AVAILABLE  # numcodecs' zstd exports its API here; the fallback is tested too
    available, zstd_lib.AVAILABLE = zstd_lib.AVAILABLE, native
    try:
        return _entries(raw, shape, width, n_rows)
    finally:
        zstd_lib.AVAILABLE = available


def _entries(raw: bytes, shape: tuple[int, int], width: int, n_rows: int):
    size = shape[0] * shape[1]
    rows, values = np.empty(size + bitplanes.SLACK, np.int32), np.empty(size + bitplanes.SLACK, np.int16)
    starts = np.empty(width + 1, np.int64)
    found = bitplanes.nonzeros(raw, shape, width, n_rows, np.empty(size // 4 + 1, np.uint64), rows, values, starts)
    return None if found is None else (starts, rows[:found], values[:found])


def _assert_same(got, block: np.ndarray) -> None:
    expected = block_nonzeros(np.ascontiguousarray(block))
    np.testing.assert_array_equal(got[0], expected.starts)
    np.testing.assert_array_equal(got[1], expected.rows)
    np.testing.assert_array_equal(got[2], expected.values)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), genes=st.integers(1, 300), row_words=st.integers(1, 16),
       density=st.sampled_from([0.0, 0.001, 0.02, 0.3, 1.0]), top=st.sampled_from([2, 4, 300, 32767]),
       negative=st.booleans(), block_units=st.sampled_from([0, 1, 3, 32, 8192]), data=st.data())
def test_planes_match_decoded_block(seed, genes, row_words, density, top, negative, block_units, data):
    """Any gene-major int16 chunk, any Blosc block size (units of 128 bytes; 0: Blosc's choice,
    which may leave a short last block), any leading genes and rows."""
    rows = 64 * row_words
    rng = np.random.default_rng(seed)
    block = np.zeros((genes, rows), np.int16)
    hit = rng.random(block.shape) < density
    block[hit] = rng.integers(-40 if negative else 1, top, size=hit.sum())
    width = data.draw(st.integers(0, genes))
    n_rows = data.draw(st.integers(0, rows))
    raw = _encode(block, 128 * block_units)
    for native in (True, False):
        got = _from_planes(raw, block.shape, width, n_rows, native)
        if got is None:  # only where Blosc stored some of it uncompressed, which has no planes to read
            assert _stored_raw(raw)
        else:
            _assert_same(got, block[:width, :n_rows])


def _stored_raw(raw: bytes) -> bool:
    flags, nbytes, blocksize = raw[2], int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[8:12], "little")
    if flags & 0x02:
        return True
    starts = [int.from_bytes(raw[16 + 4 * k : 20 + 4 * k], "little") for k in range(-(-nbytes // blocksize))]
    sizes = [min(blocksize, nbytes - k * blocksize) for k in range(len(starts))]
    return any(int.from_bytes(raw[s : s + 4], "little") == size for s, size in zip(starts, sizes))


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("cname,shuffle",
                         [("zstd", Blosc.SHUFFLE), ("zstd", Blosc.NOSHUFFLE), ("lz4", Blosc.BITSHUFFLE)])
def test_other_codecs_are_refused(cname, shuffle, native):
    block = np.arange(64 * 8, dtype=np.int16).reshape(8, 64)
    assert _from_planes(_encode(block, 0, cname, shuffle), block.shape, 8, 64, native) is None


@pytest.mark.parametrize("native", [True, False])
def test_rows_not_in_whole_words_are_refused(native):
    block = np.ones((4, 100), np.int16)
    assert _from_planes(_encode(block, 0), block.shape, 4, 100, native) is None


@pytest.mark.parametrize("native", [True, False])
def test_incompressible_block_stored_raw_is_refused(native):
    """Blosc stores a block that does not compress as is; that block has no zstd frame."""
    block = np.random.default_rng(0).integers(-32768, 32767, size=(16, 64), dtype=np.int16)
    assert _from_planes(_encode(block, 0), block.shape, 16, 64, native) is None


@pytest.mark.parametrize("native", [True, False])
def test_truncated_chunk_is_refused_or_fails(native):
    """A chunk cut short is never read as if it were whole."""
    block = (np.arange(64 * 32, dtype=np.int16).reshape(32, 64) % 7 == 0).astype(np.int16)
    raw = _encode(block, 1024)
    for cut in (len(raw) - 1, len(raw) // 2, 20, 3):
        try:
            assert _from_planes(raw[:cut], block.shape, 32, 64, native) is None
        except RuntimeError:
            pass


def test_corrupt_chunk_names_the_chunk(tmp_path):
    layout = StoreLayout(chunk_cells=128, chunk_genes=32)
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    x = root.create_array("X", shape=(128, 40), chunks=(128, 32), dtype="int16", fill_value=0,
                          filters=layout.filters(), compressors=layout.codec())
    data = (np.random.default_rng(1).poisson(0.3, size=(128, 40)) * 3).astype(np.int16)
    ChunkWriter(x).write_rows(0, data)
    reader = ChunkReader(x)
    for g0, nz in gene_nonzeros(reader, 0, 128):  # the store's own chunks take the plane path
        _assert_same(nz, np.ascontiguousarray(data[:, g0 : g0 + 32].T))
    path = tmp_path / "s.zarr" / "X" / "c" / "0" / "1"
    raw = bytearray(path.read_bytes())
    raw[-12:-4] = b"\xff" * 8  # inside the zstd frame of the last block
    path.write_bytes(bytes(raw))
    for native in (True, False):
        available, zstd_lib.AVAILABLE = zstd_lib.AVAILABLE, native
        try:
            with pytest.raises(ValueError, match=r"X/c/0/1.*cannot decode"):
                list(gene_nonzeros(ChunkReader(zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["X"]), 0, 128))
        finally:
            zstd_lib.AVAILABLE = available
