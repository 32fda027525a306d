"""The floor of a statistics pass: Blosc-decode every stored chunk of X, nothing else.

Same store, same codec, same number of threads as the pass (each thread decodes whole chunk rows
into one reused buffer, as the pass does). A first round warms the page cache; prints one JSON
line with the median of the timed rounds, wall and CPU (all threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from scdata.chunkio import ChunkReader  # noqa: E402
from scdata.dataset import _committed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    root, manifest = _committed(a.store)
    reader = ChunkReader(root["X"])
    step, n = reader.chunk_rows, manifest.n_committed
    rows = [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def decode(bounds: tuple[int, int]) -> int:
        return sum(1 for _ in reader.gene_blocks(*bounds))

    times, cpu, chunks = [], [], 0
    for _ in range(a.rounds + 1):  # the first round warms the page cache and is not counted
        t, c = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(a.threads) as pool:
            chunks = sum(pool.map(decode, rows))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(json.dumps({"cells": n, "chunks": chunks, "threads": a.threads, "seconds": statistics.median(times[1:]),
                      "cpu_seconds": statistics.median(cpu[1:]), "rounds": times[1:]}))


if __name__ == "__main__":
    main()
