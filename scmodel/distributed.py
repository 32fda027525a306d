"""Process-group set-up: this process's rank, world size and device, and the process group of
its engine (torch's for the plain engine's DDP, DeepSpeed's own for the deepspeed engine).

Its own module so that the ``Trainer`` only asks for a rank, a world and a device; how the
launcher (``torchrun``, ``deepspeed``, or none) is read lives here.
"""

from __future__ import annotations

import os

import torch


def setup_distributed(engine: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if engine == "deepspeed":  # DeepSpeed's own process group (also for a world of one: MoE layers need groups)
        from .engines.deepspeed import setup

        setup()
    elif world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device
