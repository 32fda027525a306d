"""Moved: the command line is ``scmodel.evaluate.cli`` (``python -m scmodel.evaluate``) and
``load_run`` is ``scmodel.run.checkpoint.load_run``; this old path keeps importing both for now."""

from __future__ import annotations

import warnings

from .evaluate.cli import main
from .run.checkpoint import load_run

__all__ = ["load_run", "main"]

warnings.warn("scmodel.evaluate_cli moved to scmodel.evaluate.cli (load_run: scmodel.run.checkpoint); "
              "import it from there", FutureWarning, stacklevel=2)
