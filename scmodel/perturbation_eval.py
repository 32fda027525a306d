"""Moved to ``scmodel.evaluate.perturbation``; this old path keeps importing its names for now."""

from __future__ import annotations

import warnings

from .evaluate.perturbation import CellEvalConfig, check_pair, format_table, run_cell_eval

__all__ = ["CellEvalConfig", "check_pair", "format_table", "run_cell_eval"]

warnings.warn("scmodel.perturbation_eval moved to scmodel.evaluate.perturbation; import it from there", FutureWarning, stacklevel=2)
