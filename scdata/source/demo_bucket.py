"""A synthetic, offline copy of the scBaseCount bucket layout for demos, tests and benchmarks.

Same relative paths, parquet columns and h5ad structure as a release (float32 CSR counts, var
indexed by Ensembl ID with ``gene_symbols``, obs indexed by barcode), with data that has the
structure analyses look for: negative-binomial counts from several cell types, tissue and
technology batch effects, depths from ~500 to ~20,000 UMIs, genes missing from some
experiments, shuffled gene order in others, and a few counts above int16.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import bucket as src
from .regulation import Regulation, RegulationConfig, make_regulation

CELL_TYPES = ("T cell", "B cell", "monocyte", "NK cell", "epithelial cell", "fibroblast", "endothelial cell", "neuron")
TISSUES = ("blood", "lung", "brain", "liver", "kidney", "heart", "skin", "bone marrow")
TECHS = ("3_prime_gex", "5_prime_gex", "multiome")
DISEASES = ("healthy", "healthy", "COVID-19", "lung adenocarcinoma", "type 2 diabetes")
ANCHOR_SYMBOLS = ("MALAT1", "MT-CO1", "MT-ND4", "ACTB", "B2M", "CD3E", "MS4A1", "CD14", "NKG7", "EPCAM", "COL1A2", "PECAM1", "SNAP25")
N_TOP = 2000  # genes sampled with NB noise; the rest are sampled as a multinomial tail


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Shape of the synthetic bucket; deterministic for a given ``seed``."""

    n_experiments: int = 12
    min_cells: int = 600
    max_cells: int = 4000
    n_genes: int = 36_601
    release: str = src.DEFAULT_RELEASE
    feature_type: str = src.DEFAULT_FEATURE_TYPE
    organism: str = src.DEFAULT_ORGANISM
    seed: int = 0
    workers: int = 0
    """Processes generating experiments (0: one per core)."""
    regulation: RegulationConfig | None = RegulationConfig()
    """The gene-regulatory model behind cell-to-cell co-expression (``scdata.source.regulation``);
    None: cells of one type differ only by sampling noise and depth."""
    markers: int = 40
    """Marker genes per cell type besides what its regulators' programs do (cell identity is mostly
    regulatory: its master regulators' programs)."""
    silenced: int = 60
    """Genes silenced per cell type besides its regulators' programs."""

    def __post_init__(self) -> None:
        if self.release not in src.RELEASES:
            raise ValueError(f"release {self.release!r} is not one of {src.RELEASES}")
        if not 0 < self.min_cells <= self.max_cells:
            raise ValueError(f"need 0 < min_cells <= max_cells, got {self.min_cells}, {self.max_cells}")
        if self.n_genes < len(ANCHOR_SYMBOLS) + 10 or self.n_experiments <= 0:
            raise ValueError("need at least one experiment and more than 23 genes")


@dataclass(frozen=True, slots=True)
class DemoBiology:
    gene_ids: np.ndarray
    symbols: np.ndarray
    profiles: np.ndarray  # (types, genes) expression proportions
    tissue_effect: np.ndarray  # (tissues, genes) multiplicative batch effects
    tech_effect: np.ndarray  # (techs, genes)
    tissue_mix: np.ndarray  # (tissues, types) cell-type composition
    regulation: Regulation | None = None  # regulators, their activities and programs


def demo_biology(config: DemoConfig) -> DemoBiology:
    rng = np.random.default_rng([config.seed, 1])
    g = config.n_genes
    steps = rng.integers(1, 40, size=g)
    gene_ids = np.array([f"ENSG{n:011d}" for n in 10_000 + np.cumsum(steps)])
    symbols = np.array([f"SYN{i}" for i in range(g)], dtype=object)
    anchors = rng.choice(g, size=len(ANCHOR_SYMBOLS), replace=False)
    symbols[anchors] = ANCHOR_SYMBOLS
    base = rng.lognormal(mean=0.0, sigma=2.2, size=g)
    base[anchors[0]] *= 400.0  # a MALAT1-like gene that dominates some cells
    profiles = np.tile(base, (len(CELL_TYPES), 1))
    # Markers and silenced genes come from the expressed genes, as in real data (CD3E, MS4A1, LYZ are
    # well expressed where they are on): a marker drawn from the whole axis would stay near zero
    # counts even at 60-fold, leaving cell types almost invisible per gene.
    expressed = np.setdiff1d(np.argsort(base)[::-1][: min(g, 2000)], anchors[:1])
    for k in range(len(CELL_TYPES)):
        markers = rng.choice(expressed, size=min(config.markers, len(expressed)), replace=False)
        profiles[k, markers] *= rng.uniform(5, 40, size=len(markers))
        silenced = rng.choice(expressed, size=min(config.silenced, len(expressed)), replace=False)
        profiles[k, silenced] *= 0.1
    profiles /= profiles.sum(axis=1, keepdims=True)
    tissue_effect = rng.lognormal(0.0, 0.35, size=(len(TISSUES), g))
    tech_effect = rng.lognormal(0.0, 0.25, size=(len(TECHS), g))
    tissue_mix = rng.dirichlet(np.full(len(CELL_TYPES), 0.6), size=len(TISSUES))
    regulation = None
    if config.regulation is not None:  # its own stream: the rest of the biology is the same with or without it
        regulation = make_regulation(np.random.default_rng([config.seed, 4]), np.setdiff1d(expressed, anchors),
                                     len(CELL_TYPES), config.regulation)
    return DemoBiology(gene_ids, symbols.astype(str), profiles, tissue_effect, tech_effect, tissue_mix, regulation)


