"""Chunk-aligned write plan for one ingest round (pure integer arithmetic).

Concurrent writers into one Zarr array are only safe when no two of them touch the same
chunk: unaligned but non-overlapping regions silently corrupt data. A round appends the rows
of several experiments after the committed rows, so experiment boundaries rarely fall on chunk
boundaries. The plan gives every chunk touched by the round exactly one writer:

* a chunk filled by a single experiment is written by that experiment's own task;
* a chunk shared by several experiments, or by the committed rows before the round and the
  first experiment, is a *seam*: one seam task receives the pieces from each contributor and
  writes the whole chunk.

Nothing here imports zarr or dask, so the invariants are checked by property tests.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMITTED = -1
"""Contributor id of rows already committed before the round (re-read from the store)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Rows ``[src_start, src_stop)`` of contributor ``owner`` land at ``dest_start`` in X."""

    owner: int
    src_start: int
    src_stop: int
    dest_start: int

    @property
    def n_rows(self) -> int:
        return self.src_stop - self.src_start


@dataclass(frozen=True, slots=True)
class Write:
    """One chunk-aligned region ``[start, stop)`` of X written by one task from ``pieces``."""

    start: int
    stop: int
    pieces: tuple[Piece, ...]

    @property
    def owners(self) -> frozenset[int]:
        return frozenset(p.owner for p in self.pieces)


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """Row ranges of a round's experiments and the single writer of every chunk it touches."""

    start: int
    stop: int
    chunk_rows: int
    experiment_rows: tuple[tuple[int, int], ...]
    own_writes: tuple[tuple[Write, ...], ...]
    """Per experiment: the regions it writes alone (at most one, contiguous)."""
    seam_writes: tuple[Write, ...]

    def all_writes(self) -> list[Write]:
        return [w for ws in self.own_writes for w in ws] + list(self.seam_writes)


def plan_round(n_committed: int, row_counts: list[int] | tuple[int, ...], chunk_rows: int) -> RoundPlan:
    """Plan the writes that append experiments of ``row_counts`` rows after ``n_committed`` rows."""
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if n_committed < 0:
        raise ValueError(f"n_committed must be >= 0, got {n_committed}")
    if any(n <= 0 for n in row_counts):
        raise ValueError(f"every experiment in a round needs at least one row, got {list(row_counts)}")

    bounds: list[tuple[int, int]] = []
    cursor = n_committed
    for n in row_counts:
        bounds.append((cursor, cursor + n))
        cursor += n
    stop = cursor

    own: list[list[Write]] = [[] for _ in row_counts]
    seams: list[Write] = []
    if stop == n_committed:
        return RoundPlan(n_committed, stop, chunk_rows, tuple(bounds), tuple(() for _ in row_counts), ())

    first_chunk = n_committed // chunk_rows
    last_chunk = (stop - 1) // chunk_rows
    exp = 0  # first experiment that may overlap the current chunk
    for chunk in range(first_chunk, last_chunk + 1):
        c_start = chunk * chunk_rows
        c_stop = min(c_start + chunk_rows, stop)
        pieces: list[Piece] = []
        if c_start < n_committed:
            pieces.append(Piece(COMMITTED, c_start, n_committed, c_start))
        while exp < len(bounds) and bounds[exp][1] <= c_start:
            exp += 1
        i = exp
        while i < len(bounds) and bounds[i][0] < c_stop:
            e_start, e_stop = bounds[i]
            lo, hi = max(e_start, c_start), min(e_stop, c_stop)
            pieces.append(Piece(i, lo - e_start, hi - e_start, lo))
            i += 1
        write = Write(c_start, c_stop, tuple(pieces))
        if len(pieces) == 1 and pieces[0].owner != COMMITTED:
            _extend_own(own[pieces[0].owner], write)
        else:
            seams.append(write)
    return RoundPlan(n_committed, stop, chunk_rows, tuple(bounds), tuple(tuple(w) for w in own), tuple(seams))


def _extend_own(writes: list[Write], write: Write) -> None:
    """Merge consecutive single-owner chunks into one region so the task writes once."""
    if writes and writes[-1].stop == write.start:
        prev = writes[-1]
        piece = prev.pieces[0]
        merged = Piece(piece.owner, piece.src_start, piece.src_start + (write.stop - prev.start), prev.start)
        writes[-1] = Write(prev.start, write.stop, (merged,))
    else:
        writes.append(write)


def split_rounds(items: list, batch_size: int, sizes: list[int] | None = None, max_cells: int | None = None) -> list[list]:
    """Consecutive rounds of at most ``batch_size`` items and, when ``sizes`` (cells per item) are
    given, at most ``max_cells`` cells; an item larger than ``max_cells`` is a round of its own.

    Bounding the cells keeps the memory of the rounds in flight the same whatever the store size
    and however the experiments' sizes fall."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_cells is not None and max_cells <= 0:
        raise ValueError(f"max_cells must be positive, got {max_cells}")
    rounds: list[list] = []
    current: list = []
    cells = 0
    for i, item in enumerate(items):
        size = sizes[i] if sizes is not None else 0
        full = len(current) >= batch_size or (max_cells is not None and current and cells + size > max_cells)
        if full:
            rounds.append(current)
            current, cells = [], 0
        current.append(item)
        cells += size
    if current:
        rounds.append(current)
    return rounds
