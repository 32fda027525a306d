"""A gene-regulatory model shared by the synthetic atlas and the synthetic CRISPRi screen (pure numpy).

Why it exists: a perturbation benchmark can only show that atlas pretraining transfers to
perturbations never seen in fine-tuning if what a knockdown does is written in the atlas's
co-expression. So the demo bucket's cells and the demo screen's cells are drawn from one model:

* **Regulators** (``n_regulators`` of the expressed genes) have an *activity* per cell, in natural
  log units: a cell-type mean plus cell-to-cell variation (``activity_sd``), plus a **cascade**:
  some regulators' activities follow an upstream regulator's (a DAG: parents have lower indices).
  A regulator's own mRNA level is its activity (``log expression = base + activity``), so what a
  cell expresses of a regulator is a noisy reading of what the regulator does.
* **Programs**: each regulator moves ``program_size`` target genes (drawn from the expressed genes,
  so programs overlap) by a signed amplitude ``A`` through a **saturating** response,
  ``A * tanh((activity - centre) / scale)``; a gene in several programs sums their shifts.
* **Knockdown (CRISPRi)** of a regulator multiplies its mRNA, hence its activity, by ``efficiency``
  (``activity + log(efficiency)``): its programs and its children's programs respond through the
  same curves. Knocking down a gene that regulates nothing changes that gene only.

Cell-type base profiles, tissue/technology (atlas) or batch (screen) effects, and depth come from
the callers (``demo_bucket``, ``scdata.vcc.synthetic``); counts are negative binomial there.

What it leaves out, deliberately simple: no feedback loops, no regulator whose activity differs
from its mRNA (post-translational control), no cell-cycle or stress programs, knockdowns that act
instantly and fully (no time course), off-target guides, or cells that escape the knockdown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RegulationConfig:
    n_regulators: int = 80
    program_size: tuple[int, int] = (15, 60)
    """Targets per regulator (uniform in the range), from the expressed genes."""
    amplitude: float = 0.6
    """Median |A| of a program gene's response (natural log units at saturation)."""
    activity_sd: tuple[float, float] = (0.4, 0.8)
    """Cell-to-cell standard deviation of a regulator's activity (uniform per regulator)."""
    type_sd: float = 0.6
    """Standard deviation of a regulator's mean activity between cell types."""
    master_fraction: float = 0.2
    """Share of regulators that are master regulators of cell identity: their mean activity differs
    between cell types by ``master_type_sd`` instead, so their programs are what tells types apart."""
    master_type_sd: float = 1.5
    cascade_fraction: float = 0.3
    """Share of regulators whose activity follows an upstream regulator's."""
    scale: float = 1.0
    """Saturation scale of the response curve (natural log units of activity)."""

    def __post_init__(self) -> None:
        lo, hi = self.program_size
        if self.n_regulators < 0 or not 0 < lo <= hi:
            raise ValueError(f"need n_regulators >= 0 and 0 < program_size[0] <= program_size[1], got "
                             f"{self.n_regulators}, {self.program_size}")
        if self.scale <= 0 or not 0 <= self.cascade_fraction <= 1:
            raise ValueError("scale must be positive and cascade_fraction in [0, 1]")


