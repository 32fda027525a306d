"""Queries a notebook user writes against ``open_store``'s Dataset, where plain xarray is awkward.

Genes by symbol or Ensembl ID (with errors for unknown and ambiguous names), cells by metadata,
and per-group mean expression / fraction expressing for a gene list, computed out of core by
Dask (grouped with flox when it is installed). Everything takes and returns xarray objects, so
the usual idioms keep working on the results.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from .read.xarray_view import isel


class QueryError(KeyError):
    """A gene or metadata value that selects nothing, or more than one thing."""

    def __str__(self) -> str:  # KeyError would show the message with quotes around it
        return str(self.args[0]) if self.args else ""


def _as_list(names: str | Iterable[str]) -> list[str]:
    return [names] if isinstance(names, str) else [str(n) for n in names]


def gene_ids(ds: xr.Dataset, genes: str | Iterable[str]) -> np.ndarray:
    """Ensembl IDs for gene symbols or IDs, in the order given.

    An Ensembl ID is taken as is; a symbol must name exactly one gene. Unknown names raise
    ``QueryError`` with the closest symbols; a symbol shared by several genes raises one that
    lists their IDs (pass the ID you mean), never a silent pick of one of them.
    """
    requested = _as_list(genes)
    index = ds.xindexes["gene"].to_pandas_index()  # not ds.indexes: that would read the cell IDs
    if all(name in index for name in requested):  # Ensembl IDs: no symbol table needed
        return np.asarray(requested, dtype=object)
    ids = index.to_numpy()
    by_symbol: dict[str, list[str]] = {}
    for i, symbol in enumerate(ds["gene_symbol"].values.tolist()):  # a dict pass: ~10 ms for 36,601 genes
        by_symbol.setdefault(str(symbol), []).append(str(ids[i]))
    out = []
    for name in requested:
        if name in index:
            out.append(name)
            continue
        matches = by_symbol.get(name, [])
        if len(matches) == 1:
            out.append(matches[0])
        elif len(matches) > 1:
            raise QueryError(f"gene symbol {name!r} names {len(matches)} genes in {ds.attrs.get('store', 'this store')}: "
                             f"{', '.join(matches)}; select one by its Ensembl ID")
        else:
            folded = [s for s in by_symbol if s.upper() == name.upper()]
            close = folded or difflib.get_close_matches(name, list(by_symbol), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise QueryError(f"{name!r} is neither a gene symbol nor an Ensembl ID of "
                             f"{ds.attrs.get('store', 'this store')} (symbols are case-sensitive){hint}")
    return np.asarray(out, dtype=object)


def select_genes(ds: xr.Dataset, genes: str | Iterable[str]) -> xr.Dataset:
    """The Dataset restricted to genes given by symbol or Ensembl ID (see ``gene_ids``), in that
    order; lazy, and still read straight from X's chunks (one decode per chunk)."""
    return isel(ds, gene=ds.xindexes["gene"].to_pandas_index().get_indexer(gene_ids(ds, genes)))


def expression(ds: xr.Dataset, gene: str) -> xr.DataArray:
    """One gene's counts across every cell (dims ``cell``), lazy; ``gene`` is a symbol or an ID."""
    return ds["counts"].sel(gene=gene_ids(ds, gene)[0])


def _per_cell(ds: xr.Dataset) -> list[str]:
    return [name for name in ds.coords if ds[name].dims == ("cell",) and name != "cell"]


def cell_mask(ds: xr.Dataset, **criteria) -> np.ndarray:
    """Boolean mask over cells: every ``column=value`` (or ``column=[values]``) must hold.

    A column that is not per-cell metadata, or a value that no cell of the store has, raises
    ``QueryError`` listing what exists (a typo is never an empty result). Values that all exist
    but never occur together give an all-False mask.
    """
    mask = np.ones(ds.sizes["cell"], dtype=bool)
    columns = _per_cell(ds)
    for column, wanted in criteria.items():
        if column not in columns:
            raise QueryError(f"{column!r} is not per-cell metadata; columns: {', '.join(columns)}")
        values = ds[column].values
        wanted_list = list(wanted) if isinstance(wanted, (list, tuple, set, np.ndarray, pd.Index)) else [wanted]
        present = pd.unique(values)
        known = set(present.tolist())
        missing = [w for w in wanted_list if w not in known]
        if missing:
            shown = ", ".join(map(repr, sorted(map(str, present))[:20]))
            raise QueryError(f"no cell has {column}={missing[0]!r}; values in this store: {shown}"
                             f"{' ...' if len(present) > 20 else ''}")
        mask &= np.isin(values, np.asarray(wanted_list, dtype=values.dtype))
    return mask


