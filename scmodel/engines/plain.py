"""One process or torch DDP with a torch AdamW; checkpoints in ``OUT/checkpoint.pt``."""

from __future__ import annotations

import os

import torch

from .base import lr_lambda, param_groups
from .state import atomic_save, safe_load


class PlainEngine:
    def __init__(self, config, model: torch.nn.Module, world: int, device: torch.device, out: str):
        self.config = config
        self.module = model
        self.device = device
        self.wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        if getattr(config, "compile", False):  # the training forward only: evaluation and sampling stay eager
            self.wrapped = torch.compile(self.wrapped)
        self.optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay, config.lr, config.conditioning_lr_scale),
                                           lr=config.lr, betas=(0.9, 0.95))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config.warmup_steps, config.max_steps))
        self.autocast = True
        self.path = os.path.join(out, "checkpoint.pt")
        self.rank = torch.distributed.get_rank() if world > 1 else 0

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.wrapped(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.module.parameters() if p.requires_grad], self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def has_checkpoint(self) -> bool:
        return os.path.exists(self.path)

    def save(self, client_state: dict) -> None:
        if self.rank == 0:
            atomic_save(self.path, {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                                    "scheduler": self.scheduler.state_dict(), **client_state})

    def load(self) -> dict:
        state = safe_load(self.path, map_location=self.device)
        self.module.load_state_dict(state.pop("model"))
        self.optimizer.load_state_dict(state.pop("optimizer"))
        self.scheduler.load_state_dict(state.pop("scheduler"))
        return state

    def load_weights(self, path: str) -> None:
        self.module.load_state_dict(safe_load(path, map_location=self.device)["model"])