def _accessions(config: DemoConfig) -> list[str]:
    rng = np.random.default_rng([config.seed, 2])
    numbers = rng.choice(np.arange(10_000_000, 29_000_000), size=config.n_experiments, replace=False)
    return [f"SRX{n}" for n in numbers]


def _barcodes(rng: np.random.Generator, n: int) -> np.ndarray:
    # A 1M-barcode pool, like 10x's whitelist: unique within an experiment, not across them.
    codes = rng.choice(4**10, size=n, replace=False)
    letters = np.array(list("ACGT"))
    digits = (codes[:, None] // 4 ** np.arange(10)[None, :]) % 4
    return np.array(["AAAC" + "".join(row) + "GT-1" for row in letters[digits]])


def sample_counts(rng, profile: np.ndarray, depths: np.ndarray, theta: float = 8.0, log_shift=None) -> sp.csr_matrix:
    """NB counts for the most expressed genes, a Poisson/multinomial tail for the rest.

    ``log_shift``: a function of the most expressed genes' indices giving each cell's natural-log
    shift of their means (``Regulation.log_shift``): cells then differ by more than noise."""
    n, g = len(depths), len(profile)
    top = np.argsort(profile)[::-1][: min(N_TOP, g)]
    rest = np.setdiff1d(np.arange(g), top)
    mean_top = depths[:, None] * profile[top][None, :]
    if log_shift is not None:
        mean_top *= np.exp(log_shift(top))
    top_counts = rng.poisson(mean_top * rng.gamma(theta, 1.0 / theta, size=mean_top.shape))
    rows_t, cols_t = np.nonzero(top_counts)
    vals_t = top_counts[rows_t, cols_t]
    rest_mass = profile[rest].sum()
    if len(rest) and rest_mass > 0:
        n_tail = rng.poisson(depths * rest_mass)
        cdf = np.cumsum(profile[rest]) / rest_mass
        picks = np.minimum(np.searchsorted(cdf, rng.random(n_tail.sum())), len(rest) - 1)
        rows_r = np.repeat(np.arange(n), n_tail)
        cols_r = rest[picks]
    else:
        rows_r = cols_r = np.array([], dtype=np.int64)
    rows = np.concatenate([rows_t, rows_r])
    cols = np.concatenate([top[cols_t], cols_r])
    vals = np.concatenate([vals_t, np.ones(len(rows_r))])
    out = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, g))
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def cell_shift(biology: DemoBiology, rng: np.random.Generator, cell_type: int, n: int, n_genes: int):
    """The ``log_shift`` of ``n`` cells of one type for ``sample_counts`` (None without regulation)."""
    regulation = biology.regulation
    if regulation is None:
        return None
    activity = regulation.activities(rng, np.full(n, cell_type))
    return lambda genes: regulation.log_shift(activity, genes, n_genes)