def select_cells(ds: xr.Dataset, **criteria) -> xr.Dataset:
    """The cells matching ``criteria`` (see ``cell_mask``), counts still lazy and int16.

    Unlike ``counts.where(..., drop=True)`` this keeps the integer dtype (``where`` inserts
    NaN and so returns float64).
    """
    return isel(ds, cell=np.flatnonzero(cell_mask(ds, **criteria)))


def normalized(ds: xr.Dataset, target_sum: float = 1e4) -> xr.DataArray:
    """log1p(normalize_total) of ``counts``, lazy: each cell scaled to ``target_sum`` by its
    stored total (``total_counts``); cells with no counts stay 0."""
    totals = ds["total_counts"].astype(np.float64)
    scale = xr.where(totals > 0, target_sum / totals.where(totals > 0, 1.0), 0.0)
    return np.log1p(ds["counts"].astype(np.float32) * scale.astype(np.float32))


def group_expression(ds: xr.Dataset, genes: str | Iterable[str], by: str = "tissue", scale: str = "log1p",
                     target_sum: float = 1e4) -> xr.Dataset:
    """Per group of ``by``: mean expression and fraction of cells expressing each gene.

    Returns a computed Dataset with ``mean`` and ``fraction`` (dims ``by``, ``gene``) and
    ``n_cells`` (dim ``by``). ``scale`` is ``"log1p"`` (log1p of counts scaled to
    ``target_sum`` per cell, what dot plots show) or ``"counts"``. One Dask pass reads only the
    chunk columns holding the genes; groups are reduced blockwise (flox), so memory is bounded
    by a chunk, not the store. Groups with no cells do not appear.
    """
    if scale not in ("log1p", "counts"):
        raise ValueError(f"scale must be 'log1p' or 'counts', got {scale!r}")
    if by not in _per_cell(ds):
        raise QueryError(f"{by!r} is not per-cell metadata; columns: {', '.join(_per_cell(ds))}")
    sub = select_genes(ds, genes)
    values = normalized(sub, target_sum) if scale == "log1p" else sub["counts"].astype(np.float64)
    result = xr.Dataset({
        "mean": values.groupby(by).mean(),
        "fraction": (sub["counts"] > 0).groupby(by).mean(),
    }).compute()
    labels, counts = np.unique(ds[by].values, return_counts=True)
    result["n_cells"] = (by, pd.Series(counts, index=labels).reindex(result[by].values).to_numpy())
    result.attrs.update(scale=scale, by=by)
    return result


def dot_plot(table: xr.Dataset, ax=None, title: str | None = None):
    """Scanpy-style dot plot of ``group_expression``'s output: dot size = fraction expressing,
    colour = mean; genes labelled by symbol. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    by = table.attrs.get("by") or next(d for d in table["mean"].dims if d != "gene")
    groups = [str(g) for g in table[by].values]
    labels = [str(s) for s in table["gene_symbol"].values] if "gene_symbol" in table.coords else list(table.gene.values)
    mean = table["mean"].transpose(by, "gene").values
    frac = table["fraction"].transpose(by, "gene").values
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.45 * len(labels), 1.2 + 0.4 * len(groups)))
    yy, xx = np.meshgrid(np.arange(len(groups)), np.arange(len(labels)), indexing="ij")
    dots = ax.scatter(xx.ravel(), yy.ravel(), s=20 + 280 * frac.ravel(), c=mean.ravel(), cmap="Reds",
                      edgecolors="grey", linewidths=0.4)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=90)
    ax.set_yticks(np.arange(len(groups)), groups)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(len(groups) - 0.4, -0.6)
    ax.figure.colorbar(dots, ax=ax, label=f"mean ({table.attrs.get('scale', 'value')})", shrink=0.7)
    for f in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=20 + 280 * f, c="lightgrey", edgecolors="grey", label=f"{f:.0%}")
    ax.legend(title="expressing", loc="upper left", bbox_to_anchor=(1.25, 1.0), frameon=False)
    ax.set_title(title or f"by {by}")
    ax.figure.tight_layout()
    return ax.figure


def hvg_table(store: str) -> pd.DataFrame:
    """The stored HVG selection as a table, most variable first: the var columns ``scdata hvg``
    wrote (scanpy's names) with gene symbols, indexed by Ensembl ID. Raises ``StaleError`` if
    the store has moved past the selection."""
    from .hvg.results import load_hvg
    from .store.layout import open_root, read_strings

    info = load_hvg(store)
    var = open_root(store, mode="r")["var"]
    order = np.asarray(info["hvg_indices"])
    frame = pd.DataFrame({name: (read_strings(var[name]) if var[name].dtype.kind in "OTU" else var[name][:])[order]
                          for name in var.attrs["column-order"]},
                         index=pd.Index(read_strings(var["_index"])[order], name="gene"))
    frame.insert(0, "rank", np.arange(1, len(order) + 1))
    return frame
