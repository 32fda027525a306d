"""A run's checkpoint as the other commands read it: ``load_run`` (its ``TrainConfig`` and
contents) and ``check_init_from`` (a fine-tune's starting checkpoint matches the run).

Here, below the commands, so ``scmodel.evaluate``, ``scmodel.predict`` and the ``Trainer`` share one
reader instead of importing it from one another.
"""

from __future__ import annotations

import dataclasses
import os

from ..engines.state import safe_load
from .config import TrainConfig, config_from_dict


def load_run(checkpoint: str, store: str | None = None, device: str = "cpu") -> tuple[TrainConfig, dict]:
    """(TrainConfig, checkpoint contents) of a plain-engine ``scmodel.train`` checkpoint, loaded
    without unpickling code (``weights_only``)."""
    if os.path.isdir(checkpoint):
        raise SystemExit(f"--checkpoint {checkpoint} is a DeepSpeed checkpoint directory: its model needs DeepSpeed's "
                         f"process groups to run; its runs are evaluated during training (metrics.jsonl)")
    state = safe_load(checkpoint, map_location=device)
    config = config_from_dict(state["config"])
    if store:
        config = dataclasses.replace(config, store=store)
    return config, state


def check_init_from(config: TrainConfig) -> None:
    """A clear error when the checkpoint to fine-tune from has another shape than this run."""
    if not os.path.isfile(config.init_from):
        if not os.path.isdir(config.init_from):
            raise FileNotFoundError(f"init_from {config.init_from}: no such checkpoint")
        return  # a DeepSpeed checkpoint directory: its engine checks the shapes
    saved = safe_load(config.init_from).get("config") or {}
    for name in ("model", "n_tokens", "n_hvgs"):
        if name in saved and saved[name] != getattr(config, name):
            raise ValueError(f"init_from {config.init_from} was trained with {name}={saved[name]!r}, this run has "
                             f"{getattr(config, name)!r}: set the same (--set {name}=...)")
