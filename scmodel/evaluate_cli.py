"""Moved to ``scmodel.evaluate.cli`` (``python -m scmodel.evaluate``); this old path keeps
importing ``main`` and ``load_run`` for now."""

from __future__ import annotations

from .evaluate.cli import load_run, main

__all__ = ["load_run", "main"]
