"""Training backends behind one step interface.

The trainer (``scmodel.trainer``) prepares batches, computes the loss and logs; an engine owns what
differs between backends: the wrapped model, the optimizer and schedule, gradient reduction and the
checkpoint format. ``plain``: one process or torch DDP, ``OUT/checkpoint.pt``. ``deepspeed``:
DeepSpeed (ZeRO, expert parallelism for the MoE model), ``OUT/checkpoint/`` written by DeepSpeed's
``save_checkpoint``. Both keep the trainer's state (step, epoch, every rank's loader position and
RNG state, the config) as plain data that loads with ``weights_only=True``. ``base``: the
``Engine`` interface, the schedule and the parameter groups both engines use.
"""

from __future__ import annotations

import torch

from .base import Engine, lr_lambda, param_groups


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
