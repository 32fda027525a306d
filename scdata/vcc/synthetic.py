"""A synthetic Virtual Cell Challenge dataset with known perturbation effects, for tests and demos.

Same layout as the challenge's files: ``adata_Training.h5ad`` (X float32 CSR of integer counts;
obs ``target_gene`` with the ``non-targeting`` control label, ``guide_id``, ``batch``; var indexed
by gene symbol with an Ensembl ``gene_id`` column, some IDs with version suffixes),
``gene_names.csv`` (the symbols in the file's order, no header) and ``pert_counts_Validation.csv``
(``target_gene, n_cells, median_umi_per_cell`` of held-out perturbations). The genes are those of
the synthetic scBaseCount bucket (``scdata.source.demo_bucket``, same seed), so a demo store's gene axis maps
onto them by Ensembl ID.

What is known, so that a prediction can be scored against the truth: the screen and the demo
bucket's atlas are drawn from one gene-regulatory model (``scdata.source.regulation``, same axis
seed). The screen is one cell type of the atlas (``cell_type``); its cells vary in their
regulators' activities as the atlas's cells of that type do. A perturbation knocks its target's
mRNA down to a per-guide efficiency around ``knockdown``: a regulator's programs (and its children's)
respond through their saturating curves, a gene that regulates nothing changes alone. Each batch
multiplies every gene by a fixed factor; depths vary from cell to cell.
``adata_Validation_truth.h5ad`` holds real cells of the held-out perturbations (and controls) drawn
from the same model, for evaluation; ``truth.json`` says which targets are regulators, their knockdown
efficiencies and the population log2 fold changes (``population_log2fc``: per target, one value per
gene of ``genes``, the files' gene order), noise-free, for scoring a prediction against the truth.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..source.demo_bucket import CELL_TYPES, DemoConfig, demo_biology, sample_counts
from ..source.regulation import Regulation

CONTROL = "non-targeting"


@dataclass(frozen=True, slots=True)
class VCCDemoConfig:
    n_genes: int = 2000
    """Genes in the file: the most expressed of the screen's cell type (the real file has 18,080)."""
    n_train_perturbations: int = 16
    n_validation_perturbations: int = 8
    cells_per_perturbation: tuple[int, int] = (60, 140)
    n_control_cells: int = 800
    n_batches: int = 4
    guides_per_target: int = 2
    knockdown: float = 0.15
    """Median fraction of its mRNA a knocked-down target keeps (CRISPRi); each guide varies around it."""
    regulator_fraction: float = 0.7
    """Share of the targets that are regulators (the rest change only themselves)."""
    cell_type: str = "epithelial cell"
    """The screen's cell type, one of the atlas's (``scdata.source.demo_bucket.CELL_TYPES``)."""
    depth: float = 9000.0
    """Median UMIs per cell (H1 cells in the challenge data are deeply sequenced)."""
    seed: int = 0
    axis_seed: int = 0
    """Seed of the synthetic scBaseCount bucket whose genes and regulatory model these are."""

    def __post_init__(self) -> None:
        if not 0 < self.knockdown < 1 or not 0 <= self.regulator_fraction <= 1:
            raise ValueError(f"knockdown must be in (0, 1) and regulator_fraction in [0, 1], got "
                             f"{self.knockdown}, {self.regulator_fraction}")
        lo, hi = self.cells_per_perturbation
        if not 0 < lo <= hi or self.n_control_cells <= 0 or self.n_batches <= 0:
            raise ValueError("need positive cell counts (min <= max) and at least one batch")
        if self.n_train_perturbations + self.n_validation_perturbations >= self.n_genes // 4:
            raise ValueError("n_genes must be at least four times the number of targets")
        if self.cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type {self.cell_type!r} is not one of the atlas's: {CELL_TYPES}")


@dataclass(frozen=True, slots=True)
class Truth:
    """The generative model, enough to draw cells and score a prediction against it."""

    symbols: np.ndarray
    gene_ids: np.ndarray
    genes: np.ndarray  # (genes,) positions of the file's genes on the atlas's axis
    n_axis: int
    cell_type: int
    base: np.ndarray  # (genes,) expression proportions of the screen's cell type
    batch_effect: np.ndarray  # (batches, genes)
    regulation: Regulation
    efficiency: dict[str, np.ndarray]  # target -> (guides,) fraction of its mRNA each guide leaves
    regulator_of: dict[str, int]  # target -> its index among the regulators (absent: not a regulator)
    log2fc: dict[str, np.ndarray]  # target -> (genes,) population log2 fold change of the mean
    train_targets: list[str]
    validation_targets: list[str]


