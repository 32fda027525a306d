"""In-silico knockdown with a masked expression model: what the atlas says a knockdown does.

Why: a perturbation that never appears in fine-tuning has no learned embedding worth anything, but
a model pretrained on the atlas has seen how every modelled gene co-varies with the target across
millions of cells. Masked diffusion models predict any masked gene from whichever genes are
visible, so they can be asked directly: in a real control cell, show the model only the target
(every other gene masked) at its observed level, then at its knocked-down level, and compare the
expected expression the model predicts for every other gene. The ratio of the two means over
control cells is the knockdown's predicted effect (Geneformer and scGPT perturb in silico the same
way, by editing the input and reading the output).

Only the target is visible: any other gene left visible would tell the model the cell's programs
are unchanged, and the model would believe it over the one edited gene. The price is that the
prediction averages over every cell state the atlas pairs with that target level
(``visible_fraction`` leaves some of the cell's own genes visible instead). Genes are read in groups of the run's
context size, each group with the target, because that is the sequence length the model trained
on. The mask rate passed as the model's time is the group's (all but one masked).

``calibrate`` fits one scale from the perturbations seen in fine-tuning (their measured effects
against their in-silico ones); unseen perturbations' in-silico effects are multiplied by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .coexpression import knocked_value
from .delta_cells import expression_ratio


@dataclass(frozen=True, kw_only=True)
class KnockdownConfig:
    cells: int = 128
    """Control cells the effect is averaged over (drawn from those given, seeded)."""
    context: int = 256
    """Gene positions per forward pass, the target included (the run's ``context_genes``)."""
    batch: int = 32
    """Cells per forward pass."""
    visible_fraction: float = 0.0
    """Share of the other genes left visible at the control cell's own values (0: only the target is
    visible). The same genes are visible in both passes; only masked genes are read."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cells <= 0 or self.context < 2 or self.batch <= 0:
            raise ValueError(f"need cells > 0, context >= 2, batch > 0; got {self.cells}, {self.context}, {self.batch}")


def time_for_mask_rate(rate: float, schedule: str) -> float:
    """The diffusion time at which ``schedule`` masks a fraction ``rate`` of the positions."""
    if schedule == "linear":
        return rate
    if schedule == "cosine":  # rate = 1 - cos(pi t / 2)
        return 2.0 / math.pi * math.acos(1.0 - rate)
    return 1.0  # the seed schedule steps in tenths and masks at most 30%: the model never saw more


class InSilicoKnockdown:
    """Predicted per-gene effects of knockdowns, read from a masked diffusion model.

    ``values``: (cells, genes) log1p(normalize_total) of real control cells over the model's genes;
    ``conditioning(n)``: the keyword inputs that put the model in "control cell" mode for ``n``
    cells (empty for an unconditional model)."""

    def __init__(self, model: torch.nn.Module, tokenizer, values: np.ndarray, conditioning, schedule: str,
                 config: KnockdownConfig = KnockdownConfig(), device: torch.device | str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = torch.device(device)
        rng = np.random.default_rng([config.seed, 41])
        pick = rng.choice(len(values), size=min(config.cells, len(values)), replace=False)
        self.values = np.asarray(values, dtype=np.float32)[np.sort(pick)]
        self.n_genes = self.values.shape[1]
        self.conditioning = conditioning
        self.schedule = schedule
        self.order = rng.permutation(self.n_genes)  # which genes share a forward pass: fixed, seeded
        levels = torch.arange(tokenizer.n_tokens)
        self.level_values = torch.expm1(tokenizer.detokenize(levels)).to(torch.float64)

    def _expected(self, target: int, target_values: np.ndarray) -> np.ndarray:
        """(genes,) mean over cells of the expected normalized expression of every gene, with only
        ``target`` visible at ``target_values`` (one per cell)."""
        cfg = self.config
        others = self.order[self.order != target]
        groups = [others[i:i + cfg.context - 1] for i in range(0, len(others), cfg.context - 1)]
        tokens_target = self.tokenizer.tokenize(torch.from_numpy(target_values)).to(torch.long)
        cell_tokens = self.tokenizer.tokenize(torch.from_numpy(self.values)).to(torch.long)
        mask_id = self.tokenizer.n_tokens
        total, count = np.zeros(self.n_genes), np.zeros(self.n_genes)
        # the same visible genes in every call for a target: both passes see the same context
        rng = np.random.default_rng([cfg.seed, 47, target])
        for group in groups:
            index = torch.from_numpy(np.concatenate([[target], group]).astype(np.int64)).to(self.device)
            visible = torch.from_numpy(rng.random((len(target_values), len(group))) < cfg.visible_fraction)
            for lo in range(0, len(target_values), cfg.batch):
                hi = min(lo + cfg.batch, len(target_values))
                tokens = torch.full((hi - lo, len(index)), mask_id, dtype=torch.long)
                tokens[:, 0] = tokens_target[lo:hi]
                shown = visible[lo:hi]
                tokens[:, 1:] = torch.where(shown, cell_tokens[lo:hi][:, torch.from_numpy(group)], tokens[:, 1:])
                rate = 1.0 - (1.0 + shown.sum(dim=1).double()) / len(index)
                t = torch.tensor([time_for_mask_rate(float(r), self.schedule) for r in rate])
                cond = {k: v.to(self.device) for k, v in self.conditioning(hi - lo).items()}
                with torch.no_grad():
                    logits = self.model(tokens.to(self.device), t.to(self.device), gene_index=index, **cond)
                probs = torch.softmax(logits[:, 1:].double(), dim=-1).cpu()  # (B, group, tokens)
                read = (~shown).double()
                total[group] += ((probs @ self.level_values) * read).sum(dim=0).numpy()
                count[group] += read.sum(dim=0).numpy()
        return total / np.maximum(count, 1.0)

    def ratio(self, target: int, fold: float) -> np.ndarray:
        """(genes,) predicted expression ratio knocked-down / control of every modelled gene; the
        target's own ratio is ``fold``."""
        observed = self.values[:, target]
        control = self._expected(target, observed)
        knocked = self._expected(target, knocked_value(observed, fold))
        out = expression_ratio(knocked, control)
        out[target] = fold
        return out


def calibrate(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Least-squares scale ``a`` of ``observed ~ a * predicted`` (log ratios, targets x genes, the
    targets' own genes excluded by the caller as NaN), clipped to [0, 4]: how much the in-silico
    effects of the perturbations seen in fine-tuning under- or overstate their measured effects."""
    keep = np.isfinite(predicted) & np.isfinite(observed)
    p, o = predicted[keep], observed[keep]
    denominator = float(np.dot(p, p))
    if denominator <= 0:
        return 1.0
    return float(np.clip(np.dot(p, o) / denominator, 0.0, 4.0))


def calibrate_errors_in_variables(predicted: np.ndarray, observed: np.ndarray, noise: np.ndarray) -> float:
    """Scale ``a`` of ``observed ~ a * predicted`` (log ratios, targets x genes, NaN where excluded)
    when both sides are noisy: the method of moments, ``(o.o - sum of o's sampling variances) / (p.o)``,
    clipped to [0.25, 4] (1 when ``p.o`` is not positive).

    Why not least squares: the in-silico effects carry estimation noise, and least squares of the
    measured on the predicted shrinks ``a`` towards 0 by the predicted's noise share (regression
    dilution; measured on ``benchmarks/bench_transfer.py``'s screen it gave 0.08-0.32 where the
    true gain was about 2). The measured effects' noise (``noise``: their sampling variances, by the
    delta method from the cells' per-gene variances) is known, so it is subtracted instead; the
    predicted's noise is independent of the measured's and drops out of ``p.o`` in expectation."""
    keep = np.isfinite(predicted) & np.isfinite(observed) & np.isfinite(noise)
    p, o, v = predicted[keep], observed[keep], noise[keep]
    cross = float(np.dot(p, o))
    if cross <= 0:
        return 1.0
    return float(np.clip((float(np.dot(o, o)) - float(v.sum())) / cross, 0.25, 4.0))
