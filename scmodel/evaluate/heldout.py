"""Held-out evaluation: masked-token accuracy and loss by mask ratio against a per-gene majority
baseline, Pearson correlation of reconstructed expression, and the quality of sampled cells
(``sample_quality``: MMD, classifier AUC and per-gene agreement with real held-out cells, beside
the real-vs-real floor and the independent-marginals baselines).

``summary_line`` reports the result in one line (the close of a training run, and of ``python -m
scmodel.evaluate --checkpoint RUN/checkpoint.pt --store STORE`` on a trained model, see ``cli``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion import DiffusionConfig, corrupt, diffusion_loss, sample
from .distribution import PRDC_K, protocol_metrics, protocol_space
from .metrics import PCASpace, classifier_auc, fit_pca, gene_shuffled, marginal_agreement, mmd_permutation_pvalue, mmd_unbiased

MASK_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def gene_marginals(token_batches, n_genes: int, n_tokens: int) -> torch.Tensor:
    """Per-gene token frequencies over some training batches (Laplace-smoothed): the baseline
    that knows each gene's distribution but nothing about the cell."""
    counts = torch.ones(n_genes, n_tokens, dtype=torch.float64)
    for tokens in token_batches:
        counts.scatter_add_(1, tokens.T.contiguous(), torch.ones_like(tokens.T, dtype=torch.float64))
    return counts / counts.sum(dim=1, keepdim=True)


