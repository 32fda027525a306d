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
    """Share of the workers' total memory limit that loaded, not yet committed experiments may fill."""
    bytes_per_cell: int = 48 << 10
    """Worker memory per cell of an experiment from its load until its commit (the h5ad's float32
    CSR while it is converted, then the int16 rows: ~2,200 non-zeros of 36,601 genes per cell)."""
    commit_experiments: int = 64
    """At most this many experiments per commit."""
    commit_cells: int | None = 400_000
    """At most this many cells per commit (by metadata; a larger experiment commits alone): the
    driver holds one commit unit's obs rows at a time."""
    units_ahead: int = 2
    """Commit units planned (writing) but not committed: one writes while the one before commits.
    A unit is formed when there is room, so units grow by themselves when commits are slow."""

    def __post_init__(self) -> None:
        if self.loads_per_thread <= 0 or not 0 < self.memory_fraction <= 1 or self.bytes_per_cell <= 0:
            raise ValueError(f"loads_per_thread and bytes_per_cell must be positive and memory_fraction in (0, 1]: {self}")
        if self.commit_experiments <= 0 or (self.commit_cells is not None and self.commit_cells <= 0):
            raise ValueError(f"commit_experiments and commit_cells must be positive: {self}")
        if self.units_ahead <= 0:
            raise ValueError(f"units_ahead must be positive, got {self.units_ahead}")

    def max_loads(self, capacity: Capacity) -> int:
        return max(1, int(capacity.threads * self.loads_per_thread))

    def max_cells(self, capacity: Capacity) -> int:
        """Cells that may be held from load to commit at once."""
        return max(1, int(capacity.memory_bytes * self.memory_fraction) // self.bytes_per_cell)


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
    ``committed`` releases a unit's memory. Keys are whatever the caller names experiments by."""

    def __init__(self, policy: WindowPolicy, capacity: Capacity):
        self.policy = policy
        self.capacity = capacity
        self._slots: OrderedDict[object, _Slot] = OrderedDict()
        """Submitted and not yet in a unit, in selection order."""
        self.loading = 0
        self.held_cells = 0
        """Cells reserved from submission until the commit of their unit."""
        self.units_open = 0
        self._held_by_unit: dict[tuple, int] = {}

    def resize(self, capacity: Capacity) -> None:
        """Workers joined or left: the window follows (what is in flight stays)."""
        self.capacity = capacity

    @property
    def max_loads(self) -> int:
        return self.policy.max_loads(self.capacity)

    @property
    def max_cells(self) -> int:
        return self.policy.max_cells(self.capacity)

    def admits(self, cells: int) -> bool:
        """Whether an experiment of ``cells`` cells may start loading now. One larger than the whole
        memory window is admitted when nothing else is held, so it cannot stall the ingest."""
        if self.loading >= self.max_loads:
            return False
        return self.held_cells == 0 or self.held_cells + cells <= self.max_cells

    def submitted(self, key, cells: int) -> None:
        if key in self._slots:
            raise ValueError(f"experiment {key!r} is already in the window")
        self._slots[key] = _Slot(cells)
        self.loading += 1
        self.held_cells += cells

    def loaded(self, key) -> None:
        self._finish(key, READY)

    def failed(self, key) -> None:
        """A rejected experiment: it frees its memory now and commits (as a rejection) in its unit."""
        slot = self._finish(key, FAILED)
        self.held_cells -= slot.cells

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
        experiment. None when no unit can be formed now (``units_ahead`` units open, or the head
        is still loading)."""
        if self.units_open >= self.policy.units_ahead:
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
            held += slot.cells if slot.state == READY else 0
        self._held_by_unit[tuple(unit)] = held
        return unit

    def committed(self, unit: list) -> None:
        """The unit is committed: its experiments leave worker memory."""
        self.held_cells -= self._held_by_unit.pop(tuple(unit))
        self.units_open -= 1