def _truth(config: VCCDemoConfig) -> Truth:
    biology = demo_biology(DemoConfig(seed=config.axis_seed))
    regulation = biology.regulation
    if regulation is None:
        raise ValueError("the demo biology has no regulatory model")
    rng = np.random.default_rng([config.seed, 11])
    cell_type = CELL_TYPES.index(config.cell_type)
    base = biology.profiles[cell_type]
    genes = np.sort(np.argsort(base)[::-1][: config.n_genes])
    profile = base[genes] / base[genes].sum()
    symbols = biology.symbols[genes]
    n_targets = config.n_train_perturbations + config.n_validation_perturbations
    # targets among well-expressed genes, as CRISPRi screens pick them, so a knockdown is visible
    rank = np.empty(len(genes), dtype=np.int64)
    rank[np.argsort(profile)[::-1]] = np.arange(len(genes))
    expressed = set(np.flatnonzero(rank < max(len(genes) // 2, n_targets * 4)).tolist())
    column = {int(g): k for k, g in enumerate(genes)}
    regulator_columns = [column[int(g)] for g in regulation.regulators if int(g) in column and column[int(g)] in expressed]
    n_reg = min(int(round(config.regulator_fraction * n_targets)), len(regulator_columns))
    picked_regs = rng.choice(regulator_columns, size=n_reg, replace=False) if n_reg else np.zeros(0, np.int64)
    others = sorted(expressed - set(regulator_columns))
    picked_other = rng.choice(others, size=n_targets - n_reg, replace=False)
    targets = rng.permutation(np.concatenate([picked_regs, picked_other]).astype(np.int64))
    index_of = {int(g): r for r, g in enumerate(regulation.regulators)}
    names = [str(symbols[t]) for t in targets]
    regulator_of = {name: index_of[int(genes[t])] for name, t in zip(names, targets) if int(genes[t]) in index_of}
    efficiency = {name: np.clip(config.knockdown * rng.lognormal(0.0, 0.3) * rng.lognormal(0.0, 0.2, size=config.guides_per_target),
                                0.03, 0.6) for name in names}
    batch_effect = rng.lognormal(0.0, 0.2, size=(config.n_batches, len(genes)))
    truth = Truth(symbols=symbols, gene_ids=biology.gene_ids[genes], genes=genes, n_axis=len(biology.gene_ids),
                  cell_type=cell_type, base=profile, batch_effect=batch_effect, regulation=regulation,
                  efficiency=efficiency, regulator_of=regulator_of, log2fc={},
                  train_targets=names[: config.n_train_perturbations], validation_targets=names[config.n_train_perturbations:])
    # population effects: the same simulated cells with and without each knockdown
    population = regulation.activities(np.random.default_rng([config.seed, 13]), np.full(4000, cell_type))
    control = np.exp(_log_shift(truth, CONTROL, population, None)).mean(axis=0)
    for name in names:
        guide = np.arange(len(population)) % config.guides_per_target
        truth.log2fc[name] = np.log2(np.exp(_log_shift(truth, name, population, guide)).mean(axis=0) / control)
    return truth


def _log_shift(truth: Truth, target: str, activity: np.ndarray, guides: np.ndarray | None) -> np.ndarray:
    """(cells, genes) natural-log shift of the file's genes for cells of ``target`` (guides: their guide index)."""
    regulation = truth.regulation
    if target != CONTROL:
        efficiency = truth.efficiency[target][guides]
        if target in truth.regulator_of:
            activity = regulation.knock_down(activity, truth.regulator_of[target], efficiency)
    shift = regulation.log_shift(activity, truth.genes, truth.n_axis)
    if target != CONTROL and target not in truth.regulator_of:
        shift[:, int(np.flatnonzero(truth.symbols == target)[0])] += np.log(efficiency)
    return shift


def _cells(config: VCCDemoConfig, truth: Truth, rng, target: str, batches: np.ndarray, guides: np.ndarray) -> sp.csr_matrix:
    n = len(batches)
    depths = np.clip(rng.lognormal(np.log(config.depth), 0.35, size=n), 1000, 60_000)
    activity = truth.regulation.activities(rng, np.full(n, truth.cell_type))
    shift = _log_shift(truth, target, activity, guides)
    rows = []
    for b in np.unique(batches):
        members = np.flatnonzero(batches == b)
        profile = truth.base * truth.batch_effect[b]
        rows.append((members, sample_counts(rng, profile / profile.sum(), depths[members],
                                            log_shift=lambda top, m=members: shift[m][:, top])))
    order = np.concatenate([m for m, _ in rows])
    return sp.vstack([r for _, r in rows]).tocsr()[np.argsort(order)]


def _adata(config: VCCDemoConfig, truth: Truth, targets: list[str], seed_tag: int):
    import anndata as ad

    rng = np.random.default_rng([config.seed, seed_tag])
    lo, hi = config.cells_per_perturbation
    blocks, obs = [], []
    for target in [CONTROL, *targets]:
        n = config.n_control_cells if target == CONTROL else int(rng.integers(lo, hi + 1))
        batches = rng.integers(config.n_batches, size=n)
        guides = rng.integers(config.guides_per_target, size=n)
        blocks.append(_cells(config, truth, rng, target, batches, guides))
        obs.append(pd.DataFrame({"target_gene": target, "guide_id": [f"{target}_g{g + 1}" for g in guides],
                                 "batch": [f"batch{b + 1:02d}" for b in batches]}))
    frame = pd.concat(obs, ignore_index=True)
    for column in frame.columns:
        frame[column] = pd.Categorical(frame[column])
    frame.index = pd.Index([f"cell{seed_tag}_{i:07d}" for i in range(len(frame))])
    x = sp.vstack(blocks).tocsr().astype(np.float32)
    x.sort_indices()
    versions = rng.integers(1, 20, size=len(truth.gene_ids))
    gene_id = [f"{g}.{v}" if i % 3 == 0 else str(g) for i, (g, v) in enumerate(zip(truth.gene_ids, versions))]
    var = pd.DataFrame({"gene_id": gene_id}, index=pd.Index(truth.symbols.astype(str)))
    return ad.AnnData(X=x, obs=frame, var=var)


def write_vcc_demo(directory: str, config: VCCDemoConfig = VCCDemoConfig()) -> dict[str, str]:
    """Write the synthetic challenge files into ``directory``; returns their paths by name."""
    os.makedirs(directory, exist_ok=True)
    truth = _truth(config)
    paths = {name: os.path.join(directory, name) for name in (
        "adata_Training.h5ad", "gene_names.csv", "pert_counts_Validation.csv", "adata_Validation_truth.h5ad",
        "truth.json")}
    train = _adata(config, truth, truth.train_targets, 1)
    train.write_h5ad(paths["adata_Training.h5ad"], compression="gzip")
    pd.Series(train.var_names).to_csv(paths["gene_names.csv"], index=False, header=False)
    validation = _adata(config, truth, truth.validation_targets, 2)
    validation.write_h5ad(paths["adata_Validation_truth.h5ad"], compression="gzip")
    umis = np.asarray(validation.X.sum(axis=1)).ravel()
    counts = (pd.DataFrame({"target_gene": validation.obs["target_gene"].astype(str), "umi": umis})
              .query("target_gene != @CONTROL").groupby("target_gene", sort=False)
              .agg(n_cells=("umi", "size"), median_umi_per_cell=("umi", "median")).reset_index())
    counts.to_csv(paths["pert_counts_Validation.csv"], index=False)
    with open(paths["truth.json"], "w") as f:
        json.dump({"config": asdict(config), "control": CONTROL, "train_targets": truth.train_targets,
                   "validation_targets": truth.validation_targets, "regulators": sorted(truth.regulator_of),
                   "knockdown_efficiency": {t: [float(e) for e in v] for t, v in truth.efficiency.items()},
                   "responding_genes": {t: [str(s) for s in truth.symbols[(np.abs(fc) > 0.1) & (truth.symbols != t)]]
                                        for t, fc in truth.log2fc.items()},
                   "genes": [str(s) for s in truth.symbols],
                   "population_log2fc": {t: [round(float(v), 5) for v in fc] for t, fc in truth.log2fc.items()}}, f)
    return paths