@dataclass(frozen=True, slots=True)
class Regulation:
    regulators: np.ndarray
    """(R,) gene indices of the regulators (positions on the gene axis)."""
    type_mean: np.ndarray
    """(types, R) mean activity per cell type."""
    activity_sd: np.ndarray
    """(R,) cell-to-cell standard deviation."""
    parent: np.ndarray
    """(R,) index of the upstream regulator (-1: none); parents come first."""
    coupling: np.ndarray
    """(R,) how much of the parent's deviation a regulator follows."""
    centre: np.ndarray
    """(R,) activity at which each response curve is centred (the mean over cell types)."""
    targets: list[np.ndarray]
    """Per regulator, the gene indices of its program."""
    amplitudes: list[np.ndarray]
    """Per regulator, the signed amplitude of each program gene."""
    scale: float

    @property
    def n_regulators(self) -> int:
        return len(self.regulators)

    def activities(self, rng: np.random.Generator, cell_types: np.ndarray) -> np.ndarray:
        """(cells, R) natural activities of cells of the given types."""
        noise = rng.standard_normal((len(cell_types), self.n_regulators)) * self.activity_sd
        return self.propagate(self.type_mean[cell_types] + noise, cell_types)

    def propagate(self, activity: np.ndarray, cell_types: np.ndarray) -> np.ndarray:
        """Children follow their parent's deviation from its cell-type mean (in index order)."""
        out = activity.copy()
        for r in np.flatnonzero(self.parent >= 0):  # increasing: a parent is final before its children read it
            p = self.parent[r]
            out[:, r] += self.coupling[r] * (out[:, p] - self.type_mean[cell_types, p])
        return out

    def knock_down(self, activity: np.ndarray, regulator: int, efficiency: np.ndarray | float) -> np.ndarray:
        """Activities after a knockdown of regulator ``regulator`` (an index into ``regulators``) to
        ``efficiency`` of its mRNA: its activity drops by ``log(efficiency)`` and its descendants follow."""
        drop = np.zeros(self.n_regulators)
        drop[regulator] = 1.0
        for r in range(regulator + 1, self.n_regulators):  # parents precede children
            if self.parent[r] >= 0:
                drop[r] += self.coupling[r] * drop[self.parent[r]]
        return activity + np.log(np.asarray(efficiency, dtype=float)).reshape(-1, 1) * drop[None, :]

    def log_shift(self, activity: np.ndarray, genes: np.ndarray, n_axis: int) -> np.ndarray:
        """(cells, len(genes)) natural-log shift of the mean of each of ``genes`` (indices on an axis
        of ``n_axis`` genes): the regulators' own mRNA levels and their programs' saturating responses."""
        column = np.full(n_axis, -1)
        column[genes] = np.arange(len(genes))
        shift = np.zeros((activity.shape[0], len(genes)))
        deviation = activity - self.centre[None, :]
        mine = column[self.regulators] >= 0
        shift[:, column[self.regulators[mine]]] += deviation[:, mine]
        response = np.tanh(deviation / self.scale)
        for r in range(self.n_regulators):
            cols = column[self.targets[r]]
            kept = cols >= 0
            shift[:, cols[kept]] += response[:, r:r + 1] * self.amplitudes[r][None, kept]
        return shift


def make_regulation(rng: np.random.Generator, expressed: np.ndarray, n_types: int,
                    config: RegulationConfig = RegulationConfig()) -> Regulation:
    """Regulators, programs and cascades drawn among the ``expressed`` gene indices."""
    n = min(config.n_regulators, len(expressed) // 4)
    regulators = rng.choice(expressed, size=n, replace=False)
    others = np.setdiff1d(expressed, regulators)
    master = rng.random(n) < config.master_fraction
    type_mean = rng.normal(0.0, 1.0, size=(n_types, n)) * np.where(master, config.master_type_sd, config.type_sd)
    activity_sd = rng.uniform(*config.activity_sd, size=n)
    parent = np.full(n, -1)
    coupling = np.zeros(n)
    for r in range(1, n):
        if rng.random() < config.cascade_fraction:
            parent[r] = rng.integers(0, r)
            coupling[r] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
    lo, hi = config.program_size
    targets, amplitudes = [], []
    for _ in range(n):
        size = int(rng.integers(lo, hi + 1))
        genes = np.sort(rng.choice(others, size=min(size, len(others)), replace=False))
        sign = np.where(rng.random(len(genes)) < 0.6, 1.0, -1.0)
        targets.append(genes)
        amplitudes.append(sign * config.amplitude * rng.lognormal(0.0, 0.5, size=len(genes)))
    return Regulation(regulators=regulators, type_mean=type_mean, activity_sd=activity_sd, parent=parent,
                      coupling=coupling, centre=type_mean.mean(axis=0), targets=targets, amplitudes=amplitudes,
                      scale=config.scale)
