"""Which experiments an ingest run still has to submit: a cursor over the seeded order that
counts the budget as rejections and top-ups arrive (pure: no cluster, no store)."""

from __future__ import annotations

from ..source.bucket import Experiment, take_budget


class ExperimentSelection:
    """What a run still has to submit, one experiment at a time, in the seeded order.

    The budget's experiments are ``take_budget`` of the seeded order without the lasting
    rejections; each rejection this run finds extends them (top-ups). Committed experiments count
    toward the budget; those and the ones this run submitted are not submitted again. Kept as a
    cursor and a running total, so a selection of tens of thousands costs O(1) per experiment."""

    def __init__(self, order: list[Experiment], cell_count: int, excluded: set[str], done: set[str]):
        self.order, self.cell_count = order, cell_count
        self.excluded = excluded
        """Rejected experiments left out (this run's rejections are added as they come)."""
        self.done = done
        """Committed before this run, or submitted by it."""
        self._cursor = 0
        self._total = 0
        """Cells (by metadata) of the experiments before the cursor that count toward the budget."""

    def todo(self) -> list[Experiment]:
        return [e for e in take_budget(self.order, self.cell_count, self.excluded) if e.accession not in self.done]

    def peek(self) -> Experiment | None:
        """The next experiment to submit, or None when the budget is met."""
        while self._cursor < len(self.order) and self._total < self.cell_count:
            exp = self.order[self._cursor]
            if exp.accession in self.excluded:
                self._cursor += 1
            elif exp.accession in self.done:  # committed by an earlier run: counts, not submitted
                self._total += exp.obs_count
                self._cursor += 1
            else:
                return exp
        return None

    @property
    def cursor(self) -> int:
        """Position in ``order`` of the next experiment to take (or past it)."""
        return self._cursor

    def may_start_early(self, position: int, ahead: int) -> bool:
        """Whether the experiment at ``position`` (past the cursor) will be taken in its turn
        whatever happens before: not committed or rejected, and within the budget even if all
        ``ahead`` cells before it count (at least the cells the budget will count there:
        rejections only make the budget reach further)."""
        exp = self.order[position]
        return (exp.accession not in self.excluded and exp.accession not in self.done
                and self._total + ahead < self.cell_count)

    def take(self) -> Experiment:
        exp = self.peek()
        self._cursor += 1
        self._total += exp.obs_count
        self.done.add(exp.accession)
        return exp

    def reject(self, exp: Experiment) -> None:
        """A submitted experiment was rejected: it no longer counts, so the budget reaches further."""
        self.excluded.add(exp.accession)
        self._total -= exp.obs_count
