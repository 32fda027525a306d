"""Gene programs of the atlas, and knockdowns read through them: what pretraining keeps for
perturbations that fine-tuning never saw.

Why: a knockdown of a regulator moves the genes it drives, and in unperturbed cells of the same
state those genes already rise and fall with the regulator's own level. A screen's control cells
show that co-variation directly, but a few hundred cells estimate a regression of every gene on the
target with much noise. The atlas cannot give the screen's regressions (its cells are other states,
other tissues, shallower), but it shows which genes move together at all: the gene programs. So a
pretraining run keeps the top principal directions of the atlas's *within-state* covariance
(``AtlasPrograms``: k-means clusters of the cells' principal components split the atlas into states,
so cell-type differences are not mistaken for programs), and a prediction keeps only the part of
the controls' covariance with the target that lies in those programs.

Measured on a synthetic atlas and screen drawn from one regulatory model
(``benchmarks/bench_transfer.py``): the screen's 800 control cells alone recover the true
knockdown effects of regulators with a mean Pearson of 0.58; projected on the atlas's top 128
programs, 0.68 (200 controls: 0.37 and 0.53). The masked diffusion transformers of the CPU presets
do not learn this co-variation within a pretraining run of a few hundred steps: read in silico
(``scmodel.knockdown``), their effects are uncorrelated with the truth.

The knockdown itself: each real control cell's target is set to ``fold`` of its mRNA, and every
other gene moves by its regression slope on the target (``cov(g, t) / var(t)``, log1p of counts
per 10k) times the target's change; the ratio of the mean expressions is the predicted effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .delta_cells import expression_ratio


@dataclass(frozen=True, kw_only=True)
class ProgramsConfig:
    components: int = 128
    """Programs kept (principal directions of the within-state covariance)."""
    clusters: int = 12
    """Cell states (k-means clusters) the atlas is split into before the covariance is pooled."""
    pca: int = 30
    """Principal components the clustering runs on."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.components < 1 or self.clusters < 1 or self.pca < 1:
            raise ValueError(f"components, clusters and pca must be positive, got {self.components}, {self.clusters}, "
                             f"{self.pca}")


@dataclass
class AtlasPrograms:
    basis: np.ndarray
    """(genes, programs) orthonormal directions, the largest within-state variance first."""
    variance: np.ndarray
    """(programs,) their variances."""
    cells: int
    """Cells they were estimated from."""
    genes: np.ndarray | None = None
    """(genes,) the store's gene IDs of the basis rows; None: the run's modelled genes, in order
    (checkpoints written before the programs covered more than the model's genes)."""

    def to_state(self) -> dict:
        """Plain tensors and strings for a checkpoint (loads with ``weights_only``)."""
        import torch

        state = {"basis": torch.from_numpy(self.basis.astype(np.float32)),
                 "variance": torch.from_numpy(self.variance.astype(np.float32)), "cells": int(self.cells)}
        if self.genes is not None:
            state["genes"] = [str(g) for g in self.genes]
        return state

    @classmethod
    def from_state(cls, state: dict) -> AtlasPrograms:
        as_array = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)  # noqa: E731
        genes = state.get("genes")
        return cls(basis=as_array(state["basis"]), variance=as_array(state["variance"]), cells=int(state["cells"]),
                   genes=None if genes is None else np.asarray(genes, dtype=str))

    def project(self, vector: np.ndarray) -> np.ndarray:
        """The part of ``vector`` (genes,) that lies in the programs."""
        return self.basis @ (self.basis.T @ vector)

    def on(self, genes) -> ProgramView:
        """The programs seen from another gene list (``genes``: IDs, e.g. a prediction's output genes)."""
        if self.genes is None:
            raise ValueError("these programs carry no gene IDs (an older checkpoint): they apply to the run's "
                             "modelled genes only")
        row = {g: i for i, g in enumerate(self.genes)}
        genes = [str(g) for g in genes]
        covered = np.array([g in row for g in genes], dtype=bool)
        rows = np.array([row[g] for g, c in zip(genes, covered) if c], dtype=np.int64)
        return ProgramView(covered=covered, basis=self.basis[rows])


