"""Moved: the command line is ``scmodel.evaluate.cli`` (``python -m scmodel.evaluate``) and
``load_run`` is ``scmodel.run.checkpoint.load_run``; this old path keeps importing both for now."""

from __future__ import annotations

import warnings

warnings.warn("scmodel.evaluate_cli moved to scmodel.evaluate.cli (and scmodel.run.checkpoint.load_run); import it from there", FutureWarning, stacklevel=2)

from .evaluate.cli import main
from .run.checkpoint import load_run

__all__ = ["load_run", "main"]
