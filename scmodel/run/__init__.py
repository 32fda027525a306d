"""A training run's description, shared by every command that starts or reads one.

``scmodel.train`` (and its ``Trainer``), ``scmodel.evaluate`` and ``scmodel.predict`` import what a
run is from here, never from one another:

* ``config``: ``TrainConfig`` and ``config_from_dict`` (the config as a checkpoint holds it);
* ``presets``: ``CONFIGS``, the named presets of ``--config``;
* ``overrides``: ``apply_overrides``, the ``--set FIELD=VALUE`` rules;
* ``checkpoint``: ``load_run`` and ``check_init_from``;
* ``loaders``: ``build_loaders``, a run's training and held-out loaders.
"""

from __future__ import annotations

from .checkpoint import check_init_from, load_run
from .config import TrainConfig, config_from_dict
from .loaders import build_loaders, is_perturbation_store
from .overrides import apply_overrides
from .presets import CONFIGS

__all__ = ["CONFIGS", "TrainConfig", "apply_overrides", "build_loaders", "check_init_from", "config_from_dict",
           "is_perturbation_store", "load_run"]
