"""A synthetic Virtual Cell Challenge dataset with known perturbation effects, for tests and demos.

Same layout as the challenge's files: ``adata_Training.h5ad`` (X float32 CSR of integer counts;
obs ``target_gene`` with the ``non-targeting`` control label, ``guide_id``, ``batch``; var indexed
by gene symbol with an Ensembl ``gene_id`` column, some IDs with version suffixes),
``gene_names.csv`` (the symbols in the file's order, no header) and ``pert_counts_Validation.csv``
(``target_gene, n_cells, median_umi_per_cell`` of held-out perturbations). The genes are those of
the synthetic scBaseCount bucket (``scdata.source.demo_bucket``, same seed), so a demo store's gene axis maps
onto them by Ensembl ID.

What is known, so that a prediction can be scored against the truth: every perturbation knocks
its target down to ``knockdown`` of its expression and shifts a downstream program of
``program_genes`` genes by log2 fold changes drawn once per perturbation; each batch multiplies
every gene by a fixed factor. ``adata_Validation_truth.h5ad`` holds real cells of the held-out
perturbations (and controls) drawn from the same model, for evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..source.demo_bucket import DemoConfig, demo_biology, sample_counts

CONTROL = "non-targeting"


@dataclass(frozen=True, slots=True)
class VCCDemoConfig:
    n_genes: int = 2000
    """Genes in the file: the most expressed of the demo bucket's axis (the real file has 18,080)."""
    n_train_perturbations: int = 12
    n_validation_perturbations: int = 4
    cells_per_perturbation: tuple[int, int] = (60, 140)
    n_control_cells: int = 600
    n_batches: int = 4
    guides_per_target: int = 2
    knockdown: float = 0.15
    """Fraction of its expression a knocked-down target keeps (CRISPRi)."""
    program_genes: int = 40
    program_log2fc: float = 1.2
    """Standard deviation of the downstream program's log2 fold changes."""
    depth: float = 9000.0
    """Median UMIs per cell (H1 cells in the challenge data are deeply sequenced)."""
    seed: int = 0
    axis_seed: int = 0
    """Seed of the synthetic scBaseCount bucket whose genes these are."""

    def __post_init__(self) -> None:
        if not 0 < self.knockdown < 1:
            raise ValueError(f"knockdown must be in (0, 1), got {self.knockdown}")
        lo, hi = self.cells_per_perturbation
        if not 0 < lo <= hi or self.n_control_cells <= 0 or self.n_batches <= 0:
            raise ValueError("need positive cell counts (min <= max) and at least one batch")
        if self.n_train_perturbations + self.n_validation_perturbations + self.program_genes >= self.n_genes:
            raise ValueError("n_genes must exceed the targets plus the program genes")


@dataclass(frozen=True, slots=True)
class Truth:
    """The generative model, enough to score a prediction against it."""

    symbols: np.ndarray
    gene_ids: np.ndarray
    base: np.ndarray  # (genes,) expression proportions of a control cell
    batch_effect: np.ndarray  # (batches, genes)
    log2fc: dict[str, np.ndarray]  # target -> (genes,) log2 fold change of the mean (knockdown + program)
    train_targets: list[str]
    validation_targets: list[str]


def _truth(config: VCCDemoConfig) -> Truth:
    biology = demo_biology(DemoConfig(seed=config.axis_seed))
    rng = np.random.default_rng([config.seed, 11])
    base = biology.profiles[0]
    genes = np.sort(np.argsort(base)[::-1][: config.n_genes])
    profile = base[genes] / base[genes].sum()
    n_targets = config.n_train_perturbations + config.n_validation_perturbations
    # targets among well-expressed genes, as CRISPRi screens pick them, so a knockdown is visible
    expressed = np.argsort(profile)[::-1][: max(n_targets * 4, 50)]
    targets = rng.choice(expressed, size=n_targets, replace=False)
    symbols = biology.symbols[genes]
    log2fc = {}
    for t in targets:
        effect = np.zeros(len(genes))
        program = rng.choice(np.setdiff1d(np.arange(len(genes)), targets), size=config.program_genes, replace=False)
        effect[program] = rng.normal(0.0, config.program_log2fc, size=config.program_genes)
        effect[t] = np.log2(config.knockdown)
        log2fc[str(symbols[t])] = effect
    batch_effect = rng.lognormal(0.0, 0.2, size=(config.n_batches, len(genes)))
    names = [str(symbols[t]) for t in targets]
    return Truth(symbols=symbols, gene_ids=biology.gene_ids[genes], base=profile, batch_effect=batch_effect,
                 log2fc=log2fc, train_targets=names[: config.n_train_perturbations],
                 validation_targets=names[config.n_train_perturbations:])


def _cells(config: VCCDemoConfig, truth: Truth, rng, target: str, n: int, batches: np.ndarray) -> sp.csr_matrix:
    shift = np.exp2(truth.log2fc[target]) if target != CONTROL else np.ones(len(truth.base))
    depths = np.clip(rng.lognormal(np.log(config.depth), 0.35, size=n), 1000, 60_000)
    rows = []
    for b in np.unique(batches):
        members = np.flatnonzero(batches == b)
        profile = truth.base * shift * truth.batch_effect[b]
        rows.append((members, sample_counts(rng, profile / profile.sum(), depths[members])))
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
        blocks.append(_cells(config, truth, rng, target, n, batches))
        guides = rng.integers(config.guides_per_target, size=n)
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
                   "validation_targets": truth.validation_targets,
                   "program_genes": {t: [str(s) for s in truth.symbols[(fc != 0) & (fc != np.log2(config.knockdown))]]
                                     for t, fc in truth.log2fc.items()}}, f, indent=1)
    return paths
