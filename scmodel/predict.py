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

from .delta_cells import RATIO_EPS, cp10k_mean, delta_cells, expression_ratio
from .run.prediction_genes import OutputGenes, output_positions, read_counts, read_gene_names, read_pert_counts, source_genes

MODES = ("delta", "direct")
EFFECTS = ("expected", "sampled", "training-mean", "in-silico", "in-silico-network")
UNSEEN = ("in-silico", "in-silico-network", "conditional", "target-only", "mean-of-seen")
CALIBRATIONS = ("errors-in-variables", "least-squares", "none")
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
    unseen: str = "in-silico"
    """How delta mode predicts a perturbation with no cells in the fine-tuning store: "in-silico"
    (knock the target down in the store's real control cells; the other genes follow through the
    controls' co-variation with it, kept to the atlas's gene programs the checkpoint carries,
    ``scmodel.coexpression``), "in-silico-network" (the same knockdown read from the network's
    predictions, ``scmodel.knockdown``), "conditional" (the conditional model with the target's
    embedding, which fine-tuning never trained), "target-only" (only the target itself changes) or
    "mean-of-seen" (the mean effect of the perturbations seen in fine-tuning: a no-model baseline)."""
    calibrate: str = "errors-in-variables"
    """Scale unseen in-silico effects by how the seen perturbations' in-silico effects compare with
    their measured training effects: "errors-in-variables" (the default: the method of moments with
    the measured effects' sampling noise subtracted, ``scmodel.knockdown.calibrate_errors_in_variables``),
    "least-squares" (``scmodel.knockdown.calibrate``: shrinks towards 0 by the in-silico effects' own
    noise; measured, it cut the effects below the predicted cells' noise) or "none". Without seen
    perturbations the scale is 1."""
    programs: bool = True
    """In-silico: keep the controls' co-variation to the atlas's gene programs (when the checkpoint
    has them: a run pretrained on a scBaseCount store, or fine-tuned from one)."""
    correct_attenuation: bool = True
    """In-silico: divide the regression slopes by the target's measurement reliability (the part of
    its variance in control cells that is not counting noise, ``scmodel.coexpression``): the slopes
    on a noisy measured level are diluted."""
    knockdown_cells: int = 128
    """Control cells an in-silico effect is averaged over (``in-silico-network``)."""
    covariation_cells: int = 4096
    """Training control cells the co-variation of ``in-silico`` is estimated from (at most)."""
    insilico_checkpoint: str | None = None
    """The model the in-silico knockdown reads (default: ``checkpoint`` itself; e.g. the pretrained
    checkpoint it was fine-tuned from)."""
    match_means: bool = True
    """Delta mode: scale each perturbation's drawn control cells so that their per-gene mean equals
    the mean of all held-out controls before the effect is applied: the prediction's mean is then
    the model's, not the model's plus the noise of which few control cells were drawn."""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.calibrate not in CALIBRATIONS:
            raise ValueError(f"calibrate must be one of {CALIBRATIONS}, got {self.calibrate!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.effect not in EFFECTS:
            raise ValueError(f"effect must be one of {EFFECTS}, got {self.effect!r}")
        if self.unseen not in UNSEEN:
            raise ValueError(f"unseen must be one of {UNSEEN}, got {self.unseen!r}")
        if self.knockdown_cells <= 0 or self.covariation_cells < 2:
            raise ValueError("knockdown_cells must be positive and covariation_cells at least 2")
        if self.generate <= 0 or self.max_cells <= 0:
            raise ValueError("generate and max_cells must be positive")


class Predictor:
    """A fine-tuned conditional model, its perturbation store and the run's held-out split."""

    def __init__(self, config: PredictConfig):
        from scdata.hvg.results import open_hvg_matrix
        from scdata.store.layout import open_root
        from scdata.vcc.effects import perturbation_obs

        from .data.perturbation import Conditioning, split_cells
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
        self._hvg_matrix = open_hvg_matrix(run.store)
        _, hvg_positions = self._hvg_matrix
        n = len(hvg_positions) if run.n_hvgs is None else min(run.n_hvgs, len(hvg_positions))
        self.hvg_positions = np.asarray(hvg_positions[:n])
        self.tokenizer = BinnedTokenizer(n_tokens=run.n_tokens, max_value=run.tokenizer_max)
        self.device = torch.device(config.device)
        self.model = self._build_model(run, state)
        self.conditioning = Conditioning(run.store, self.split.val, n, run.control_set_size, run.seed,
                                         effect_rows=self.split.train)
        self.control_label = self.conditioning.control_label
        is_control = self.obs["is_control"].to_numpy()
        self.val_controls = self.split.val[is_control[self.split.val]]
        if not len(self.val_controls):
            raise ValueError(f"{run.store}: the run's held-out split has no control cells (val_fraction={run.val_fraction})")
        self.step = state.get("step")
        self._control_means: dict[bytes, np.ndarray] = {}
        self._knockdown = None
        self._scales: dict[str, float] = {}
        self._covariation = None
        self.programs = None
        if config.programs and state.get("programs") is not None:
            from scdata.store.layout import read_strings

            from .coexpression import AtlasPrograms

            self.gene_ids = np.asarray(read_strings(self.root["var/_index"]), dtype=str)
            self.programs = AtlasPrograms.from_state(state["programs"])
            if self.programs.genes is None:  # an older checkpoint: programs over the model's genes, in order
                if self.programs.basis.shape[0] != n:
                    raise ValueError(f"{config.checkpoint}: its atlas programs cover {self.programs.basis.shape[0]} "
                                     f"genes, the model {n}")
                self.programs.genes = self.gene_ids[self.hvg_positions]
        self._seen_mean: np.ndarray | None = None
        train_targets = self.obs["target_gene"].to_numpy()[self.split.train]
        self.seen = set(train_targets[~self.obs["is_control"].to_numpy()[self.split.train]].astype(str))
        self.methods: dict[str, str] = {}

    # ---- generation --------------------------------------------------------------------------

    def _generate(self, conditioning: dict, n: int, generator: torch.Generator) -> torch.Tensor:
        """Expression (normalized per 10k, not log) of ``n`` generated cells."""
        from .diffusion import sample

        run = self.run
        cond = {k: v.to(self.device) for k, v in conditioning.items()}
        with torch.no_grad():
            tokens = sample(self.model, n, len(self.hvg_positions), self.config.sample_steps or run.sample_steps,
                            run.n_tokens, temperature=run.sample_temperature, generator=generator, device=self.device,
                            order=run.sample_order, schedule=run.diffusion, top_p=run.sample_top_p, **cond)
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

    def effect(self, target: str, batches: np.ndarray, rng: np.random.Generator, generator,
               output: OutputGenes) -> np.ndarray | None:
        """Per output gene: predicted mean expression under the perturbation / under control
        (None: only the target itself changes). A perturbation seen in fine-tuning uses ``effect``;
        an unseen one ``unseen``. ``"expected"``: the conditional model's marginals of a fully masked
        cell; ``"sampled"``: means of generated cells (common random numbers for both conditions);
        ``"in-silico"``: the controls' co-variation over every output gene (``scmodel.covariation``)."""
        method = self.config.effect if target in self.seen else self.config.unseen
        if method == "conditional":  # the conditional model as for a seen target (expected, or sampled)
            method = self.config.effect if self.config.effect in ("expected", "sampled") else "expected"
        if method == "in-silico" and not self.covariation(output).measured(output.column(target)):
            method = "target-only"  # not an output gene on the axis, or constant in the controls
        if method == "in-silico-network" and self.column_of(target) < 0:
            method = "target-only"  # the target is not among the modelled genes: nothing to knock down
        self.methods[target] = method
        if method == "target-only":
            return None
        if method == "training-mean":
            return output.from_modelled(self._training_mean_ratio(target))
        if method == "mean-of-seen":
            ratio = self._mean_of_seen().copy()
            if self.column_of(target) >= 0:
                ratio[self.column_of(target)] = self.fold(target)
            return output.from_modelled(ratio)
        if method.startswith("in-silico"):
            ratio = self.in_silico(target, method, output)
            if target not in self.seen and self.config.calibrate != "none":
                ratio = np.exp(self.scale(method, output) * np.log(ratio))
            if output.column(target) >= 0:
                ratio[output.column(target)] = self.fold(target)
            return np.clip(ratio, 1 / RATIO_LIMIT, RATIO_LIMIT)
        perturbed = self.conditioning.for_targets([target] * len(batches), batches, rng)
        control = self.conditioning.for_targets([self.control_label] * len(batches), batches, rng)
        control["control"] = perturbed["control"]
        if method == "expected":
            a = self._expected(perturbed, len(batches)).mean(0).numpy()
            b = self._expected(control, len(batches)).mean(0).numpy()
        else:
            # common random numbers: both runs reveal the same positions with the same uniform draws,
            # so the difference of their means is the conditioning's, not the sampler's noise
            state = generator.get_state()
            a = self._generate(perturbed, len(batches), generator).mean(0).numpy()
            generator.set_state(state)
            b = self._generate(control, len(batches), generator).mean(0).numpy()
        return output.from_modelled(np.clip(expression_ratio(a, b), 1 / RATIO_LIMIT, RATIO_LIMIT))

    def _mean_of_seen(self) -> np.ndarray:
        if self._seen_mean is None:
            if not self.seen:
                raise ValueError(f"--unseen mean-of-seen: {self.run.store} has no perturbation with training cells")
            logs = [np.log(self._training_mean_ratio(t)) for t in sorted(self.seen)]
            self._seen_mean = np.exp(np.mean(logs, axis=0))
        return self._seen_mean

    # ---- in-silico knockdown -----------------------------------------------------------------

    def column_of(self, target: str) -> int:
        """The target's column among the modelled genes (-1: not modelled)."""
        position = self.conditioning.position_of(target)
        return -1 if position < 0 else self.conditioning.column_of.get(position, -1)

    def fold(self, target: str) -> float:
        """The fraction of its mRNA the target keeps: measured in fine-tuning for a seen target (its
        cells against same-batch controls), the median over seen targets for an unseen one."""
        log2fc = self.conditioning.log2fc.get(target, self.conditioning.default_log2fc)
        return float(np.clip(2.0 ** log2fc, 1e-3, 1.0))

    @property
    def knockdown(self):
        if self._knockdown is None:
            from .data.perturbation import log1p_rows
            from .knockdown import InSilicoKnockdown, KnockdownConfig

            model, conditional = self.model, True  # the fine-tuned run: its "control cell" conditioning
            if self.config.insilico_checkpoint:
                model, conditional = self._load_model(self.config.insilico_checkpoint)
            x_hvg, _ = self._hvg_matrix
            rows = np.sort(self.val_controls)
            counts = x_hvg.get_orthogonal_selection((rows, slice(0, len(self.hvg_positions))))
            values = log1p_rows(counts, self.obs["total_counts"].to_numpy()[rows])
            batches = self.obs["batch"].to_numpy()[rows]
            rng = np.random.default_rng([self.config.seed, 43])

            def conditioning(n: int) -> dict:
                if not conditional:
                    return {}
                cond = self.conditioning.for_targets([self.control_label] * n, rng.choice(batches, size=n), rng)
                return {k: v for k, v in cond.items()}

            config = KnockdownConfig(cells=self.config.knockdown_cells, context=self.run.context_genes or len(values[0]),
                                     seed=self.config.seed)
            self._knockdown = InSilicoKnockdown(model, self.tokenizer, values, conditioning, self.run.diffusion.schedule,
                                                config, self.device)
        return self._knockdown

    def in_silico(self, target: str, method: str, output: OutputGenes) -> np.ndarray:
        """The target's in-silico knockdown ratio over the output genes, through the controls'
        co-variation (``in-silico``, every output gene) or the network's predictions
        (``in-silico-network``, the modelled genes)."""
        if method == "in-silico-network":
            return output.from_modelled(self.knockdown.ratio(self.column_of(target), self.fold(target)))
        return self.covariation(output).ratio(output.column(target), self.fold(target))

    def covariation(self, output: OutputGenes):
        """The training split's control cells over the output genes (read once per gene list)."""
        if self._covariation is None or self._covariation[0] is not output:
            from .covariation import CovariationConfig, CovariationKnockdown

            train = self.split.train
            rows = np.sort(train[self.obs["is_control"].to_numpy()[train]])
            if not len(rows):
                raise ValueError(f"{self.run.store}: the run's training split has no control cells for in-silico knockdowns")
            config = CovariationConfig(max_cells=self.config.covariation_cells,
                                       correct_attenuation=self.config.correct_attenuation, seed=self.config.seed)
            ids = self.gene_ids if self.programs is not None else np.zeros(self.root["X"].shape[1], dtype=str)
            knockdown = CovariationKnockdown(self.root["X"], rows, self.obs["total_counts"].to_numpy()[rows],
                                             output.positions, ids, self.programs, config)
            self._covariation = (output, knockdown)
        return self._covariation[1]

    def scale(self, method: str, output: OutputGenes) -> float:
        """One scale for unseen in-silico effects: seen perturbations' measured log ratios against
        their in-silico ones, over the output genes (1 when no seen perturbation can be knocked down)."""
        if method not in self._scales:
            from .knockdown import calibrate, calibrate_errors_in_variables

            predicted, observed, noise = [], [], []
            measured = np.zeros(len(output.names), dtype=bool)
            if method == "in-silico-network":
                measured[output.modelled] = True
            else:
                measured[output.positions >= 0] = True
            for target in sorted(self.seen):
                column = output.column(target)
                possible = self.column_of(target) >= 0 if method == "in-silico-network" else \
                    self.covariation(output).measured(column)
                if column < 0 or not possible:
                    continue
                p = np.log(self.in_silico(target, method, output))
                o, v = self._training_effect(target, output.positions)
                keep = measured.copy()
                keep[column] = False
                predicted.append(np.where(keep, p, np.nan))
                observed.append(np.where(keep, o, np.nan))
                noise.append(np.where(keep, v, np.nan))
            if not predicted:
                self._scales[method] = 1.0
            elif self.config.calibrate == "least-squares":
                self._scales[method] = calibrate(np.array(predicted), np.array(observed))
            else:
                self._scales[method] = calibrate_errors_in_variables(np.array(predicted), np.array(observed),
                                                                     np.array(noise))
        return self._scales[method]

    def _load_model(self, checkpoint: str):
        """(model, whether it was trained with perturbation conditioning) of another checkpoint."""
        from .run.checkpoint import load_run
        from .run.loaders import is_perturbation_store

        run, state = load_run(checkpoint, None, self.config.device)
        if run.n_tokens != self.run.n_tokens or run.tokenizer_max != self.run.tokenizer_max:
            raise ValueError(f"{checkpoint} tokenizes with {run.n_tokens} tokens up to {run.tokenizer_max}, "
                             f"{self.config.checkpoint} with {self.run.n_tokens} up to {self.run.tokenizer_max}")
        model = self._build_model(run, state)
        return model, is_perturbation_store(run.store) and hasattr(model, "perturbation")

    def _build_model(self, run, state: dict) -> torch.nn.Module:
        """The run's network over this prediction's modelled genes, with the checkpoint's weights, in eval mode."""
        from .models import MODELS

        model = MODELS[run.model](n_genes=len(self.hvg_positions), n_tokens=run.n_tokens).to(self.device)
        model.load_state_dict(state["model"])
        return model.eval()

    def _moments(self, rows: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Per output gene: mean and variance (ddof 1) of counts per 10k over ``rows``, read a
        block of cells at a time (the controls of a large screen do not fit in memory densely)."""
        rows = np.sort(rows)
        totals = self.obs["total_counts"].to_numpy()
        total, square = np.zeros(len(positions)), np.zeros(len(positions))
        for start in range(0, len(rows), 4096):
            block = rows[start:start + 4096]
            x = read_counts(self.root["X"], block, positions).toarray().astype(np.float64)
            x *= (1e4 / np.maximum(totals[block], 1.0))[:, None]
            total += x.sum(axis=0)
            square += (x * x).sum(axis=0)
        n = len(rows)
        mean = total / max(n, 1)
        var = (square - n * mean * mean) / (n - 1) if n > 1 else np.zeros(len(positions))
        return mean, np.clip(var, 0, None), n

    def _control_moments(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        key = np.asarray(positions).tobytes()
        if key not in self._control_means:  # the same for every target: read once per gene list
            train = self.split.train
            self._control_means[key] = self._moments(train[self.obs["is_control"].to_numpy()[train]], positions)
        return self._control_means[key]

    def _target_rows(self, target: str) -> np.ndarray:
        obs, train = self.obs, self.split.train
        rows = train[obs["target_gene"].to_numpy()[train] == target]
        if not len(rows):
            raise ValueError(f"--effect training-mean: {target!r} has no training cells (a reference for seen perturbations only)")
        return rows

    def _training_mean_ratio(self, target: str, positions: np.ndarray | None = None) -> np.ndarray:
        """Training cells' mean over training controls' mean at ``positions`` (default: the modelled genes)."""
        positions = self.hvg_positions if positions is None else np.asarray(positions)
        mean = self._moments(self._target_rows(target), positions)[0]
        return np.clip(expression_ratio(mean, self._control_moments(positions)[0]), 1 / RATIO_LIMIT, RATIO_LIMIT)

    def _training_effect(self, target: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The seen target's measured log ratio at ``positions`` and its sampling variance."""
        mean, var, n = self._moments(self._target_rows(target), positions)
        c_mean, c_var, c_n = self._control_moments(positions)
        ratio = np.clip(expression_ratio(mean, c_mean), 1 / RATIO_LIMIT, RATIO_LIMIT)
        noise = var / max(n, 1) / (mean + RATIO_EPS) ** 2 + c_var / max(c_n, 1) / (c_mean + RATIO_EPS) ** 2
        return np.log(ratio), noise

    # ---- the prediction file -----------------------------------------------------------------

    def predict(self, counts: pd.DataFrame, names: list[str]):
        import anndata as ad

        cfg = self.config
        positions = output_positions(self.root, names)
        output_column = {name: j for j, name in enumerate(names)}
        unknown = sorted(t for t in set(counts["target_gene"])
                         if self.conditioning.position_of(t) < 0 and t not in output_column)
        if unknown:
            raise ValueError(f"targets neither on the gene axis of {self.run.store} (no gene with that symbol) nor "
                             f"among the output genes ({self.config.genes or 'the imported file'}): {unknown[:5]}")
        controls, counts = self._budget(counts)
        x = self.root["X"]
        batches_all = self.obs["batch"].to_numpy()
        totals = self.obs["total_counts"].to_numpy()
        output = OutputGenes.of(names, positions, self.hvg_positions)
        modelled, model_index = output.modelled, output.model_index
        rng = np.random.default_rng([cfg.seed, 23])
        generator = torch.Generator().manual_seed(cfg.seed)
        blocks, labels = [read_counts(x, controls, positions)], [self.control_label] * len(controls)
        reference = cp10k_mean(read_counts(x, self.val_controls, positions).toarray(), totals[self.val_controls])
        for target, n in zip(counts["target_gene"], counts["n_cells"]):
            basal = rng.choice(self.val_controls, size=n, replace=n > len(self.val_controls))
            base = read_counts(x, basal, positions).toarray()
            if cfg.mode == "delta":
                g = min(cfg.generate, max(n, 16))
                ratio = self.effect(target, batches_all[rng.choice(basal, size=g)], rng, generator, output) \
                    if self.conditioning.position_of(target) >= 0 else None
                factor = np.ones(len(positions)) if ratio is None else ratio
                if target in output_column and (ratio is None or factor[output_column[target]] == 1.0):
                    factor[output_column[target]] = self.fold(target)  # the knockdown itself, where the model has no say
                    self.methods.setdefault(target, "target-only")
                base = delta_cells(base, totals[basal], factor, rng, reference if cfg.match_means else None)
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
            "match_means": bool(cfg.match_means and cfg.mode == "delta"), "effect": cfg.effect, "unseen": cfg.unseen,
            "methods": dict(sorted(self.methods.items())), "seen_targets": sorted(set(counts["target_gene"]) & self.seen),
            "in_silico_scale": dict(self._scales), "atlas_programs": None if self.programs is None else {
                "components": int(self.programs.basis.shape[1]), "cells": self.programs.cells,
                "genes": int(self.programs.basis.shape[0]),
                "output_genes_covered": None if self._covariation is None else self._covariation[1].covered}}
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
    names = read_gene_names(config.genes) if config.genes else source_genes(predictor.root)
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
    p.add_argument("--unseen", choices=UNSEEN, default="in-silico",
                   help="delta mode, perturbations without cells in the fine-tuning store: in-silico knockdown in real "
                        "control cells through their co-variation over every output gene, kept to the atlas's programs "
                        "(default), the same read from the network, the conditional model's untrained embedding, the "
                        "target alone, or the mean effect of the seen perturbations (a no-model baseline)")
    p.add_argument("--no-attenuation-correction", action="store_true",
                   help="in-silico: keep the slopes on the target's measured level, diluted by its counting noise")
    p.add_argument("--no-programs", action="store_true",
                   help="in-silico: use the controls' raw co-variation, not kept to the atlas's gene programs")
    p.add_argument("--calibrate", choices=CALIBRATIONS, default="errors-in-variables",
                   help="scale unseen in-silico effects by the seen perturbations' measured against in-silico effects: "
                        "the method of moments net of the measured effects' noise (default), least squares, or none")
    p.add_argument("--knockdown-cells", type=int, default=128,
                   help="in-silico-network: control cells an effect averages over")
    p.add_argument("--covariation-cells", type=int, default=4096,
                   help="in-silico: training control cells the co-variation is estimated from (at most)")
    p.add_argument("--insilico-checkpoint", help="in-silico-network: the model to read (default: --checkpoint)")
    p.add_argument("--no-match-means", action="store_true",
                   help="delta mode: keep the drawn control cells' own mean (more sampling noise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    config = PredictConfig(checkpoint=args.checkpoint, store=args.store, pert_counts=args.pert_counts, genes=args.genes,
                           out=args.out, mode=args.mode, generate=args.generate, sample_steps=args.sample_steps,
                           max_cells=args.max_cells, seed=args.seed, device=args.device,
                           match_means=not args.no_match_means, effect=args.effect, unseen=args.unseen,
                           calibrate=args.calibrate, programs=not args.no_programs,
                           correct_attenuation=not args.no_attenuation_correction,
                           knockdown_cells=args.knockdown_cells, covariation_cells=args.covariation_cells,
                           insilico_checkpoint=args.insilico_checkpoint)
    try:
        run_prediction(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"python -m scmodel.predict: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
