"""Checkpoints that load without running code: tensors and plain Python data only.

``torch.load(..., weights_only=False)`` unpickles arbitrary objects, so a shared pretrained
checkpoint could execute anything. Everything this project writes (weights, optimizer state,
configs as dicts, RNG states as tensors and tuples of ints, loader positions as ints) loads with
``weights_only=True``, and ``load_checkpoint`` refuses anything else with an error naming the file.
"""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled objects beyond tensors and plain data."""


def save_checkpoint(path: str, payload: dict) -> None:
    """Write atomically (a crash leaves the previous checkpoint, never half of one)."""
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location=None) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} holds pickled Python objects beyond tensors and plain data, so loading it could run code; "
            f"refusing it (re-save it with scmodel.checkpoint.save_checkpoint from plain data). Detail: {err}") from None


def rng_state() -> dict:
    """The torch, numpy and Python RNG states as tensors and plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": int(version), "internal": list(internal), "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
