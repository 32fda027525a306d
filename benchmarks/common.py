"""Shared benchmark plumbing: run a command, sample its process tree's RSS, write results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
WORK = os.path.join(HERE, ".work")


@dataclass
class Measured:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    output: str


def run_measured(cmd: list[str], env: dict | None = None, interval: float = 0.05) -> Measured:
    """Run ``cmd``; peak RSS is the largest sum over the process and all its descendants: the
    process's RSS plus each descendant's USS (the pages only it maps). A child forked from the
    process shares its pages until either writes them; RSS would count those twice."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss if p is root else _unique_bytes(p)
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    stop.set()
    thread.join()
    return Measured(time.perf_counter() - start, peak, proc.returncode, output)


def _unique_bytes(p: psutil.Process) -> int:
    try:
        return p.memory_full_info().uss
    except (psutil.AccessDenied, AttributeError):  # no USS on this platform: RSS
        return p.memory_info().rss


def run_checked(cmd: list[str], env: dict | None = None) -> Measured:
    """``run_measured`` for a step that must succeed (set-up, or the tool being measured)."""
    m = run_measured(cmd, env)
    if m.returncode:
        raise SystemExit(m.output)
    return m


def ensure_bucket(path: str, n_experiments: int, seed: int = 7) -> str:
    """The synthetic 2025-02-25 bucket the benchmarks share (experiments of 2,000-14,000 cells),
    written once; returns its release root."""
    release = os.path.join(path, "scbasecount", "2025-02-25")
    if not os.path.exists(os.path.join(release, "metadata")):
        run_checked([sys.executable, "-m", "scdata", "demo-bucket", path, "--experiments", str(n_experiments),
                     "--min-cells", "2000", "--max-cells", "14000", "--release", "2025-02-25", "--seed", str(seed)])
    return release


LARGE_BUCKET_CELLS = 380_000
"""Runs of more cells than this read the 1M-cell bucket (the 50-experiment one holds ~390k)."""


def million_bucket() -> str:
    """The 125-experiment bucket (~954k cells) that the 1M-cell runs share, written once."""
    return ensure_bucket(os.path.join(WORK, "bucket-1m"), 125, seed=8)


def du(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total


def machine() -> dict:
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, payload: dict, table: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(table.rstrip() + "\n")
    print(table)


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
