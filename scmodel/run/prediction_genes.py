"""What a prediction is made of besides the model: the challenge's CSV of targets, the list of
output genes, and where those genes sit on the perturbation store's gene axis.

Pure reading and bookkeeping, apart from the predictor (``scmodel.predict``) that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


def read_pert_counts(path: str, control_label: str) -> pd.DataFrame:
    """``target_gene, n_cells`` (the challenge's CSV; other columns are ignored)."""
    table = pd.read_csv(path)
    for column in ("target_gene", "n_cells"):
        if column not in table.columns:
            raise ValueError(f"{path}: no {column!r} column (columns: {list(table.columns)})")
    table = table[table["target_gene"].astype(str) != control_label]
    if (table["n_cells"] <= 0).any():
        raise ValueError(f"{path}: n_cells must be positive")
    return table[["target_gene", "n_cells"]].astype({"target_gene": str, "n_cells": int}).reset_index(drop=True)


def read_gene_names(path: str) -> list[str]:
    names = pd.read_csv(path, header=None)[0].astype(str).tolist()
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: gene names repeat")
    return names


def output_positions(root, names: list[str]) -> np.ndarray:
    """Axis position of each output gene (-1: not on the axis; written as zeros)."""
    from scdata.store.layout import read_strings

    group = root["uns/perturbation"]
    source = read_strings(group["source_genes"])
    by_source = {str(s): int(p) for s, p in zip(source, group["axis_position"][:])}
    symbols = read_strings(root["var/gene_symbol"])
    by_symbol: dict[str, list[int]] = {}
    for i, s in enumerate(symbols):
        by_symbol.setdefault(str(s), []).append(i)
    return np.asarray([by_source.get(n, by_symbol[n][0] if len(by_symbol.get(n, ())) == 1 else -1) for n in names])


def read_counts(x, rows: np.ndarray, positions: np.ndarray) -> sp.csr_matrix:
    """Counts of ``rows`` at the output genes (CSR; zeros where a position is -1)."""
    on_axis = np.flatnonzero(positions >= 0)
    order = np.argsort(rows, kind="stable")
    block = np.asarray(x.get_orthogonal_selection((rows[order], positions[on_axis])), dtype=np.float32)
    dense = np.zeros((len(rows), len(positions)), dtype=np.float32)
    dense[np.ix_(order, on_axis)] = block
    return sp.csr_matrix(dense)


@dataclass
class OutputGenes:
    """A prediction's gene list: names, axis positions and which of them the model covers."""

    names: list[str]
    positions: np.ndarray
    """Axis position of each name (-1: not on the store's axis)."""
    modelled: np.ndarray
    """Indices (into ``names``) of the genes the model covers ..."""
    model_index: np.ndarray
    """... and their columns among the model's genes."""

    @classmethod
    def of(cls, names: list[str], positions: np.ndarray, hvg_positions: np.ndarray) -> OutputGenes:
        hvg_column = {int(p): k for k, p in enumerate(hvg_positions)}
        modelled = np.asarray([j for j, p in enumerate(positions) if int(p) in hvg_column], dtype=np.int64)
        return cls(names=list(names), positions=np.asarray(positions), modelled=modelled,
                   model_index=np.asarray([hvg_column[int(positions[j])] for j in modelled], dtype=np.int64))

    def column(self, name: str) -> int:
        """The gene's index among the output genes (-1: not an output gene)."""
        if not hasattr(self, "_column"):
            self._column = {n: j for j, n in enumerate(self.names)}
        return self._column.get(name, -1)

    def from_modelled(self, ratio: np.ndarray) -> np.ndarray:
        """A ratio over the model's genes as one over the output genes (1 where the model has no say)."""
        factor = np.ones(len(self.names))
        factor[self.modelled] = ratio[self.model_index]
        return factor


def source_genes(root) -> list[str]:
    """The perturbation file's own gene names, in its order."""
    from scdata.store.layout import read_strings

    return [str(s) for s in read_strings(root["uns/perturbation/source_genes"])]