@dataclass
class ProgramView:
    """Atlas programs restricted to the genes of a list that they cover.

    Why not the orthogonal projection: the restricted basis is no longer orthonormal, so the part
    of a vector in the programs is its least-squares fit on the basis rows it has (the pseudo-
    inverse); genes the programs do not cover keep their value (nothing to borrow from)."""

    covered: np.ndarray
    """(genes,) whether the programs cover each gene of the list."""
    basis: np.ndarray
    """(covered genes, programs) the programs' rows for those genes."""

    def __post_init__(self) -> None:
        # a fit needs fewer programs than genes; keep the directions the covered genes support
        keep = min(self.basis.shape[1], max(1, int(self.covered.sum()) // 2))
        self.basis = self.basis[:, :keep]
        self._pinv = np.linalg.pinv(self.basis) if self.covered.any() else np.zeros((keep, 0))

    def project(self, vector: np.ndarray) -> np.ndarray:
        out = np.asarray(vector, dtype=np.float64).copy()
        if self.covered.any():
            out[self.covered] = self.basis @ (self._pinv @ out[self.covered])
        return out


def cell_states(values: np.ndarray, config: ProgramsConfig = ProgramsConfig()) -> np.ndarray:
    """(cells,) k-means cluster of each cell (``values``: log1p of counts per 10k) on its principal
    components: the states within which programs are estimated, so that cell-type differences are
    not mistaken for programs. At most one cluster per 50 cells."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    values = np.asarray(values, dtype=np.float64)
    n, genes = values.shape
    k = max(1, min(config.clusters, n // 50))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    scores = PCA(n_components=min(config.pca, n, genes), random_state=config.seed).fit_transform(values)
    return KMeans(n_clusters=k, n_init=3, random_state=config.seed).fit_predict(scores).astype(np.int64)


class WithinStateCovariance:
    """The pooled within-state covariance of cells added in blocks (each cell counted once, its
    state's mean removed): sums and cross-products per state, so an atlas larger than memory is
    read a block of rows at a time."""

    def __init__(self, n_genes: int):
        self.cross = np.zeros((n_genes, n_genes))
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}

    def add(self, values: np.ndarray, states: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32)
        self.cross += (values.T @ values).astype(np.float64)
        for state in np.unique(states):
            members = values[states == state]
            self.sums[int(state)] = self.sums.get(int(state), 0.0) + members.sum(axis=0, dtype=np.float64)
            self.counts[int(state)] = self.counts.get(int(state), 0) + len(members)

    @property
    def cells(self) -> int:
        return int(sum(self.counts.values()))

    def covariance(self) -> np.ndarray:
        cov = self.cross.copy()
        for state, total in self.sums.items():
            cov -= np.outer(total, total) / self.counts[state]
        return cov / max(self.cells - len(self.counts), 1)

    def programs(self, components: int, genes: np.ndarray | None = None) -> AtlasPrograms:
        """The top ``components`` eigenvectors of the covariance."""
        cov = self.covariance()
        n = len(cov)
        k = min(components, n)
        if k < n // 3:  # a few leading eigenpairs of a large matrix: randomized, not the full decomposition
            from sklearn.utils.extmath import randomized_svd

            vectors, eigenvalues, _ = randomized_svd(cov, n_components=k, n_oversamples=max(10, k // 2), n_iter=6,
                                                     random_state=0)  # the covariance is symmetric PSD: U, S = V, eigenvalues
        else:
            eigenvalues, vectors = np.linalg.eigh(cov)
        top = np.argsort(eigenvalues)[::-1][:k]
        return AtlasPrograms(basis=vectors[:, top], variance=np.clip(eigenvalues[top], 0, None), cells=self.cells,
                             genes=genes)


def fit_programs(values: np.ndarray, config: ProgramsConfig = ProgramsConfig(),
                 genes: np.ndarray | None = None) -> AtlasPrograms:
    """Programs of ``values`` (cells x genes, log1p of counts per 10k): the top eigenvectors of the
    covariance within k-means clusters of the cells (pooled, each cell counted once)."""
    values = np.asarray(values, dtype=np.float64)
    covariance = WithinStateCovariance(values.shape[1])
    covariance.add(values, cell_states(values, config))
    return covariance.programs(config.components, genes)


def knocked_value(values: np.ndarray, fold: float) -> np.ndarray:
    """log1p(counts per 10k) after keeping ``fold`` of the mRNA."""
    return np.log1p(np.expm1(values) * fold)


MIN_RELIABILITY = 0.2
"""Floor of the reliability a slope is divided by: at most a 5-fold correction, so that a target
measured almost only as counting noise does not turn noise into large effects."""


def measurement_reliability(values: np.ndarray, totals: np.ndarray, quantiles: int = 24) -> float:
    """The fraction of a gene's variance across cells (``values``: log1p of counts per 10k, one per
    cell of depth ``totals``) that is not counting noise, in [``MIN_RELIABILITY``, 1].

    Why: a slope regressed on a measured level is attenuated by the noise in that level (regression
    dilution). The counts are modelled as Poisson around a level that varies between cells as a
    gamma distribution (a negative binomial; its dispersion by the method of moments): the noise
    part of the measured variance is the mean over cells and over the gamma's quantiles of the
    exact Poisson variance of log1p(counts per 10k) at that rate."""
    from scipy.stats import gamma, poisson

    values = np.asarray(values, dtype=np.float64)
    totals = np.maximum(np.asarray(totals, dtype=np.float64), 1.0)
    measured = float(values.var(ddof=1)) if len(values) > 1 else 0.0
    if measured <= 0:
        return 1.0
    counts = np.expm1(values) * totals / 1e4
    size = totals / totals.mean()
    normalized = counts / size
    mean = float(normalized.mean())
    if mean <= 0:
        return 1.0
    dispersion = max(0.0, (float(normalized.var(ddof=1)) - mean * float((1.0 / size).mean())) / mean**2)
    probabilities = (np.arange(quantiles) + 0.5) / quantiles
    scale = gamma.ppf(probabilities, a=1.0 / dispersion, scale=dispersion) if dispersion > 1e-6 else np.ones(quantiles)
    rate = (mean * size)[:, None] * scale[None, :]  # (cells, quantiles)
    top = float(rate.max())
    k = np.arange(int(top + 6.0 * np.sqrt(top) + 10.0))
    weights = poisson.pmf(k[None, None, :], rate[:, :, None])
    level = np.log1p(k[None, :] * (1e4 / totals)[:, None])[:, None, :]  # (cells, 1, k)
    first = (weights * level).sum(axis=2)
    noise = float(((weights * level * level).sum(axis=2) - first * first).mean())
    return float(np.clip(1.0 - noise / measured, MIN_RELIABILITY, 1.0))


def knockdown_ratio(controls: np.ndarray, target: int, fold: float, programs: AtlasPrograms | ProgramView | None = None,
                    totals: np.ndarray | None = None) -> np.ndarray:
    """(genes,) predicted expression ratio knocked-down / control of every modelled gene.

    ``controls``: real control cells (cells x genes, log1p of counts per 10k); their covariance
    with the target, kept to its part in the atlas's ``programs`` when given, over the target's
    variance is each gene's slope. With the cells' ``totals`` (their depths), the slopes are
    divided by the target's ``measurement_reliability``: the target's measured level carries
    counting noise that the regulator's true level does not. The target's own ratio is ``fold``."""
    controls = np.asarray(controls, dtype=np.float64)
    centred = controls - controls.mean(axis=0)
    cov = centred.T @ centred[:, target] / max(len(controls) - 1, 1)
    var = float(cov[target])
    if programs is not None:
        cov = programs.project(cov)
    slope = cov / var if var > 0 else np.zeros_like(cov)
    if totals is not None and var > 0:
        slope = slope / measurement_reliability(controls[:, target], totals)
    change = knocked_value(controls[:, target], fold) - controls[:, target]  # (cells,)
    predicted = np.clip(controls + change[:, None] * slope[None, :], 0, None)
    ratio = expression_ratio(np.expm1(predicted).mean(axis=0), np.expm1(controls).mean(axis=0))
    ratio[target] = fold
    return ratio
