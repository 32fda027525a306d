"""The epoch partition: exactly once across ranks x workers, seeded, buffer-local shuffles, and
positions that survive a change of scale (checked against brute force)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scmodel.data.partition import (EpochPlan, complement, handoff_sizes, n_batches, n_positions, positions_before,
                                    rank_slice, served_intervals, served_per_role, sub_intervals, union, worker_range)


def _positions(intervals) -> list[int]:
    return [p for a, b in intervals for p in range(a, b)]


def _brute_force_served(remaining: list[int], world, workers, batch, drop_last, per_handoff, k,
                        buffer_starts=()) -> set[int]:
    """Round-robin over hand-offs, written out batch by batch: a hand-off is ``per_handoff``
    batches, and a new one starts with any batch holding a buffer's first position."""
    n = len(remaining)
    served = set()
    for rank in range(world):
        queues = []
        for w in range(workers):
            lo, hi = worker_range(n, world, rank, workers, w)
            cells = remaining[lo:hi]
            batches = [cells[i : i + batch] for i in range(0, len(cells), batch)]
            if drop_last:
                batches = [b for b in batches if len(b) == batch]
            handoffs = []
            for i, b in enumerate(batches):
                previous = batches[i - 1][-1] if i else None
                new_buffer = previous is not None and any(previous < s <= b[-1] for s in buffer_starts)
                if not handoffs or len(handoffs[-1]) == per_handoff or new_buffer:
                    handoffs.append([])
                handoffs[-1].append(b)
            queues.append(handoffs)
        order = [b for lap in range(max(map(len, queues), default=0)) for q in queues if lap < len(q) for b in q[lap]]
        for b in order[:k]:
            served.update(b)
    return served


@settings(max_examples=200, deadline=None)
@given(n_rows=st.integers(0, 3000), keep=st.floats(0.1, 1.0), block=st.sampled_from([1, 16, 100, 1024]),
       buffer=st.integers(1, 5), seed=st.integers(0, 99), shuffle=st.booleans())
def test_plan_is_a_permutation_of_buffer_local_shuffles(n_rows, keep, block, buffer, seed, shuffle):
    rows = np.flatnonzero(np.random.default_rng(seed).random(n_rows) < keep)
    plan = EpochPlan(rows, block, buffer, seed, epoch=3, shuffle=shuffle)
    order = plan.order()
    assert sorted(order.tolist()) == rows.tolist()
    if not shuffle:
        np.testing.assert_array_equal(order, rows)
    for s, e in zip(plan.buffer_starts[:-1], plan.buffer_starts[1:]):
        assert len(np.unique(order[s:e] // block)) <= buffer  # a buffer reads at most buffer_blocks chunks
    # pieces of any interval set give the same cells as slicing the whole order
    if len(order):
        cut = np.sort(np.random.default_rng(seed).choice(len(order) + 1, 4))
        intervals = np.array([[cut[0], cut[1]], [cut[2], cut[3]]])
        got = np.concatenate([c for _, c in plan.pieces(intervals)] or [np.zeros(0, int)])
        np.testing.assert_array_equal(got, np.concatenate([order[a:b] for a, b in intervals]))


def test_order_seeded_by_seed_and_epoch():
    rows = np.arange(10_000)
    a = EpochPlan(rows, 1000, 2, seed=1, epoch=0).order()
    np.testing.assert_array_equal(a, EpochPlan(rows, 1000, 2, seed=1, epoch=0).order())
    assert not np.array_equal(a, EpochPlan(rows, 1000, 2, seed=1, epoch=1).order())
    assert not np.array_equal(a, EpochPlan(rows, 1000, 2, seed=2, epoch=0).order())


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 400), holes=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 40)), max_size=4),
       world=st.integers(1, 3), workers=st.integers(1, 4), batch=st.integers(1, 17), per_handoff=st.integers(1, 4),
       drop_last=st.booleans(), fraction=st.floats(0, 1), buffers=st.lists(st.integers(1, 399), max_size=6))
def test_served_positions_match_round_robin(n, holes, world, workers, batch, per_handoff, drop_last, fraction,
                                            buffers):
    start = union(np.array([[a, min(a + w, n)] for a, w in holes if a < n], dtype=np.int64).reshape(-1, 2))
    remaining = complement(start, n)
    m = n_positions(remaining)
    assert m == n - n_positions(start)
    counts = [n_batches(worker_range(m, world, 0, workers, w)[1] - worker_range(m, world, 0, workers, w)[0],
                        batch, drop_last) for w in range(workers)]
    k = int(fraction * sum(counts))
    buffer_starts = sorted({b for b in buffers if b < n})
    cuts = positions_before(remaining, np.asarray(buffer_starts, dtype=np.int64))
    got = set(_positions(served_intervals(remaining, world, workers, batch, drop_last, per_handoff, k, cuts)))
    assert got == _brute_force_served(_positions(remaining), world, workers, batch, drop_last, per_handoff, k,
                                      buffer_starts)
    assert not got & set(_positions(start))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), layouts=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3),
                                                          st.floats(0, 1)), min_size=1, max_size=4),
       batch=st.integers(1, 13))
def test_restarts_at_other_scales_serve_each_cell_once(n, layouts, batch):
    """Save part-way through, restart with another (world, workers, hand-off): every position is
    served at most once, and a final layout serves all that is left but its rank remainder."""
    consumed = np.zeros((0, 2), np.int64)
    served: list[int] = []
    for i, (world, workers, per_handoff, fraction) in enumerate(layouts):
        remaining = complement(consumed, n)
        m = n_positions(remaining)
        total = sum(n_batches(hi - lo, batch, False) for lo, hi in
                    (worker_range(m, world, 0, workers, w) for w in range(workers)))
        k = total if i == len(layouts) - 1 else int(fraction * total)
        now = served_intervals(remaining, world, workers, batch, False, per_handoff, k)
        served += _positions(now)
        consumed = union(consumed, now)
    assert len(served) == len(set(served))
    assert n - len(served) == m % world  # only the last layout's rank remainder is left


def test_round_robin_accounting():
    assert handoff_sizes(10, 4) == [4, 4, 2]
    assert handoff_sizes(10, 4, starts=[3, 9]) == [3, 4, 2, 1]  # a new hand-off at each buffer's first batch
    # roles with 10 and 9 batches, hand-offs of 4: 4 (r0), 4 (r1), 4 (r0), 4 (r1), 2 (r0), 1 (r1)
    items = [handoff_sizes(10, 4), handoff_sizes(9, 4)]
    assert served_per_role(items, 6) == ([4, 2], 1)  # mid hand-off of role 1
    assert served_per_role(items, 8) == ([4, 4], 0)
    assert served_per_role(items, 18) == ([10, 8], 1)
    # a buffer's start's place in the remaining sequence
    places = positions_before(np.array([[0, 3], [5, 9]]), np.array([0, 2, 4, 5, 7, 9, 12]))
    assert places.tolist() == [0, 2, 3, 3, 5, 7, 7]
    assert rank_slice(10, 3, 2) == (6, 9)
    assert sub_intervals(np.array([[0, 3], [5, 9]]), 2, 6).tolist() == [[2, 3], [5, 8]]
