"""Which committed cells a dataset serves: experiment and obs filters, train/validation splits."""

from __future__ import annotations

import numpy as np

from scdata.store.manifest import Manifest
from scdata.store.layout import categorical_columns, read_categories


def split_experiments(manifest: Manifest, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Experiments (accessions) for training and validation: a seeded split by experiment, so no
    experiment contributes cells to both sides."""
    accessions = [e["accession"] for e in manifest.experiments]
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 7]).permutation(len(accessions))
    n_val = int(np.ceil(val_fraction * len(accessions))) if val_fraction > 0 else 0
    if len(accessions) > 1:
        n_val = min(n_val, len(accessions) - 1)
    val = sorted(accessions[i] for i in order[:n_val])
    held_out = set(val)
    return [a for a in accessions if a not in held_out], val


def split_cells(manifest: Manifest, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows for training and validation: a seeded ``val_fraction`` of every experiment's cells
    held out (rounded, at least one where an experiment has two or more cells), so both sides
    hold cells of every experiment.

    This is the generative-model field's split (scVI, CFGen and scLDM score generated cells
    against held-out cells of the datasets they trained on); ``split_experiments`` asks more, a
    model of cells from experiments it has never seen."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for e in manifest.experiments:
        lo, hi = int(e["row_start"]), int(e["row_stop"])
        rng = np.random.default_rng([seed, 11, lo])  # one stream per experiment: stable as the store grows
        n_val = min(max(int(round(val_fraction * (hi - lo))), 1 if val_fraction > 0 else 0), max(hi - lo - 1, 0))
        held = np.zeros(hi - lo, dtype=bool)
        held[rng.choice(hi - lo, n_val, replace=False)] = True
        val.append(lo + np.flatnonzero(held))
        train.append(lo + np.flatnonzero(~held))
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(train)).astype(np.int64) if train else empty,
            np.sort(np.concatenate(val)).astype(np.int64) if val else empty)


def selected_rows(root, manifest: Manifest, experiments=None, obs_filters: dict | None = None) -> np.ndarray:
    """Sorted global rows of the committed cells that pass the filters."""
    n = manifest.n_committed
    keep = np.zeros(n, dtype=bool)
    wanted = None if experiments is None else set(experiments)
    known = {e["accession"] for e in manifest.experiments}
    if wanted is not None and wanted - known:
        raise ValueError(f"experiments not in the store: {sorted(wanted - known)[:5]}")
    for e in manifest.experiments:
        if wanted is None or e["accession"] in wanted:
            keep[e["row_start"] : e["row_stop"]] = True
    columns = categorical_columns(root)
    for column, values in (obs_filters or {}).items():
        if column not in columns:
            raise ValueError(f"cannot filter on {column!r}: categorical obs columns are {columns}")
        categories = read_categories(root, column, manifest.categories.get(column))
        wanted_values = set(values)
        codes = [i for i, c in enumerate(categories) if c in wanted_values]
        column_codes = root[f"obs/{column}/codes"][:n]
        keep &= np.isin(column_codes, codes)
    return np.flatnonzero(keep)
