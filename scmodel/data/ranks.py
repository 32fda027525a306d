"""Where this process sits: DDP rank/world and DataLoader worker id/count."""

from __future__ import annotations

import os


def rank_and_world() -> tuple[int, int]:
    """torch.distributed's rank and world size, else RANK/WORLD_SIZE (torchrun), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_and_count() -> tuple[int, int]:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
