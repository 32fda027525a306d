"""A killed ingest, rerun, gives a store identical (X and obs, byte for byte) to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import scdata

from .helpers import assert_store_matches_sources, store_bytes


def _command(source: str, store: str) -> list[str]:
    return [sys.executable, "-m", "scdata", "ingest", "--source", source, "--store", store, "--cell-count", "1000000000",
            "--batch-size", "1", "--workers", "2", "--chunk-cells", "128", "--chunk-genes", "1024", "--no-progress"]


def _x_rows(store: str) -> int:
    try:
        with open(os.path.join(store, "X", "zarr.json")) as f:
            return json.load(f)["shape"][0]
    except (OSError, ValueError, KeyError):
        return -1


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


def test_kill_and_resume_is_identical(demo_bucket, tmp_path):
    reference, crashed = str(tmp_path / "reference.zarr"), str(tmp_path / "crashed.zarr")
    subprocess.run(_command(demo_bucket, reference), check=True, capture_output=True)

    kills = [
        # mid-round: the array was grown for the round, scratch rows exist past the commit
        lambda: _committed(crashed) > 0 and _x_rows(crashed) > _committed(crashed),
        # during the planning pass / store creation
        lambda: os.path.exists(os.path.join(crashed, "zarr.json")),
        # later, mid-round again
        lambda: _committed(crashed) > 1500 and _x_rows(crashed) > _committed(crashed),
    ]
    killed = 0
    for condition in kills:
        proc = subprocess.Popen(_command(demo_bucket, crashed), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed += _kill_when(crashed, proc, condition)
        if proc.poll() is None:
            proc.wait()
    assert killed >= 2, "the ingest finished before it could be killed"
    done = subprocess.run(_command(demo_bucket, crashed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    assert store_bytes(crashed) == store_bytes(reference)
    a, b = scdata.read_manifest(crashed), scdata.read_manifest(reference)
    strip = lambda es: [{k: v for k, v in e.items() if k != "committed_at"} for e in es]  # noqa: E731
    assert strip(a.experiments) == strip(b.experiments)
    assert (a.n_committed, a.nnz, a.categories) == (b.n_committed, b.nnz, b.categories)
    assert_store_matches_sources(crashed)
