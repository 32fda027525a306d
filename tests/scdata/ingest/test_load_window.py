"""The load window: what is in flight follows the cluster, commits take the finished head in order."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scdata.ingest.load_window import GIB, Capacity, EarlyStarts, LoadWindow, WindowPolicy, commit_group

KIB = 1 << 10
POLICY = WindowPolicy(loading_bytes_per_cell=64 * KIB, loaded_bytes_per_cell=16 * KIB, memory_fraction=1.0)
"""16,384 loading cells per GiB, or 65,536 loaded ones."""


def test_loads_in_flight_grow_with_threads_and_memory():
    small, big = Capacity(threads=2, memory_bytes=8 * GIB), Capacity(threads=64, memory_bytes=256 * GIB)
    assert POLICY.max_loads(small) == 4 and POLICY.max_loads(big) == 128
    assert POLICY.max_bytes(small) == 8 * GIB and WindowPolicy().max_bytes(big) == 128 * GIB
    workers = {f"w{i}": {"nthreads": 1, "memory_limit": 4 * GIB} for i in range(16)}
    assert Capacity.from_workers(workers) == Capacity(16, 64 * GIB)
    assert Capacity.from_workers({"w": {"nthreads": 4, "memory_limit": 0}}).memory_bytes > 0  # no limit reported


def test_admission_is_bounded_by_loads_and_by_memory():
    window = LoadWindow(POLICY, Capacity(threads=2, memory_bytes=GIB))  # 4 loads, 16,384 loading cells
    for key in range(4):
        assert window.admits(1000)
        window.submitted(key, 1000)
    assert not window.admits(1000)  # four loads in flight
    window.loaded(0)  # 3,000 cells loading, 1,000 loaded (a quarter of a loading one's memory)
    assert window.admits(13_134) and not window.admits(13_135)
    huge = LoadWindow(POLICY, Capacity(threads=2, memory_bytes=GIB))
    assert huge.admits(50_000)  # larger than the window, but nothing else is held: it loads alone
    huge.submitted("big", 50_000)
    assert not huge.admits(1)


def test_a_slow_head_delays_commits_not_the_loads_behind_it():
    window = LoadWindow(POLICY, Capacity(threads=4, memory_bytes=GIB))
    for key in range(6):
        window.submitted(key, 500)
    for key in (1, 2, 3):
        window.loaded(key)
    assert window.take_unit() is None  # experiment 0 is still loading: nothing commits
    assert window.admits(500)  # but loads go on behind it
    window.loaded(0)
    assert window.take_unit() == [0, 1, 2, 3]
    window.failed(4)  # a rejection is part of the next unit, and frees its memory at once
    assert window.held_bytes == 4 * 500 * 16 * KIB + 500 * 64 * KIB
    window.loaded(5)
    assert window.take_unit() == [4, 5]
    window.written([0, 1, 2, 3])  # written: the workers hold those no more
    assert window.held_bytes == 500 * 16 * KIB
    window.committed([0, 1, 2, 3])
    window.committed([4, 5])  # written on the way
    assert window.held_bytes == 0 and window.pending == 0 and window.units_open == 0


def test_units_are_capped_and_at_most_units_ahead_are_open():
    policy = WindowPolicy(commit_experiments=3, commit_cells=1000, units_ahead=2)
    window = LoadWindow(policy, Capacity(threads=16, memory_bytes=64 * GIB))
    sizes = [100, 100, 100, 100, 901, 2000, 10]
    for key, cells in enumerate(sizes):
        window.submitted(key, cells)
        window.loaded(key)
    assert window.take_unit() == [0, 1, 2]  # three experiments at most
    assert window.take_unit() == [3]  # 100 + 901 > 1,000 cells
    assert window.take_unit() is None  # two units open
    window.committed([0, 1, 2])
    assert window.take_unit() == [4]
    window.committed([3])
    assert window.take_unit(stop_before=5) is None  # the caller stops before a fatal experiment
    assert window.take_unit() == [5]  # larger than the cap: alone
    with pytest.raises(ValueError, match="already in the window"):
        window.submitted(6, 1)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=40), threads=st.integers(1, 8),
       memory_gib=st.integers(1, 4), seed=st.randoms(use_true_random=False))
def test_any_finishing_order_commits_the_selection_in_order(sizes, threads, memory_gib, seed):
    """Driven as the ingest drives it: submit while admitted, finish loads in random order, take
    and commit units; the units concatenate to the selection, and the bounds always hold."""
    window = LoadWindow(POLICY, Capacity(threads, memory_gib * GIB))
    nxt, loading, open_units, committed = 0, [], [], []
    while len(committed) < len(sizes):
        while nxt < len(sizes) and window.admits(sizes[nxt]):
            window.submitted(nxt, sizes[nxt])
            loading.append(nxt)
            nxt += 1
        assert window.loading <= window.max_loads
        # memory: within the window, or one experiment larger than it, admitted alone
        assert window.held_bytes <= max(window.max_bytes, max(sizes[:nxt]) * POLICY.loading_bytes_per_cell)
        if loading:
            key = loading.pop(seed.randrange(len(loading)))
            window.failed(key) if sizes[key] % 7 == 0 else window.loaded(key)
        while (unit := window.take_unit()) is not None:
            open_units.append(unit)
        if open_units and (not loading or seed.random() < 0.5):
            unit = open_units.pop(0)
            window.committed(unit)
            committed += unit
    assert committed == list(range(len(sizes)))
    assert window.held_bytes == 0 and window.loading == 0


def test_units_ahead_follow_the_cluster():
    policy = WindowPolicy()
    assert policy.max_units(Capacity(threads=2, memory_bytes=GIB)) == 3
    assert policy.max_units(Capacity(threads=64, memory_bytes=GIB)) == 8
    assert policy.max_units(Capacity(threads=256, memory_bytes=GIB)) == 32
    assert WindowPolicy(units_ahead=5).max_units(Capacity(threads=256, memory_bytes=GIB)) == 5
    with pytest.raises(ValueError, match="units_ahead"):
        WindowPolicy(units_ahead=0)


def test_a_commit_takes_the_written_units_at_the_head_up_to_the_group_cap():
    policy = WindowPolicy(group_cells=1000)
    assert commit_group([400, 400, 400], policy) == 2  # 1,200 > 1,000
    assert commit_group([2000, 10], policy) == 1  # larger than the cap: alone
    assert commit_group([0, 0, 10], policy) == 3  # units of rejections only ride along
    assert commit_group([500], policy) == 1


def test_large_experiments_start_when_the_cells_before_them_take_as_long():
    cells = [100] * 30 + [2000] + [100] * 5 + [5000]
    early = EarlyStarts(cells, WindowPolicy(early_factor=4.0))  # mean 270: 2,000 and 5,000 are large
    capacity = Capacity(threads=1, memory_bytes=64 * GIB)
    assert early.due(0, capacity) == []  # 3,000 cells before the first: more than it takes itself
    assert early.due(5, capacity) == [36]  # 2,500 + 2,000 + 500 <= 5,000: the larger one first
    early.started(36)
    assert early.due(5, capacity) == []
    assert early.due(10, capacity) == [30]  # 2,000 before it
    assert early.due(31, capacity) == []  # reached in turn, or started
    assert EarlyStarts(cells, WindowPolicy(early_factor=None)).due(10, capacity) == []


def test_loads_ahead_of_their_turn_leave_room_for_the_loads_in_turn():
    policy = WindowPolicy(loads_per_thread=2, memory_fraction=0.5, loading_bytes_per_cell=KIB, loaded_bytes_per_cell=KIB)
    window = LoadWindow(policy, Capacity(threads=2, memory_bytes=8 * KIB * 1000))  # 4 loads, 4,000 cells
    assert window.admits_early(1500)
    window.started_early(1500)
    assert not window.admits_early(1000)  # half the memory at most
    assert window.admits_early(400)
    window.started_early(400)
    assert not window.admits_early(1)  # half the loads at most
    assert window.admits(10_000)  # nothing in turn is held: the head is never stalled by loads ahead
    window.submitted(0, 1000)
    assert window.admits(1100) and not window.admits(1200)  # 1,900 ahead + 1,000 in turn of 4,000
    window.submitted(1, 1500, early=True)  # its turn: no second reservation
    assert window.loading == 3 and window.early == 1 and window.held_bytes == 2900 * KIB
    window.loaded(0)
    window.loaded(1)
    assert window.take_unit() == [0, 1]
