"""The floor of a statistics pass: Blosc-decode every stored chunk of X, nothing else.

Same store, same codec, same number of threads as the pass (each thread decodes whole chunk rows
into one reused buffer, as the pass does). A first round warms the page cache; prints one JSON
line with the median of the timed rounds, wall and CPU (all threads).

Also the floor of the pass as it reads chunks (``scdata.stats.bitplanes``): only the zstd half of
Blosc's decode, no bit un-shuffle (``zstd_*`` keys).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from scdata.stats.bitplanes import decode_frame, frames  # noqa: E402
from scdata.store.chunks import ChunkReader  # noqa: E402
from scdata.store.manifest import open_committed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    root, manifest = open_committed(a.store)
    reader = ChunkReader(root["X"])
    step, n = reader.chunk_rows, manifest.n_committed
    rows = [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def decode(bounds: tuple[int, int]) -> int:
        return sum(1 for _ in reader.gene_blocks(*bounds))

    def zstd_only(bounds: tuple[int, int]) -> int:
        i, out, n = bounds[0] // step, reader.thread_buffer().view(np.uint8), 0
        for j in range(-(-reader.array.shape[1] // reader.chunk_genes)):
            raw = reader.raw(i, j)
            if raw is not None:
                n += 1
                blocks = frames(raw)
                if blocks is None:
                    reader.decode(raw, out=out.view(np.int16))
                for frame, size in blocks or ():  # block by block into one buffer, as the pass reads
                    decode_frame(frame, out[:size])
        return n

    result = {"cells": n, "threads": a.threads}
    for name, work in (("", decode), ("zstd_", zstd_only)):
        times, cpu, chunks = [], [], 0
        for _ in range(a.rounds + 1):  # the first round warms the page cache and is not counted
            t, c = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(a.threads) as pool:
                chunks = sum(pool.map(work, rows))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        result.update({f"{name}chunks": chunks, f"{name}seconds": statistics.median(times[1:]),
                       f"{name}cpu_seconds": statistics.median(cpu[1:]), f"{name}rounds": times[1:]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
