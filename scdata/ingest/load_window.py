"""How much of an ingest is in flight: the load window and the commit units (pure; no Dask).

The cluster's size sets the parallelism, not the commit unit. Experiments are loaded in selection
order through a window that holds as many loads as the workers have threads (times
``loads_per_thread``, so a worker that finishes one has the next queued) and as many cells as a
share of the workers' memory holds. Commits stay in selection order: a commit unit is the
longest run of finished experiments at the head of the window, so a slow experiment delays the
commits behind it but not the loads behind it; those go on until the memory window is full.

The ingest driver (``scdata.ingest``) and the scaling benchmark's simulator
(``benchmarks/bench_scale.py``) both drive a ``LoadWindow``: the simulated figures are those of
this policy, not of a model of it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

GIB = 1 << 30
DEFAULT_WORKER_MEMORY = 4 * GIB
"""Memory assumed for a worker that reports no limit (``dask worker --memory-limit 0``)."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the cluster offers: worker threads in total and their memory limits in total."""

    threads: int
    memory_bytes: int

    def __post_init__(self) -> None:
        if self.threads <= 0:
            raise ValueError(f"a cluster needs at least one worker thread, got {self.threads}")
        if self.memory_bytes <= 0:
            raise ValueError(f"memory_bytes must be positive, got {self.memory_bytes}")

    @classmethod
    def from_workers(cls, workers: dict) -> "Capacity":
        """From ``Client.scheduler_info()["workers"]`` (each with ``nthreads`` and ``memory_limit``)."""
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
        memory = sum(int(w.get("memory_limit") or 0) or DEFAULT_WORKER_MEMORY for w in workers.values())
        return cls(max(threads, 1), memory or DEFAULT_WORKER_MEMORY)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowPolicy:
    """The knobs of the window; the defaults fit scBaseCount's experiments (~8k cells each)."""

    loads_per_thread: float = 2.0
    """Loads in flight per worker thread: one running, one queued behind it."""
    memory_fraction: float = 0.5
    """Share of the workers' total memory limit that experiments may fill from their load until
    their writes are done."""
    loading_bytes_per_cell: int = 48 << 10
    """Worker memory per cell of an experiment being loaded (the h5ad's float32 CSR and the
    conversion's temporaries; ~2,200 non-zeros of 36,601 genes per cell)."""
    loaded_bytes_per_cell: int = 16 << 10
    """Worker memory per cell of a loaded experiment waiting for its writes (int16 CSR rows)."""
    commit_experiments: int = 256
    """At most this many experiments per commit."""
    commit_cells: int | None = 1_000_000
    """At most this many cells per commit (by metadata; a larger experiment commits alone): the
    driver holds the obs rows of the units open."""
    units_ahead: int | None = None
    """Commit units formed and not committed: one commits while the next ones write. A unit is
    formed when there is room, so units grow by themselves when commits are slow. None: one per
    8 worker threads, at least 3 (a unit is written when its largest experiment is, so on a big
    cluster many units write at once)."""
    early_factor: float | None = 4.0
    """An experiment this many times the selection's mean size or larger starts loading ahead of
    its turn (``EarlyStarts``); None: every load in turn."""
    group_cells: int = 4_000_000
    """At most this many cells per commit of consecutive written units (``commit_group``): when
    commits are slower than writes, one commit takes every written unit at the head, so its fixed
    cost (round trips to the bucket) is paid once for all of them."""

    def __post_init__(self) -> None:
        if (self.loads_per_thread <= 0 or not 0 < self.memory_fraction <= 1 or self.loading_bytes_per_cell <= 0
                or self.loaded_bytes_per_cell <= 0):
            raise ValueError(f"loads_per_thread and bytes per cell must be positive and memory_fraction in (0, 1]: {self}")
        if self.commit_experiments <= 0 or (self.commit_cells is not None and self.commit_cells <= 0):
            raise ValueError(f"commit_experiments and commit_cells must be positive: {self}")
        if (self.units_ahead is not None and self.units_ahead <= 0) or self.group_cells <= 0:
            raise ValueError(f"units_ahead and group_cells must be positive: {self}")

    def max_loads(self, capacity: Capacity) -> int:
        return max(1, int(capacity.threads * self.loads_per_thread))

    def max_units(self, capacity: Capacity) -> int:
        return self.units_ahead or max(3, capacity.threads // 8)

    def max_bytes(self, capacity: Capacity) -> int:
        """Worker memory that experiments may hold at once, from load until written."""
        return max(1, int(capacity.memory_bytes * self.memory_fraction))


LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass(slots=True)
class _Slot:
    cells: int
    """Cells by metadata (what the window reserved)."""
    state: str = LOADING


class LoadWindow:
    """Experiments from submission to commit, in selection order.

    ``admits`` says whether the next experiment may be submitted; ``loaded``/``failed`` record a
    load's end; ``take_unit`` hands the next commit unit (the finished run at the head);
    ``written`` releases a unit's memory (its writes are done: the workers hold it no more) and
    ``committed`` closes it. Keys are whatever the caller names experiments by."""

    def __init__(self, policy: WindowPolicy, capacity: Capacity):
        self.policy = policy
        self.capacity = capacity
        self._slots: OrderedDict[object, _Slot] = OrderedDict()
        """Submitted and not yet in a unit, in selection order."""
        self.loading = 0
        self.held_bytes = 0
        """Worker memory reserved from submission until the unit's writes are done (by metadata cells)."""
        self.units_open = 0
        self._held_by_unit: dict[tuple, int] = {}
        self.early = 0
        """Loads started ahead of their turn and not yet in it."""
        self.early_bytes = 0

    def resize(self, capacity: Capacity) -> None:
        """Workers joined or left: the window follows (what is in flight stays)."""
        self.capacity = capacity

    @property
    def max_loads(self) -> int:
        return self.policy.max_loads(self.capacity)

    @property
    def max_bytes(self) -> int:
        return self.policy.max_bytes(self.capacity)

    def admits(self, cells: int) -> bool:
        """Whether an experiment of ``cells`` cells may start loading now, in its turn. One larger
        than the whole memory window is admitted when nothing else in turn is held (loads started
        ahead wait for their turn), so it cannot stall the ingest."""
        if self.loading >= self.max_loads:
            return False
        need = cells * self.policy.loading_bytes_per_cell
        return self.held_bytes == self.early_bytes or self.held_bytes + need <= self.max_bytes

    def admits_early(self, cells: int) -> bool:
        """Whether a load may start ahead of its turn: such loads hold at most half the window's
        loads and memory, so the loads in turn, which they wait for, always have room."""
        need = cells * self.policy.loading_bytes_per_cell
        return (self.loading < self.max_loads and self.early < self.max_loads // 2
                and self.early_bytes + need <= self.max_bytes // 2 and self.held_bytes + need <= self.max_bytes)

    def submitted(self, key, cells: int, early: bool = False) -> None:
        """An experiment starts loading in its turn; ``early``: it started ahead of its turn
        (``started_early``) and takes its place in the order now."""
        if key in self._slots:
            raise ValueError(f"experiment {key!r} is already in the window")
        self._slots[key] = _Slot(cells)
        need = cells * self.policy.loading_bytes_per_cell
        if early:
            self.early -= 1
            self.early_bytes -= need
        else:
            self.loading += 1
            self.held_bytes += need

    def started_early(self, cells: int) -> None:
        """A load started ahead of its turn (``EarlyStarts``): it holds a thread and memory from now."""
        need = cells * self.policy.loading_bytes_per_cell
        self.loading += 1
        self.early += 1
        self.held_bytes += need
        self.early_bytes += need

    def loaded(self, key) -> None:
        """Loaded: it holds its int16 rows now, less than while it was converted."""
        slot = self._finish(key, READY)
        self.held_bytes -= slot.cells * (self.policy.loading_bytes_per_cell - self.policy.loaded_bytes_per_cell)

    def failed(self, key) -> None:
        """A rejected experiment: it frees its memory now and commits (as a rejection) in its unit."""
        slot = self._finish(key, FAILED)
        self.held_bytes -= slot.cells * self.policy.loading_bytes_per_cell

    def _finish(self, key, state: str) -> _Slot:
        slot = self._slots[key]
        if slot.state != LOADING:
            raise ValueError(f"experiment {key!r} already finished loading")
        slot.state = state
        self.loading -= 1
        return slot

    @property
    def pending(self) -> int:
        """Experiments submitted and not yet in a unit."""
        return len(self._slots)

    def ready_run(self) -> list:
        """Keys of the finished experiments at the head, in order (what a unit could take)."""
        run = []
        for key, slot in self._slots.items():
            if slot.state == LOADING:
                break
            run.append(key)
        return run

    def take_unit(self, stop_before=None) -> list | None:
        """The next commit unit: finished experiments at the head in order, capped by the policy's
        experiments and cells per commit; ``stop_before`` (a key) ends the unit before that
        experiment. None when no unit can be formed now (``max_units`` units open, or the head
        is still loading)."""
        if self.units_open >= self.policy.max_units(self.capacity):
            return None
        unit, cells = [], 0
        for key, slot in self._slots.items():
            if slot.state == LOADING or key == stop_before or len(unit) >= self.policy.commit_experiments:
                break
            if self.policy.commit_cells is not None and unit and cells + slot.cells > self.policy.commit_cells:
                break
            unit.append(key)
            cells += slot.cells
        if not unit:
            return None
        self.units_open += 1
        held = 0
        for key in unit:
            slot = self._slots.pop(key)
            held += slot.cells * self.policy.loaded_bytes_per_cell if slot.state == READY else 0
        self._held_by_unit[tuple(unit)] = held
        return unit

    def written(self, unit: list) -> None:
        """The unit's writes are done: its experiments have left worker memory (the driver holds
        their obs rows until the commit). Called once per unit, before ``committed``."""
        self.held_bytes -= self._held_by_unit.pop(tuple(unit))

    def committed(self, unit: list) -> None:
        """The unit is committed (``written`` first, if it was not called)."""
        if tuple(unit) in self._held_by_unit:
            self.written(unit)
        self.units_open -= 1


def commit_group(written_cells: list[int], policy: WindowPolicy) -> int:
    """How many of the written units at the head (their cells, in order) the next commit takes:
    all of them up to ``policy.group_cells`` cells, and at least one."""
    n, cells = 0, 0
    for c in written_cells:
        if n and cells + c > policy.group_cells:
            break
        n, cells = n + 1, cells + c
    return n


class EarlyStarts:
    """Large experiments whose loads start ahead of their turn.

    Commits follow the selection's order, so a large experiment holds up every commit behind it
    while it loads, and the experiments loaded behind it wait in worker memory until the window
    is full. Started when the cells before it that have not started loading would take the
    cluster about as long as it takes itself (``threads * cells``: one thread loads it while every
    thread loads those), it finishes about when they do. Positions index the selection's order;
    the caller skips the positions that are not to be loaded (committed, rejected, past the
    budget)."""

    def __init__(self, cells: list[int], policy: WindowPolicy):
        self.cells = np.asarray(cells, dtype=np.int64)
        self.prefix = np.concatenate([[0], np.cumsum(self.cells)])
        big = [] if policy.early_factor is None or not len(cells) else \
            np.flatnonzero(self.cells >= policy.early_factor * self.cells.mean())
        self.pending = [int(i) for i in big]
        """Candidates not started, in order."""
        self.largest = int(self.cells[big].max()) if len(big) else 0

    def due(self, cursor: int, capacity: Capacity) -> list[int]:
        """Candidates after ``cursor`` (the next position to start in turn) that should start now,
        in order. Those reached in turn leave the candidates; ``started`` removes the others."""
        while self.pending and self.pending[0] < cursor:
            self.pending.pop(0)
        due = []
        for i in self.pending:
            ahead = self.cells_between(cursor, i)
            if ahead > capacity.threads * self.largest:  # no later one can be due either
                break
            if ahead <= capacity.threads * int(self.cells[i]):
                due.append(i)
        return due

    def started(self, position: int) -> None:
        self.pending.remove(position)

    def cells_between(self, start: int, stop: int) -> int:
        """Cells of the positions ``[start, stop)``."""
        return int(self.prefix[stop] - self.prefix[start])