def _experiment(args) -> tuple[str, pd.DataFrame, dict]:
    """Write one experiment's h5ad; returns its accession, obs and sample-table row."""
    import anndata as ad

    config, biology, index, accession, root = args
    rng = np.random.default_rng([config.seed, 3, index])
    n = int(rng.integers(config.min_cells, config.max_cells + 1))
    tissue = int(rng.integers(len(TISSUES)))
    tech = int(rng.integers(len(TECHS)))
    types = rng.choice(len(CELL_TYPES), size=n, p=biology.tissue_mix[tissue])
    depth_center = rng.uniform(1500, 5000) * (1.4 if tech == 2 else 1.0)
    depths = np.clip(rng.lognormal(np.log(depth_center), 0.7, size=n), 500, 20_000)
    effect = biology.tissue_effect[tissue] * biology.tech_effect[tech]
    blocks = []
    for k in range(len(CELL_TYPES)):
        members = np.flatnonzero(types == k)
        if len(members):
            profile = biology.profiles[k] * effect
            blocks.append((members, sample_counts(rng, profile / profile.sum(), depths[members],
                                                  log_shift=cell_shift(biology, rng, k, len(members), config.n_genes))))
    order = np.concatenate([m for m, _ in blocks])
    matrix = sp.vstack([b for _, b in blocks]).tocsr()[np.argsort(order)]
    if index % 5 == 1:  # a few huge counts, as in real high-depth cells
        cells = rng.choice(n, size=3, replace=False)
        gene = int(np.argmax(biology.profiles[0]))
        target = 40_000 + rng.integers(0, 5000, size=3)
        current = matrix[cells, gene].toarray().ravel()
        bump = sp.csr_matrix(((target - current).astype(np.float32), (cells, np.full(3, gene))), shape=matrix.shape)
        matrix = (matrix + bump).tocsr()

    gene_idx = np.arange(config.n_genes)
    if index % 4 == 3:  # some genes absent from this experiment's var
        gene_idx = np.sort(rng.choice(config.n_genes, size=config.n_genes - 150, replace=False))
    if index % 5 == 2:  # a file whose gene order differs
        gene_idx = rng.permutation(gene_idx)
    matrix = matrix[:, gene_idx].tocsr()
    matrix.sort_indices()

    barcodes = _barcodes(rng, n)
    umi = np.asarray(matrix.sum(axis=1)).ravel().astype(np.float32)
    genes_detected = np.diff(matrix.indptr).astype(np.int32)
    obs = pd.DataFrame(
        {"gene_count": genes_detected, "umi_count": umi, "SRX_accession": pd.Categorical([accession] * n)},
        index=pd.Index(barcodes, name=None),
    )
    layers = {}
    if config.release == "2026-01-12":
        names = np.array(CELL_TYPES)[types]
        obs["cell_type"] = pd.Categorical(names)
        obs["cell_ontology_term_id"] = pd.Categorical([f"CL:{1000 + CELL_TYPES.index(t):07d}" for t in names])
        em = matrix.copy()
        em.data = (em.data * rng.uniform(1.0, 1.3, size=em.nnz)).astype(np.float32)
        layers = {"UniqueAndMult-EM": em, "UniqueAndMult-Uniform": matrix.copy()}
        for name, layer in layers.items():
            obs[f"gene_count_{name}"] = np.diff(layer.indptr).astype(np.int32)
            obs[f"umi_count_{name}"] = np.asarray(layer.sum(axis=1)).ravel().astype(np.float32)
    var = pd.DataFrame(
        {"gene_symbols": biology.symbols[gene_idx], "feature_types": "Gene Expression"},
        index=pd.Index(biology.gene_ids[gene_idx]),
    )
    adata = ad.AnnData(X=matrix, obs=obs, var=var, layers=layers)
    path = os.path.join(root, "h5ad", config.feature_type, config.organism, f"{accession}.h5ad")
    adata.write_h5ad(path, compression="gzip")

    row = _sample_row(config, rng, accession, n, TISSUES[tissue], TECHS[tech])
    obs_out = obs[["gene_count", "umi_count"]].copy()
    obs_out.insert(0, "SRX_accession", accession)
    obs_out.index.name = "barcode"
    return accession, obs_out.reset_index(), row


def _sample_row(config: DemoConfig, rng, accession: str, n: int, tissue: str, tech: str) -> dict:
    bucket = "gs://arc-scbasecount" if config.release == "2025-02-25" else src.LIVE_BUCKET
    row = {
        "entrez_id": int(rng.integers(10_000_000, 40_000_000)),
        "srx_accession": accession,
        "file_path": f"{bucket}/{config.release}/h5ad/{config.feature_type}/{config.organism}/{accession}.h5ad",
        "obs_count": n,
        "lib_prep": "10x_Genomics",
        "tech_10x": tech,
        "cell_prep": "single_nucleus" if tissue == "brain" else "single_cell",
        "organism": config.organism.replace("_", " "),
        "tissue": tissue,
        "disease": str(rng.choice(DISEASES)),
        "perturbation": "none",
        "cell_line": "none",
        "czi_collection_id": "",
        "czi_collection_name": "",
    }
    if config.release == "2026-01-12":
        row["tissue_ontology_term_id"] = f"UBERON:{TISSUES.index(tissue) + 2000:07d}"
        row["disease_ontology_term_id"] = "PATO:0000461" if row["disease"] == "healthy" else "MONDO:0100096"
        row["antibody_derived_tag"] = "none"
    return row


def write_demo_bucket(root: str, config: DemoConfig = DemoConfig()) -> str:
    """Write the synthetic release under ``root``; returns the release root to pass as ``--source``."""
    release_root = os.path.join(root, "scbasecount", config.release)
    h5ad_dir = os.path.join(release_root, "h5ad", config.feature_type, config.organism)
    meta_dir = os.path.join(release_root, "metadata", config.feature_type, config.organism)
    os.makedirs(h5ad_dir, exist_ok=True)
    os.makedirs(meta_dir, exist_ok=True)
    biology = demo_biology(config)
    jobs = [(config, biology, i, acc, release_root) for i, acc in enumerate(_accessions(config))]
    workers = config.workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = list(pool.map(_experiment, jobs))
    else:
        results = [_experiment(job) for job in jobs]
    columns = src.SAMPLE_COLUMNS_2026 if config.release == "2026-01-12" else src.SAMPLE_COLUMNS_2025
    sample = pd.DataFrame([r for _, _, r in results])[list(columns)]
    sample["entrez_id"] = sample["entrez_id"].astype("int64")
    sample["obs_count"] = sample["obs_count"].astype("int64")
    sample.to_parquet(os.path.join(meta_dir, "sample_metadata.parquet"), index=False)
    obs = pd.concat([o for _, o, _ in results], ignore_index=True)
    obs.to_parquet(os.path.join(meta_dir, "obs_metadata.parquet"), index=False)
    return release_root
