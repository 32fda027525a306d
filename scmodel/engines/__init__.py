"""Training backends behind one step interface.

The trainer (``scmodel.train``) prepares batches, computes the loss and logs; an engine owns what
differs between backends: the wrapped model, the optimizer and schedule, gradient reduction and the
checkpoint format. ``plain``: one process or torch DDP, ``OUT/checkpoint.pt``. ``deepspeed``:
DeepSpeed (ZeRO, expert parallelism for the MoE model), ``OUT/checkpoint/`` written by DeepSpeed's
``save_checkpoint``. Both keep the trainer's state (step, epoch, every rank's loader position and
RNG state, the config) as plain data that loads with ``weights_only=True``.
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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters: weight decay on matrices only."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"name": "decay", "params": [p for n, p in named if p.dim() >= 2], "weight_decay": weight_decay},
            {"name": "no_decay", "params": [p for n, p in named if p.dim() < 2], "weight_decay": 0.0}]


def check_engine(config, world: int) -> None:
    """Configuration errors an engine can see before any data is read or any weight is built."""
    if config.engine == "deepspeed":
        from .deepspeed import check_deepspeed

        check_deepspeed(config, world)


def build_engine(config, model: torch.nn.Module, world: int, device: torch.device, out: str) -> Engine:
    if config.engine == "deepspeed":
        from .deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(config, model, world, out)
    from .plain import PlainEngine

    return PlainEngine(config, model, world, device, out)


__all__ = ["Engine", "build_engine", "check_engine", "lr_lambda", "param_groups"]
