"""Conditional training data from a perturbation store (``scdata vcc import``).

Batches are the store loader's (the same exactly-once order, shuffle and resume), each with the
conditioning of its cells:

* ``target_gene``: the target's position on the gene axis (-1 for control cells);
* ``target_column``: its column among the modelled genes (-1: a control, or a target not modelled);
* ``sign``: -1 knockdown (CRISPRi) / +1 activation, 0 for controls;
* ``log2fc``: how strongly the perturbation moved its target in that batch (``scdata.vcc.effects``);
* ``control``: a set of control cells of the same batch (log1p-normalized HVG vectors), drawn
  from the training split's controls.

The held-out split is by cell within each perturbation (``val_fraction`` of every target's cells
and of the controls), so a held-out perturbation's effect was seen in training on other cells;
``holdout_targets`` moves whole perturbations to the held-out side instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from scdata.store.manifest import open_committed
from scdata.hvg.results import open_hvg_matrix
from scdata.vcc.effects import effects_from_rows, perturbation_obs, target_effects, target_log2fc


@dataclass(frozen=True, kw_only=True)
class PerturbationSplit:
    train: np.ndarray
    val: np.ndarray


def split_cells(obs: pd.DataFrame, val_fraction: float, seed: int, holdout_targets=()) -> PerturbationSplit:
    """Seeded split of the rows: ``val_fraction`` of each target's cells (controls included) held
    out, and every cell of ``holdout_targets``."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 18])
    held = set(holdout_targets)
    unknown = held - set(obs["target_gene"])
    if unknown:
        raise ValueError(f"holdout targets not in the store: {sorted(unknown)[:5]}")
    val = []
    for target, rows in obs.groupby("target_gene", sort=True).indices.items():
        if target in held:
            val.append(rows)
            continue
        n_val = int(round(val_fraction * len(rows)))
        if n_val >= len(rows) and len(rows) > 1:
            n_val = len(rows) - 1
        val.append(rng.permutation(rows)[:n_val])
    val_rows = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    mask = np.ones(len(obs), dtype=bool)
    mask[val_rows] = False
    return PerturbationSplit(train=np.flatnonzero(mask), val=val_rows)


def log1p_rows(counts: np.ndarray, totals: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """normalize_total + log1p of count rows (float32), the loader's transform."""
    scale = target_sum / np.maximum(totals.astype(np.float32), 1.0)
    return np.log1p(counts.astype(np.float32) * scale[:, None])


class Conditioning:
    """Per-cell conditioning for rows of a perturbation store."""

    def __init__(self, store: str, control_rows: np.ndarray, n_hvgs: int | None, set_size: int = 8, seed: int = 0,
                 effect_rows: np.ndarray | None = None):
        root, manifest = open_committed(store)
        self.obs = perturbation_obs(store)
        attrs = root["uns/perturbation"].attrs.asdict()
        self.sign = int(attrs["sign"])
        self.control_label = attrs["control_label"]
        self.target_positions = {k: int(v) for k, v in attrs["target_positions"].items()}
        self.store = store
        self._symbols: dict[str, list[int]] | None = None  # axis symbol -> positions, read on first need
        # knockdown strengths from the training rows only, so held-out cells do not leak into them
        effects = target_effects(store) if effect_rows is None else effects_from_rows(store, effect_rows)
        self.effects = effects
        self.log2fc = target_log2fc(effects)
        self.batch_log2fc = {(r.target_gene, r.batch): float(r.log2fc) for r in effects.itertuples()}
        self.default_log2fc = float(np.median(list(self.log2fc.values()))) if self.log2fc else 0.0
        x_hvg, hvg_positions = open_hvg_matrix(store)
        width = x_hvg.shape[1] if n_hvgs is None else n_hvgs
        self.column_of = {int(p): k for k, p in enumerate(hvg_positions[:width])}
        control_rows = np.sort(np.asarray(control_rows, dtype=np.int64))
        control_rows = control_rows[self.obs["is_control"].to_numpy()[control_rows]]
        if not len(control_rows):
            raise ValueError(f"{store}: no control cells in the rows given for control sets")
        counts = x_hvg.get_orthogonal_selection((control_rows, slice(0, width)))
        self.control_values = log1p_rows(counts, self.obs["total_counts"].to_numpy()[control_rows])
        batches = self.obs["batch"].to_numpy()[control_rows]
        self.pools = {b: np.flatnonzero(batches == b) for b in np.unique(batches)}
        self.all_controls = np.arange(len(control_rows))
        self.set_size = set_size
        self.seed = seed

    def control_sets(self, batches, rng: np.random.Generator) -> torch.Tensor:
        """(B, set_size, genes): control cells of each cell's batch (any batch when it has none)."""
        picks = np.stack([rng.choice(self.pools.get(b, self.all_controls), size=self.set_size) for b in batches])
        return torch.from_numpy(self.control_values[picks])

    def for_targets(self, targets, batches, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Conditioning of cells given their target labels (the control label for controls) and batches."""
        targets = [str(t) for t in targets]
        control = np.asarray([t == self.control_label for t in targets])
        position = np.asarray([-1 if c else self.position_of(t) for t, c in zip(targets, control)])
        missing = sorted({t for t, c, p in zip(targets, control, position) if not c and p < 0})
        if missing:
            raise ValueError(f"targets not on the gene axis: {missing[:5]}")
        fc = np.asarray([0.0 if c else self.batch_log2fc.get((t, b), self.log2fc.get(t, self.default_log2fc))
                         for t, b, c in zip(targets, batches, control)], dtype=np.float32)
        column = np.asarray([self.column_of.get(int(p), -1) for p in position], dtype=np.int64)
        return {"target_gene": torch.from_numpy(position.astype(np.int64)), "target_column": torch.from_numpy(column),
                "sign": torch.from_numpy(np.where(control, 0, self.sign).astype(np.int64)),
                "log2fc": torch.from_numpy(fc), "control": self.control_sets(batches, rng)}

    def position_of(self, target: str) -> int:
        """A target's axis position: as imported, or (a perturbation the store has no cells of) the
        axis gene with that symbol when exactly one has it; -1 otherwise."""
        if target in self.target_positions:
            return self.target_positions[target]
        if self._symbols is None:
            from scdata.store.layout import open_root, read_strings

            symbols = read_strings(open_root(self.store)["var/gene_symbol"])
            self._symbols = pd.Series(np.arange(len(symbols))).groupby(pd.Series(symbols).str.upper()).agg(list).to_dict()
        hits = self._symbols.get(target.upper(), [])
        return int(hits[0]) if len(hits) == 1 else -1

    def for_rows(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        obs = self.obs.iloc[np.asarray(rows)]
        return self.for_targets(obs["target_gene"].to_numpy(), obs["batch"].to_numpy(), rng)


class PerturbationLoader:
    """A store loader whose batches carry conditioning: ``(tokens, conditioning)``."""

    def __init__(self, loader, conditioning: Conditioning, seed: int = 0):
        self.loader = loader
        self.dataset = loader.dataset
        self.conditioning = conditioning
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)

    def __iter__(self):
        for tokens, meta in self.loader:
            rows = np.asarray(meta["row"])
            # control sets drawn from the batch's own cells and epoch: the same after an exact resume
            rng = np.random.default_rng([self.seed, self.epoch, int(rows.min()), int(rows.sum() % (2**31)), len(rows)])
            yield tokens, self.conditioning.for_rows(rows, rng)
