"""The timing harness every loader run shares (numpy only: it also runs in annbatch's Python 3.12
environment, which has no torch).

Task: shuffled batches of 64 cells x 2,000 HVGs, dense float32, normalize_total (1e4) + log1p,
computed before a batch is counted. Harness: a warm-up (``WARMUP_CELLS``, so first reads, thread
start-up and JIT compilation are not timed), then ``REPEATS`` windows of at least ``WINDOW_S``
seconds each on the same iterator (a new epoch starts when one ends, and its start-up is timed);
the median window is the rate. Mixing: distinct experiments per batch, over the timed batches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import numpy as np

BATCH = 64
WARMUP_CELLS = 40_000
WINDOW_S = float(os.environ.get("BENCH_WINDOW_S", 6.0))  # a smaller value for smoke runs
REPEATS = 3


def transform(x: np.ndarray) -> np.ndarray:
    """normalize_total to 1e4 then log1p, dense float32, in place on one copy."""
    x = np.asarray(x, dtype=np.float32)
    totals = x.sum(axis=1, keepdims=True)
    totals /= 1e4
    totals[totals == 0] = 1
    x /= totals
    np.log1p(x, out=x)
    return x


def measure(make_iter: Callable[[], Iterator[tuple[np.ndarray, np.ndarray | None]]],
            window_s: float = WINDOW_S, repeats: int = REPEATS, warmup_cells: int = WARMUP_CELLS) -> dict:
    """``make_iter()`` yields ``(batch, experiment code per cell or None)`` for one epoch. Also
    reports this process's RSS before the first batch is asked for (its modules imported and
    the loader object made, nothing read yet): the peak above it is the loader's own memory."""
    rss_at_start = _rss_bytes()
    it = make_iter()

    def draw():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = make_iter()
            return next(it)

    cells = 0
    t = time.perf_counter()
    while cells < warmup_cells:
        cells += len(draw()[0])
    warmup_s = time.perf_counter() - t
    rates, mixes, total = [], [], 0
    for _ in range(repeats):
        cells = 0
        t = time.perf_counter()
        while True:
            x, labels = draw()
            cells += len(x)
            if labels is not None and len(mixes) < 20_000:
                mixes.append(len(np.unique(labels)))
            elapsed = time.perf_counter() - t
            if elapsed >= window_s:
                break
        rates.append(cells / elapsed)
        total += cells
    out = {"cells_per_s": float(np.median(rates)), "window_rates": [round(r) for r in rates], "cells": total,
           "warmup_s": round(warmup_s, 2), "batch": BATCH, "rss_at_start_bytes": rss_at_start}
    if mixes:
        out["experiments_per_batch"] = float(np.mean(mixes))
    return out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no procfs: unknown
        return 0


def random_mixing(codes: np.ndarray, trials: int = 2000, seed: int = 0) -> float:
    """Distinct experiments per batch of 64 under a true random permutation."""
    rng = np.random.default_rng(seed)
    return float(np.mean([len(np.unique(codes[rng.choice(len(codes), BATCH, replace=False)])) for _ in range(trials)]))
