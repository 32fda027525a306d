"""Masked (absorbing-state) discrete diffusion over gene-value tokens.

Forward process: at time t in (0, 1], each token is independently replaced by the mask token
with probability ``mask_rate(t)``. The network sees the partly masked cell and t, and predicts
the original token at every masked position. Loss: cross-entropy on masked positions, optionally
weighted by ``1 / t`` (for the linear schedule this is the ELBO of the masked-diffusion
objective, Sahoo et al. 2024 / Shi et al. 2024).

Sampling runs the reverse process from a fully masked cell (or a partly observed one). The default,
``order="random"``, is the exact ancestral sampler of absorbing-state diffusion (MDLM): between
times s > u a masked position is revealed with probability ``(rate(s) - rate(u)) / rate(s)``,
independently of the others, and its token is drawn from the model's prediction. Which positions
are revealed is independent of the prediction, so the marginals of the samples are the model's.
``order="confidence"`` reveals the most confident predictions first (MaskGIT); on sparse data it
pulls genes towards their mode (zero) and trades diversity for per-token likelihood, so it is kept
only as an option.
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


SAMPLE_ORDERS = ("random", "confidence")


def _reveal_schedule(config: DiffusionConfig | None, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``steps + 1`` sampling times 1 = t_0 > ... > t_steps = 0 and their mask rates, rescaled
    so that the first rate is 1 (sampling starts fully masked) and the last 0 (all revealed)."""
    t = torch.linspace(1.0, 0.0, steps + 1)
    if config is None:
        return t, t.clone()
    rate = config.mask_rate(t)
    rate = (rate / rate[0].clamp_min(1e-12)).clamp(0, 1)
    rate[-1] = 0.0
    return t, rate


def _reveal(masked: torch.Tensor, probs: torch.Tensor, step: int, steps: int, rates: torch.Tensor, order: str,
            generator: torch.Generator | None) -> torch.Tensor:
    """Which masked positions this step reveals."""
    if order == "random":
        now, nxt = float(rates[step]), float(rates[step + 1])
        p_reveal = 1.0 if now <= 0 else (now - nxt) / now
        if p_reveal >= 1.0:
            return masked
        u = torch.rand(masked.shape, generator=generator)
        return masked & (u.to(masked.device) < p_reveal)
    confidence = torch.where(masked, probs, torch.full_like(probs, -1.0))
    remaining = masked.sum(dim=1)
    k = torch.ceil(remaining / (steps - step)).long()  # unmask evenly; all by the last step
    order_ = torch.argsort(confidence, dim=1, descending=True)
    rank = torch.empty_like(order_)
    rank.scatter_(1, order_, torch.arange(masked.shape[1], device=masked.device).expand(masked.shape[0], -1))
    return masked & (rank < k.unsqueeze(1))


@torch.no_grad()
def sample(model, n_cells: int, n_genes: int, steps: int, mask_id: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, device=None, order: str = "random",
           schedule: DiffusionConfig | None = None, init: torch.Tensor | None = None, **conditioning) -> torch.Tensor:
    """Generate ``n_cells`` cells of ``n_genes`` positions by the reverse masking process.

    ``order``: "random" (ancestral; the default) or "confidence" (MaskGIT). ``schedule``: the
    training schedule whose mask rate spaces the reveals (default: linear, an equal expected number
    per step). ``init``: a partly observed cell batch (``mask_id`` where unknown) to complete
    instead of starting fully masked. ``conditioning`` goes to the model as is (``gene_index`` for
    a subset of positions, perturbation inputs for the conditional model). The random draws use
    ``generator`` on the CPU, so a seed gives the same cells on any device.

    A model with cell states (``model.cell_states``) generates each cell from a state drawn with the
    training cells' state frequencies (``state`` in ``conditioning`` picks them instead); completing
    a partly observed cell (``init``) uses its unconditional ("no state") mode."""
    if order not in SAMPLE_ORDERS:
        raise ValueError(f"order must be one of {SAMPLE_ORDERS}, got {order!r}")
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if init is None:
        tokens = torch.full((n_cells, n_genes), mask_id, dtype=torch.long, device=device)
    else:
        tokens = init.to(device=device, dtype=torch.long).clone()
        if tokens.shape != (n_cells, n_genes):
            raise ValueError(f"init has shape {tuple(tokens.shape)}, expected {(n_cells, n_genes)}")
    states = getattr(model, "cell_states", None)
    if states is not None and init is None and "state" not in conditioning:
        conditioning["state"] = states.draw(n_cells, generator).to(tokens.device)
    masked = tokens == mask_id
    times, rates = _reveal_schedule(schedule, steps)
    min_t = schedule.min_t if schedule is not None else 1e-3
    for step in range(steps):
        if not masked.any():
            break
        t = torch.full((n_cells,), max(float(times[step]), min_t), device=device)
        logits = model(tokens, t, **conditioning).float()
        logits[..., mask_id:] = -torch.inf  # never predict the mask token
        probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
        flat = probs.reshape(-1, probs.shape[-1]).cpu()
        drawn = torch.multinomial(flat, 1, generator=generator).view(n_cells, n_genes).to(tokens.device)
        picked = torch.gather(probs, 2, drawn.unsqueeze(-1)).squeeze(-1)
        reveal = _reveal(masked, picked, step, steps, rates, order, generator)
        tokens = torch.where(reveal, drawn, tokens)
        masked = masked & ~reveal
    return tokens
