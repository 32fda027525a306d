"""``--set FIELD=VALUE`` overrides of a ``TrainConfig``: any field (``diffusion.X`` too), each
value read as the type of the field it replaces.

Its own module so the override rules are one piece of the run's description; the training command
(``scmodel.train``) maps its named flags onto it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import replace

from .config import TrainConfig


def _coerce(value: str, current):
    if value.lower() == "none":  # optional fields (n_hvgs, context_genes, epochs...) can be unset
        return None
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, tuple):
        return tuple(v for v in value.split(",") if v)
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if current is None:
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def apply_overrides(config: TrainConfig, values: dict, sets: Iterable[str] | None = ()) -> TrainConfig:
    """``config`` with ``values`` (field -> value; None leaves a field as it is) and then ``sets``
    (``FIELD=VALUE`` or ``diffusion.FIELD=VALUE`` strings) applied."""
    overrides = {k: v for k, v in values.items() if v is not None}
    for item in sets or ():
        key, value = item.split("=", 1)
        if key.startswith("diffusion."):
            sub = key.split(".", 1)[1]
            overrides["diffusion"] = replace(overrides.get("diffusion", config.diffusion),
                                             **{sub: _coerce(value, getattr(config.diffusion, sub))})
        elif key in {f.name for f in dataclasses.fields(TrainConfig)}:
            overrides[key] = _coerce(value, getattr(config, key))
        else:
            raise SystemExit(f"--set {key}: TrainConfig has no such field")
    return replace(config, **overrides)
