"""A DataLoader that knows where it is: ``state_dict`` / ``load_state_dict`` for exact resume."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from .dataset import StoreDataset


def pin_memory(batch):
    """Page-locked copies of a batch's tensors (what DataLoader's ``pin_memory`` does), when CUDA is there."""
    if not torch.cuda.is_available():
        return batch
    x, meta = batch
    return x.pin_memory(), {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in meta.items()}


class StoreDataLoader:
    """Iterates a ``StoreDataset`` through torch's DataLoader (workers, pinning) and counts the
    batches handed out, so a checkpoint can resume mid-epoch with exactly the remaining cells in
    the same order (same seed and number of workers required)."""

    def __init__(self, dataset: StoreDataset, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, multiprocessing_context=None):
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.consumed = 0

    def __len__(self) -> int:
        return self.dataset.batches_per_rank(self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.consumed = 0

    def __iter__(self):
        if self.num_workers:
            extra = {"prefetch_factor": self.prefetch_factor} if self.prefetch_factor else {}
            loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                multiprocessing_context=self.multiprocessing_context, **extra)
        else:  # in-process: the dataset's batches are already tensors, DataLoader would only add overhead
            loader = map(pin_memory, iter(self.dataset)) if self.pin_memory else iter(self.dataset)
        self.consumed = self.dataset.resume_batches
        for batch in loader:
            self.consumed += 1
            yield batch
        self.dataset.resume_batches = 0

    def state_dict(self) -> dict:
        cfg = self.dataset.config
        return {"epoch": self.dataset.epoch, "batches": self.consumed, "seed": cfg.seed, "num_workers": self.num_workers,
                "batch_size": cfg.batch_size, "n_cells": int(len(self.dataset.rows)),
                "manifest_version": self.dataset.manifest_version}

    def load_state_dict(self, state: dict) -> None:
        cfg = self.dataset.config
        mismatched = {k: (state[k], v) for k, v in (("seed", cfg.seed), ("num_workers", self.num_workers),
                                                    ("batch_size", cfg.batch_size), ("n_cells", int(len(self.dataset.rows))))
                      if state.get(k) != v}
        if mismatched:
            raise ValueError(f"cannot resume exactly: the loader differs from the checkpoint in {mismatched} (saved, now)")
        self.dataset.epoch = state["epoch"]
        self.dataset.resume_batches = state["batches"]
        self.consumed = state["batches"]
