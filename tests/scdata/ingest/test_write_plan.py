"""The ingest's write plan: every chunk has exactly one writer and writes are chunk-aligned."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scdata.ingest.write_plan import COMMITTED, plan_round, split_rounds


def _check(plan, n_committed, counts, chunk):
    writes = plan.all_writes()
    first = (n_committed // chunk) * chunk if counts else plan.stop
    covered = []
    for w in writes:
        assert w.start % chunk == 0, "unaligned start"
        assert w.stop % chunk == 0 or w.stop == plan.stop, "unaligned stop"
        assert sum(p.n_rows for p in w.pieces) == w.stop - w.start
        dest = w.start
        for p in w.pieces:  # pieces tile the region in order
            assert p.dest_start == dest
            dest += p.n_rows
            if p.owner == COMMITTED:
                assert p.src_stop <= n_committed and p.src_start == p.dest_start
            else:
                lo, hi = plan.experiment_rows[p.owner]
                assert 0 <= p.src_start < p.src_stop <= hi - lo
                assert lo + p.src_start == p.dest_start
        covered.extend(range(w.start, w.stop))
    assert sorted(covered) == list(range(first, plan.stop)), "each row written exactly once"
    chunks = [c for w in writes for c in range(w.start // chunk, (w.stop - 1) // chunk + 1)]
    assert len(chunks) == len(set(chunks)), "a chunk has two writers"
    for i, own in enumerate(plan.own_writes):
        assert len(own) <= 1
        for w in own:
            assert w.owners == {i}
    for w in plan.seam_writes:
        assert len(w.pieces) > 1 or w.pieces[0].owner == COMMITTED


@settings(max_examples=400, deadline=None)
@given(
    n_committed=st.integers(0, 5000),
    counts=st.lists(st.integers(1, 3000), min_size=0, max_size=12),
    chunk=st.sampled_from([1, 7, 64, 128, 1000, 1024]),
)
def test_plan_invariants(n_committed, counts, chunk):
    plan = plan_round(n_committed, counts, chunk)
    assert plan.stop == n_committed + sum(counts)
    _check(plan, n_committed, counts, chunk)


def test_seam_includes_committed_rows():
    plan = plan_round(100, [50, 500], 128)
    first_seam, second_seam = plan.seam_writes
    assert first_seam.start == 0 and first_seam.pieces[0].owner == COMMITTED
    assert first_seam.owners == {COMMITTED, 0}
    assert (second_seam.start, second_seam.owners) == (128, {0, 1})
    assert [w.start for w in plan.own_writes[1]] == [256]


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk_rows"):
        plan_round(0, [1], 0)
    with pytest.raises(ValueError, match="at least one row"):
        plan_round(0, [5, 0], 8)
    assert split_rounds(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    # a cell bound closes rounds early; an experiment larger than the bound is a round of its own
    assert split_rounds(list("abcdef"), 10, [5, 5, 20, 3, 3, 3], max_cells=10) == [["a", "b"], ["c"], ["d", "e", "f"]]
    assert split_rounds(list("abc"), 2, [1, 1, 1], max_cells=100) == [["a", "b"], ["c"]]
