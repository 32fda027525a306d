"""The store's gene axis, chosen when the store is created, without reading every selected file.

The h5ad files of one release and feature type are mapped to one reference (human: 10x
GRCh38-2020-A, 36,601 genes), so a few files give the axis: the gene tables of the first
``PLAN_TABLES`` readable experiments in selection order, used as they are when they agree. Every
later file is still checked as it loads: its genes are mapped onto the axis, missing ones are
zero and foreign ones are dropped and counted in the manifest. ``--genes FILE`` gives the axis
explicitly (one Ensembl ID per line, optionally with a symbol).

The cost of planning is then a few small reads whatever the selection's size (tens of
thousands of experiments for a whole release).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..runtime import remote
from ..source.h5ad import ENSEMBL_ID, ExperimentError, GeneTable

PLAN_TABLES = 3
"""Readable gene tables the planning pass reads (more only when some of them fail)."""


@dataclass(frozen=True, slots=True)
class GeneAxis:
    gene_ids: np.ndarray
    gene_symbols: np.ndarray
    annotation_columns: tuple[str, ...]
    tables_read: int
    """Files whose gene table was read (readable or not)."""
    agreed: bool
    """Whether the readable tables had the same genes in the same order."""
    rejected: tuple[ExperimentError, ...] = ()


def axis_from_tables(experiments: Sequence, read_tables: Callable[[list], list], n_tables: int = PLAN_TABLES,
                     on_error: str = "skip", gene_ids: np.ndarray | None = None,
                     gene_symbols: np.ndarray | None = None) -> GeneAxis:
    """Read gene tables of ``experiments`` in order, a few at a time, until ``n_tables`` are readable.

    ``read_tables(batch)`` returns, per experiment, its ``GeneTable`` or the ``ExperimentError``
    that rejects it. Tables that agree give the axis; tables that differ give their union in
    first-seen order (``agreed`` False, so the caller can say so). ``gene_ids`` (an explicit axis)
    wins over the tables, which then only give the cell annotation columns."""
    if n_tables <= 0:
        raise ValueError(f"n_tables must be positive, got {n_tables}")
    tables: list[GeneTable] = []
    rejected: list[ExperimentError] = []
    cursor = 0
    while len(tables) < n_tables and cursor < len(experiments):
        batch = list(experiments[cursor : cursor + n_tables - len(tables)])
        cursor += len(batch)
        for result in read_tables(batch):
            if isinstance(result, ExperimentError):
                if on_error == "raise":
                    raise result
                rejected.append(result)
            else:
                tables.append(result)
    if not tables and gene_ids is None:
        detail = "; ".join(map(str, rejected[:3]))
        raise ValueError(f"none of the {cursor} experiments read for the gene axis is readable: {detail}")
    annotation = tuple(sorted({c for t in tables for c in t.annotation_columns}))
    agreed = all(np.array_equal(t.gene_ids, tables[0].gene_ids) for t in tables[1:])
    if gene_ids is not None:
        symbols = gene_ids if gene_symbols is None else gene_symbols
        return GeneAxis(np.asarray(gene_ids), np.asarray(symbols), annotation, cursor, agreed, tuple(rejected))
    ids: dict[str, str] = {}
    for table in tables:
        for gid, sym in zip(table.gene_ids, table.gene_symbols):
            ids.setdefault(str(gid), str(sym))
    return GeneAxis(np.asarray(list(ids)), np.asarray(list(ids.values())), annotation, cursor, agreed, tuple(rejected))


def read_genes_file(url: str) -> tuple[np.ndarray, np.ndarray]:
    """An explicit gene axis: a text or CSV/TSV file of Ensembl IDs, one per line, with an
    optional second column of symbols and an optional header line. Returns (ids, symbols)."""
    data = remote.read_bytes(url)
    if data is None:
        raise ValueError(f"--genes {url}: no such file")
    text = data.decode("utf-8-sig")
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text), dialect=dialect) if row and row[0].strip()]
    if rows and not ENSEMBL_ID.match(rows[0][0]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"--genes {url}: no gene IDs in the file")
    ids = [r[0] for r in rows]
    bad = next((g for g in ids if not ENSEMBL_ID.match(g)), None)
    if bad is not None:
        raise ValueError(f"--genes {url}: {bad!r} is not an Ensembl gene ID (one ID per line, optionally ',symbol')")
    seen: set[str] = set()
    dup = next((g for g in ids if g in seen or seen.add(g)), None)
    if dup is not None:
        raise ValueError(f"--genes {url}: gene {dup!r} appears more than once")
    symbols = [r[1] if len(r) > 1 and r[1] else r[0] for r in rows]
    return np.asarray(ids), np.asarray(symbols)
