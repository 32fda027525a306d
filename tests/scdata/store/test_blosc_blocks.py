"""Decoding only the Blosc blocks that hold the genes a reader needs: the same values as a whole
decode, and fewer blocks decoded."""

from __future__ import annotations

import numpy as np
import pytest
from numcodecs import Blosc

from scdata.store import blosc_blocks
from scdata.store.blosc_blocks import blocks_for_runs, decode_runs

ROWS, GENES = 64, 48


def _chunk(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = rng.poisson(0.3, size=(GENES, ROWS)).astype(np.int16)  # gene-major, like X's chunks
    dense[rng.random(GENES) < 0.3] = 0
    return dense


def _encode(chunk: np.ndarray, blocksize: int) -> tuple[Blosc, bytes]:
    codec = Blosc(cname="zstd", clevel=1, shuffle=Blosc.BITSHUFFLE, blocksize=blocksize)
    return codec, codec.encode(chunk.reshape(-1))


@pytest.mark.parametrize("blocksize", [256, 384, 1000, 4096, 1 << 17])
@pytest.mark.parametrize("genes", [[0], [47], [5, 6, 7], [3, 20, 41], list(range(GENES))])
def test_selected_genes_match_a_whole_decode(blocksize, genes):
    """Blocks of 128 items (2 genes), 192 (3 genes), 500 (a gene split across two blocks), 2048
    and one block for the chunk: the selected genes' values are exactly the whole decode's."""
    chunk = _chunk()
    codec, raw = _encode(chunk, blocksize)
    out = np.full(chunk.size, -7, dtype=np.int16)
    decode_runs(raw, np.asarray(genes) * ROWS, ROWS, out, lambda data, target: codec.decode(data, out=target))
    np.testing.assert_array_equal(out.reshape(GENES, ROWS)[genes], chunk[genes])


def test_only_the_blocks_holding_the_genes_are_decoded(monkeypatch):
    chunk = _chunk(1)
    codec, raw = _encode(chunk, 256)  # 128 items per block: 2 genes of 64 cells
    calls = []
    real = blosc_blocks._BLOSC_GETITEM
    assert real is not None, "numcodecs' extension no longer exports blosc_getitem"

    def counting(source, start, count, target):
        calls.append((start, count))
        return real(source, start, count, target)

    monkeypatch.setattr(blosc_blocks, "_BLOSC_GETITEM", counting)
    whole = []
    out = np.zeros(chunk.size, dtype=np.int16)
    decode_runs(raw, np.asarray([3, 30]) * ROWS, ROWS, out, lambda data, target: whole.append(1) or codec.decode(data, out=target))
    assert not whole
    assert calls == [(128, 128), (15 * 128, 128)]  # gene 3 lies in block 1, gene 30 in block 15
    np.testing.assert_array_equal(out.reshape(GENES, ROWS)[[3, 30]], chunk[[3, 30]])


def test_most_blocks_needed_decodes_the_chunk_once(monkeypatch):
    chunk = _chunk(2)
    codec, raw = _encode(chunk, 256)
    monkeypatch.setattr(blosc_blocks, "_BLOSC_GETITEM", lambda *a: pytest.fail("decoded block by block"))
    out = np.zeros(chunk.size, dtype=np.int16)
    decode_runs(raw, np.arange(0, GENES, 1) * ROWS, ROWS, out, lambda data, target: codec.decode(data, out=target))
    np.testing.assert_array_equal(out.reshape(GENES, ROWS), chunk)


def test_blocks_for_runs():
    assert blocks_for_runs(np.array([0, 64]), 64, 128).tolist() == [0]
    assert blocks_for_runs(np.array([100]), 64, 128).tolist() == [0, 1]  # a run across a block boundary
    assert blocks_for_runs(np.array([256, 0]), 64, 128).tolist() == [0, 2]


def test_a_chunk_file_is_read_only_where_the_genes_blocks_lie(tmp_path):
    """From a file, only the header, the block offsets and the needed blocks are read: the rest of
    the buffer keeps what it held, and decoding still gives the genes' values."""
    from scdata.store.blosc_blocks import read_blocks

    chunk = _chunk(3)
    codec, raw = _encode(chunk, 256)
    path = tmp_path / "0"
    path.write_bytes(raw)
    buffer = np.full(len(raw) + 64, 0xAB, dtype=np.uint8)
    view = read_blocks(str(path), np.asarray([3, 30]) * ROWS, ROWS, buffer)
    read = np.flatnonzero(buffer[: len(raw)] != 0xAB)
    assert 0 < len(read) < len(raw) // 4  # 2 of 24 blocks, plus the header and offsets
    out = np.zeros(chunk.size, dtype=np.int16)
    decode_runs(view, np.asarray([3, 30]) * ROWS, ROWS, out, lambda data, target: codec.decode(data, out=target))
    np.testing.assert_array_equal(out.reshape(GENES, ROWS)[[3, 30]], chunk[[3, 30]])
    whole = read_blocks(str(path), np.arange(GENES) * ROWS, ROWS, buffer)  # most blocks: the whole file
    assert bytes(whole) == raw
    assert read_blocks(str(tmp_path / "missing"), np.asarray([0]), ROWS, buffer) is None


def _chunk_files(directory, chunks, blocksizes, missing_at: int | None = None) -> list[str]:
    """One chunk file per chunk (as X's chunks are stored), and a path never written at
    ``missing_at`` (a chunk of zeros)."""
    paths = []
    for k, (chunk, blocksize) in enumerate(zip(chunks, blocksizes)):
        path = directory / str(k)
        path.write_bytes(_encode(chunk, blocksize)[1])
        paths.append(str(path))
    if missing_at is not None:
        paths.insert(missing_at, str(directory / "never-written"))
    return paths


def _decode_column(paths: list[str], genes: np.ndarray) -> list[np.ndarray | None]:
    """``decode_files`` over ``paths``: each file's values of ``genes`` (None for a missing file)."""
    from scdata.store.blosc_blocks import decode_files

    codec = Blosc(cname="zstd", clevel=1, shuffle=Blosc.BITSHUFFLE)
    out = np.zeros(GENES * ROWS, dtype=np.int16)
    buffer = np.zeros(out.nbytes + 4096, dtype=np.uint8)
    return [None if o is None else o.reshape(GENES, ROWS)[genes].copy()
            for o in decode_files(paths, genes * ROWS, ROWS, out, lambda d, t: codec.decode(d, out=t), buffer)]


def test_a_column_of_chunk_files_decodes_like_each_file_alone(tmp_path):
    """decode_files plans the blocks from the first file; a missing file gives None and a file
    with another block size takes the general path, with the same values."""
    chunks = [_chunk(s) for s in range(4)]
    paths = _chunk_files(tmp_path, chunks, [256, 256, 1000, 256], missing_at=2)
    genes = np.asarray([1, 17, 40])
    got = _decode_column(paths, genes)
    assert got[2] is None
    for chunk, values in zip(chunks, got[:2] + got[3:]):
        np.testing.assert_array_equal(values, chunk[genes])


def test_a_cold_first_read_reads_the_other_files_ahead(tmp_path, monkeypatch):
    """When the first file's read waits (here: any read counts as waiting), the remaining files'
    blocks are read ahead on the pool, in jobs that cover every remaining file once; the values
    are those of the files, missing and differently encoded files included. Jobs are recorded as
    submitted: one that has not started when the column is done is cancelled (on a busy machine,
    some are), so counting the jobs that ran would test the scheduler."""
    monkeypatch.setattr(blosc_blocks, "_COLD_READ_S", -1.0)
    monkeypatch.setattr(blosc_blocks, "_READ_AHEAD_FILES", 3)
    covered = []
    pool = blosc_blocks._read_ahead_pool()

    class RecordingPool:
        def submit(self, fn, paths, *rest):
            assert fn is blosc_blocks._read_ahead
            covered.extend(paths)
            return pool.submit(fn, paths, *rest)

    monkeypatch.setattr(blosc_blocks, "_read_ahead_pool", RecordingPool)
    chunks = [_chunk(s) for s in range(12)]
    paths = _chunk_files(tmp_path, chunks, [1000 if k == 7 else 256 for k in range(12)], missing_at=5)
    genes = np.asarray([2, 30])
    got = _decode_column(paths, genes)
    assert got[5] is None
    for chunk, values in zip(chunks, got[:5] + got[6:]):
        np.testing.assert_array_equal(values, chunk[genes])
    assert sorted(covered) == sorted(paths[1:])


def test_a_warm_first_read_reads_nothing_ahead(tmp_path, monkeypatch):
    monkeypatch.setattr(blosc_blocks, "_COLD_READ_S", 60.0)
    monkeypatch.setattr(blosc_blocks, "_read_ahead", lambda *_: pytest.fail("read ahead of a warm column"))
    chunk = _chunk(3)
    paths = _chunk_files(tmp_path, [chunk] * 40, [256] * 40)
    for values in _decode_column(paths, np.asarray([9])):
        np.testing.assert_array_equal(values[0], chunk[9])
