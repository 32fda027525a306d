"""diffusion_process.png: the forward masking schedule applied to cells (real cells of a store when
one is given) and the reverse sampler of ``scmodel.diffusion`` recorded step by step."""

from __future__ import annotations

import inspect as pyinspect
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from scmodel.diffusion import DiffusionConfig, corrupt, sample, seed_schedule

from .drawing import plt, save

SHOWN_GENES = 64
"""Gene positions drawn in the heatmaps (the first ones: the most variable genes of a store)."""


class _Recorder(nn.Module):
    """Passes every call to the model and keeps the partly denoised cells it was given."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.states: list[torch.Tensor] = []
        self.times: list[float] = []

    def forward(self, tokens, t, **kwargs):
        self.states.append(tokens.detach().cpu().clone())
        self.times.append(float(t.reshape(-1)[0]))
        return self.model(tokens, t, **kwargs)


@dataclass
class Trajectory:
    states: list[torch.Tensor]
    """(cells, genes) tokens before each denoising step, then the final sample."""
    times: list[float]
    mask_id: int

    def masked_fraction(self) -> np.ndarray:
        return np.stack([(s == self.mask_id).float().mean(dim=1).numpy() for s in self.states])  # (steps + 1, cells)


def store_cells(store: str, n_genes: int, n_tokens: int, n_cells: int, tokenizer_max: float = 8.0,
                split: str | None = None, val_fraction: float = 0.15, split_by: str = "experiment",
                seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """The first ``n_cells`` cells of the store's materialized HVGs (up to ``n_genes`` of them), tokenized
    as training tokenizes them; returns (tokens, cell IDs). ``split`` ("train" / "val") picks them
    from a run's split, which ``val_fraction``, ``split_by`` and ``seed`` (the run's) define."""
    from scmodel.data import LoaderConfig, StoreDataset
    from scmodel.tokenize import BinnedTokenizer

    from scdata.hvg.results import open_hvg_matrix

    available = len(open_hvg_matrix(store)[1])
    config = LoaderConfig(store=store, features="hvg", n_hvgs=min(n_genes, available), batch_size=n_cells, shuffle=False,
                          tokenizer=BinnedTokenizer(n_tokens=n_tokens, max_value=tokenizer_max), split=split,
                          val_fraction=val_fraction, split_by=split_by, seed=seed, read_threads=0)
    dataset = StoreDataset(config)
    tokens, meta = next(iter(dataset))
    return tokens.long(), [str(i) for i in dataset.cell_ids(meta["row"])]


def run_sampler(model: nn.Module, n_cells: int, n_genes: int, steps: int, mask_id: int, seed: int = 0,
                schedule: DiffusionConfig | None = None) -> Trajectory:
    """``scmodel.diffusion.sample`` on ``n_genes`` positions (reveals spaced by the model's
    ``schedule``), recording the cells before each step."""
    recorder = _Recorder(model).eval()
    kwargs = {}
    cfg = getattr(model, "cfg", None)
    n_model = getattr(cfg, "n_genes", None) or getattr(getattr(cfg, "backbone", None), "n_genes", None)
    if "gene_index" in pyinspect.signature(model.forward).parameters and n_model and n_genes < n_model:
        kwargs["gene_index"] = torch.arange(n_genes)
    final = sample(recorder, n_cells=n_cells, n_genes=n_genes, steps=steps, mask_id=mask_id, temperature=1.0,
                   generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), schedule=schedule, **kwargs)
    return Trajectory(recorder.states + [final.cpu()], recorder.times + [0.0], mask_id)


def _heat(ax, tokens: torch.Tensor, mask_id: int, values: torch.Tensor, vmax: float, ylabels: list[str], title: str):
    data = np.ma.masked_array(values.numpy(), mask=(tokens == mask_id).numpy())
    cmap = plt.get_cmap("viridis").copy()
    cmap = cmap.with_extremes(bad="#d9d9d9")
    im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
    ax.set_xlabel(f"gene position (first {tokens.shape[1]})", fontsize=9)
    ax.set_title(title, fontsize=10.5)
    return im


def diffusion_process(model: nn.Module, diffusion: DiffusionConfig, mask_id: int, detokenize, path: str,
                      cells: torch.Tensor | None = None, cell_ids: list[str] | None = None, steps: int | None = None,
                      n_cells: int = 4, sample_genes: int = 256, seed: int = 0, source: str = "") -> str:
    """``cells``: real token rows (from a store); without them, the sampler's own cells are masked."""
    steps = steps or diffusion.timesteps
    genes = cells.shape[1] if cells is not None else sample_genes
    traj = run_sampler(model, n_cells, genes, steps, mask_id, seed, schedule=diffusion)
    shown_cells = cells if cells is not None else traj.states[-1]
    origin = f"real cells from {source}" if cells is not None else "cells drawn by the sampler (no --store given)"
    fig, axes = plt.subplots(2, 3, figsize=(20, 10))
    (ax_s, ax_f, ax_fm), (ax_r, ax_t, ax_h) = axes
    t = torch.linspace(0, 1, 201)
    for name in ("linear", "cosine", "seed"):
        cfg = diffusion if name == diffusion.schedule else seed_schedule() if name == "seed" else DiffusionConfig(schedule=name)
        style = dict(lw=2.8, color="black") if name == diffusion.schedule else dict(lw=1.2, ls="--")
        ax_s.plot(t, cfg.mask_rate(t), label=f"{name}" + (" (this model)" if name == diffusion.schedule else ""), **style)
    ax_s.set(xlabel="t", ylabel="fraction of genes masked", title="Forward process: masking schedule")
    ax_s.legend(fontsize=9)
    gen = torch.Generator().manual_seed(seed)
    levels = [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    cell = shown_cells[:1, :SHOWN_GENES]
    rows, vals = [], []
    for level in levels:
        noisy, _ = corrupt(cell, torch.tensor([level]), diffusion, mask_id, gen)
        rows.append(noisy[0])
        vals.append(detokenize(noisy[0].clamp_max(mask_id - 1)))
    vmax = float(detokenize(torch.tensor([mask_id - 1]))[0])
    _heat(ax_f, torch.stack(rows), mask_id, torch.stack(vals), vmax, [f"t={lv:g}" for lv in levels],
          f"Forward masking of one cell ({cell_ids[0] if cell_ids else 'sampled'}); grey = masked")
    measured = []
    for level in levels:
        _, mask = corrupt(shown_cells, torch.full((len(shown_cells),), level), diffusion, mask_id, gen)
        measured.append(float(mask.float().mean()))
    ax_fm.plot(t, diffusion.mask_rate(t), color="black", label=f"mask_rate(t), {diffusion.schedule}")
    ax_fm.plot(levels, measured, "o", color="#cc0000", ms=7, label=f"measured on {len(shown_cells)} cells")
    ax_fm.set(xlabel="t", ylabel="masked fraction", title=f"corrupt() on {origin}")
    ax_fm.legend(fontsize=9)
    frac = traj.masked_fraction()
    for c in range(frac.shape[1]):
        ax_r.plot(range(len(frac)), frac[:, c], "o-", ms=3, alpha=0.8, label=f"sampled cell {c}")
    ax_r.set(xlabel="sampler step (last = final cells)", ylabel="masked fraction",
             title=f"Reverse process: sample() over {steps} steps, {genes} positions")
    ax_r.legend(fontsize=8, title="lines overlap when the sampler\nreveals equal counts per cell", title_fontsize=8)
    states = torch.stack([s[0, :SHOWN_GENES] for s in traj.states])
    values = detokenize(states.clamp_max(mask_id - 1))
    im = _heat(ax_t, states, mask_id, values, vmax, [f"step {i}" for i in range(len(states) - 1)] + ["final"],
               "One cell as it is denoised (colour: log1p bin centre)")
    fig.colorbar(im, ax=ax_t, fraction=0.04)
    n_tokens = mask_id
    bins = np.arange(n_tokens + 1) - 0.5
    real = shown_cells.flatten().numpy() if cells is not None else None
    drawn = traj.states[-1].flatten().numpy()
    if real is not None:
        ax_h.hist(real, bins=bins, density=True, alpha=0.6, label=f"real ({len(shown_cells)} cells)", color="#3d85c6")
    ax_h.hist(drawn, bins=bins, density=True, alpha=0.6, label=f"sampled ({len(traj.states[-1])} cells)", color="#e69138")
    ax_h.set_yscale("log")
    ax_h.set(xlabel="value token (0 = not expressed)", ylabel="fraction of positions",
             title="Token distribution: sampled vs real" if real is not None else "Token distribution of sampled cells")
    ax_h.legend(fontsize=9)
    fig.suptitle(f"Masked diffusion: forward masking and the reverse sampler ({origin})", fontsize=13, weight="bold")
    fig.tight_layout()
    return save(fig, path)
