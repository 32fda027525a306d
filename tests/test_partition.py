"""The epoch partition: exactly once across ranks x workers, seeded, buffer-local shuffles."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scmodel.data.partition import batches_consumed_per_worker, epoch_plan, rank_slice, segments, worker_range


@settings(max_examples=200, deadline=None)
@given(n_rows=st.integers(0, 3000), keep=st.floats(0.1, 1.0), block=st.sampled_from([1, 16, 100, 1024]),
       buffer=st.integers(1, 5), world=st.integers(1, 4), workers=st.integers(1, 4), seed=st.integers(0, 99))
def test_exactly_once(n_rows, keep, block, buffer, world, workers, seed):
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(rng.random(n_rows) < keep)
    plan = epoch_plan(rows, block, buffer, seed, epoch=3)
    assert sorted(plan.order.tolist()) == rows.tolist()  # a permutation of the selection
    served = []
    counts = []
    for r in range(world):
        mine = []
        for w in range(workers):
            lo, hi = worker_range(len(rows), world, r, workers, w)
            for a, b in segments(plan, lo, hi):
                k = np.searchsorted(plan.buffer_starts, a, side="right") - 1
                assert plan.buffer_starts[k] <= a < b <= plan.buffer_starts[k + 1]  # one buffer per segment
            mine += plan.order[lo:hi].tolist()
        counts.append(len(mine))
        served += mine
    assert len(set(counts)) <= 1 and counts[0] == len(rows) // world  # equal per rank
    assert len(served) == len(set(served))  # nothing twice
    assert set(plan.order.tolist()) - set(served) == set(plan.order[world * (len(rows) // world):].tolist())


def test_buffers_are_block_local_and_seeded():
    rows = np.arange(10_000)
    a, b = epoch_plan(rows, 1000, 2, seed=1, epoch=0), epoch_plan(rows, 1000, 2, seed=1, epoch=0)
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.order, epoch_plan(rows, 1000, 2, seed=1, epoch=1).order)
    for s, e in zip(a.buffer_starts[:-1], a.buffer_starts[1:]):
        assert len(np.unique(a.order[s:e] // 1000)) <= 2  # a buffer reads at most buffer_blocks chunks


def test_round_robin_accounting():
    assert batches_consumed_per_worker(7, 3) == [3, 2, 2]
    assert rank_slice(10, 3, 2) == (6, 9)
