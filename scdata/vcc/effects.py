"""How strongly each perturbation moved its own target: log2 fold change of the target's
normalized expression in the perturbed cells of a batch against the control cells of that batch.

A conditioning input of the perturbation model (with the target and the sign), computed from the
store's committed rows and cached in ``uns/perturbation`` with the manifest version it came from,
so it is recomputed when the store changes and never silently reused.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..read.xarray_view import obs_columns
from ..store.manifest import open_committed
from ..store.layout import consolidate, open_root

PSEUDOCOUNT = 0.01
"""Added to mean counts per 10,000 before the ratio: a target absent from every cell of a group
gives a finite, large knockdown rather than -inf."""
EFFECTS_ATTR = "target_effects"


def perturbation_obs(store: str) -> pd.DataFrame:
    """The per-cell perturbation labels of a perturbation store (committed rows)."""
    root, manifest = open_committed(store)
    if root.attrs.asdict().get("sczarr", {}).get("kind") != "perturbation":
        raise ValueError(f"{store} is not a perturbation store (import one with `scdata vcc import`)")
    columns = obs_columns(store, root, manifest)
    return pd.DataFrame({k: columns[k] for k in ("target_gene", "batch", "is_control", "target_gene_index",
                                                 "total_counts")})


def effects_from_rows(store: str, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The effects computed from ``rows`` only (all committed rows when None), e.g. a training split."""
    full = perturbation_obs(store)
    root, manifest = open_committed(store)
    use = np.zeros(len(full), dtype=bool)
    use[np.arange(len(full)) if rows is None else np.asarray(rows, dtype=np.int64)] = True
    obs = full.loc[use]
    targets = obs.loc[~obs["is_control"] & (obs["target_gene_index"] >= 0)]
    positions = np.unique(targets["target_gene_index"].to_numpy())
    if not len(positions):
        return pd.DataFrame(columns=["target_gene", "batch", "n_cells", "mean_cp10k", "control_mean_cp10k", "log2fc"])
    x = root["X"]
    values = np.asarray(x.get_orthogonal_selection((slice(0, manifest.n_committed), positions)), dtype=np.float64)
    scale = 1e4 / np.maximum(full["total_counts"].to_numpy(np.float64), 1.0)
    cp10k = values * scale[:, None]
    column = {int(p): k for k, p in enumerate(positions)}
    out = []
    control_rows = obs.index[obs["is_control"].to_numpy()].to_numpy()
    control_batches = obs["batch"].to_numpy()[obs["is_control"].to_numpy()]
    for (target, batch), group in targets.groupby(["target_gene", "batch"], sort=True):
        k = column[int(group["target_gene_index"].iloc[0])]
        in_batch = control_rows[control_batches == batch]
        reference = cp10k[in_batch if len(in_batch) else control_rows, k].mean() if len(control_rows) else np.nan
        mean = cp10k[group.index.to_numpy(), k].mean()
        out.append({"target_gene": target, "batch": batch, "n_cells": len(group), "mean_cp10k": mean,
                     "control_mean_cp10k": reference,
                     "log2fc": float(np.log2((mean + PSEUDOCOUNT) / (reference + PSEUDOCOUNT)))})
    return pd.DataFrame(out)


def target_effects(store: str) -> pd.DataFrame:
    """Per (target, batch): cells, mean target expression (per 10k) of perturbed and control cells,
    and the log2 fold change; cached in the store for its manifest version."""
    root, manifest = open_committed(store)
    group = root["uns/perturbation"]
    cached = group.attrs.get(EFFECTS_ATTR)
    if cached is not None and cached.get("manifest_version") == manifest.version:
        return pd.DataFrame(cached["rows"])
    effects = effects_from_rows(store)
    writable = open_root(store, mode="r+")
    writable["uns/perturbation"].attrs[EFFECTS_ATTR] = {"manifest_version": manifest.version,
                                                        "rows": json.loads(effects.to_json(orient="records"))}
    consolidate(writable)  # the consolidated copy of uns/perturbation's attributes, too
    return effects


def target_log2fc(effects: pd.DataFrame) -> dict[str, float]:
    """One knockdown strength per target: the cell-weighted mean over its batches."""
    if effects.empty:
        return {}
    weighted = effects.assign(w=effects["log2fc"] * effects["n_cells"]).groupby("target_gene")[["w", "n_cells"]].sum()
    return (weighted["w"] / weighted["n_cells"]).astype(float).to_dict()
