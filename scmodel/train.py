"""``python -m scmodel.train``: the training command line.

Its code moved with ``git mv`` to ``scmodel.trainer``; this module re-exports it and runs its
``main`` while the trainer is being split (next commit: this module keeps the command line only).
"""

from __future__ import annotations

import sys

from .trainer import (CONFIGS, TrainConfig, Trainer, build_config, config_from_dict, is_perturbation_store, main,
                      plot_curves, summary_line)

__all__ = ["CONFIGS", "TrainConfig", "Trainer", "build_config", "config_from_dict", "is_perturbation_store", "main",
           "plot_curves", "summary_line"]

if __name__ == "__main__":
    sys.exit(main())
