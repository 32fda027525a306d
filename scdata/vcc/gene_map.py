"""Mapping another dataset's genes onto a store's gene axis (pure; no I/O).

Perturbation data (the Virtual Cell Challenge's ``adata_Training.h5ad``) index genes by symbol
with Ensembl IDs in a column, over a different gene set than the store's axis. Genes map by
Ensembl ID first (version suffixes such as ``.12`` stripped), and by symbol only when the ID is
missing or unknown to the axis; every gene that does not map cleanly is reported by name:

* ``unmapped``: neither its ID nor its symbol is on the axis;
* ``ambiguous``: mapped by symbol, but the symbol names several axis genes (an alias collision),
  so it is not mapped rather than guessed;
* ``duplicated``: a later source gene that lands on an axis position an earlier one already took
  (the first keeps it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

_VERSION = re.compile(r"\.\d+$")


def strip_version(gene_id: str) -> str:
    """``ENSG00000141510.17`` -> ``ENSG00000141510``."""
    return _VERSION.sub("", str(gene_id).strip())


@dataclass(frozen=True, slots=True)
class GeneMapping:
    """``columns[i]``: the axis position of source gene ``i``, or -1."""

    columns: np.ndarray
    by_id: int
    by_symbol: int
    unmapped: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def n_mapped(self) -> int:
        return int((self.columns >= 0).sum())

    def summary(self) -> dict:
        return {"mapped": self.n_mapped, "by_ensembl_id": self.by_id, "by_symbol": self.by_symbol,
                "unmapped": len(self.unmapped), "ambiguous": len(self.ambiguous), "duplicated": len(self.duplicated),
                "examples": {k: getattr(self, k)[:10] for k in ("unmapped", "ambiguous", "duplicated")}}


def map_genes(source_ids, source_symbols, axis_ids, axis_symbols) -> GeneMapping:
    """Map source genes (IDs may be missing: ``None``/empty/NaN) onto the axis."""
    axis_ids = [strip_version(g) for g in axis_ids]
    id_position = {g: i for i, g in enumerate(axis_ids)}
    symbol_positions: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(axis_symbols):
        symbol_positions[str(s).upper()].append(i)
    columns = np.full(len(source_symbols), -1, dtype=np.int64)
    taken: set[int] = set()
    by_id = by_symbol = 0
    unmapped, ambiguous, duplicated = [], [], []
    ids = list(source_ids) if source_ids is not None else [None] * len(source_symbols)
    for i, (gene_id, symbol) in enumerate(zip(ids, source_symbols)):
        label = str(symbol)
        position, how = None, None
        if _present(gene_id) and strip_version(gene_id) in id_position:
            position, how = id_position[strip_version(gene_id)], "id"
        else:
            candidates = symbol_positions.get(label.upper(), [])
            if len(candidates) > 1:
                ambiguous.append(label)
                continue
            if candidates:
                position, how = candidates[0], "symbol"
        if position is None:
            unmapped.append(label)
            continue
        if position in taken:
            duplicated.append(label)
            continue
        taken.add(position)
        columns[i] = position
        by_id += how == "id"
        by_symbol += how == "symbol"
    return GeneMapping(columns, by_id, by_symbol, unmapped, ambiguous, duplicated)


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return bool(str(value).strip())


def map_targets(targets, control_label: str, source_symbols, mapping: GeneMapping) -> tuple[dict[str, int], list[str]]:
    """Axis position of each perturbation target (a source gene symbol): through the gene's own
    mapping when it is one of the source's genes. Returns ``{target: position}`` (the control
    label maps to -1) and the targets that could not be placed on the axis."""
    source_position = {str(s): mapping.columns[i] for i, s in enumerate(source_symbols)}
    positions: dict[str, int] = {}
    missing = []
    for target in dict.fromkeys(str(t) for t in targets):
        if target == control_label:
            positions[target] = -1
        elif source_position.get(target, -1) >= 0:
            positions[target] = int(source_position[target])
        else:
            missing.append(target)
    return positions, missing
