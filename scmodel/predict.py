"""``python -m scmodel.predict``: a perturbation prediction in the Virtual Cell Challenge's format.

    python -m scmodel.predict --checkpoint runs/finetune/checkpoint.pt --store data/vcc.zarr \\
        --pert-counts pert_counts_Validation.csv --genes gene_names.csv --out runs/finetune/prediction

Writes ``OUT/prediction.h5ad``: raw counts for every gene of ``gene_names.csv`` in its order,
``obs["target_gene"]``, the cells of each perturbation in the CSV (``n_cells`` of them) and real
held-out control cells of the store, at most ``--max-cells`` in all. Without ``--pert-counts`` it
predicts the run's held-out perturbations with their held-out cell counts and also writes
``OUT/real.h5ad`` (those held-out real cells and the same controls) for ``python -m
scmodel.evaluate``; ``OUT/training_sample.h5ad`` holds training cells for cell-eval's cell-mean
baseline.

A perturbation is predicted by generating cells conditioned on it (target, sign, knockdown
strength) and on sets of real control cells of the same batch. ``--mode delta`` (default) also
generates cells conditioned on "control" with the same control sets, and applies the per-gene
ratio of the two generated means to real held-out control cells (their counts thinned or
boosted): the token bins' rounding cancels, and every cell keeps a real cell's depth and noise.
``--mode direct`` writes the generated values themselves (bin centres back to counts at the
control cell's depth). Genes the model does not model keep the control cell's counts. The
control cells are always real: cell-eval scores against the prediction's own controls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

MODES = ("delta", "direct")
EFFECTS = ("expected", "sampled", "training-mean")
RATIO_LIMIT = 64.0
"""Per-gene expression ratios are clipped to [1/64, 64]: a gene the model never expresses in one
condition would otherwise divide by ~0."""


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    checkpoint: str
    store: str | None = None
    pert_counts: str | None = None
    genes: str | None = None
    out: str = "prediction"
    mode: str = "delta"
    generate: int = 128
    """Generated cells per perturbation (and as many control-conditioned) for the effect in delta mode."""
    sample_steps: int | None = None
    max_cells: int = 100_000
    training_cells_per_perturbation: int = 200
    effect: str = "expected"
    """How delta mode measures the model's effect: "expected" (the per-gene marginals of a fully
    masked cell, exact) or "sampled" (means of generated cells). "training-mean" is a reference
    without the model: the ratio of the perturbation's training cells' mean to the training
    controls' (what a model that memorized every seen perturbation would predict)."""
    match_means: bool = True
    """Delta mode: scale each perturbation's drawn control cells so that their per-gene mean equals
    the mean of all held-out controls before the effect is applied: the prediction's mean is then
    the model's, not the model's plus the noise of which few control cells were drawn."""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.effect not in EFFECTS:
            raise ValueError(f"effect must be one of {EFFECTS}, got {self.effect!r}")
        if self.generate <= 0 or self.max_cells <= 0:
            raise ValueError("generate and max_cells must be positive")


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


