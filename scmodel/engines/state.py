"""Checkpoint contents as plain data, and loading that runs no code from the file.

Every checkpoint this project writes holds only tensors and plain containers (dicts, lists,
tuples, numbers, strings), so it loads with ``torch.load(..., weights_only=True)``: a shared
checkpoint cannot execute anything when opened. Random-number-generator states are converted to
that form here (numpy's state tuple carries an ndarray, which weights-only loading refuses).
"""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import torch


def rng_state() -> dict:
    """This process's torch / numpy / Python RNG states as tensors and plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def safe_load(path: str, map_location="cpu", allowed: tuple = ()):
    """``torch.load`` with ``weights_only=True`` (plus ``allowed``, a few named value classes);
    a file that carries any other pickled object is refused with an error that says so."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        detail = lines[0] if lines else str(e)[:200]
        raise ValueError(f"refusing to load checkpoint {path}: it carries a pickled Python object that weights-only "
                         f"loading does not allow ({detail}). Checkpoints written by scmodel hold only tensors and plain "
                         f"data; re-save this one from code you trust.") from None


def atomic_save(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
