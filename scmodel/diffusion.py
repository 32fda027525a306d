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


def token_probs(logits: torch.Tensor, mask_id: int, temperature: float = 1.0, top_p: float = 1.0,
                float64: bool = False) -> torch.Tensor:
    """The sampler's distribution over value tokens from the model's logits: the mask token (and
    anything after it) excluded, ``temperature`` applied, then nucleus (top-p) truncation.

    ``float64`` computes the softmax (and the draw after it) in double precision: Zheng et al.
    (2024) found 32-bit categorical sampling lowers the effective temperature of masked diffusion
    models with large vocabularies; ``bench_generation`` measures it on our 16-64 token ones."""
    logits = logits.double() if float64 else logits.float()
    beyond = torch.arange(logits.shape[-1], device=logits.device) >= mask_id
    logits = logits.masked_fill(beyond, -torch.inf)  # never predict the mask token (the caller's logits kept)
    probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # keep the most likely tokens until their mass reaches top_p (always the first)
        keep = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < top_p
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def _guided_logits(model, tokens: torch.Tensor, t: torch.Tensor, guidance: float, conditioning: dict) -> torch.Tensor:
    """The model's logits, with classifier-free guidance on the cell state when ``guidance`` > 0:
    ``log p(x | none) + (1 + w) (log p(x | state) - log p(x | none))`` (Ho & Salimans 2022; for
    discrete diffusion, Nisonoff et al. 2024). The "no state" mode is the one ``state_dropout``
    trains; guidance sharpens each state's gene distributions towards what sets it apart."""
    logits = model(tokens, t, **conditioning).float()
    if guidance <= 0:
        return logits
    unconditioned = {k: v for k, v in conditioning.items() if k != "state"}
    free = model(tokens, t, **unconditioned).float()
    logits, free = torch.log_softmax(logits, dim=-1), torch.log_softmax(free, dim=-1)
    return free + (1.0 + guidance) * (logits - free)


@torch.no_grad()
def sample(model, n_cells: int, n_genes: int, steps: int, mask_id: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, device=None, order: str = "random",
           schedule: DiffusionConfig | None = None, init: torch.Tensor | None = None, top_p: float = 1.0,
           remask: float = 0.0, guidance: float = 0.0, float64: bool = False, **conditioning) -> torch.Tensor:
    """Generate ``n_cells`` cells of ``n_genes`` positions by the reverse masking process.

    ``order``: "random" (ancestral; the default) or "confidence" (MaskGIT). ``schedule``: the
    training schedule whose mask rate spaces the reveals (default: linear, an equal expected number
    per step). ``init``: a partly observed cell batch (``mask_id`` where unknown) to complete
    instead of starting fully masked. ``conditioning`` goes to the model as is (``gene_index`` for
    a subset of positions, perturbation inputs for the conditional model). The random draws use
    ``generator`` on the CPU, so a seed gives the same cells on any device.

    A model with cell states (``model.cell_states``) generates each cell from a state drawn with the
    training cells' state frequencies (``state`` in ``conditioning`` picks them instead); completing
    a partly observed cell (``init``) uses its unconditional ("no state") mode.

    ``top_p``, ``temperature`` and ``float64``: see ``token_probs``. ``guidance``: classifier-free
    guidance on the drawn cell state (``_guided_logits``; a state model only; twice the forward
    passes). ``remask``: ReMDM remasking (Wang et al. 2025, its "cap" schedule): each step also
    masks again each token this call revealed with probability ``sigma_t = min(remask, (1 - alpha_s)
    / alpha_t)`` (alpha: the share unmasked at the step's start t and end s), and reveals masked
    positions with ``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)``, which keeps the marginal
    schedule, so a cell can correct tokens drawn early from little context. 0: the plain ancestral
    sampler; random order only."""
    if order not in SAMPLE_ORDERS:
        raise ValueError(f"order must be one of {SAMPLE_ORDERS}, got {order!r}")
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0.0 <= remask < 1.0:
        raise ValueError(f"remask must be in [0, 1), got {remask}")
    if remask > 0 and order != "random":
        raise ValueError("remask (ReMDM) needs order='random'")
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    if guidance > 0 and getattr(model, "cell_states", None) is None:
        raise ValueError("guidance steers a model's cell states; this model has none (n_states=0)")
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
    generated = masked.clone()  # positions this call fills (and may remask); the rest are given
    if guidance > 0 and (init is not None or "state" not in conditioning):
        raise ValueError("guidance needs a drawn or given cell state (not completion from init)")
    times, rates = _reveal_schedule(schedule, steps)
    min_t = schedule.min_t if schedule is not None else 1e-3
    for step in range(steps):
        if not masked.any():
            break
        t = torch.full((n_cells,), max(float(times[step]), min_t), device=device)
        logits = _guided_logits(model, tokens, t, guidance, conditioning)
        probs = token_probs(logits, mask_id, temperature, top_p, float64)
        flat = probs.reshape(-1, probs.shape[-1]).cpu()
        drawn = torch.multinomial(flat, 1, generator=generator).view(n_cells, n_genes).to(tokens.device)
        if remask > 0:
            tokens, masked = _remask_step(tokens, drawn, masked, generated, step, rates, remask, mask_id, generator)
            continue
        picked = torch.gather(probs, 2, drawn.unsqueeze(-1)).squeeze(-1)
        reveal = _reveal(masked, picked, step, steps, rates, order, generator)
        tokens = torch.where(reveal, drawn, tokens)
        masked = masked & ~reveal
    return tokens


def _remask_step(tokens: torch.Tensor, drawn: torch.Tensor, masked: torch.Tensor, generated: torch.Tensor, step: int,
                 rates: torch.Tensor, eta: float, mask_id: int,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ReMDM-cap step (see ``sample``): reveal some masked positions, mask again some revealed ones."""
    now, nxt = float(rates[step]), float(rates[step + 1])  # mask rates: 1 - alpha_t, 1 - alpha_s
    alpha_t, alpha_s = 1.0 - now, 1.0 - nxt
    sigma = min(eta, (1.0 - alpha_s) / alpha_t) if alpha_t > 0 else 0.0
    p_reveal = 1.0 if now <= 0 else (alpha_s - (1.0 - sigma) * alpha_t) / now
    u = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    reveal = masked & (u < p_reveal)
    again = generated & ~masked & (u < sigma)
    tokens = torch.where(reveal, drawn, tokens)
    tokens = torch.where(again, torch.full_like(tokens, mask_id), tokens)
    return tokens, (masked & ~reveal) | again
