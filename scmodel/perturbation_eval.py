"""Moved to ``scmodel.evaluate.perturbation``; this old path keeps importing its names for now."""

from __future__ import annotations

from .evaluate.perturbation import CellEvalConfig, check_pair, format_table, run_cell_eval

__all__ = ["CellEvalConfig", "check_pair", "format_table", "run_cell_eval"]