def sample_marginals(marginals: torch.Tensor, n_cells: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cells whose tokens are drawn gene by gene from ``marginals`` (genes, tokens), independently:
    the sampler that knows each gene's training distribution and no co-expression."""
    drawn = torch.multinomial(marginals.float(), n_cells, replacement=True, generator=generator)  # (G, n)
    return drawn.T.contiguous()


@dataclass(frozen=True, kw_only=True, slots=True)
class SampleConfig:
    """How the evaluation samples cells."""

    steps: int = 64
    """Reverse-process steps (the random-order sampler is exact as steps grows; 64 is near it on 256 genes)."""
    order: str = "random"
    temperature: float = 1.0
    top_p: float = 1.0
    n_permutations: int = 200


SAMPLE_SETS = ("real", "samples", "gene_shuffled", "marginal")
"""The cell sets compared with the real held-out reference cells: other real held-out cells (the
attainable floor), the model's samples, the held-out cells with each gene shuffled across cells
(every gene's marginal kept exactly, co-expression removed), and cells drawn gene by gene from the
training marginals."""


@torch.no_grad()
def sample_quality(model, held_out: torch.Tensor, train_cells: torch.Tensor, marginals: torch.Tensor, tokenizer,
                   mask_id: int, diffusion: DiffusionConfig, config: SampleConfig = SampleConfig(), seed: int = 0,
                   device="cpu", gene_index: torch.Tensor | None = None) -> tuple[dict, dict[str, np.ndarray], PCASpace]:
    """Compare generated cells with real held-out cells, beside the baselines of ``SAMPLE_SETS``.

    ``held_out`` (tokens of held-out cells) is split at random into a reference half and a floor
    half; every set has as many cells as the reference. PCA (20 components) and the kernel
    bandwidth are fitted on ``train_cells``; so is the field's protocol (``distribution``: 30
    components; 1-NN accuracy, W1/W2, multi-bandwidth RBF MMD, precision/recall/density/coverage,
    keys ``nn1_accuracy_samples``, ``w2_samples``, ...). Returns the metrics, the detokenized cell
    sets (for figures) and the PCA space."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(held_out), generator=gen)
    n = len(held_out) // 2
    reference_tokens, floor_tokens = held_out[order[:n]], held_out[order[n: 2 * n]]
    n_genes = held_out.shape[1]
    was_training = model.training
    model.eval()
    generated = sample(model, n, n_genes, config.steps, mask_id, temperature=config.temperature, top_p=config.top_p, generator=gen,
                       device=device, order=config.order, schedule=diffusion, gene_index=gene_index).cpu()
    model.train(was_training)
    detok = lambda tokens: tokenizer.detokenize(tokens.cpu()).numpy().astype(np.float64)  # noqa: E731
    reference, floor = detok(reference_tokens), detok(floor_tokens)
    marginal = sample_marginals(marginals, n, torch.Generator().manual_seed(seed + 1))  # the same cells for any model
    cells = {"reference": reference, "real": floor, "samples": detok(generated),
             "gene_shuffled": gene_shuffled(floor, seed=seed), "marginal": detok(marginal)}
    train = detok(train_cells)
    pca = fit_pca(train, seed=seed)
    protocol = protocol_space(train, seed=seed) if n > PRDC_K else None
    ref_z = pca.project(reference)
    result: dict = {"n_sample_cells": n, "sample_steps": config.steps, "sample_order": config.order,
                    "sample_temperature": config.temperature, "sample_top_p": config.top_p,
                    "sample_unmasked": bool((generated != mask_id).all()),
                    "zero_fraction_reference": float((reference == 0).mean())}
    for name in SAMPLE_SETS:
        z = pca.project(cells[name])
        result[f"mmd_{name}"] = mmd_unbiased(ref_z, z, pca.bandwidth)
        result[f"mmd_pvalue_{name}"] = mmd_permutation_pvalue(ref_z, z, pca.bandwidth, config.n_permutations, seed=seed)
        result[f"auc_{name}"] = classifier_auc(ref_z, z, seed=seed)
        result[f"zero_fraction_{name}"] = float((cells[name] == 0).mean())
        for key, value in marginal_agreement(reference, cells[name]).items():
            result[f"{key}_{name}"] = value
        if protocol is not None:
            for key, value in protocol_metrics(protocol, reference, cells[name]).items():
                result[f"{key}_{name}"] = value
    return result, cells, pca


@torch.no_grad()
def evaluate(model, batches: list[torch.Tensor], marginals: torch.Tensor, diffusion: DiffusionConfig, mask_id: int,
             tokenizer, seed: int = 0, device="cpu", gene_index: torch.Tensor | None = None,
             train_cells: torch.Tensor | None = None, sampling: SampleConfig | None = SampleConfig()) -> dict:
    """Metrics on held-out token batches (cells from experiments the model never trained on).
    With ``train_cells`` and ``sampling``, the sample-quality metrics are added (see
    ``sample_quality``); the cell sets are kept on the result under ``"_cells"`` for figures."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    majority = marginals.argmax(dim=1)
    log_marginals = torch.log(marginals).float()
    by_ratio = {}
    fixed = DiffusionConfig(schedule="linear", max_mask=1.0)
    states = getattr(model, "cell_states", None)  # a state model is scored given each cell's own state,
    cell_states = [{"state": states.assign(b.to(device))} if states is not None and gene_index is None else {}
                   for b in batches]  # assigned once, not once per mask ratio
    for ratio in MASK_RATIOS:
        correct = base = total = 0
        base_nll = 0.0
        losses, truths, preds = [], [], []
        for tokens, extra in zip(batches, cell_states):
            tokens = tokens.to(device)
            t = torch.full((tokens.shape[0],), ratio, device=device)
            noisy, mask = corrupt(tokens, t, fixed, mask_id, gen)
            logits = model(noisy, t, gene_index=gene_index, **extra).float()
            losses.append(float(diffusion_loss(logits, tokens, mask, t, fixed)))
            guess = logits.argmax(-1)
            correct += int(((guess == tokens) & mask).sum())
            base += int(((majority.to(device).expand_as(tokens) == tokens) & mask).sum())
            total += int(mask.sum())
            nll = -log_marginals.to(device).gather(1, tokens.T.contiguous()).T  # (B, G) baseline cross-entropy
            base_nll += float((nll * mask).sum())
            truths.append(tokenizer.detokenize(tokens.cpu())[mask.cpu()])
            preds.append(tokenizer.detokenize(guess.cpu())[mask.cpu()])
        truth, pred = torch.cat(truths).numpy(), torch.cat(preds).numpy()
        pearson = float(np.corrcoef(truth, pred)[0, 1]) if truth.std() > 0 and pred.std() > 0 else float("nan")
        by_ratio[ratio] = {"loss": float(np.mean(losses)), "baseline_loss": base_nll / max(total, 1),
                           "accuracy": correct / max(total, 1), "baseline_accuracy": base / max(total, 1), "pearson": pearson}
    model.train(was_training)
    mid = by_ratio[0.5]
    result = {
        "masked_accuracy": mid["accuracy"], "baseline_accuracy": mid["baseline_accuracy"], "eval_loss": mid["loss"],
        "baseline_loss": mid["baseline_loss"],
        "pearson": mid["pearson"], "by_mask_ratio": {str(k): v for k, v in by_ratio.items()},
    }
    if train_cells is not None and sampling is not None:
        quality, cells, pca = sample_quality(model, torch.cat(batches), train_cells, marginals, tokenizer, mask_id,
                                             diffusion, sampling, seed=seed, device=device, gene_index=gene_index)
        result.update(quality)
        result["_cells"] = (cells, pca)
    return result


def summary_line(step: int, result: dict) -> str:
    """The closing line of a run: masked-token metrics against the per-gene baseline, then sample
    quality (MMD and classifier AUC against real held-out cells) beside its baselines."""
    line = (f"step {step}: held-out masked-token loss {result['eval_loss']:.3f} vs per-gene marginal "
            f"{result['baseline_loss']:.3f}; accuracy {result['masked_accuracy']:.3f} vs per-gene majority "
            f"{result['baseline_accuracy']:.3f}; Pearson {result['pearson']:.3f}")
    if "mmd_samples" in result:
        line += (f"\nsamples vs real held-out cells (n={result['n_sample_cells']}, {result['sample_steps']} steps): "
                 f"MMD {result['mmd_samples']:.4f} (real {result['mmd_real']:.4f}, gene-shuffled "
                 f"{result['mmd_gene_shuffled']:.4f}, per-gene marginals {result['mmd_marginal']:.4f}); "
                 f"classifier AUC {result['auc_samples']:.3f} (real {result['auc_real']:.3f}, gene-shuffled "
                 f"{result['auc_gene_shuffled']:.3f}, per-gene marginals {result['auc_marginal']:.3f})")
    if "nn1_accuracy_samples" in result:
        line += (f"\n1-NN accuracy {result['nn1_accuracy_samples']:.3f} (real {result['nn1_accuracy_real']:.3f}, "
                 f"gene-shuffled {result['nn1_accuracy_gene_shuffled']:.3f}, per-gene marginals "
                 f"{result['nn1_accuracy_marginal']:.3f}); W2 {result['w2_samples']:.2f} (real {result['w2_real']:.2f}); "
                 f"precision {result['precision_samples']:.2f}, recall {result['recall_samples']:.2f} in 30 PCs")
    return line
