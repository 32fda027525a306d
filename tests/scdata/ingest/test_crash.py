"""A killed ingest, rerun, gives a store identical (X and obs, byte for byte) to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np

import scdata
import scdata.store.layout
from scdata.store.chunks import ChunkReader, ChunkWriter

from tests.conftest import ingest_config
from tests.helpers import assert_store_matches_sources, store_bytes

CHUNK_CELLS = 128


def _command(source: str, store: str) -> list[str]:
    return [sys.executable, "-m", "scdata", "ingest", "--source", source, "--store", store, "--cell-count", "1000000000",
            "--batch-size", "1", "--workers", "2", "--chunk-cells", str(CHUNK_CELLS), "--chunk-genes", "1024", "--no-progress"]


def _scratch_written(store: str) -> bool:
    """Whether a round has written chunks of X past the committed rows (X's shape grows only at
    the commit, so these are the scratch a kill leaves behind)."""
    committed = _committed(store)
    try:
        rows = [int(name) for name in os.listdir(os.path.join(store, "X", "c")) if name.isdigit()]
    except OSError:
        return False
    return committed > 0 and any(i * CHUNK_CELLS >= committed for i in rows)


def _kill_when(store: str, proc: subprocess.Popen, condition, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def _committed(store: str) -> int:
    try:
        manifest = scdata.read_manifest(store)
    except ValueError:
        return -1
    return -1 if manifest is None else manifest.n_committed


def _kill_run(source: str, store: str, condition) -> bool:
    proc = subprocess.Popen(_command(source, store), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = _kill_when(store, proc, condition)
    if proc.poll() is None:
        proc.wait()
    return killed


def _assert_identical(store: str, reference: str) -> None:
    assert store_bytes(store) == store_bytes(reference)
    a, b = scdata.read_manifest(store), scdata.read_manifest(reference)
    strip = lambda es: [{k: v for k, v in e.items() if k != "committed_at"} for e in es]  # noqa: E731
    assert strip(a.experiments) == strip(b.experiments)
    assert (a.n_committed, a.nnz, a.categories) == (b.n_committed, b.nnz, b.categories)
    assert_store_matches_sources(store)


def test_kill_and_resume_is_identical(demo_bucket, tmp_path):
    reference, crashed = str(tmp_path / "reference.zarr"), str(tmp_path / "crashed.zarr")
    subprocess.run(_command(demo_bucket, reference), check=True, capture_output=True)

    mid_round = [
        # mid-round: chunks of the round exist past the committed rows
        lambda: _scratch_written(crashed),
        # later, mid-round again
        lambda: _committed(crashed) > 1500 and _scratch_written(crashed),
    ]
    killed = [_kill_run(demo_bucket, crashed, condition) for condition in mid_round]
    assert any(killed), "the ingest finished before it could be killed mid-round"
    done = subprocess.run(_command(demo_bucket, crashed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _assert_identical(crashed, reference)


def test_kill_during_planning_and_resume_is_identical(demo_bucket, tmp_path):
    """A kill while the first run plans and creates the store (a fresh path: its zarr.json appears
    only in this run), before anything is committed; the next run ends in the identical store."""
    reference, planned = str(tmp_path / "reference.zarr"), str(tmp_path / "planned.zarr")
    subprocess.run(_command(demo_bucket, reference), check=True, capture_output=True)
    assert not os.path.exists(planned)
    assert _kill_run(demo_bucket, planned, lambda: os.path.exists(os.path.join(planned, "zarr.json"))), \
        "the ingest finished before the store was created"
    assert _committed(planned) <= 0, "the kill came after the first commit, not during planning"
    done = subprocess.run(_command(demo_bucket, planned), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _assert_identical(planned, reference)


def _chunk_indices(store: str, array: str) -> set[int]:
    directory = os.path.join(store, array, "c")
    return {int(name) for name in os.listdir(directory) if name.isdigit()} if os.path.isdir(directory) else set()


def _dead_round(store: str, stop: int) -> None:
    """What a round killed before its manifest leaves: X chunks and obs rows up to ``stop`` past
    the committed rows (the shared chunk's committed rows rewritten as a seam does), a category
    no committed cell uses, and one obs array already grown by the commit."""
    root = scdata.store.layout.open_root(store, mode="r+")
    n = scdata.read_manifest(store).n_committed
    x = scdata.store.layout.scratch_view(root["X"], stop)
    rng = np.random.default_rng(0)
    junk = rng.integers(1, 50, size=(stop - n, x.shape[1]), dtype=np.int16)
    seam = n - n % CHUNK_CELLS
    committed = ChunkReader(x).read_csc(seam, n).toarray().astype(np.int16)
    ChunkWriter(x).write_rows(seam, np.vstack([committed, junk]))
    for array in scdata.store.layout.row_arrays(root):
        fill = np.full(stop - n, "junk") if array.dtype.kind in "OTU" else np.ones(stop - n, dtype=array.dtype)
        scdata.store.layout.scratch_view(array, stop)[n:stop] = fill
    cats = root["obs/srx_accession/categories"]
    scdata.store.layout.scratch_view(cats, cats.shape[0] + 1)[cats.shape[0]:] = np.array(["SRXJUNK"])
    cats.resize((cats.shape[0] + 1,))
    root["obs/_index"].resize((stop,))


def test_truncate_drops_a_dead_rounds_scratch(demo_bucket, tmp_path):
    """A rerun after a dead round removes its chunks past the committed rows (X's shape never
    reached them, so resizing alone would not), and the store then grows as a fresh one."""
    layout = scdata.StoreLayout(chunk_cells=CHUNK_CELLS, chunk_genes=1024, obs_chunk=64)
    quiet = lambda *_: None  # noqa: E731
    fresh, grown = str(tmp_path / "fresh.zarr"), str(tmp_path / "grown.zarr")
    scdata.ingest(ingest_config(demo_bucket, fresh, cell_count=10**9, layout=layout), echo=quiet)
    n_final = scdata.read_manifest(fresh).n_committed
    scdata.ingest(ingest_config(demo_bucket, grown, cell_count=700, layout=layout), echo=quiet)
    n = scdata.read_manifest(grown).n_committed
    before = scdata.open_store(grown)
    _dead_round(grown, n_final + 3 * CHUNK_CELLS + 5)  # past where the grown store will end
    assert max(_chunk_indices(grown, "X")) * CHUNK_CELLS > n_final

    scdata.ingest(ingest_config(demo_bucket, grown, cell_count=700, layout=layout), echo=quiet)  # nothing to add
    assert max(_chunk_indices(grown, "X")) == (n - 1) // CHUNK_CELLS  # the shared chunk stays
    assert max(_chunk_indices(grown, "obs/_index")) == (n - 1) // 64
    assert max(_chunk_indices(grown, "obs/umi_count")) == (n - 1) // 64
    assert ad.read_zarr(grown).n_obs == n
    after = scdata.open_store(grown)
    np.testing.assert_array_equal(after.counts.values, before.counts.values)
    assert list(after.cell.values) == list(before.cell.values)
    assert "SRXJUNK" not in set(scdata.store.layout.read_categories(scdata.store.layout.open_root(grown), "srx_accession"))

    scdata.ingest(ingest_config(demo_bucket, grown, cell_count=10**9, layout=layout), echo=quiet)
    assert store_bytes(grown) == store_bytes(fresh)
    assert_store_matches_sources(grown)
