"""Masked (absorbing-state) discrete diffusion over gene-value tokens.

Forward process: at time t in (0, 1], each token is independently replaced by the mask token
with probability ``mask_rate(t)``. The network sees the partly masked cell and t, and predicts
the original token at every masked position. Loss: cross-entropy on masked positions, optionally
weighted by ``1 / t`` (for the linear schedule this is the ELBO of the masked-diffusion
objective, Sahoo et al. 2024 / Shi et al. 2024). Sampling starts from a fully masked cell and
unmasks positions over ``steps`` iterations, the most confident predictions first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True, slots=True)
class DiffusionConfig:
    """Noise schedule and objective."""

    schedule: str = "cosine"
    """"linear": mask rate t; "cosine": 1 - cos(pi t / 2); "seed": the seed's fixed 10 steps with
    masking up to 0.3 (``max_mask``)."""
    timesteps: int = 10
    """Discrete steps for the "seed" schedule and the default number of sampling steps."""
    max_mask: float = 1.0
    elbo_weighting: bool = False
    min_t: float = 1e-3

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "cosine", "seed"):
            raise ValueError(f"schedule must be linear, cosine or seed, got {self.schedule!r}")
        if not 0 < self.max_mask <= 1:
            raise ValueError("max_mask must be in (0, 1]")

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        if self.schedule == "linear":
            rate = t
        elif self.schedule == "cosine":
            rate = 1 - torch.cos(math.pi * t / 2)
        else:
            rate = torch.ceil(t * self.timesteps) / self.timesteps
        return (rate * self.max_mask).clamp(0, 1)


def seed_schedule() -> DiffusionConfig:
    """The seed model's setting: 10 timesteps, masking up to 30% of genes."""
    return DiffusionConfig(schedule="seed", timesteps=10, max_mask=0.3)


def sample_times(batch: int, config: DiffusionConfig, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    return torch.rand(batch, generator=generator, device=device) * (1 - config.min_t) + config.min_t


def corrupt(tokens: torch.Tensor, t: torch.Tensor, config: DiffusionConfig, mask_id: int,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each token with probability mask_rate(t); returns (noisy tokens, mask)."""
    rate = config.mask_rate(t).unsqueeze(1)  # (B, 1)
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    mask = u < rate
    # at least one masked position per cell, so every cell contributes to the loss
    none = ~mask.any(dim=1)
    if none.any():
        pick = torch.randint(tokens.shape[1], (int(none.sum()),), generator=generator, device=tokens.device)
        mask[none.nonzero(as_tuple=True)[0], pick] = True
    return torch.where(mask, torch.full_like(tokens, mask_id), tokens), mask


def diffusion_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                   config: DiffusionConfig) -> torch.Tensor:
    """Mean cross-entropy over masked positions (1/t-weighted per cell if ``elbo_weighting``)."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")  # (B, G)
    per_cell = (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    if config.elbo_weighting:
        per_cell = per_cell * (config.mask_rate(t) / t.clamp_min(config.min_t)).clamp_max(1 / config.min_t)
    return per_cell.mean()


@torch.no_grad()
def sample(model, n_cells: int, n_genes: int, steps: int, mask_id: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, device=None, **conditioning) -> torch.Tensor:
    """Denoise fully masked cells: at each step predict all masked positions, keep the most
    confident ``k`` (so all positions are unmasked after ``steps``), re-mask the rest."""
    tokens = torch.full((n_cells, n_genes), mask_id, dtype=torch.long, device=device)
    masked = torch.ones_like(tokens, dtype=torch.bool)
    for step in range(steps):
        t = torch.full((n_cells,), 1.0 - step / steps, device=device)
        logits = model(tokens, t, **conditioning).float()
        logits[..., mask_id:] = -torch.inf  # never predict the mask token
        probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(n_cells, n_genes)
        confidence = torch.gather(probs, 2, drawn.unsqueeze(-1)).squeeze(-1)
        confidence = torch.where(masked, confidence, torch.full_like(confidence, -1.0))
        remaining = masked.sum(dim=1)
        k = torch.ceil(remaining / (steps - step)).long()  # unmask evenly; all by the last step
        order = torch.argsort(confidence, dim=1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n_genes, device=device).expand(n_cells, -1))
        reveal = masked & (rank < k.unsqueeze(1))
        tokens = torch.where(reveal, drawn, tokens)
        masked = masked & ~reveal
    return tokens
