"""The engine interface and what every engine shares: the learning-rate schedule and the AdamW
parameter groups.

Its own module below the engines (``plain``, ``deepspeed``) and the package that picks one
(``scmodel.engines``), so an engine imports what it shares from beneath it and never from the
package that imports it.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch


class Engine(Protocol):
    module: torch.nn.Module
    """The bare model (evaluation, parameter counts)."""
    autocast: bool
    """Whether the trainer should run the forward pass under bf16 autocast (DeepSpeed casts the model itself)."""

    def forward(self, *args, **kwargs) -> torch.Tensor: ...

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of one micro-batch's loss (already divided by the number of micro-batches)."""

    def step(self) -> None:
        """Clip, update, advance the schedule and clear gradients (once per optimizer step)."""

    @property
    def lr(self) -> float: ...

    def has_checkpoint(self) -> bool: ...

    def save(self, client_state: dict) -> None:
        """Write a checkpoint with ``client_state`` (plain data); called on every rank."""

    def load(self) -> dict:
        """Restore model, optimizer and schedule; returns the saved ``client_state``."""

    def load_weights(self, path: str) -> None:
        """Fine-tuning: only the model weights of a checkpoint (``init_from``)."""


def lr_lambda(warmup_steps: int, max_steps: int):
    """Linear warm-up then cosine decay to zero at ``max_steps``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                 conditioning_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups of the trainable parameters: weight decay on matrices only. The model's
    conditioning modules (its ``conditioning_prefixes``) may learn at ``conditioning_lr_scale``
    times ``lr``: in a fine-tune they start from scratch while the backbone is pretrained."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefixes = tuple(getattr(model, "conditioning_prefixes", ()))
    fast = (lambda n: n.startswith(prefixes)) if prefixes and lr is not None and conditioning_lr_scale != 1.0 \
        else (lambda n: False)
    groups = []
    for suffix, members, extra in (("", [(n, p) for n, p in named if not fast(n)], {}),
                                   ("_conditioning", [(n, p) for n, p in named if fast(n)],
                                    {"lr": (lr or 0.0) * conditioning_lr_scale})):
        if not members and suffix:
            continue
        groups.append({"name": "decay" + suffix, "params": [p for _, p in members if p.dim() >= 2],
                       "weight_decay": weight_decay, **extra})
        groups.append({"name": "no_decay" + suffix, "params": [p for _, p in members if p.dim() < 2],
                       "weight_decay": 0.0, **extra})
    return groups