def _cp10k_mean(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    return (counts * (1e4 / np.maximum(totals, 1.0))[:, None]).mean(0)


def _scale_counts(counts: np.ndarray, ratio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts scaled by ``ratio`` per gene, kept integer: binomial thinning below 1, added Poisson
    counts above (a zero stays zero: the cell's own detection is kept)."""
    counts = counts.astype(np.int64)
    down = np.minimum(ratio, 1.0)
    out = rng.binomial(counts, np.broadcast_to(down, counts.shape))
    up = np.maximum(ratio - 1.0, 0.0)
    return out + rng.poisson(counts * up)


class Predictor:
    """A fine-tuned conditional model, its perturbation store and the run's held-out split."""

    def __init__(self, config: PredictConfig):
        from scdata.hvg.results import open_hvg_matrix
        from scdata.store.layout import open_root
        from scdata.vcc.effects import perturbation_obs

        from .data.perturbation import Conditioning, split_cells
        from .models import MODELS
        from .run.checkpoint import load_run
        from .tokenize import BinnedTokenizer

        self.config = config
        run, state = load_run(config.checkpoint, config.store, config.device)
        self.run = run
        self.root = open_root(run.store)
        if self.root.attrs.asdict().get("sczarr", {}).get("kind") != "perturbation":
            raise ValueError(f"{run.store} is not a perturbation store (`scdata vcc import` writes one)")
        self.obs = perturbation_obs(run.store)
        self.split = split_cells(self.obs, run.val_fraction, run.seed, run.holdout_targets)
        _, hvg_positions = open_hvg_matrix(run.store)
        n = len(hvg_positions) if run.n_hvgs is None else min(run.n_hvgs, len(hvg_positions))
        self.hvg_positions = np.asarray(hvg_positions[:n])
        self.tokenizer = BinnedTokenizer(n_tokens=run.n_tokens, max_value=run.tokenizer_max)
        self.device = torch.device(config.device)
        self.model = MODELS[run.model](n_genes=n, n_tokens=run.n_tokens).to(self.device)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.conditioning = Conditioning(run.store, self.split.val, n, run.control_set_size, run.seed,
                                         effect_rows=self.split.train)
        self.control_label = self.conditioning.control_label
        is_control = self.obs["is_control"].to_numpy()
        self.val_controls = self.split.val[is_control[self.split.val]]
        if not len(self.val_controls):
            raise ValueError(f"{run.store}: the run's held-out split has no control cells (val_fraction={run.val_fraction})")
        self.step = state.get("step")
        self._control_mean = None

    # ---- generation --------------------------------------------------------------------------

    def _generate(self, conditioning: dict, n: int, generator: torch.Generator) -> torch.Tensor:
        """Expression (normalized per 10k, not log) of ``n`` generated cells."""
        from .diffusion import sample

        run = self.run
        cond = {k: v.to(self.device) for k, v in conditioning.items()}
        with torch.no_grad():
            tokens = sample(self.model, n, len(self.hvg_positions), self.config.sample_steps or run.sample_steps,
                            run.n_tokens, temperature=run.sample_temperature, generator=generator, device=self.device,
                            order=run.sample_order, schedule=run.diffusion, **cond)
        return torch.expm1(self.tokenizer.detokenize(tokens.cpu()))

    def _expected(self, conditioning: dict, n: int) -> torch.Tensor:
        """Expected expression (normalized per 10k) of every modelled gene under the model's
        prediction from a fully masked cell: its marginal, computed, not sampled."""
        cond = {k: v.to(self.device) for k, v in conditioning.items()}
        tokens = torch.full((n, len(self.hvg_positions)), self.run.n_tokens, dtype=torch.long, device=self.device)
        with torch.no_grad():
            probs = torch.softmax(self.model(tokens, torch.ones(n, device=self.device), **cond).float(), dim=-1)
        values = torch.expm1(self.tokenizer.detokenize(torch.arange(self.run.n_tokens))).to(probs)
        return (probs @ values).cpu()

    def effect(self, target: str, batches: np.ndarray, rng: np.random.Generator, generator) -> np.ndarray:
        """Per modelled gene: the model's mean expression under the perturbation / under control,
        with the same control sets. ``effect="expected"``: the marginals of a fully masked cell;
        ``"sampled"``: means of generated cells (common random numbers for both conditions)."""
        if self.config.effect == "training-mean":
            return self._training_mean_ratio(target)
        perturbed = self.conditioning.for_targets([target] * len(batches), batches, rng)
        control = self.conditioning.for_targets([self.control_label] * len(batches), batches, rng)
        control["control"] = perturbed["control"]
        if self.config.effect == "expected":
            a = self._expected(perturbed, len(batches)).mean(0).numpy()
            b = self._expected(control, len(batches)).mean(0).numpy()
        else:
            # common random numbers: both runs reveal the same positions with the same uniform draws,
            # so the difference of their means is the conditioning's, not the sampler's noise
            state = generator.get_state()
            a = self._generate(perturbed, len(batches), generator).mean(0).numpy()
            generator.set_state(state)
            b = self._generate(control, len(batches), generator).mean(0).numpy()
        eps = 1e-2
        return np.clip((a + eps) / (b + eps), 1 / RATIO_LIMIT, RATIO_LIMIT)

    def _training_mean(self, rows: np.ndarray) -> np.ndarray:
        rows = np.sort(rows)
        counts = np.asarray(self.root["X"].get_orthogonal_selection((rows, self.hvg_positions)), dtype=np.float64)
        return _cp10k_mean(counts, self.obs["total_counts"].to_numpy()[rows])

    def _training_mean_ratio(self, target: str) -> np.ndarray:
        obs, train = self.obs, self.split.train
        rows = train[obs["target_gene"].to_numpy()[train] == target]
        if not len(rows):
            raise ValueError(f"--effect training-mean: {target!r} has no training cells (a reference for seen perturbations only)")
        if self._control_mean is None:  # the same for every target: read once
            self._control_mean = self._training_mean(train[obs["is_control"].to_numpy()[train]])
        return np.clip((self._training_mean(rows) + 1e-2) / (self._control_mean + 1e-2), 1 / RATIO_LIMIT, RATIO_LIMIT)

    # ---- the prediction file -----------------------------------------------------------------

    def predict(self, counts: pd.DataFrame, names: list[str]):
        import anndata as ad

        cfg = self.config
        positions = output_positions(self.root, names)
        unknown = sorted(t for t in set(counts["target_gene"]) if self.conditioning.position_of(t) < 0)
        if unknown:
            raise ValueError(f"targets not on the gene axis of {self.run.store} (no gene with that symbol): {unknown[:5]}")
        controls, counts = self._budget(counts)
        x = self.root["X"]
        batches_all = self.obs["batch"].to_numpy()
        totals = self.obs["total_counts"].to_numpy()
        hvg_column = {int(p): k for k, p in enumerate(self.hvg_positions)}
        modelled = np.asarray([j for j, p in enumerate(positions) if int(p) in hvg_column], dtype=np.int64)
        model_index = np.asarray([hvg_column[int(positions[j])] for j in modelled], dtype=np.int64)
        rng = np.random.default_rng([cfg.seed, 23])
        generator = torch.Generator().manual_seed(cfg.seed)
        blocks, labels = [read_counts(x, controls, positions)], [self.control_label] * len(controls)
        reference = _cp10k_mean(read_counts(x, self.val_controls, positions).toarray(), totals[self.val_controls])
        for target, n in zip(counts["target_gene"], counts["n_cells"]):
            basal = rng.choice(self.val_controls, size=n, replace=n > len(self.val_controls))
            base = read_counts(x, basal, positions).toarray()
            if cfg.mode == "delta":
                g = min(cfg.generate, max(n, 16))
                factor = np.ones(len(positions))
                factor[modelled] = self.effect(target, batches_all[rng.choice(basal, size=g)], rng, generator)[model_index]
                if cfg.match_means:
                    drawn = _cp10k_mean(base, totals[basal])
                    factor *= np.where(drawn > 0, np.clip(reference / np.maximum(drawn, 1e-12), 0.25, 4.0), 1.0)
                base = _scale_counts(base, factor, rng)
            else:
                cond = self.conditioning.for_targets([target] * n, batches_all[basal], rng)
                values = self._generate(cond, n, generator).numpy()[:, model_index]
                base[:, modelled] = np.rint(values * totals[basal, None] / 1e4)
            blocks.append(sp.csr_matrix(base.astype(np.float32)))
            labels += [target] * n
        obs = pd.DataFrame({"target_gene": pd.Categorical(labels)},
                           index=pd.Index([f"pred_{i:07d}" for i in range(len(labels))]))
        adata = ad.AnnData(X=sp.vstack(blocks, format="csr").astype(np.float32), obs=obs,
                           var=pd.DataFrame(index=pd.Index(names, name="gene")))
        adata.uns["sczarr_prediction"] = {
            "values": "counts", "mode": cfg.mode, "checkpoint": os.path.abspath(cfg.checkpoint), "store": self.run.store,
            "step": self.step, "control_label": self.control_label, "controls": "real held-out cells",
            "modelled_genes": int(len(modelled)), "genes_not_on_axis": int((positions < 0).sum()),
            "match_means": bool(cfg.match_means and cfg.mode == "delta"), "effect": cfg.effect}
        return adata

    def _budget(self, counts: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        """All held-out controls plus the requested cells, scaled down together to ``max_cells``."""
        controls = self.val_controls
        total = int(counts["n_cells"].sum()) + len(controls)
        if total > self.config.max_cells:
            factor = self.config.max_cells / total
            counts = counts.assign(n_cells=np.maximum(1, np.floor(counts["n_cells"] * factor)).astype(int))
            keep = max(1, self.config.max_cells - int(counts["n_cells"].sum()))
            controls = np.sort(np.random.default_rng([self.config.seed, 29]).choice(controls, size=min(keep, len(controls)),
                                                                                    replace=False))
        return controls, counts

    # ---- references for evaluation -----------------------------------------------------------

    def held_out_counts(self) -> pd.DataFrame:
        """The held-out split's perturbations and their cell counts (a ``pert_counts`` table)."""
        obs = self.obs.iloc[self.split.val]
        obs = obs[~obs["is_control"]]
        return obs.groupby("target_gene", sort=True).size().rename("n_cells").reset_index()

    def references(self, names: list[str], counts: pd.DataFrame):
        """``real``: held-out cells of the predicted perturbations and the prediction's controls;
        ``training``: up to ``training_cells_per_perturbation`` training cells of each perturbation."""
        import anndata as ad

        positions = output_positions(self.root, names)
        x = self.root["X"]

        def frame(rows):
            labels = self.obs["target_gene"].to_numpy()[rows]
            return ad.AnnData(X=read_counts(x, rows, positions), var=pd.DataFrame(index=pd.Index(names, name="gene")),
                              obs=pd.DataFrame({"target_gene": pd.Categorical(labels)},
                                               index=pd.Index([f"cell_{r}" for r in rows])))

        controls = self._budget(counts)[0]  # the prediction's controls
        wanted = set(counts["target_gene"])
        val = self.split.val
        real_rows = np.concatenate([val[np.isin(self.obs["target_gene"].to_numpy()[val], list(wanted))], controls])
        rng = np.random.default_rng([self.config.seed, 31])
        train = self.split.train[~self.obs["is_control"].to_numpy()[self.split.train]]
        per = self.obs.iloc[train].groupby("target_gene").indices
        picks = [train[rng.permutation(v)[: self.config.training_cells_per_perturbation]] for v in per.values()]
        return frame(np.sort(real_rows)), frame(np.sort(np.concatenate(picks)))


def run_prediction(config: PredictConfig, echo=print) -> dict[str, str]:
    predictor = Predictor(config)
    names = read_gene_names(config.genes) if config.genes else _source_genes(predictor.root)
    held_out = config.pert_counts is None
    counts = predictor.held_out_counts() if held_out else read_pert_counts(config.pert_counts, predictor.control_label)
    os.makedirs(config.out, exist_ok=True)
    adata = predictor.predict(counts, names)
    paths = {"prediction": os.path.join(config.out, "prediction.h5ad")}
    adata.write_h5ad(paths["prediction"])
    echo(f"Wrote {paths['prediction']}: {adata.n_obs:,} cells ({(adata.obs['target_gene'] == predictor.control_label).sum():,} "
         f"real held-out controls) x {adata.n_vars:,} genes, {counts.shape[0]} perturbations, mode {config.mode}")
    real, training = predictor.references(names, counts)
    if held_out:
        paths["real"] = os.path.join(config.out, "real.h5ad")
        real.write_h5ad(paths["real"])
    paths["training"] = os.path.join(config.out, "training_sample.h5ad")
    training.write_h5ad(paths["training"])
    with open(os.path.join(config.out, "prediction.json"), "w") as f:
        json.dump({**dataclasses.asdict(config), "paths": paths, **adata.uns["sczarr_prediction"]}, f, indent=1)
    echo("Wrote " + ", ".join(p for k, p in paths.items() if k != "prediction"))
    return paths


def _source_genes(root) -> list[str]:
    from scdata.store.layout import read_strings

    return [str(s) for s in read_strings(root["uns/perturbation/source_genes"])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.predict", description="predict perturbations (VCC format)")
    p.add_argument("--checkpoint", required=True, help="a fine-tuned conditional checkpoint (python -m scmodel.train)")
    p.add_argument("--store", help="the perturbation store (default: the run's)")
    p.add_argument("--pert-counts", help="CSV of target_gene,n_cells (default: the run's held-out perturbations)")
    p.add_argument("--genes", help="gene_names.csv: output genes and order (default: the imported file's genes)")
    p.add_argument("--out", required=True, help="directory for prediction.h5ad (and real.h5ad, training_sample.h5ad)")
    p.add_argument("--mode", choices=MODES, default="delta")
    p.add_argument("--generate", type=int, default=128, help="generated cells per perturbation for its effect")
    p.add_argument("--sample-steps", type=int)
    p.add_argument("--max-cells", type=int, default=100_000)
    p.add_argument("--effect", choices=EFFECTS, default="expected",
                   help="delta mode: the model's per-gene marginals (exact), means of generated cells, or the "
                        "no-model reference of each seen perturbation's training mean")
    p.add_argument("--no-match-means", action="store_true",
                   help="delta mode: keep the drawn control cells' own mean (more sampling noise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    config = PredictConfig(checkpoint=args.checkpoint, store=args.store, pert_counts=args.pert_counts, genes=args.genes,
                           out=args.out, mode=args.mode, generate=args.generate, sample_steps=args.sample_steps,
                           max_cells=args.max_cells, seed=args.seed, device=args.device,
                           match_means=not args.no_match_means, effect=args.effect)
    try:
        run_prediction(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"python -m scmodel.predict: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
